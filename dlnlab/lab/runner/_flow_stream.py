"""The flow's recording: its grid points go to a recorder worker while the solver runs.

``FlowStream`` is the ``on_output`` of :func:`dlnlab.flow.integrate` in a run: the recorder worker is
forked before the solve and gets each grid point as the solver reaches it (rk45 and cvode hand their
points out step by step; the other solvers at the end, and then the points go over together).
integrate hands out every row it returns, also those of a failed or interrupted solve, so every grid
point the solve reached goes to the recorder.
"""

from __future__ import annotations

import warnings

import torch

from dlnlab.errors import SeriesWarning
from dlnlab.lab.callbacks import GridPoint, GridPointCallback, callback_failure
from dlnlab.lab.record import open_recorder
from dlnlab.metrics import SeriesMetrics
from dlnlab.status import Status

__all__ = ["FlowStream", "record_flow"]


class FlowStream:
    """integrate's on_output for the flow's recorder: each grid point goes to the recorder worker (forked
    here, before the solve) as the solver reaches it, so the metrics are computed while the solve goes
    on instead of after it (width 256, depth 8: 2.8 s of metrics that otherwise ran beside the GD series,
    three processes on two cores)."""

    def __init__(self, ctx, name: str, theta0, all_t: torch.Tensor, grid: torch.Tensor) -> None:
        plan = ctx.plan
        metrics = SeriesMetrics(plan.problem, ctx.dims, theta0, **ctx.metric_kw)
        self.rec = open_recorder(
            name, metrics, ctx.n_grid, ctx.out, logger=ctx.logger(name), tags=ctx.tags(name),
            tb_max_points=plan.cfg.log.tb_max_points, worker=True,
        )  # fmt: skip
        self.grid_of_row = {int(i): m for m, i in enumerate(torch.searchsorted(all_t, grid).tolist())}
        self.grid, self.sent = grid, 0  # grid points 0 .. sent - 1 are with the recorder

    def __call__(self, first: int, rows: torch.Tensor) -> None:
        for k in range(rows.shape[0]):
            m = self.grid_of_row.get(first + k)
            if m is not None and m == self.sent:
                self.rec.record(m, float(self.grid[m]), rows[k])
                self.sent += 1


def record_flow(ctx, flow_at, n_flow, all_t, grid, entry, name, stream: FlowStream):
    """The user's grid-point callbacks on the flow's grid points, here (the stream has already sent
    every point the solve reached to the recorder: integrate gives on_output every row it returns);
    returns the recorder. An interrupt here keeps the points recorded so far. A callback that raises
    is this series' failure (status error, the message says which callback, where and what): the
    callbacks stop there, and the flow's own record is finished as usual."""
    plan = ctx.plan
    logger = ctx.logger(name)
    grid_idx = torch.searchsorted(all_t, grid)
    ms = [m for m in range(ctx.n_grid) if grid_idx[m] < n_flow]
    user = [cb for cb in ctx.callbacks if isinstance(cb, GridPointCallback)]
    tags = ctx.tags(name)
    m, cb = None, None
    try:
        for m in ms if user else ():
            theta = flow_at[grid_idx[m]]
            for cb in user:
                cb.on_grid_point(
                    GridPoint(name, m, float(grid[m]), None, theta, ctx.dims, plan.problem, tags.step(m)),
                    logger,
                )
    except KeyboardInterrupt:
        entry.update(status=Status.INTERRUPTED, message="interrupted while recording the flow")
    except Exception as err:  # noqa: BLE001 - a user's callback must not hang or end the run
        entry.update(status=Status.ERROR, message=callback_failure(cb, m, float(grid[m]), err))
        warnings.warn(f"{name}: {entry['message']}", SeriesWarning, stacklevel=2)
    return stream.rec
