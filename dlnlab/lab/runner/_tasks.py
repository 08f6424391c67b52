"""A series' task and what a resume does with it, decided alike by the serial loop
(:mod:`dlnlab.lab.runner._series`) and the driver of the worker processes (:mod:`dlnlab.lab.runner._parallel`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from dlnlab.lab.runner._kind import Resume, SeriesDone, SeriesKind, SeriesTask
from dlnlab.lab.runner._resume import Continuation, Previous
from dlnlab.lab.runner._times import SeriesTimes, at_series_grid

__all__ = ["task_of", "ResumeStep", "resume_step", "NOT_STARTED"]

# the resume record of a series whose run the resume decided but never started (it stopped first)
NOT_STARTED = "not run: the resume stopped before it"


def task_of(kind: SeriesKind, lr, times: SeriesTimes, done: dict, n_grid: int) -> SeriesTask:
    """A task's inputs: the times, the flow's entry, and the states of the kinds it needs at its lr."""
    name = kind.series_name(lr)
    if lr is None:
        return SeriesTask(kind.key, name, None, times.grid, times.all_t)
    lr_times = times.by_lr[lr]
    given = {}
    for need in kind.needs:
        out = done.get((need, lr)) or done.get((need, None))
        if out is not None and out.states is not None:
            given[need] = at_series_grid(out.states, out.states_at, lr_times, n_grid)
    flow = done.get(("flow", None))
    return SeriesTask(
        kind.key, name, lr, times.grid, times.solve_at(lr), lr_times, flow.entry if flow else None, given
    )


@dataclass(frozen=True)
class ResumeStep:
    """What a resume does with one series, decided from the interrupted run's files alone (so that the
    driver can decide it before handing the series to a worker): keep it as recorded (``kept``), or run
    it with ``recorded`` (Resume.RECOMPUTE: a finished series to check) or ``continuation`` (Resume.KEEP:
    where an interrupted one continues); ``note`` is its resume record (``resumed[-1].series``)."""

    kept: SeriesDone | None = None
    recorded: tuple[dict, dict] | None = None
    continuation: Continuation | None = None
    note: str | None = None

    def not_started(self) -> str | None:
        """The record of a series the resume was to run (or continue) but stopped before (a signal ended
        the run while the units before it ran): not run, and what it was to do, which the next resume
        decides again from the same files. None for a kept series: its recorded entry stays, as planned."""
        if self.note is None or self.kept is not None:
            return None
        return f"{NOT_STARTED} (planned: {self.note})"

    def apply(self, task: SeriesTask) -> SeriesTask:
        if self.recorded is None and self.continuation is None:
            return task
        return replace(task, recorded=self.recorded, continuation=self.continuation)


def resume_step(kind: SeriesKind, task: SeriesTask, previous: Previous | None, plan) -> ResumeStep:
    """A fresh run: run the series. A resume: the kind's :class:`Resume` policy for this series."""
    if previous is None:
        return ResumeStep()
    finished = previous.finished(task.name)
    if kind.resume is Resume.KEEP and finished:  # the finished series as recorded (not run again)
        return ResumeStep(
            kept=SeriesDone(previous.entry(task.name), arrays=previous.arrays[task.name]), note="kept"
        )
    if kind.resume is Resume.RECOMPUTE and finished:
        return ResumeStep(recorded=(previous.entry(task.name), previous.arrays[task.name]))
    continuation = kind.continuation(previous, task, plan) if kind.resume is Resume.KEEP else None
    if continuation is None:  # run from its start: its earlier TensorBoard events would be there twice
        previous.drop_events(task.name)
    return ResumeStep(continuation=continuation, note=previous.how(task.name, continuation is not None))
