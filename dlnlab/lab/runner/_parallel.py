"""Series in worker processes (``run.workers``): after the flow, each learning rate is a unit of work -
its series of every per-lr kind, in the registry's order - run in a forked process of its own, at most
``workers`` units at once, the longest (the smallest learning rate: the most steps) first.

The driver keeps what only one process may do: summary.json (the stage lists the running units), the
resume records (each series' :class:`~dlnlab.lab.runner._tasks.ResumeStep` is decided here, before
the fork, from the interrupted run's files; a series no worker started is then recorded as not run),
the TensorBoard runs (opened in order before the first series, so their colours do not depend on which
unit ends first) and the signals. A worker computes
and records its series exactly as the serial loop does (the same kinds' ``run``, one torch thread), so
its files and entries are those of ``run.workers=1`` bit for bit (tests/test_parallel.py); it sends its
:class:`~dlnlab.lab.runner._kind.SeriesDone` (entry and arrays) back through a pipe when its unit ends.

Signals: SIGINT / SIGTERM sent to the run's process group reach every worker directly; one sent to the
driver alone is handed on to each running worker; one that a worker alone got stops the run the same
way (the driver notes it and hands it on). Each interrupted worker saves its running series as the
serial run does (npz written atomically, checkpoint kept) and reports it; no unit starts after a
signal; ``resume`` finishes the run.

Why forked processes of our own rather than ``concurrent.futures.ProcessPoolExecutor``: a unit's inputs
(the run's context with the user's callbacks and open loggers, the flow's states) reach the worker
through the fork, so nothing the user configured has to be picklable; a worker is signalled by its pid
and a pool worker killed by a signal breaks the whole pool (``BrokenProcessPool``), losing the other
units' results; a fresh process per unit carries no state (the callbacks', the signals') from one unit
to the next, as the serial loop carries none from one run to the next. A pool's reuse of processes
would save one fork per learning rate (about 10 ms here), nothing a unit of seconds notices.

Threads: a series worker runs one torch thread (as the serial run), and its recorder worker computes
the metrics beside it: two busy processes per unit. The BLAS thread pools (threadpoolctl) of each unit
get cores // (2 x workers), at least 1, so that the processes never ask for more threads than cores.
"""

from __future__ import annotations

import multiprocessing
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import wait

import torch

from dlnlab.lab.results import RunState
from dlnlab.lab.runner._context import SeriesContext
from dlnlab.lab.runner._fork import POLL_S, asked_workers, available_cores, can_fork, end_with_parent, kill
from dlnlab.lab.runner._kind import SeriesDone, SeriesKind
from dlnlab.lab.runner._resume import Previous
from dlnlab.lab.runner._tasks import ResumeStep, resume_step, task_of
from dlnlab.lab.runner._times import SeriesTimes
from dlnlab.rundir import signals
from dlnlab.status import Status

__all__ = ["available_cores", "series_workers", "run_units", "blas_threads"]


def series_workers(plan, ctx: SeriesContext) -> tuple[int, str]:
    """How many units run at once, and why: ``run.workers`` (null: the cores), at most one per learning
    rate; 1 where a worker cannot do what the serial loop does."""
    from dlnlab.lab.record import writes_concurrently

    n = asked_workers(plan.cfg)
    why = "run.workers" if plan.cfg.run.workers is not None else f"the {n} cores this process may use"
    if n > 1 and plan.cfg.device != "cpu":
        return 1, f"device={plan.cfg.device}: one process owns the device"
    if n > 1 and not can_fork():
        return 1, "no fork on this platform"
    loggers = [lg for lg in ctx.loggers.values() if lg is not None]
    if n > 1 and not all(writes_concurrently(lg) for lg in loggers):
        # a CSVLogger deletes the metrics.csv it finds when it opens: only one process may write a series'
        return 1, "the logger cannot be written by two processes (only TensorBoard's can)"
    return max(1, min(n, len(plan.lrs))), why


