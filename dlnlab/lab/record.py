"""One Lightning-free recorder: (series, grid index m, t, theta) -> metrics -> TensorBoard + series npz.

The flow calls it directly; for SGD a thin Lightning callback hands it the snapshots. The hot loop
only copies theta at the grid points: metrics are computed in vectorised blocks (``block`` snapshots
at a time), so recording costs little next to the steps and TensorBoard fills in as the run goes.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dlnlab.analysis import (
    DENSE_HESSIAN_MAX,
)
from dlnlab.lab import signals
from dlnlab.lab.rundir import save_npz
from dlnlab.lab.schema import LogConfig
from dlnlab.metrics import SeriesMetrics
from dlnlab.network import as_layout
from dlnlab.problem import RegressionProblem

__all__ = ["SeriesRecorder", "open_recorder", "tensorboard_layout"]


COMMON_TAGS_PREFIXES = (
    "loss",
    "time",
    "sv_P/",
    "sv_A/",
    "mode_strength/",
    "saddle/",
    "curvature/",
    "conservation/",
)


def tensorboard_layout() -> dict:
    """Custom-scalars layout: one chart per quantity holding every series (runs merge in the plugin)."""
    return {
        "dlnlab": {
            "loss": ["Multiline", [r"^loss$"]],
            "singular values of P": ["Multiline", [r"^sv_P/.*"]],
            "singular values of A": ["Multiline", [r"^sv_A/.*"]],
            "mode strengths u_k^T P v_k": ["Multiline", [r"^mode_strength/.*"]],
            "||grad L||": ["Multiline", [r"^saddle/grad_norm$"]],
            "gap to nearest plateau level": ["Multiline", [r"^saddle/level_gap$"]],
            "nearest plateau level r": ["Multiline", [r"^saddle/level$"]],
            "modes learnt": ["Multiline", [r"^saddle/modes_learnt$"]],
            "saddle label (0 none, 1 strict, 2 non-strict, 3 inconclusive)": [
                "Multiline",
                [r"^saddle/label$"],
            ],
            "plateau exit time and delay vs the flow (step = mode)": [
                "Multiline",
                [r"^saddle/exit_time$", r"^saddle/exit_delay$"],
            ],
            "distance to best rank-r map": ["Multiline", [r"^saddle/dist_best_rank$"]],
            "Hessian lambda_min": ["Multiline", [r"^curvature/lambda_min$"]],
            "sharpness vs 2/eta": ["Multiline", [r"^curvature/sharpness$", r"^sgd/two_over_lr$"]],
            "conservation-law drift": ["Multiline", [r"^conservation/.*"]],
            "SGD distance to the flow": ["Multiline", [r"^sgd/dist_to_flow$"]],
        }
    }


class SeriesRecorder:
    """Records one series (the flow or one SGD learning rate) on the grid t_m = m * dt.

    Args:
        name: series name (``flow`` or ``sgd_lr_<lr>``).
        problem, dims: the task and the network widths.
        theta0: (p,) the initial weights (the reference of the conservation-law drift).
        n_grid: number of grid points M + 1 (m = 0..M).
        out_dir: the run directory (``series/<name>.npz`` and ``tensorboard/<name>/`` go there).
        lr: learning rate (None for the flow).
        flow_theta: (n_grid, p) the flow at this series' exact times, for ``dist_to_flow`` (SGD only);
            NaN rows where the flow is unavailable.
        analysis_every: curvature (dense or Lanczos Hessian extremes) every this many grid points
            (0 = never).
        tb_max_points: at most about this many grid points per series go to TensorBoard (its UI
            samples 1000 per tag); the npz keeps every point.

    Metrics are computed when ``block`` points are buffered (vectorised over the block). To keep
    them off a hot loop's core, use :func:`open_recorder` with ``worker=True``.
    """

    def __init__(
        self,
        name: str,
        problem: RegressionProblem,
        dims: Sequence[int],
        theta0: Tensor,
        n_grid: int,
        out_dir: str | Path,
        lr: float | None = None,
        flow_theta: Tensor | None = None,
        analysis_every: int = 0,
        sv_A_top: int = LogConfig.sv_A_top,
        hessian_dense_max: int = DENSE_HESSIAN_MAX,
        tensorboard: bool = True,
        save_theta: bool = True,
        block: int = 256,
        tb_max_points: int = 1000,
    ) -> None:
        self.name, self.layout = name, as_layout(dims)
        self.n_grid, self.lr = n_grid, lr
        self.metrics = SeriesMetrics(
            problem, dims, theta0, sgd=lr is not None, flow_theta=flow_theta, analysis_every=analysis_every,
            sv_A_top=sv_A_top, hessian_dense_max=hessian_dense_max, save_theta=save_theta,
        )  # fmt: skip
        self.block = block
        self.out_dir = Path(out_dir)
        self._pending: list[tuple[int, float, int | None, Tensor]] = []
        self._chunks: dict[str, list[np.ndarray]] = {}
        # TensorBoard's UI shows 1000 points per tag anyway: thin the event files, keep every point in the npz.
        self.tb_every = max(1, math.ceil(n_grid / tb_max_points))
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.out_dir / "tensorboard" / name), max_queue=100_000)
            self.writer.add_custom_scalars(tensorboard_layout())

    # ------------------------------------------------------------------------------------------
    def record(self, m: int, t: float, theta: Tensor, step: int | None = None, copy: bool = True) -> None:
        """Buffer grid point m at exact time t (theta (p,) is copied unless ``copy=False``)."""
        self._pending.append((int(m), float(t), step, theta.detach().clone() if copy else theta))
        if len(self._pending) >= self.block:
            self.flush()

    def record_many(self, ms: Sequence[int], ts: Sequence[float], thetas: Tensor, steps=None) -> None:
        """Buffer several grid points at once; thetas (K, p)."""
        for i, (m, t) in enumerate(zip(ms, ts)):
            self.record(m, t, thetas[i], None if steps is None else steps[i], copy=False)

    @torch.no_grad()
    def flush(self) -> None:
        """Compute the metrics of the buffered points and write them to TensorBoard."""
        if not self._pending:
            return
        block, self._pending = self._pending, []
        ms = [p[0] for p in block]
        ts = torch.tensor([p[1] for p in block], dtype=torch.float64)
        thetas = torch.stack([p[3] for p in block])
        steps = [p[2] for p in block]
        metrics = self.metrics.compute(ms, ts, thetas, steps)
        for key, val in metrics.items():
            self._chunks.setdefault(key, []).append(val)
        if self.writer is not None:
            self._write_tensorboard(metrics)

    def _write_tensorboard(self, mt: dict[str, np.ndarray]) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        keep = [
            i
            for i, m in enumerate(mt["grid_index"].tolist())
            if m % self.tb_every == 0 or m == self.n_grid - 1
        ]
        if not keep:
            return
        cols: list[tuple[str, np.ndarray]] = [("loss", mt["loss"]), ("time", mt["t"])]
        cols += [(f"sv_P/{k}", mt["sv"][:, k]) for k in range(mt["sv"].shape[1])]
        cols += [(f"sv_A/{k}", mt["sv_A"][:, k]) for k in range(mt["sv_A"].shape[1])]
        cols += [
            (f"mode_strength/{k}", mt["mode_strength"][:, k]) for k in range(mt["mode_strength"].shape[1])
        ]
        cols += [
            ("saddle/grad_norm", mt["grad_norm"]),
            ("saddle/level", mt["level_index"]),
            ("saddle/level_gap", mt["level_gap"]),
            ("saddle/dist_best_rank", mt["dist_best_rank"]),
        ]
        cols += [
            (f"conservation/drift_{j + 1}", mt["cons_drift"][:, j]) for j in range(mt["cons_drift"].shape[1])
        ]
        if self.lr is not None:
            cols += [("sgd/dist_to_flow", mt["dist_to_flow"]), ("sgd/step", mt["step"])]
        tags = [c[0] for c in cols]
        table = np.stack([np.asarray(c[1], dtype=np.float64)[keep] for c in cols], axis=1).tolist()
        lam, sharp = mt["lambda_min"].tolist(), mt["sharpness"].tolist()
        steps = mt["grid_index"].tolist()
        fw = self.writer._get_file_writer()
        value = Summary.Value
        for row, i in zip(table, keep):
            vals = [value(tag=t, simple_value=v) for t, v in zip(tags, row)]
            if not math.isnan(lam[i]):
                vals.append(value(tag="curvature/lambda_min", simple_value=lam[i]))
                vals.append(value(tag="curvature/sharpness", simple_value=sharp[i]))
                if self.lr is not None:
                    vals.append(value(tag="sgd/two_over_lr", simple_value=2.0 / self.lr))
            fw.add_summary(Summary(value=vals), global_step=steps[i])

    # ------------------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """Everything recorded so far, concatenated along the grid."""
        self.flush()
        return {k: np.concatenate(v, axis=0) for k, v in self._chunks.items()}

    def close(self, path: str | Path | None = None) -> dict[str, np.ndarray]:
        """Flush, write ``series/<name>.npz`` and close TensorBoard; returns the arrays."""
        arrays = self.arrays()
        target = Path(path) if path is not None else self.out_dir / "series" / f"{self.name}.npz"
        save_npz(target, **arrays)  # atomic: a reader never sees half a file
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        return arrays


class _ProcessRecorder:
    """A :class:`SeriesRecorder` living in a forked worker process.

    The hot loop only buffers snapshots and ships them in blocks through a pipe; metrics,
    TensorBoard and the npz are computed and written by the worker on another core (no GIL shared).
    ``close()`` returns the same arrays as ``SeriesRecorder.close()``.
    """

    def __init__(self, *args, block: int = 256, **kwargs) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_recorder_worker, args=(child, args, kwargs), daemon=True)
        with signals.blocked_in_children():  # the child ignores SIGINT/SIGTERM before it can get one
            self._proc.start()
        child.close()
        self.name, self.block = args[0], block
        self._pending: list = []

    def record(self, m: int, t: float, theta: Tensor, step: int | None = None, copy: bool = True) -> None:
        self._pending.append((int(m), float(t), step, theta.detach().clone() if copy else theta))
        if len(self._pending) >= self.block:
            self.flush()

    def _check_worker(self) -> None:
        """Raise the worker's own error (with its traceback) if it has failed."""
        if self._conn.poll():
            status, payload = self._conn.recv()
            raise RuntimeError(f"recorder worker of {self.name} failed:\n{payload}")

    def flush(self) -> None:
        if not self._pending:
            return
        self._check_worker()
        block, self._pending = self._pending, []
        thetas = torch.stack([p[3] for p in block]).numpy()
        self._conn.send(
            ("block", [p[0] for p in block], [p[1] for p in block], [p[2] for p in block], thetas)
        )

    def close(self, path: str | Path | None = None) -> dict[str, np.ndarray]:
        try:
            self.flush()
            self._conn.send(("close", path))
            status, payload = self._conn.recv()
        except (BrokenPipeError, EOFError) as err:
            self._proc.join(timeout=5)
            raise RuntimeError(f"recorder worker of {self.name} exited ({err})") from err
        self._proc.join()
        self._conn.close()
        if status != "ok":
            raise RuntimeError(f"recorder worker of {self.name} failed:\n{payload}")
        return payload


