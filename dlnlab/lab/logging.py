"""The one path to the logger: every series (the flow and each SGD rate) logs through a Lightning logger.

The logger is chosen in the config (``logger=tensorboard``, ``logger=csv``, or any Lightning logger
through Hydra's ``instantiate``); :func:`make_logger` builds one per series, writing into
``<run>/tensorboard/<series>/`` (CSV: ``<run>/csv/<series>/``). The default is
:class:`TensorBoardLogger`, Lightning's own with one change: ``log_metrics`` writes all the scalars
of a step as one event. Lightning's writes one event per scalar through ``add_scalar``, which measured
10.9 s for 3000 steps of 40 scalars here, against 0.79 s for one event per step; a default run logs
4 series x 3001 steps x ~60 scalars. Text, figures, the custom-scalars layout and hparams go through
the same logger (TensorBoard only; other loggers skip what they cannot show). The scalars are written
in an event file of their own, with a C crc32c (google-crc32c): TensorBoard's writer, without
TensorFlow, computes the crc in pure Python and took 0.75 s of the 0.88 s for 3000 steps of 59 scalars.

Steps: TensorBoard's x axis is an integer step; every series logs at step = grid index m = t / dt,
so all series overlay and t is read off as m * dt (the charts' titles say the dt). Up to
``log.tb_max_points`` grid points each is written; above, :class:`Thinner` keeps each bucket's minimum
and maximum of every tag, so each curve's extremes in TensorBoard are those of the series npz.
"""

from __future__ import annotations

import inspect
import io
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

__all__ = [
    "TensorBoardLogger",
    "make_logger",
    "figures_logger",
    "fresh_copy",
    "writes_concurrently",
    "log_hparams",
    "log_text",
    "log_figure",
    "log_png",
    "log_layout",
    "series_tags",
    "Thinner",
    "tensorboard_layout",
]


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


try:  # a C crc32c: TensorBoard's own, without TensorFlow, is pure Python (0.2 ms per 1 kB record)
    from google_crc32c import value as _crc32c
except ImportError:  # pragma: no cover - correct, only slower
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as _crc32c


class _ScalarEventFile:
    """An event file of scalar summaries, written synchronously in TFRecord framing (length, masked
    crc32c, data, masked crc32c), as TensorBoard's own writer does, but with a C crc32c and no writer
    thread. Measured for 3000 steps of 59 scalars: 0.75 s through torch's FileWriter, against the
    summaries' 0.13 s of serialising here; the crc is 1 ms of it."""

    def __init__(self, log_dir: str | Path) -> None:
        import os
        import socket
        import time

        from tensorboard.compat.proto.event_pb2 import Event

        self._event, self._time = Event, time.time
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.scalars"
        self._file = open(Path(log_dir) / name, "ab")  # noqa: SIM115 - closed by close()
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        import struct

        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self._file.write(
            header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))
        )

    def add(self, summary, step: int | None) -> None:
        self._write(self._event(wall_time=self._time(), step=step or 0, summary=summary))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger whose ``log_metrics`` writes a step's scalars as one event, into an
    event file of its own (:class:`_ScalarEventFile`); text, figures, hparams and layouts go through
    Lightning's ``experiment`` as usual."""

    def __init__(self, save_dir, name: str | None = "", version=None, **kwargs: Any) -> None:
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(save_dir, name=name, version=version, **kwargs)
        self._scalars: _ScalarEventFile | None = None
        self._templates: dict = {}

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_scalars"], state["_templates"] = None, {}  # a file handle: a copy opens its own
        return state

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        items = []
        for k, v in metrics.items():
            v = float(v.item() if hasattr(v, "item") else v)
            if math.isfinite(v):  # TensorBoard draws NaN as a gap anyway; skip it
                items.append((f"{self._prefix}{k}" if self._prefix else k, v))
        if not items:
            return
        tags = tuple(t for t, _ in items)
        summary = self._templates.get(tags)
        if summary is None:  # one Summary per set of tags, refilled: building it is most of the cost
            summary = self._templates[tags] = Summary(
                value=[Summary.Value(tag=t, simple_value=0.0) for t in tags]
            )
        for value, (_, v) in zip(summary.value, items):
            value.simple_value = v
        if self._scalars is None:
            self._scalars = _ScalarEventFile(self.log_dir)
        self._scalars.add(summary, step)

    @rank_zero_only
    def save(self) -> None:
        super().save()
        if self._scalars is not None:
            self._scalars.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._scalars is not None:
            self._scalars.close()
            self._scalars = None


