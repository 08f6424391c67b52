"""Lightning callbacks of an SGD series: the metrics callback, and the base class of a user's own metric.

After every chunk of steps the module holds the snapshots of theta taken at the series' grid steps
(``module.new_snapshots``). :class:`MetricsCallback` hands them to the series' recorder (metrics,
logger, npz). A user adds a metric with a :class:`GridPointCallback`: its ``on_grid_point`` sees
every grid point of every series, the flow's too, and logs through the series' logger:

    class TopLayerNorm(GridPointCallback):  # shipped here as the example: dlnlab.lab.callbacks.TopLayerNorm
        def on_grid_point(self, point, logger):
            logger.log_metrics({"custom/top_layer_norm": float(point.weights[-1].norm())}, step=point.log_step)

    python scripts/train.py +callbacks.top._target_=dlnlab.lab.callbacks.TopLayerNorm
    PYTHONPATH=. python scripts/train.py +callbacks.mine._target_=mymetrics.MyMetric   # yours, in ./mymetrics.py
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
from torch import Tensor

from dlnlab.network import unpack
from dlnlab.problem import RegressionProblem

__all__ = [
    "GridPoint",
    "GridPointCallback",
    "MetricsCallback",
    "TopLayerNorm",
    "CallbackFailed",
    "callback_failure",
]


class CallbackFailed(RuntimeError):
    """A user's grid-point callback raised; the message says which, where and what."""


def callback_failure(cb, m: int | None, t: float | None, err: BaseException) -> str:
    """The one-line record of a user callback that raised at grid point m (time t)."""
    where = "" if m is None else f" at grid point m = {m} (t = {t:.6g})"
    return f"callback {type(cb).__name__} raised{where}: {type(err).__name__}: {err}"


@dataclass(frozen=True)
class GridPoint:
    """One recorded point of a series: grid index m, exact time t, SGD step (None for the flow), theta
    (p,), what a metric needs to read it, and ``log_step``, the logger's step of that grid point (round(1000
    t_m): TensorBoard's x axis is the flow time, docs/tensorboard.md)."""

    series: str
    m: int
    t: float
    step: int | None
    theta: Tensor
    dims: tuple[int, ...]
    problem: RegressionProblem
    log_step: int

    @property
    def weights(self) -> list[Tensor]:
        """[W_1, ..., W_h] (views of theta)."""
        return unpack(self.theta, self.dims)


def _points(module, since: int | None) -> list[GridPoint]:
    """The module's snapshots after step ``since``, as grid points."""
    return [
        GridPoint(
            module.series_name,
            m,
            k * module.tau,
            k,
            theta,
            module.dims,
            module.problem,
            round(m * module.step_per_grid),
        )  # fmt: skip
        for k, theta in module.new_snapshots
        if since is None or k > since
        for m in (module.step_to_grid[k],)
    ]


class GridPointCallback(L.Callback):
    """Base class of a per-grid-point metric; override :meth:`on_grid_point`."""

    def __init__(self) -> None:
        self._last: int | None = None

    def on_grid_point(self, point: GridPoint, logger: Any) -> None:
        """Called at every grid point of every series (logger: the series' Lightning logger or None)."""
        raise NotImplementedError

    def _drain(self, trainer, module) -> None:
        for point in _points(module, self._last):
            try:
                self.on_grid_point(point, trainer.logger)
            except Exception as err:
                raise CallbackFailed(callback_failure(self, point.m, point.t, err)) from err
            self._last = point.step

    def on_train_start(self, trainer, pl_module) -> None:
        self._last = None
        self._drain(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._drain(trainer, pl_module)


class TopLayerNorm(GridPointCallback):
    """The example of a metric of one's own: ||W_h||_F at every grid point of every series, as the tag
    ``custom/top_layer_norm`` (``+callbacks.top._target_=dlnlab.lab.callbacks.TopLayerNorm``)."""

    def on_grid_point(self, point: GridPoint, logger: Any) -> None:
        if logger is not None:
            logger.log_metrics(
                {"custom/top_layer_norm": float(point.weights[-1].norm())}, step=point.log_step
            )


class MetricsCallback(L.Callback):
    """Hands the module's snapshots to the series' recorder after every chunk (each once).

    It also keeps the points of the recorder's open block (since the last block boundary, see
    :func:`dlnlab.lab.record.block_points`; at most BLOCK_BYTES of theta) in the series' checkpoint:
    a resumed series keeps its file's points up to that boundary and records the open block again
    from these copies, so that every point's metrics are computed in the same block as in a run that
    never stopped (the same operations in the same order: the same bits).

    ``reopened``: (position, points) of a resumed series, the checkpoint's open block, already handed
    to its recorder.
    """

    state_key = "dlnlab.MetricsCallback"

    def __init__(self, recorder, progress=None, reopened: tuple[int, list] | None = None) -> None:
        self.recorder, self.progress = recorder, progress
        self.last_step: int | None = None
        self.position, self.open = reopened if reopened is not None else (0, [])
        self.open = list(self.open)
        self._block: int | None = None

    def drain(self, module) -> None:
        from dlnlab.lab.record import block_points

        for point in _points(module, self.last_step):
            self.recorder.record(point.m, point.t, point.theta, step=point.step, copy=False)
            self.last_step = point.step
            if self._block is None:
                self._block = block_points(getattr(self.recorder, "block", 256), point.theta)
            self.open.append((point.m, point.t, point.step, point.theta))
            self.position += 1
            if self.position % self._block == 0:
                self.open = []

    def state_dict(self) -> dict:
        return {"position": self.position, "open": list(self.open)}

    def on_train_start(self, trainer, pl_module) -> None:
        self.drain(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.drain(pl_module)
        if self.progress is not None:
            self.progress(pl_module.step_count * pl_module.tau)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.drain(pl_module)  # the snapshots of an interrupted chunk are recorded too
