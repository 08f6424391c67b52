"""The series of a run, computed the same way for every kind: one task per learning rate (the flow:
one), in the registry's order (:mod:`dlnlab.lab.runner._registry`).

:func:`run_series` owns the loop "one series per learning rate", the stage recorded in summary.json,
the resume policy of each kind (:class:`~dlnlab.lab.runner._kind.Resume`), the stop after a signal,
and where each series' entry and arrays go in the run's state. A kind only computes and records its
series from its task's inputs (:class:`~dlnlab.lab.runner._kind.SeriesTask`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from dlnlab.lab.results import RunState
from dlnlab.lab.runner._context import SeriesContext, SeriesTimes, at_series_grid
from dlnlab.lab.runner._kind import Resume, SeriesDone, SeriesKind, SeriesTask
from dlnlab.lab.runner._resume import Previous
from dlnlab.rundir import signals
from dlnlab.status import Status

__all__ = ["run_series", "tensorboard_runs"]


def tensorboard_runs(kinds: Sequence[SeriesKind], lrs) -> tuple[str, ...]:
    """The series with a TensorBoard run of their own, kind after kind."""
    return tuple(
        k.series_name(lr) for k in kinds if k.tensorboard_run for lr in (lrs if k.per_lr else (None,))
    )


def run_series(
    state: RunState,
    ctx: SeriesContext,
    previous: Previous | None,
    times: SeriesTimes,
    kinds: Sequence[SeriesKind],
) -> None:
    """Every series of every kind in ``kinds`` (the enabled ones, the flow first), until a signal; the
    recorders still working are waited for at the end, whatever happened."""
    done: dict[tuple[str, float | None], SeriesDone] = {}
    finishing: list[tuple[str, Callable[[], dict]]] = []
    try:
        for kind in kinds:
            for lr in state.plan.lrs if kind.per_lr else (None,):
                if state.interrupted:
                    break
                task = _task(kind, lr, times, done, state.n_grid)
                state.enter(task.name)
                out = _kept(state, kind, task, previous)
                if out is None:
                    out = kind.run(ctx, _resumed(state, kind, task, previous))
                done[kind.key, lr] = out
                state.series[task.name] = out.entry
                if out.arrays is not None:
                    state.arrays[task.name] = out.arrays
                elif out.finish is not None:
                    finishing.append((task.name, out.finish))
                state.interrupted |= (
                    out.entry["status"] == Status.INTERRUPTED or signals.received() is not None
                )
    finally:  # the recorders' workers computed the metrics meanwhile
        for name, finish in finishing:
            state.arrays[name] = finish()


def _task(kind: SeriesKind, lr, times: SeriesTimes, done: dict, n_grid: int) -> SeriesTask:
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


def _kept(
    state: RunState, kind: SeriesKind, task: SeriesTask, previous: Previous | None
) -> SeriesDone | None:
    """A resume, Resume.KEEP: the finished series as recorded (not run again)."""
    if previous is None or kind.resume is not Resume.KEEP or not previous.finished(task.name):
        return None
    state.resumed[-1]["series"][task.name] = "kept"
    return SeriesDone(previous.entry(task.name), arrays=previous.arrays[task.name])


def _resumed(state: RunState, kind: SeriesKind, task: SeriesTask, previous: Previous | None) -> SeriesTask:
    """A resume: a finished series to check (Resume.RECOMPUTE), or where an unfinished one continues
    (Resume.KEEP), and the resume record of every series computed again."""
    if previous is None:
        return task
    if kind.resume is Resume.RECOMPUTE and previous.finished(task.name):
        return replace(task, recorded=(previous.entry(task.name), previous.arrays[task.name]))
    continuation = kind.continuation(previous, task, state.plan) if kind.resume is Resume.KEEP else None
    state.resumed[-1]["series"][task.name] = previous.how(task.name, continuation is not None)
    state.write_summary()
    return replace(task, continuation=continuation)