def _recorder_worker(conn, args, kwargs) -> None:
    import signal
    import traceback

    # SIGINT / SIGTERM (also when sent to the whole process group) are the parent's: it closes us
    # cleanly and we write the series. The parent blocked them around the fork; ignore, then unblock.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    torch.set_num_threads(1)
    rec = None
    try:
        rec = SeriesRecorder(*args, **kwargs)
        while True:
            try:
                msg = conn.recv()
            except EOFError:  # the parent went away: keep what was recorded
                rec.close()
                return
            if msg[0] == "block":
                _, ms, ts, steps, thetas = msg
                rec.record_many(ms, ts, torch.from_numpy(thetas), steps)
            else:
                conn.send(("ok", rec.close(msg[1])))
                return
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", traceback.format_exc()))


def open_recorder(*args, worker: bool = False, **kwargs):
    """A SeriesRecorder (same arguments), in a worker process when ``worker`` and fork is available."""
    if worker and "fork" in multiprocessing.get_all_start_methods():
        return _ProcessRecorder(*args, **kwargs)
    return SeriesRecorder(*args, **kwargs)


def write_hparams(out_dir: Path, cfg, series: dict, step: int) -> None:
    """One HParams row per series (tensorboard/<series>/): the run's settings and its outcome."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hp_summary

    base = {
        "dims": str(list(cfg.model.dims)),
        "init": cfg.init.kind.name,
        "init_scale": float(getattr(cfg.init, "scale", float("nan"))),
        "method": cfg.flow.method.name,
        "batch_size": cfg.sgd.batch_size or 0,
        "t_max": cfg.flow.t_max,
    }
    for name, e in series.items():
        params = dict(base, series=name, lr=e["lr"] if e["lr"] is not None else 0.0)
        metrics = {
            "hp/final_loss": e.get("final_loss"),
            "hp/max_dist_to_flow": e.get("max_dist_to_flow"),
            "hp/wall_time_s": e.get("wall_time_s"),
            "hp/diverged": float(bool(e.get("diverged"))),
        }
        metrics = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        writer = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard" / name))
        for k, v in metrics.items():
            writer.add_scalar(k, v, step)
        fw = writer._get_file_writer()
        for s in hp_summary(params, metrics):
            fw.add_summary(s)
        writer.flush()
        writer.close()
