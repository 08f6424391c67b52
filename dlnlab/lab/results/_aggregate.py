"""Aggregate runs across seeds: a sweep's jobs, an ensemble's members, or both, setting by setting.

``aggregate_runs(roots)`` reads the runs under ``roots`` and returns an :class:`Aggregate`, in memory:
its typed rows (one per setting and series: the final loss, the largest distances to the flow and to
GD's modified flow, the plateau exit times of each mode, the convergence orders), each setting's
curves' statistics as arrays, and what was skipped. ``Aggregate.write(out)`` writes what
``scripts/aggregate.py`` writes: ``aggregate.json``, ``aggregate.csv`` and, per setting, its folder
(:func:`setting_folder` of its name and config) with ``setting.json``, one npz per series and ``loss.png``.

A *setting* is what a run ran, its config without the seeds (:mod:`dlnlab.lab.results._aggregate_collect`,
which also says what is skipped, and :mod:`dlnlab.lab.results._setting_config`); every member of every run of a setting is one *sample*; the statistics
and why they are what they are: :mod:`dlnlab.lab.results._aggregate_stats`. Reads only the run
directories' files; ``write`` writes all or nothing: into a temporary sibling of ``out``, renamed onto
it at the end (a failure part way leaves no ``out``, or the empty one given, as before the call).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dlnlab.errors import ArgumentError
from dlnlab.lab.results._aggregate_collect import Roots, Setting, collect, root_dirs
from dlnlab.lab.results._aggregate_figure import write_loss_figure
from dlnlab.lab.results._aggregate_records import AggregateRow, SeriesCurves, SettingAggregate
from dlnlab.lab.results._aggregate_stats import aggregate_setting
from dlnlab.lab.results._aggregate_text import csv_text, report
from dlnlab.rundir import save_npz, signals, write_json, write_text

__all__ = ["Aggregate", "NothingToAggregate", "aggregate_runs"]


class NothingToAggregate(ArgumentError):
    """No usable run or series under the roots: ``skipped`` lists what was found and why it is not used."""

    def __init__(self, message: str, skipped: list[str]) -> None:
        super().__init__("roots", message)
        self.skipped = skipped


@dataclass
class Aggregate:
    """Runs aggregated setting by setting, in memory: ``rows`` (one per setting and series, the settings in
    the order found, each one's series as a run orders them: the flow, then the learning rates from the
    largest down), ``settings`` (each one's name, config, runs, orders and curves'
    statistics) and ``skipped`` (a line per run or series left out, and why)."""

    rows: list[AggregateRow]
    settings: list[SettingAggregate]
    skipped: list[str]

    def setting(self, label: str | None = None) -> SettingAggregate:
        """The setting named ``label`` (as ``settings``, the rows and aggregate.json name it: its runs'
        overrides without the seeds, or its config's keys; may be left out when there is one setting)."""
        labels = [s.label for s in self.settings]
        if label is None and len(labels) != 1:
            raise ArgumentError("setting", f"needed with {len(labels)} settings; one of {labels}")
        for st in self.settings:
            if label is None or st.label == label:
                return st
        raise ArgumentError("setting", f"no setting {label!r}; the settings: {labels}")

    def row(self, series: str, setting: str | None = None) -> AggregateRow:
        """The row of ``series`` in ``setting`` (its name; may be left out when there is one setting)."""
        st = self.setting(setting)
        for r in self.rows:
            if r.setting == st.label and r.series == series:
                return r
        raise self._no_series(series, st)

    def curves(self, series: str, setting: str | None = None) -> SeriesCurves:
        """The curves' statistics of ``series`` in ``setting`` (its name; may be left out when there is one
        setting): ``t`` and, per curve, its mean, std, quantiles and ``n`` at each time."""
        st = self.setting(setting)
        if series not in st.curves:
            raise self._no_series(series, st)
        return st.curves[series]

    def _no_series(self, series: str, st: SettingAggregate) -> ArgumentError:
        names = sorted(r.series for r in self.rows if r.setting == st.label)
        return ArgumentError("series", f"no series {series!r} in setting {st.label!r}; its series: {names}")

    def to_dict(self) -> dict:
        """``aggregate.json``: the rows, the settings (name, folder, runs) and what was skipped."""
        return {"rows": [r.to_dict() for r in self.rows], "settings": [s.listing() for s in self.settings],
                "skipped": self.skipped}  # fmt: skip

    def csv(self) -> str:
        """``aggregate.csv``: one line per row, every number in full."""
        return csv_text(self.rows)

    def report(self) -> str:
        """The console's report: the settings' legend and the tables, every number to 4 digits."""
        return report(self.rows, self.settings, self.skipped)

    def write(self, out: str | Path) -> Path:
        """Write ``aggregate.json``, ``aggregate.csv`` and each setting's folder (``setting.json``, one npz
        per series, ``loss.png``) into ``out``, a new or empty directory (its parents made); returns it.
        A file there, or a directory that holds something, is refused (ArgumentError ``out``).

        All or nothing, as a run's files are each written under a temporary name and renamed: everything
        goes into ``.<out>.<pid>.tmp`` beside ``out``, renamed onto ``out`` at the end (``rename`` takes
        an empty directory's place), signals held meanwhile. It wrote file by file into ``out``: a
        failure part way (a full disk, a figure that cannot be drawn) left a directory that holds
        something, which the next ``write`` refuses; now it leaves ``out`` as it was."""
        out = Path(out)
        if os.path.lexists(out) and not out.is_dir():  # a file, or a link to none
            raise ArgumentError("out", f"{out} exists and is not a directory; give a new or empty directory")
        if out.is_dir() and any(out.iterdir()):
            raise ArgumentError(
                "out", f"{out} is not empty; give a new or empty directory (nothing is overwritten)"
            )
        target = Path(os.path.realpath(out)) if out.is_symlink() else out  # rename replaces no link's target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        if tmp.is_dir():  # left by a process of this id that was killed while writing
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            self._write_files(tmp)
            with signals.deferred():
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out

    def _write_files(self, out: Path) -> None:
        for st in self.settings:
            folder = out / st.folder
            folder.mkdir(exist_ok=True)
            for name, curves in st.curves.items():
                save_npz(folder / f"{name}.npz", **curves.to_npz())
            write_json(folder / "setting.json", st.to_dict())
            write_loss_figure(folder, st.label, st.curves, st.heavy_ball)
        write_json(out / "aggregate.json", self.to_dict())
        write_text(out / "aggregate.csv", self.csv())


def _aggregate_settings(settings: dict[str, Setting], skipped: Sequence[str] = ()) -> Aggregate:
    """The settings :func:`collect` gives (those with no usable series left out of the rows), in memory;
    ``skipped`` is ``collect``'s, to which each setting's skipped series are added."""
    rows, results = [], []
    for st in settings.values():
        if st.samples:
            result, setting_rows = aggregate_setting(st)
            results.append(result)
            rows += setting_rows
    every_skipped = [*skipped, *(line for st in settings.values() for line in st.skipped)]
    return Aggregate(rows, results, every_skipped)


def aggregate_runs(roots: Roots) -> Aggregate:
    """The runs under ``roots`` (a directory or several: run directories, sweeps, folders holding them)
    aggregated setting by setting, in memory: nothing is written (``write`` writes it). A root that is
    not a directory is an ArgumentError naming ``roots``; no usable run or series under them is
    :class:`NothingToAggregate` (an ArgumentError; its ``skipped`` says what was found and left out)."""
    roots = root_dirs(roots)
    settings, skipped = collect(roots)
    result = _aggregate_settings(settings, skipped)
    if not result.rows:
        names = ", ".join(map(str, roots))
        what = "no usable series" if settings else "no usable run directory (summary.json)"
        raise NothingToAggregate(f"{what} under {names}", result.skipped)
    return result
