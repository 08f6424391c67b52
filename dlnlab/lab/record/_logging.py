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

What is logged (the tags of a block of metrics, the thinning of long series, the Custom Scalars
layout) is in :mod:`dlnlab.lab.record._tags`.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import math
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

__all__ = [
    "TensorBoardLogger",
    "make_logger",
    "is_tensorboard",
    "tf_record",
    "own_file",
    "fresh_copy",
    "writes_concurrently",
    "log_hparams",
    "log_text",
    "log_figure",
    "log_png",
    "log_layout",
]


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


try:  # a C crc32c: TensorBoard's own, without TensorFlow, is pure Python (0.2 ms per 1 kB record)
    from google_crc32c import value as _crc32c
except ImportError:  # pragma: no cover - correct, only slower
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as _crc32c


def tf_record(event) -> bytes:
    """An event as one record of an event file: TFRecord framing (length, masked crc32c, data, masked
    crc32c), as TensorBoard's own writer frames it."""
    import struct

    data = event.SerializeToString()
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))


class _ScalarEventFile:
    """An event file of scalar summaries, written synchronously in TFRecord framing (length, masked
    crc32c, data, masked crc32c), as TensorBoard's own writer does, but with a C crc32c and no writer
    thread. Measured for 3000 steps of 59 scalars: 0.75 s through torch's FileWriter, against the
    summaries' 0.13 s of serialising here; the crc is 1 ms of it."""

    def __init__(self, log_dir: str | Path, suffix: str = "scalars") -> None:
        import os
        import socket
        import time

        from tensorboard.compat.proto.event_pb2 import Event

        self._event, self._time = Event, time.time
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.{suffix}"
        self._file = open(Path(log_dir) / name, "ab")  # noqa: SIM115 - closed by close()
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        self._file.write(tf_record(event))

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

    @contextlib.contextmanager
    def own_file(self, suffix: str) -> Iterator[None]:
        """``log_metrics`` writes into an event file of its own (``events.out.tfevents.*.<suffix>``) meanwhile,
        not among the series' scalars: what a run logs once at its end (the HParams columns, the limit
        curves) can then be replaced by a resume, which removes the earlier run's file, so each step is
        there once."""
        scalars, self._scalars = self._scalars, _ScalarEventFile(self.log_dir, suffix)
        try:
            yield
        finally:
            self._scalars.close()
            self._scalars = scalars

    @rank_zero_only
    def log_hyperparams(self, params, metrics=None, step: int | None = None) -> None:
        """Lightning's, with its metrics (the HParams columns, ``hp/...``) in an event file of their own
        (suffix ``.hparams``, :meth:`own_file`), and a hyperparameter whose value is NaN declared but not
        given (:meth:`_log_declared`)."""
        with self.own_file("hparams"):
            if isinstance(params, dict) and metrics and any(_unset(v) for v in params.values()):
                self._log_declared(dict(params), metrics, step)
            else:
                super().log_hyperparams(params, metrics=metrics, step=step)

    def _log_declared(self, params: dict, metrics: dict, step: int | None) -> None:
        """Lightning's three hparams summaries, written as it writes them, with the NaN-valued
        hyperparameters in the experiment summary (a number column) and not in the run's values (an
        empty cell). TensorBoard's HParams table takes its columns, their names and types, from the
        experiment summary of one run, the first it lists (``backend_context._find_experiment_tag``):
        a column that run lacks is in no row. So every job of a sweep declares the same columns, the
        ``null`` of ``sgd.batch_size=null,5`` included; the value NaN itself is never written: protobuf's
        JSON cannot carry it, and the plugin's reply would fail."""
        from torch.utils.tensorboard.summary import hparams

        self.hparams.update(params)  # Lightning's hparams.yaml
        self.log_metrics(metrics, step)
        experiment, _, _ = hparams(params, metrics)
        _, start, end = hparams({k: v for k, v in params.items() if not _unset(v)}, metrics)
        writer = self.experiment._get_file_writer()  # as Lightning's log_hyperparams writes them
        for summary in (experiment, start, end):
            writer.add_summary(summary, step)

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


def _unset(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def own_file(logger, suffix: str):
    """:meth:`TensorBoardLogger.own_file` for this lab's TensorBoard logger; for any other logger
    (CSV, a user's), nothing: it logs as usual."""
    return logger.own_file(suffix) if isinstance(logger, TensorBoardLogger) else contextlib.nullcontext()


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


def is_tensorboard(logger_cfg: Mapping | None) -> bool:
    """Whether a logger config (``_target_`` + options) makes a TensorBoard logger (Lightning's or a
    subclass, this lab's :class:`TensorBoardLogger` included)."""
    if not logger_cfg or logger_cfg.get("_target_") is None:
        return False
    from hydra.utils import get_class

    return issubclass(get_class(logger_cfg["_target_"]), LightningTensorBoardLogger)


def fresh_copy(logger: Logger | None) -> Logger | None:
    """The same logger without its open writer (Lightning's loggers drop it when pickled): for a forked
    worker, which must open its own (a writer's background thread does not survive a fork)."""
    return None if logger is None else pickle.loads(pickle.dumps(logger))


def writes_concurrently(logger: Logger | None) -> bool:
    """Whether a second writer may log into the same series at once: TensorBoard gives each writer its
    own event file; a CSVLogger deletes the metrics.csv it finds when it opens (so only one may)."""
    return isinstance(logger, LightningTensorBoardLogger)


def log_hparams(logger: Logger | None, params: dict, metrics: dict[str, float], step: int = 0) -> None:
    """HParams with their metrics (TensorBoard's HParams tab); other loggers get both as they can. A
    hyperparameter of value NaN is a number column without a value (TensorBoard: its cell empty)."""
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