def blas_threads(workers: int, cores: int | None = None) -> int:
    """BLAS threads per unit: the cores shared by the units' two busy processes (series and recorder)."""
    return max(1, (cores or available_cores()) // (2 * workers))


@dataclass
class _Unit:
    lr: float
    names: list[str]
    slot: int  # its progress bar's line
    proc: multiprocessing.process.BaseProcess
    conn: object
    signalled: bool = False


def run_units(
    state: RunState,
    ctx: SeriesContext,
    previous: Previous | None,
    times: SeriesTimes,
    kinds: list[SeriesKind],
    done: dict,
    workers: int,
    meanwhile: Callable[[], None] | None = None,
) -> None:
    """Every learning rate's series (``kinds``, all per-lr) in at most ``workers`` processes at once;
    their entries and arrays go into ``state`` as each unit ends (the caller puts them in order).
    ``meanwhile`` is called once the first units run: work for the driver's idle time."""
    plan = state.plan
    steps = _resume_steps(state, kinds, times, done, previous)
    pending = sorted(plan.lrs, key=lambda lr: -times.by_lr[lr].steps[-1])  # the longest first
    running: dict[object, _Unit] = {}
    crash: str | None = None
    threads = blas_threads(workers)
    with signals.deferred(raise_at_end=False):  # a signal is noted, handed on, and ends the loop's starts
        while pending or running:
            while pending and len(running) < workers and not _stopping(state) and crash is None:
                free = min(set(range(workers)) - {u.slot for u in running.values()})
                others = list(running)  # the driver's ends of the running units' pipes: not the new one's
                unit = _start(
                    ctx, kinds, pending.pop(0), times, done, steps, state.n_grid, free, threads, others
                )
                running[unit.conn] = unit
                _stage(state, running)
            if not running:
                break
            if meanwhile is not None:
                meanwhile, work = None, meanwhile
                try:
                    work()
                except Exception:  # noqa: BLE001 - raised once the running units have ended
                    crash = traceback.format_exc()
            for conn in wait(list(running), timeout=POLL_S):
                unit = running.pop(conn)
                crash = _collect(state, unit, kinds) or crash
                if running:
                    _stage(state, running)
            sig = signals.received()
            for unit in running.values():
                if sig is not None and not unit.signalled:
                    unit.signalled = True
                    kill(unit.proc.pid, sig)
    _record_unstarted(state, kinds, steps)
    if crash is not None:
        raise RuntimeError(f"the series failed in a worker or in the driver:\n{crash}")


def _stopping(state: RunState) -> bool:
    return state.interrupted or signals.received() is not None


def _stage(state: RunState, running: dict) -> None:
    state.stage = " + ".join(n for u in running.values() for n in u.names)
    state.write_summary()


def _resume_steps(state, kinds, times, done, previous) -> dict[tuple[str, float], ResumeStep]:
    """Every series' resume step, decided before any worker starts, its record written once."""
    steps = {}
    for kind in kinds:  # the serial loop's order: kind after kind
        for lr in state.plan.lrs:
            task = task_of(kind, lr, times, done, state.n_grid)
            steps[kind.key, lr] = step = resume_step(kind, task, previous, state.plan)
            if step.note is not None:
                state.resumed[-1]["series"][task.name] = step.note
    if previous is not None:
        state.write_summary()
    return steps


def _record_unstarted(state: RunState, kinds: list[SeriesKind], steps: dict) -> None:
    """The resume records were decided before the fork: a series that never started (its unit not
    started after a signal, or behind an interrupted series in its unit) is recorded as not run, as the
    console's "not run" says, rather than as what it was to do."""
    for kind in kinds:
        for lr in state.plan.lrs:
            note = steps[kind.key, lr].not_started()
            name = kind.series_name(lr)
            if note is not None and name not in state.series:
                state.resumed[-1]["series"][name] = note


def _start(ctx, kinds, lr, times, done, steps, n_grid, slot, threads, others) -> _Unit:
    fork = multiprocessing.get_context("fork")
    receive, send = fork.Pipe(duplex=False)
    proc = fork.Process(
        target=_worker,
        args=(send, [receive, *others], ctx, kinds, lr, times, done, steps, n_grid, slot, threads),
        name=f"series-lr-{lr!r}",
    )  # fmt: skip  (not a daemon: its series' recorders are processes of its own)
    with signals.blocked_in_children():  # the worker installs its state before a signal can reach it
        proc.start()
    send.close()
    return _Unit(lr, [k.series_name(lr) for k in kinds], slot, proc, receive)


def _collect(state: RunState, unit: _Unit, kinds: list[SeriesKind]) -> str | None:
    """A unit's outcome into the run's state; its traceback if its worker failed (a bug)."""
    try:
        what, payload = unit.conn.recv()
    except (EOFError, OSError):  # ended without a word: killed (SIGKILL, out of memory)
        what, payload = "gone", None
    unit.proc.join()
    unit.conn.close()
    if what == "traceback":
        return payload
    outs, sig = payload if what == "outcome" else ([], None)
    for name, out in outs:
        state.series[name] = out.entry
        if out.arrays is not None:
            state.arrays[name] = out.arrays
        state.interrupted |= out.entry["status"] == Status.INTERRUPTED
    if sig is not None:  # the worker's own signal is the run's
        signals.note(sig)
    if what == "gone":
        why = (
            f"its worker process ended with exit code {unit.proc.exitcode} before reporting (killed); "
            "resume runs it again"
        )
        for kind in kinds:
            name = kind.series_name(unit.lr)
            if name not in state.series:
                state.series[name] = kind.failed_entry(state.plan, unit.lr, why)
                state.killed.append(name)  # the run stays resumable for these (load_previous)
    return None


def _worker(send, others, ctx, kinds, lr, times, done, steps, n_grid, slot, threads) -> None:
    """A unit in a forked process: its series one after the other, then its outcome on the pipe."""
    from dlnlab.lab.record import end_workers

    outs: list[tuple[str, SeriesDone]] = []
    try:
        _unit_in_worker(send, others, ctx, kinds, lr, times, done, steps, n_grid, slot, threads, outs)
    finally:
        # A recorder a signal left open: multiprocessing ends a worker process by sending its daemonic
        # children SIGTERM, which a recorder worker ignores, and joining them: it waited forever (seen:
        # a unit signalled while its SME ensemble's recorder was open). atexit's end_workers does not
        # run in a multiprocessing child, so the unit aborts them itself: each writes what it has.
        end_workers()


def _unit_in_worker(send, others, ctx, kinds, lr, times, done, steps, n_grid, slot, threads, outs) -> None:
    from threadpoolctl import threadpool_limits

    from dlnlab.lab.record import forget_inherited, fresh_copy, writes_concurrently

    try:
        signals.in_forked_child()
        for conn in others:  # the fork copied the driver's ends (its own pipe's, its siblings'): a send
            conn.close()  # to a killed driver must fail, not wait for a reader that never comes
        forget_inherited()  # the flow's recorder is the driver's
        end_with_parent()
        torch.set_num_threads(1)  # as the serial run (its hot loops: one thread)
        loggers = {n: fresh_copy(lg) if writes_concurrently(lg) else lg for n, lg in ctx.loggers.items()}
        ctx = replace(ctx, progress=ctx.progress.on_line(slot), loggers=loggers, flow_workers=1)  # own
        # writers, own bar; a modified flow's chunks one after another (the units already use the cores)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())  # a signal from here on stops the unit
        with threadpool_limits(limits=threads):
            _run_unit(ctx, kinds, lr, times, done, steps, n_grid, outs)
    except KeyboardInterrupt:  # a signal between two series: the series so far are reported
        pass
    except BaseException:  # noqa: BLE001 - a bug: the driver records it and raises it
        _send(send, ("traceback", traceback.format_exc()))
        return
    with signals.deferred(raise_at_end=False):
        _send(
            send,
            ("outcome", ([(n, SeriesDone(o.entry, arrays=o.arrays)) for n, o in outs], signals.received())),
        )


def _send(conn, message) -> None:
    try:
        conn.send(message)
        conn.close()
    except OSError:  # the driver is gone (killed): the files are written, nobody waits for the rest
        pass


def _run_unit(ctx, kinds, lr, times, done, steps, n_grid, outs) -> None:
    """The serial loop's steps for one learning rate (:func:`dlnlab.lab.runner._series.run_series`)."""
    unit_done = dict(done)
    try:
        for kind in kinds:
            signals.check()
            task = task_of(kind, lr, times, unit_done, n_grid)
            step = steps[kind.key, lr]
            out = step.kept if step.kept is not None else kind.run(ctx, step.apply(task))
            unit_done[kind.key, lr] = out
            outs.append((task.name, out))
            if out.entry["status"] == Status.INTERRUPTED or signals.received() is not None:
                break
    finally:  # the unit's recorders computed the metrics meanwhile
        with signals.deferred(raise_at_end=False):
            for _, out in outs:
                if out.arrays is None and out.finish is not None:
                    out.arrays = out.finish()