def _kwargs_for(target: Any, save_dir: Path, series: str) -> dict:
    """save_dir / name / version for a Lightning logger class, by what its constructor takes."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        params = {}
    kw: dict[str, Any] = {}
    if "save_dir" in params:
        kw["save_dir"] = str(save_dir)
    if "version" in params:  # TensorBoard, CSV: <save_dir>/<name>/<version>
        kw.update(name="", version=series)
    elif "name" in params:  # W&B: the run's name
        kw["name"] = series
    elif "run_name" in params:  # MLflow
        kw["run_name"] = series
    return kw


def make_logger(logger_cfg: Mapping | None, run_dir: Path, series: str, **extra: Any) -> Logger | None:
    """The logger of one series from the config (``_target_`` + options), or None for ``logger=null``."""
    if not logger_cfg or logger_cfg.get("_target_") is None:  # logger=none (or ~logger)
        return None
    from hydra.utils import get_class, instantiate

    target = get_class(logger_cfg["_target_"])
    sub = (
        "tensorboard"
        if issubclass(target, LightningTensorBoardLogger)
        else target.__name__.lower().removesuffix("logger")
    )
    kw = _kwargs_for(target, Path(run_dir) / sub, series)
    kw = {k: v for k, v in kw.items() if k not in logger_cfg} | extra
    return instantiate(dict(logger_cfg), **kw)


def figures_logger(run_dir: Path, logger_cfg: Mapping | None) -> Logger | None:
    """The logger of a run's figures: the ``flow`` run's TensorBoard, in event files of their own
    (suffix ``.figures``) that replace the previous ones, so remaking the figures never stacks copies.
    None when the run's logger is not TensorBoard."""
    if not logger_cfg or logger_cfg.get("_target_") is None:
        return None
    from hydra.utils import get_class

    if not issubclass(get_class(logger_cfg["_target_"]), LightningTensorBoardLogger):
        return None
    log_dir = Path(run_dir) / "tensorboard" / "flow"
    for old in log_dir.glob("events.out.tfevents.*.figures"):
        old.unlink()
    return make_logger(logger_cfg, run_dir, "flow", filename_suffix=".figures")


def fresh_copy(logger: Logger | None) -> Logger | None:
    """The same logger without its open writer (Lightning's loggers drop it when pickled): for a forked
    worker, which must open its own (a writer's background thread does not survive a fork)."""
    return None if logger is None else pickle.loads(pickle.dumps(logger))


def writes_concurrently(logger: Logger | None) -> bool:
    """Whether a second writer may log into the same series at once: TensorBoard gives each writer its
    own event file; a CSVLogger deletes the metrics.csv it finds when it opens (so only one may)."""
    return isinstance(logger, LightningTensorBoardLogger)


def log_hparams(logger: Logger | None, params: dict, metrics: dict[str, float], step: int = 0) -> None:
    """HParams with their metrics (TensorBoard's HParams tab); other loggers get both as they can."""
    if logger is None:
        return
    if isinstance(logger, LightningTensorBoardLogger):
        logger.log_hyperparams(params, metrics=metrics, step=step)
    else:
        logger.log_hyperparams(params)
        logger.log_metrics(metrics, step=step)


def _experiment(logger: Logger | None, method: str):
    exp = getattr(logger, "experiment", None) if isinstance(logger, LightningTensorBoardLogger) else None
    return None if exp is None or not hasattr(exp, method) else exp


