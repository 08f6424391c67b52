"""GD's central flow (``flow.central=true``): one series per learning rate, ``cflow_lr_<lr>``.

Above the edge of stability GD's time average follows the central flow (Cohen, Damian et al., ICLR
2025; docs/eos.md, docs/theory.md section 11), not the gradient flow: the gradient flow plus the drift
GD's oscillation along the critical eigenvectors causes, with Sigma just large enough that no
eigenvalue rises past 2/eta; below the edge Sigma = 0 and it is the gradient flow. For each learning
rate :class:`dlnlab.eos.CentralFlow` is integrated by rk45 at ``flow.rtol`` / ``flow.atol`` (the field
has no Jacobian for the stiff methods) at the grid and at GD's exact times k eta, and recorded like the
flow: its series file holds the flow's keys plus, at every grid point, ``central_sharpness`` (S),
``n_critical``, ``sigma_trace`` (tr Sigma), ``predicted_loss`` (L + 1/2 <Sigma, H>, GD's predicted
time-averaged loss), ``predicted_variance`` (u_1^T Sigma u_1; Sigma solved on the edge to the solve's tolerance,
:meth:`~dlnlab.eos.CentralFlow.recorded_point`) and ``dist_to_flow`` (to the gradient
flow at GD's exact time of that grid point). Its TensorBoard tags (``central/...``) go into its GD
series' run, beside GD's own sharpness and loss. Its summary entry's ``central`` is a
:class:`~dlnlab.lab.results._eos.CentralFlowEntry`.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch

from dlnlab import flow as flowmod
from dlnlab.eos import CentralFlow
from dlnlab.errors import SeriesWarning
from dlnlab.lab.config import flow_nfe_budget
from dlnlab.lab.record import SeriesRecorder, Thinner, log10_positive
from dlnlab.lab.results import central_entry
from dlnlab.lab.runner._context import SeriesContext
from dlnlab.lab.runner._kind import Resume, SeriesDone, SeriesKind, SeriesTask
from dlnlab.lab.runner._times import at_series_grid
from dlnlab.metrics import SeriesMetrics
from dlnlab.rundir import CENTRAL_PREFIX, series_name, signals
from dlnlab.status import Status

__all__ = ["CentralFlowKind", "CENTRAL_KEYS", "central_solver"]

CENTRAL_KEYS = ("central_sharpness", "n_critical", "sigma_trace", "predicted_loss", "predicted_variance",
                "dist_to_flow")  # fmt: skip


class CentralFlowKind(SeriesKind):
    """GD's central flow at each learning rate (``flow.central=true``), compared in its GD series' run."""

    key, prefix, needs, resume = "central", CENTRAL_PREFIX, ("flow",), Resume.RERUN

    def enabled(self, plan) -> bool:
        return bool(plan.cfg.flow.central)

    def run(self, ctx: SeriesContext, task: SeriesTask) -> SeriesDone:
        entry, arrays, states = run_central(ctx, task)
        return SeriesDone(entry, arrays=arrays, states=states, states_at=task.solve_at)


class _CentralMetrics(SeriesMetrics):
    """The flow's metrics plus the central flow's own columns, computed beforehand per grid point."""

    def __init__(self, *args, columns: dict[str, np.ndarray], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.columns = columns

    def compute(self, ms, ts, thetas, steps) -> dict[str, np.ndarray]:
        out = super().compute(ms, ts, thetas, steps)
        idx = np.asarray(ms, dtype=np.int64)
        out.update({key: col[idx] for key, col in self.columns.items()})
        return out


def central_solver(cfg) -> flowmod.Solver:
    """The central flow's solver: rk45 at flow.rtol / flow.atol (the field has no Jacobian for the stiff
    methods), with an explicit method's budget (limits.flow_nfe, or flow.max_nfe), not the run's stiff
    solver's. The edge series solves its window's central flow with it too (runner/_edge.py)."""
    f = cfg.flow
    return flowmod.Solver("rk45", f.rtol, f.atol, None, flow_nfe_budget(cfg, "rk45"))


def _solve(ctx: SeriesContext, task: SeriesTask, field: CentralFlow, entry: dict):
    """The central flow's trajectory at task.solve_at (what was reached before a failure), or None."""
    plan, solver = ctx.plan, central_solver(ctx.plan.cfg)
    try:
        with signals.deferred(raise_at_end=False):
            return flowmod.integrate(
                plan.problem, ctx.layout, plan.theta0, task.solve_at, solver, progress=ctx.progress,
                stop=lambda: signals.received() is not None, field=field,
            )  # fmt: skip
    except flowmod.FlowSolverError as err:
        entry.update(status=Status.SOLVER_FAILED, message=str(err))
        warnings.warn(f"{task.name}: {err}", SeriesWarning, stacklevel=2)
        return err.result
    except flowmod.FlowInterrupted as err:
        entry.update(status=Status.INTERRUPTED, message=err.result.message)
        return err.result
    except KeyboardInterrupt:
        entry.update(status=Status.INTERRUPTED, message="interrupted")
    except Exception as err:  # noqa: BLE001 - recorded; the other series still run
        entry.update(status=Status.ERROR, message=f"{type(err).__name__}: {err}")
        warnings.warn(f"{task.name}: {entry['message']}", SeriesWarning, stacklevel=2)
    return None


