"""A run's TensorBoard runs: the order TensorBoard colours them in, and the figures' run.

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

The order puts the figures' run (images only, no scalars: :data:`FIGURES_RUN`) at the palette position
of a run that draws no lines (``dlnlab.plots.NO_LINES_POSITION``): TensorBoard's red, close to the
flow's orange, goes to it, and the learning rates get the colours the figures give them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dlnlab.rundir import write_bytes

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

# Lightning, TensorBoard and matplotlib are imported where used: the driver imports ORDER_FILE (through
# the resume) before it refuses a config, which must not import Lightning (tests/test_readme.py)

__all__ = ["FIGURES_RUN", "ORDER_FILE", "tensorboard_order", "order_runs", "figures_logger"]

FIGURES_RUN = "figures"
# "events.out.tfevents.<seconds>...": every other event file's name carries the time it was made, whose
# first digit is 1 until the year 2286, so this name sorts first
ORDER_FILE = "events.out.tfevents.0.order"
SPACING_S = 1e-3  # between two runs' start times: 4 ulps of a wall time of today, whose ulp is 2.4e-7 s
MARGIN_S = 1.0  # the last run's start before the earliest other event


def tensorboard_order(series_runs: Sequence[str]) -> tuple[str, ...]:
    """The TensorBoard runs in the order TensorBoard colours them: the series' runs (the flow, then the
    learning rates from the largest down) with the figures' run at the palette's place for a run
    without lines (third: after the flow and the largest learning rate)."""
    from dlnlab.plots import NO_LINES_POSITION

    runs = list(series_runs)
    runs.insert(min(NO_LINES_POSITION, len(runs)), FIGURES_RUN)
    return tuple(runs)


def order_runs(run_dir: Path, logger_cfg: Mapping | None, series_runs: Sequence[str]) -> None:
    """Each TensorBoard run's :data:`ORDER_FILE`, when the run's logger is TensorBoard's and a run lacks
    one (all present: a resume's, kept as they are)."""
    from dlnlab.lab.record._logging import is_tensorboard, tf_record

    if not is_tensorboard(logger_cfg):
        return
    log_dir = Path(run_dir) / "tensorboard"
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


def figures_logger(run_dir: Path, logger_cfg: Mapping | None) -> Logger | None:
    """The logger of a run's figures: the TensorBoard run :data:`FIGURES_RUN`, in event files of their
    own (suffix ``.figures``) that replace the previous ones, so remaking the figures never stacks
    copies (a run made before that run had them in the flow's: those go too). None when the run's
    logger is not TensorBoard."""
    from dlnlab.lab.record._logging import is_tensorboard, make_logger

    if not is_tensorboard(logger_cfg):
        return None
    for name in (FIGURES_RUN, "flow"):
        for old in (Path(run_dir) / "tensorboard" / name).glob("events.out.tfevents.*.figures"):
            old.unlink()
    return make_logger(logger_cfg, run_dir, FIGURES_RUN, filename_suffix=".figures")