def log_text(logger: Logger | None, tag: str, text: str, step: int = 0) -> None:
    exp = _experiment(logger, "add_text")
    if exp is not None:
        exp.add_text(tag, text, step)


def log_figure(logger: Logger | None, tag: str, figure, step: int = 0, dpi: int = 200) -> None:
    """A matplotlib figure as an image, rendered at ``dpi`` (the PNGs' resolution)."""
    exp = _experiment(logger, "add_figure")
    if exp is not None:
        old = figure.dpi
        figure.set_dpi(dpi)
        try:
            exp.add_figure(tag, figure, step, close=False)
        finally:
            figure.set_dpi(old)


def log_png(logger: Logger | None, tag: str, png: bytes, step: int = 0) -> None:
    """A rendered PNG (a figure's file) as an image: decoded, not drawn again."""
    exp = _experiment(logger, "add_image")
    if exp is not None:
        from matplotlib.image import imread

        exp.add_image(tag, imread(io.BytesIO(png), format="png"), step, dataformats="HWC")


def log_layout(logger: Logger | None, layout: dict) -> None:
    exp = _experiment(logger, "add_custom_scalars")
    if exp is not None:
        exp.add_custom_scalars(layout)


def _log10(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(np.abs(np.asarray(x, dtype=np.float64)))


ENSEMBLE_STATS = {"min": 0.0, "q25": 0.25, "median": 0.5, "q75": 0.75, "max": 1.0}


def series_tags(
    block: Mapping[str, np.ndarray], sgd: bool, lr: float | None = None, members: int | None = None
) -> list[dict[str, float]]:
    """One {tag: value} per row of a metrics block (the same tag names in every series).

    Quantities that span many decades also go in as ``log10/<name>`` (log10 of the absolute value),
    so that their charts read on a log scale. An ensemble's block ((K, E, ...) arrays) gives, per tag,
    the members' mean under the tag's own name and its spread as ``<tag>@min``, ``@q25``, ``@median``,
    ``@q75``, ``@max`` (the charts overlay them; members that are not finite are left out).
    """
    if members:
        return _ensemble_tags(block, sgd, lr, members)
    tags, table = _tag_table(block, sgd, lr)
    return [{t: v for t, v in zip(tags, row) if math.isfinite(v)} for row in table.tolist()]


def _ensemble_tags(block: Mapping[str, np.ndarray], sgd: bool, lr: float | None, members: int):
    k = len(block["t"])
    flat = {
        key: np.repeat(v, members, axis=0)
        if key in ("t", "grid_index", "step")
        else v.reshape(k * members, *v.shape[2:])
        for key, v in block.items()
        if key not in ("theta", "theta_sub", "theta_grid_index")
    }
    tags, table = _tag_table(flat, sgd, lr)
    table = table.reshape(k, members, len(tags))
    stats = {"": _nanmean(table)} | {f"@{name}": v for name, v in zip(ENSEMBLE_STATS, _nanquantiles(table))}
    rows = []
    for i in range(k):
        row = {}
        for suffix, values in stats.items():
            row |= {t + suffix: v for t, v in zip(tags, values[i].tolist()) if math.isfinite(v)}
        rows.append(row)
    return rows


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of the finite entries (NaN where there are none)."""
    ok = np.isfinite(x)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, x, 0.0).sum(axis=1) / n, np.nan)


def _nanquantiles(x: np.ndarray) -> list[np.ndarray]:
    """``ENSEMBLE_STATS`` quantiles over axis 1 of the finite entries, by one sort (np.nanquantile per
    quantile took 2.8 s for 201 points of 64 members and 62 tags; this takes a tenth of that)."""
    x = np.where(np.isfinite(x), x, np.nan)
    srt = np.sort(x, axis=1)  # NaN last
    n = np.isfinite(x).sum(axis=1)
    out = []
    for q in ENSEMBLE_STATS.values():
        pos = q * np.maximum(n - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        a = np.take_along_axis(srt, lo[:, None, :], axis=1)[:, 0]
        b = np.take_along_axis(srt, hi[:, None, :], axis=1)[:, 0]
        out.append(np.where(n > 0, a + (pos - lo) * (b - a), np.nan))
    return out


def _tag_table(block: Mapping[str, np.ndarray], sgd: bool, lr: float | None) -> tuple[list[str], np.ndarray]:
    """The tag names and their values, one row per grid point."""
    cols: list[tuple[str, np.ndarray]] = [("loss", block["loss"]), ("time", block["t"])]
    cols += [(f"sv_P/{k}", block["sv"][:, k]) for k in range(block["sv"].shape[1])]
    cols += [(f"sv_A/{k}", block["sv_A"][:, k]) for k in range(block["sv_A"].shape[1])]
    cols += [
        (f"mode_strength/{k}", block["mode_strength"][:, k]) for k in range(block["mode_strength"].shape[1])
    ]
    cols += [
        ("saddle/grad_norm", block["grad_norm"]),
        ("saddle/level", block["level_index"]),
        ("saddle/level_gap", block["level_gap"]),
        ("saddle/dist_best_rank", block["dist_best_rank"]),
        ("curvature/lambda_min", block["lambda_min"]),
        ("curvature/sharpness", block["sharpness"]),
        ("log10/loss", _log10(block["loss"])),
        ("log10/grad_norm", _log10(block["grad_norm"])),
        ("log10/level_gap", _log10(block["level_gap"])),
    ]
    drift = block["cons_drift"]
    for j in range(drift.shape[1]):
        cols += [(f"conservation/drift_{j + 1}", drift[:, j]), (f"log10/drift_{j + 1}", _log10(drift[:, j]))]
    if sgd:
        cols += [
            ("sgd/dist_to_flow", block["dist_to_flow"]),
            ("log10/dist_to_flow", _log10(block["dist_to_flow"])),
            ("sgd/step", block["step"]),
        ]
        if "dist_to_modified" in block:  # flow.modified: GD's distance to its modified flow
            cols += [
                ("sgd/dist_to_modified", block["dist_to_modified"]),
                ("log10/dist_to_modified", _log10(block["dist_to_modified"])),
            ]
        if lr is not None:  # 2/eta beside the sharpness, on the analysis grid only
            cols.append(("sgd/two_over_lr", np.where(np.isfinite(block["sharpness"]), 2.0 / lr, np.nan)))
    tags = [c[0] for c in cols]
    return tags, np.stack([np.asarray(c[1], dtype=np.float64) for c in cols], axis=1)


class Thinner:
    """Which rows of a series go to the logger: all of them up to ``max_points``; above, grid buckets of
    ``ceil(n_grid / (max_points / 2))`` points, of which each tag keeps its minimum and its maximum (and
    the first and the last point of the series keep every tag)."""

    def __init__(self, n_grid: int, max_points: int) -> None:
        self.n_grid = n_grid
        self.bucket = 1 if n_grid <= max_points else math.ceil(n_grid / max(1, max_points // 2))
        self._rows: list[tuple[int, dict[str, float]]] = []
        self._bucket_id: int | None = None

    def add(self, m: int, tags: dict[str, float]) -> list[tuple[int, dict[str, float]]]:
        """Buffer row m; returns the rows (step, tags) ready to log."""
        if self.bucket == 1:
            return [(m, tags)]
        out = []
        if self._bucket_id is not None and m // self.bucket != self._bucket_id:
            out = self.flush()
        self._bucket_id = m // self.bucket
        self._rows.append((m, tags))
        return out

    def flush(self) -> list[tuple[int, dict[str, float]]]:
        rows, self._rows = self._rows, []
        if not rows:
            return []
        keep: dict[int, dict[str, float]] = {}
        by_m = dict(rows)
        for tag in {t for _, r in rows for t in r}:
            have = [(r[tag], m) for m, r in rows if tag in r]
            for _, m in (min(have), max(have)):
                keep.setdefault(m, {})[tag] = by_m[m][tag]
        for m, r in rows:
            if m in (0, self.n_grid - 1):
                keep[m] = dict(r)
        return sorted(keep.items())


ENSEMBLE_BANDS = {  # the ensemble's charts: its median with the quartile band, and with the range band
    "log10 loss": "log10/loss",
    "log10 ||grad L||": "log10/grad_norm",
    "nearest plateau level r": "saddle/level",
    "log10 distance to the flow": "log10/dist_to_flow",
    "log10 conservation-law drift (j = 1)": "log10/drift_1",
    "Hessian lambda_min": "curvature/lambda_min",
}


def tensorboard_layout(dt: float, ensemble: bool = False) -> dict:
    """Custom-scalars layout: one chart per quantity with every series in it (runs merge in the plugin).

    An ensemble's charts show the members' mean; a category of its own shows, for the main quantities,
    the median with the quartiles and with the range as bands (TensorBoard's Margin charts)."""
    x = f"x: grid index m = t / {dt:g}"

    def chart(*tags: str) -> list:
        return ["Multiline", [f"^{t}$" for t in tags]]

    layout = _layout(x, chart)
    if ensemble:
        bands = {}
        for title, tag in ENSEMBLE_BANDS.items():
            bands[f"{title}: median, quartiles"] = ["Margin", [f"{tag}@median", f"{tag}@q25", f"{tag}@q75"]]
            bands[f"{title}: median, range"] = ["Margin", [f"{tag}@median", f"{tag}@min", f"{tag}@max"]]
        layout = {f"dlnlab ensemble: the members' spread ({x})": bands, **layout}  # first: what to look at
    return layout


def _layout(x: str, chart) -> dict:
    return {
        f"dlnlab ({x})": {
            "log10 loss": chart("log10/loss"),
            "loss": chart("loss"),
            "singular values of P": chart("sv_P/[0-9]+"),
            "singular values of A (top 8)": chart("sv_A/[0-7]"),
            "mode strengths u_k^T P v_k": chart("mode_strength/[0-9]+"),
            "log10 ||grad L||": chart("log10/grad_norm"),
            "log10 |L - L*_r| (nearest plateau level)": chart("log10/level_gap"),
            "nearest plateau level r": chart("saddle/level"),
            "modes learnt": chart("saddle/modes_learnt"),
            "saddle label (0 none, 1 strict, 2 non-strict, 3 inconclusive)": chart("saddle/label"),
            "distance to the best rank-r map": chart("saddle/dist_best_rank"),
            "Hessian lambda_min": chart("curvature/lambda_min"),
            "sharpness vs 2/eta": chart("curvature/sharpness", "sgd/two_over_lr"),
            "log10 conservation-law drift": chart("log10/drift_[0-9]+"),
            "log10 distance to the flow": chart("log10/dist_to_flow"),
            "log10 distance to GD's modified flow (flow.modified)": chart("log10/dist_to_modified"),
            "log10 strong error E||theta - theta_flow|| (ensemble.vary=sgd)": chart("log10/limit_strong"),
            "log10 weak error ||E theta - theta_flow|| (ensemble.vary=sgd)": chart("log10/limit_weak_theta"),
            "log10 weak error |E L - L_flow| (ensemble.vary=sgd)": chart("log10/limit_weak_loss"),
            "distance to the flow": chart("sgd/dist_to_flow"),
            "time t": chart("time"),
        },
        "dlnlab plateaus (x: mode index k)": {
            "plateau exit time t_exit (x: mode k)": chart("saddle/exit_time"),
            "plateau exit delay vs the flow (x: mode k)": chart("saddle/exit_delay"),
        },
        "dlnlab run": {
            "convergence order (slope of log max distance vs log lr)": chart("run/convergence_order"),
            "convergence order against GD's modified flows": chart("run/convergence_order_modified"),
            "GD stability threshold 2 / (h m_1^(2-2/h))": chart("run/gd_stability_threshold"),
        },
    }