def run_central(ctx: SeriesContext, task: SeriesTask) -> tuple[dict, dict, torch.Tensor]:
    """Integrate and record one central flow; returns (entry, arrays, states at task.solve_at (NaN
    past a failure))."""
    plan, f, lr = ctx.plan, ctx.plan.cfg.flow, float(task.lr)
    entry: dict = {"lr": None, "central_lr": lr, "method": "rk45", "rtol": f.rtol, "atol": f.atol,
                   "status": Status.OK, "message": ""}  # fmt: skip
    field = CentralFlow(
        plan.problem, ctx.layout, lr, k=plan.cfg.log.top_eigs, dense_max=plan.cfg.log.hessian_dense_max
    )
    ctx.progress.start(task.name, float(task.solve_at[-1]))
    t0 = time.perf_counter()
    traj = _solve(ctx, task, field, entry)
    n = 0 if traj is None else len(traj.t)
    states = torch.full((len(task.solve_at), plan.theta0.numel()), math.nan, dtype=torch.float64)
    if n:
        states[:n] = traj.theta
    with signals.deferred(raise_at_end=False):  # a signal from here on only stops the next stage
        arrays = _record(ctx, task, field, states, n)
        t = arrays.get("t", np.zeros(0))
        entry.update(
            t_stop=float(t[-1]) if len(t) else 0.0, final_loss=float(arrays["loss"][-1]) if len(t) else None,
            nfe=None if traj is None else traj.nfe, wall_time_s=time.perf_counter() - t0,
            max_dist_to_flow=None,  # the GD series' distance; the central flow's to the flow is below
            central=central_entry(
                lr, t, arrays["central_sharpness"], arrays["sigma_trace"], arrays["n_critical"], arrays["loss"],
                arrays["predicted_loss"], arrays["dist_to_flow"], field.tracker.iterations, field.tracker.unconverged,
            ).to_dict() if len(t) else None,
        )  # fmt: skip
    ctx.progress.done(f"{entry['status']}: nfe {entry['nfe']}, {entry['wall_time_s']:.2f} s")
    return entry, arrays, states


def _record(ctx: SeriesContext, task: SeriesTask, field: CentralFlow, states: torch.Tensor, n: int) -> dict:
    """The series file (its grid points reached), and the central tags in the GD series' run."""
    plan = ctx.plan
    grid_idx = torch.searchsorted(task.solve_at, task.grid)
    ms = [m for m in range(ctx.n_grid) if int(grid_idx[m]) < n]
    columns = {key: np.full(ctx.n_grid, math.nan) for key in CENTRAL_KEYS}
    rtol, atol = plan.cfg.flow.rtol, plan.cfg.flow.atol  # the solve's (_solve): Sigma on the edge to them
    for m in ms:
        pt = field.recorded_point(states[grid_idx[m]], rtol, atol)
        for key, value in (("central_sharpness", pt.sharpness), ("n_critical", pt.n_critical),
                           ("sigma_trace", pt.sigma_trace), ("predicted_loss", pt.predicted_loss),
                           ("predicted_variance", pt.top_variance)):  # fmt: skip
            columns[key][m] = value
    flow_at = task.given.get("flow")  # the gradient flow at GD's exact times, on their grid points
    if flow_at is not None:
        here = at_series_grid(states, task.solve_at, task.times, ctx.n_grid)
        columns["dist_to_flow"] = torch.linalg.vector_norm(here - flow_at, dim=-1).numpy()
    metrics = _CentralMetrics(plan.problem, ctx.dims, plan.theta0, columns=columns, **ctx.metric_kw)
    rec = SeriesRecorder(task.name, metrics, ctx.n_grid, ctx.out)  # no logger of its own: see _log_central
    if ms:
        rec.record_many(ms, task.grid[ms].tolist(), states[grid_idx[ms]])
    arrays = rec.close()
    _log_central(ctx, task, arrays)
    return arrays


def _log10(x: float) -> float:
    return float(log10_positive(x))  # NaN at x <= 0, never log10 |x|


def _log_central(ctx: SeriesContext, task: SeriesTask, arrays: dict) -> None:
    """The central flow's tags in its GD series' TensorBoard run (log.tb_max_points as every series)."""
    gd = series_name(task.lr)
    logger = ctx.logger(gd)
    if logger is None or not len(arrays.get("t", ())):
        return
    tags, thin = ctx.tags(gd, task.lr), Thinner(ctx.n_grid, ctx.plan.cfg.log.tb_max_points)
    rows = []
    for i, m in enumerate(arrays["grid_index"].tolist()):
        row = {
            "central/sharpness_over_edge": float(arrays["central_sharpness"][i]) * (task.lr / 2),
            "central/log10_loss": _log10(arrays["loss"][i]),
            "central/log10_predicted_loss": _log10(arrays["predicted_loss"][i]),
            "central/sigma_trace": float(arrays["sigma_trace"][i]),
            "central/log10_dist_to_flow": _log10(arrays["dist_to_flow"][i]),
        }
        rows += thin.add(m, {k: v for k, v in row.items() if math.isfinite(v)})
    for m, row in rows + thin.flush():
        logger.log_metrics(row, step=tags.step(m))
    logger.save()
