"""GD's modified flows (``flow.modified=true``): one series per learning rate, ``modflow_lr_<lr>``.

GD at step eta follows dtheta/dt = -(I + (eta/2) H) grad L to O(eta^2), the plain flow only to O(eta)
(docs/theory.md, section 9). For each learning rate the modified flow is integrated with the run's
solver at the (S)GD series' exact times k eta (never interpolated) and on the grid, recorded like the
flow (its own series file; shown in its GD series' TensorBoard run), and handed to that GD series
(``needs``), which records ``dist_to_modified`` beside ``dist_to_flow``. The summary fits a second
convergence order, against the modified flows (``convergence_order_modified``).
"""

from __future__ import annotations

from dlnlab.lab.runner._context import SeriesContext
from dlnlab.lab.runner._flow import run_flow
from dlnlab.lab.runner._kind import Resume, SeriesDone, SeriesKind, SeriesTask
from dlnlab.rundir import MODIFIED_PREFIX
from dlnlab.status import Status

__all__ = ["ModifiedFlowKind"]


class ModifiedFlowKind(SeriesKind):
    """GD's modified flow at each learning rate (``flow.modified=true``), handed to that GD series."""

    key, prefix, resume = "modified", MODIFIED_PREFIX, Resume.RECOMPUTE

    def enabled(self, plan) -> bool:
        return bool(plan.cfg.flow.modified)

    def failed_entry(self, plan, lr, message: str) -> dict:
        f = plan.cfg.flow
        return {"lr": None, "method": plan.solver.method, "rtol": f.rtol, "atol": f.atol, "status": Status.ERROR,
                "modified_lr": lr, "message": message}  # fmt: skip

    def run(self, ctx: SeriesContext, task: SeriesTask) -> SeriesDone:
        entry, finish, states = run_flow(
            ctx, task.solve_at, task.grid, task.recorded, name=task.name, modified_lr=task.lr
        )
        return SeriesDone(entry, finish=finish, states=states, states_at=task.solve_at)
