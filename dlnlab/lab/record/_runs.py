"""A run's TensorBoard runs: the order TensorBoard colours them in, and the report's run.

TensorBoard gives its runs the colours of its palette in the order of its run list, ``/data/runs``,
which sorts the runs by their start times, ties by name (``_serve_runs`` in
tensorboard/plugins/core/core_plugin.py; the Custom Scalars charts colour by that list:
``runsColorScale`` in tensorboard/components/tf_color_scale/colorScale.ts). A run's start time is the
earliest wall time of its events with the Rust data server (``--load_fast=auto``, the default;
``read_event`` in tensorboard/data/server/run.rs), and the wall time of the first event of its event
file whose name sorts first with the Python loader (``--load_fast=false``;
``_ProcessEvent`` in tensorboard/backend/event_processing/plugin_event_accumulator.py, whose directory
watcher reads a run's files in name order).

The series' own events are no order: parallel series start when their worker does, and a resume
removes a series' earlier events when it runs the series again from its start. So each run gets one
event file of its own, :data:`ORDER_FILE`, whose name sorts first and whose one event carries a set
wall time: the runs' in order, before every other event of the run directory. A resume keeps the
files (``dlnlab.lab.runner._resume`` leaves them out of the events it may remove) and writes them
again only when one is missing (a run made before them): then before every event already there.

The order puts the report's run (:data:`REPORT_RUN`: what belongs to the whole run, not to one series:
the figures as images, the summary's texts; no scalars) at the palette position of a run that draws no
lines (``dlnlab.plots.NO_LINES_POSITION``): TensorBoard's red, close to the flow's orange, goes to it,
and the learning rates get the colours the figures give them. It holds the summary's texts in every
run (``log.figures=false`` too), so the run TensorBoard lists there is never empty once a run has ended.

A run made before that run was named ``report`` had it as ``figures``, with the figures alone (the
summary's texts were in the flow's run): its folder is renamed (:func:`_adopt_older_report_run`), its
order file with it, so its place in the order holds, and no empty ``figures`` run is left listed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dlnlab.rundir import write_bytes

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

# Lightning, TensorBoard and matplotlib are imported where used: the driver imports ORDER_FILE (through
# the resume) before it refuses a config, which must not import Lightning (tests/test_readme.py)

__all__ = ["REPORT_RUN", "ORDER_FILE", "tensorboard_order", "order_runs", "figures_logger", "text_logger"]

REPORT_RUN = "report"
OLDER_REPORT_RUN = "figures"  # its name in runs made before 2026-12-08 (the figures alone)
# "events.out.tfevents.<seconds>...": every other event file's name carries the time it was made, whose
# first digit is 1 until the year 2286, so this name sorts first
ORDER_FILE = "events.out.tfevents.0.order"
SPACING_S = 1e-3  # between two runs' start times: 4 ulps of a wall time of today, whose ulp is 2.4e-7 s
MARGIN_S = 1.0  # the last run's start before the earliest other event


def tensorboard_order(series_runs: Sequence[str]) -> tuple[str, ...]:
    """The TensorBoard runs in the order TensorBoard colours them: the series' runs (the flow, then the
    learning rates from the largest down) with the report's run at the palette's place for a run
    without lines (third: after the flow and the largest learning rate)."""
    from dlnlab.plots import NO_LINES_POSITION

    runs = list(series_runs)
    runs.insert(min(NO_LINES_POSITION, len(runs)), REPORT_RUN)
    return tuple(runs)


def order_runs(run_dir: Path, logger_cfg: Mapping | None, series_runs: Sequence[str]) -> None:
    """Each TensorBoard run's :data:`ORDER_FILE`, when the run's logger is TensorBoard's and a run lacks
    one (all present: a resume's, kept as they are)."""
    from dlnlab.lab.record._logging import is_tensorboard, tf_record

    if not is_tensorboard(logger_cfg):
        return
    log_dir = Path(run_dir) / "tensorboard"
    _adopt_older_report_run(log_dir)  # a resume of a run made before: its order file kept, renamed
    paths = [log_dir / name / ORDER_FILE for name in tensorboard_order(series_runs)]
    if all(p.is_file() for p in paths):
        return
    start = min([time.time(), *(_first_wall_time(p) for p in log_dir.glob("*/*tfevents*"))])
    from tensorboard.compat.proto.event_pb2 import Event

    for i, path in enumerate(paths):
        wall_time = start - MARGIN_S - (len(paths) - 1 - i) * SPACING_S
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, tf_record(Event(wall_time=wall_time, file_version="brain.Event:2")))


def _first_wall_time(path: Path) -> float:
    """The wall time of an event file's first event (its earliest: a writer appends them as they come),
    or infinity for a file without one (empty, damaged)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    try:
        return next(iter(EventFileLoader(str(path)).Load())).wall_time
    except Exception:  # noqa: BLE001 - no readable event: it moves no run's start
        return float("inf")


def _adopt_older_report_run(log_dir: Path) -> None:
    """A run made before the report's run was named :data:`REPORT_RUN`: its folder
    :data:`OLDER_REPORT_RUN` renamed, order file and images with it (its place in the order, so the
    colours, hold). Where both are there, the older one's order file and images go (they would list an
    empty run, or show the figures twice), and its folder with them."""
    older, report = log_dir / OLDER_REPORT_RUN, log_dir / REPORT_RUN
    if not older.is_dir():
        return
    if not report.exists():
        older.rename(report)
        return
    for path in [older / ORDER_FILE, older / "hparams.yaml", *older.glob("events.out.tfevents.*.figures")]:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else is in it: left
        older.rmdir()


def figures_logger(run_dir: Path, logger_cfg: Mapping | None) -> Logger | None:
    """The logger of a run's figures: the TensorBoard run :data:`REPORT_RUN`, in event files of their
    own (suffix ``.figures``) that replace the previous ones, so remaking the figures never stacks
    copies (a run made before had them in the flow's run, or in the run ``figures``: those go too).
    None when the run's logger is not TensorBoard."""
    return _report_logger(run_dir, logger_cfg, "figures", older_runs=("flow",))


def text_logger(run_dir: Path, logger_cfg: Mapping | None) -> Logger | None:
    """The logger of the run's summary texts (the Text tab's ``summary/...``): the TensorBoard run
    :data:`REPORT_RUN`, in an event file of its own (suffix ``.text``) that replaces the previous one
    (a resume also removes it before its end: ``dlnlab.lab.runner._resume``). None when the run's
    logger is not TensorBoard."""
    return _report_logger(run_dir, logger_cfg, "text", older_runs=())


def _report_logger(run_dir: Path, logger_cfg: Mapping | None, suffix: str, older_runs: tuple[str, ...]):
    from dlnlab.lab.record._logging import is_tensorboard, make_logger

    if not is_tensorboard(logger_cfg):
        return None
    log_dir = Path(run_dir) / "tensorboard"
    _adopt_older_report_run(log_dir)
    for name in (REPORT_RUN, *older_runs):
        for old in (log_dir / name).glob(f"events.out.tfevents.*.{suffix}"):
            old.unlink()
    return make_logger(logger_cfg, run_dir, REPORT_RUN, filename_suffix=f".{suffix}")
