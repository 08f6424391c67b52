"""The series of a run, computed the same way for every kind: one task per learning rate (the flow:
one), in the registry's order (:mod:`dlnlab.lab.runner._registry`).

:func:`run_series` owns the loop "one series per learning rate", the stage recorded in summary.json,
the resume policy of each kind (:class:`~dlnlab.lab.runner._kind.Resume`), the stop after a signal,
and where each series' entry and arrays go in the run's state. A kind only computes and records its
series from its task's inputs (:class:`~dlnlab.lab.runner._kind.SeriesTask`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dlnlab.lab.results import RunState
from dlnlab.lab.runner._context import SeriesContext
from dlnlab.lab.runner._kind import SeriesDone, SeriesKind
from dlnlab.lab.runner._resume import Previous
from dlnlab.lab.runner._tasks import resume_step, task_of
from dlnlab.lab.runner._times import SeriesTimes
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
    workers: int = 1,
) -> None:
    """Every series of every kind in ``kinds`` (the enabled ones, the flow first), until a signal; the
    recorders still working are waited for at the end, whatever happened. ``workers`` > 1: after the
    flow, each learning rate's series run in a worker process of their own, that many at once
    (:mod:`dlnlab.lab.runner._parallel`); their files and entries are those of ``workers=1``."""
    done: dict[tuple[str, float | None], SeriesDone] = {}
    finishing: list[tuple[str, Callable[[], dict]]] = []
    first = [k for k in kinds if not k.per_lr]  # the flow: every other series needs it
    later = [k for k in kinds if k.per_lr]
    try:
        for kind in first:
            _run_one(state, ctx, previous, times, kind, None, done, finishing)
        if workers > 1 and len(state.plan.lrs) > 1 and not state.interrupted:
            from dlnlab.lab.runner._parallel import run_units

            def meanwhile() -> None:  # the driver's idle time while the first units run
                while finishing:  # the flow's metrics: its arrays ready for the analysis
                    name, finish = finishing.pop(0)
                    state.arrays[name] = finish()
                _warm_the_end(state.plan)

            run_units(state, ctx, previous, times, later, done, workers, meanwhile=meanwhile)
        else:
            for kind in later:
                for lr in state.plan.lrs:
                    _run_one(state, ctx, previous, times, kind, lr, done, finishing)
    finally:  # the recorders' workers computed the metrics meanwhile
        for name, finish in finishing:
            state.arrays[name] = finish()
    order = [k.series_name(lr) for k in kinds for lr in (state.plan.lrs if k.per_lr else (None,))]
    # the kinds' order, however run (the arrays: serial runs added a recorder's arrays when it finished)
    state.series = {n: state.series[n] for n in order if n in state.series}
    state.arrays = {n: state.arrays[n] for n in order if n in state.arrays}


def _run_one(
    state: RunState,
    ctx: SeriesContext,
    previous: Previous | None,
    times: SeriesTimes,
    kind: SeriesKind,
    lr: float | None,
    done: dict,
    finishing: list,
) -> None:
    """One series in this process: its stage in summary.json, its resume step, its outcome stored."""
    if state.interrupted:
        return
    task = task_of(kind, lr, times, done, state.n_grid)
    state.enter(task.name)
    step = resume_step(kind, task, previous, state.plan)
    if step.note is not None:
        state.resumed[-1]["series"][task.name] = step.note
        if step.kept is None:
            state.write_summary()
    out = step.kept if step.kept is not None else kind.run(ctx, step.apply(task))
    done[kind.key, lr] = out
    state.series[task.name] = out.entry
    if out.arrays is not None:
        state.arrays[task.name] = out.arrays
    elif out.finish is not None:
        finishing.append((task.name, out.finish))
    state.interrupted |= out.entry["status"] == Status.INTERRUPTED or signals.received() is not None


def _warm_the_end(plan) -> None:
    """Import what the end of the run needs (matplotlib and the figures: 1 to 4 s here, the largest part
    of the figures' time), while the driver only waits for its workers."""
    if plan.cfg.log.figures:
        import dlnlab.plots  # noqa: F401
