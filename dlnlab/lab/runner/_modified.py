"""GD's modified flows (``flow.modified=true``): one series per learning rate, ``modflow_lr_<lr>``.

GD at step eta follows dtheta/dt = -(I + (eta/2) H) grad L to O(eta^2), the plain flow only to O(eta)
(docs/theory.md, section 9). For each learning rate the modified flow is integrated with the run's
solver at the SGD series' exact times k eta (never interpolated) and on the grid, recorded like the
flow (its own series file and TensorBoard run), and handed to that SGD series, which records
``dist_to_modified`` beside ``dist_to_flow``. The summary fits a second convergence order, against
the modified flows (``convergence_order_modified``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dlnlab.rundir import MODIFIED_PREFIX, lr_series_name, signals
from dlnlab.status import Status

__all__ = ["modified_name", "run_modified_flows"]


def modified_name(lr: float) -> str:
    """``modflow_lr_<repr(lr)>``."""
    return lr_series_name(MODIFIED_PREFIX, lr)


def run_modified_flows(state, ctx, previous, exact, grid) -> tuple[dict, list[Callable[[], None]]]:
    """Integrate and record each learning rate's modified flow; returns ({lr: its states at the series'
    grid points, (n_grid, ..., p)}, the closers that wait for the recorders and store the arrays)."""
    from dlnlab.lab.runner._series import at_series_grid, run_flow

    plan = state.plan
    theta, closers = {}, []
    for lr in plan.lrs:
        if state.interrupted:
            break
        name = modified_name(lr)
        state.stage = name
        state.write_summary()
        all_t = torch.unique(torch.cat([grid, exact[lr][1]]))
        done = previous.arrays.get(name) if previous else None
        before = (previous.entry(name), done) if done else None
        entry, finish, at = run_flow(ctx, all_t, grid, before, name=name, modified_lr=lr)
        state.series[name] = entry
        closers.append(_closer(state, name, finish))
        theta[lr] = at_series_grid(at, all_t, exact[lr], state.n_grid)
        state.interrupted |= entry["status"] == Status.INTERRUPTED or signals.received() is not None
    return theta, closers


def _closer(state, name: str, finish) -> Callable[[], None]:
    def close() -> None:
        state.arrays[name] = finish()

    return close
