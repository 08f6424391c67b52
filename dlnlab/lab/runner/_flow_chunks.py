"""An ensemble's flow in chunks of consecutive members (``flow.chunk_members``), ``workers`` of them solved
at once in forked processes of their own (one worker: one after another in this process).

The chunks are the config's (:func:`dlnlab.lab.config.flow_chunks`), never the workers', so the rows are
the same bit for bit however many run at once. Each chunk is :func:`dlnlab.flow.integrate` on its
members; its rows go into one (T, E, p) buffer in memory shared with the workers (an anonymous shared
mapping, inherited by the fork: 300 MB for 64 Figure 1 nets at 3001 points, never pickled), and how many
rows each chunk has written into a small locked array (the lock orders the rows' writes before their
count's on any machine). The driver hands the rows every chunk has written to ``on_output`` as they come
(the flow's recorder works meanwhile) and the chunks' mean progress to the bar.

A chunk that fails (a solver failure, its ``max_nfe`` budget: each chunk has the whole budget, its
batched evaluations counted as in one batch) ends its own members only; the others run to their end, so
the joined trajectory does not depend on timing: it keeps the rows every chunk reached, with the first
failed chunk's message (:func:`dlnlab.flow.join_chunks`). A SIGINT / SIGTERM stops every running chunk
at its next step (sent to the process group, each worker gets it; sent to the driver alone, the driver
hands it on), no chunk starts after it, and the joined trajectory is interrupted; a resumed run solves
the flow again. Forked processes of our own for the reasons of :mod:`dlnlab.lab.runner._parallel`
(nothing has to be pickled, a worker is signalled by its pid, a killed worker loses only its chunk);
each solves with one torch thread and one BLAS thread (``integrate`` sets them).
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import pickle
import signal
import time
import traceback
from dataclasses import dataclass, replace
from multiprocessing.connection import wait

import torch

from dlnlab import flow as flowmod
from dlnlab.lab.runner._fork import POLL_S, asked_workers, can_fork, end_with_parent
from dlnlab.rundir import signals
from dlnlab.status import Status
from dlnlab.trajectory import Trajectory

__all__ = ["solve_in_chunks", "flow_workers", "in_chunks"]


def in_chunks(plan, theta0) -> bool:
    """Whether the flow from ``theta0`` (a batch: an ensemble's) is solved in more than one chunk."""
    choice = plan.flow_choice
    return theta0.ndim == 2 and choice is not None and choice.chunks > 1


def flow_workers(plan) -> int:
    """How many chunks of the flow run at once: ``run.workers`` (null: the cores), at most the chunks;
    1 on a GPU (one process owns the device) or without fork."""
    if plan.cfg.device != "cpu" or not can_fork():
        return 1
    chunks = plan.flow_choice.chunks if plan.flow_choice is not None else 1
    return max(1, min(asked_workers(plan.cfg), chunks))


class _Board:
    """What the chunks share with the driver: the rows (T, E, p), each chunk's rows written and time
    reached."""

    def __init__(self, n_t: int, n_members: int, p: int, n_chunks: int) -> None:
        self._map = mmap.mmap(-1, max(1, n_t * n_members * p * 8))  # MAP_SHARED | MAP_ANONYMOUS
        self.rows = torch.frombuffer(self._map, dtype=torch.float64, count=n_t * n_members * p)
        self.rows = self.rows.view(n_t, n_members, p)
        fork = multiprocessing.get_context("fork")
        self.written = fork.Array("q", n_chunks)  # with its lock
        self.t_reached = fork.Array("d", n_chunks)
        self.handed = 0  # rows given to on_output so far (the driver's)

    def write(self, i: int, chunk: slice, first: int, rows: torch.Tensor) -> None:
        self.rows[first : first + rows.shape[0], chunk] = rows
        with self.written.get_lock():
            self.written[i] = first + rows.shape[0]

    def hand_out(self, on_output) -> None:
        with self.written.get_lock():
            ready = min(self.written[:])
        if on_output is not None and ready > self.handed:
            on_output(self.handed, self.rows[self.handed : ready])
        self.handed = max(self.handed, ready)


@dataclass
class _Chunks:
    """One chunked solve's inputs."""

    field: object  # the vector field (GradientFlow or ModifiedFlow)
    theta0: torch.Tensor  # (E, p)
    t: torch.Tensor
    solver: flowmod.Solver
    slices: list[slice]
    board: _Board

    def solve(self, i: int, stop) -> tuple[Trajectory, float | None]:
        """Chunk i here: its trajectory without its rows (they are on the board) and, if it failed, the
        time it failed at."""
        chunk = self.slices[i]

        def progress(t: float, _t_end: float) -> None:
            self.board.t_reached[i] = t

        fail = None
        try:
            res = flowmod.integrate(
                self.field.problem, self.field.layout, self.theta0[chunk], self.t, self.solver, progress=progress,
                stop=stop, on_output=lambda first, rows: self.board.write(i, chunk, first, rows), field=self.field,
            )  # fmt: skip
        except flowmod.FlowSolverError as err:
            res, fail = err.result, err.t_fail
        except flowmod.FlowInterrupted as err:
            res = err.result
        self.board.t_reached[i] = float(res.t[-1])  # the solvers' last progress may be short of it
        return replace(res, theta=torch.empty(0)), fail


def solve_in_chunks(field, theta0, t, solver, chunk_members: int, workers: int, progress=None, stop=None,
                    on_output=None) -> Trajectory:  # fmt: skip
    """The flow of the ensemble ``theta0`` (E, p) at ``t`` in chunks of ``chunk_members``, ``workers`` at
    once. Returns the joined trajectory, or raises FlowSolverError / FlowInterrupted with it as
    :func:`dlnlab.flow.integrate` does (an error inside a chunk: RuntimeError with its traceback)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    slices = flowmod.member_chunks(theta0.shape[0], chunk_members)
    work = _Chunks(field, theta0, t, solver, slices, _Board(len(t), *theta0.shape, len(slices)))
    start = time.perf_counter()
    parts: list[Trajectory | None] = [None] * len(slices)
    fails: list[float | None] = [None] * len(slices)
    t0, t_end = float(t[0]), float(t[-1])
    work.board.t_reached[:] = [t0] * len(slices)

    def report() -> None:
        work.board.hand_out(on_output)
        if progress is not None:
            sizes = [s.stop - s.start for s in slices]
            done = sum(n * (work.board.t_reached[i] - t0) for i, n in enumerate(sizes)) / sum(sizes)
            progress(t0 + max(0.0, done), t_end)

    stopped = stop or (lambda: False)
    if workers <= 1 or len(slices) == 1:
        for i in range(len(slices)):
            if stopped():
                break
            parts[i], fails[i] = work.solve(i, _reporting(stopped, report))
            report()
    else:
        _in_workers(work, parts, fails, min(workers, len(slices)), stopped, report)
    for i, part in enumerate(parts):
        if part is None:  # not started: a signal came first
            parts[i] = flowmod.not_started(
                theta0[slices[i]], t, solver.method, Status.INTERRUPTED, "not started"
            )
            work.board.write(i, slices[i], 0, theta0[slices[i]].unsqueeze(0))
    res = flowmod.join_chunks(parts, slices, t, rows=work.board.rows, wall_time_s=time.perf_counter() - start)
    work.board.hand_out(on_output)
    if res.status == Status.INTERRUPTED:
        raise flowmod.FlowInterrupted(res)
    if res.status == Status.SOLVER_FAILED:
        raise flowmod.FlowSolverError(f"flow: {res.message}", min(f for f in fails if f is not None), res)
    return res


def _reporting(stop, report):
    """stop() for a chunk solved in the driver, which hands out the rows and progress as it is asked."""

    def check() -> bool:
        report()
        return stop()

    return check


@dataclass
class _Running:
    index: int
    proc: multiprocessing.process.BaseProcess
    signalled: bool = False


def _in_workers(work: _Chunks, parts, fails, workers: int, stop, report) -> None:
    """The chunks in forked workers, at most ``workers`` at once, in order; the rows handed out and the
    signals handed on while they run; every worker ended and joined however this ends."""
    pending = list(range(len(work.slices)))
    running: dict[object, _Running] = {}
    crash = None
    try:
        while pending or running:
            while pending and len(running) < workers and not stop() and crash is None:
                i = pending.pop(0)
                conn, proc = _start(work, i, list(running))
                running[conn] = _Running(i, proc)
            if not running:
                break
            for conn in wait(list(running), timeout=POLL_S):
                unit = running.pop(conn)
                crash = _collect(conn, unit, parts, fails) or crash
            report()
            if stop():
                sig = signals.received() or signal.SIGTERM
                for unit in running.values():
                    if not unit.signalled:
                        unit.signalled = True
                        _kill(unit.proc.pid, sig)
    finally:
        for conn, unit in running.items():  # the driver itself failed: its workers end with it
            _kill(unit.proc.pid, signal.SIGTERM)
            unit.proc.join()
            conn.close()
    if crash is not None:
        raise RuntimeError(f"a chunk of the flow failed in its worker:\n{crash}")


def _start(work: _Chunks, i: int, others: list):
    fork = multiprocessing.get_context("fork")
    receive, send = fork.Pipe(duplex=False)
    proc = fork.Process(target=_worker, args=(send, [receive, *others], work, i), name=f"flow-chunk-{i}")
    with signals.blocked_in_children():  # the worker installs its state before a signal can reach it
        proc.start()
    send.close()
    return receive, proc


def _collect(conn, unit: _Running, parts, fails) -> str | None:
    try:
        what, payload = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):  # ended without a word: killed (SIGKILL, out of memory)
        unit.proc.join()
        what, payload = (
            "traceback",
            f"its worker process ended with exit code {unit.proc.exitcode} before reporting",
        )
    unit.proc.join()
    conn.close()
    if what == "traceback":
        return payload
    parts[unit.index], fails[unit.index] = payload
    return None


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # it has just ended
        pass


def _worker(send, others, work: _Chunks, i: int) -> None:
    """Chunk i in a forked process; its outcome (or traceback) on the pipe."""
    from dlnlab.lab.record import forget_inherited

    try:
        signals.in_forked_child()
        # one torch thread, as the driver's solve: the parent's thread pool does not survive the fork
        # (libgomp), and a copy into the board large enough for it hung both workers in a futex
        torch.set_num_threads(1)
        for conn in others:  # the fork copied the driver's ends of the pipes: a send to a dead driver fails
            conn.close()
        forget_inherited()  # the flow's recorder is the driver's
        end_with_parent()
        signal.pthread_sigmask(signal.SIG_SETMASK, set())  # a signal from here on stops the chunk
        with signals.deferred(raise_at_end=False):  # noted, never raised: the solver stops at its next step
            message = ("outcome", work.solve(i, lambda: signals.received() is not None))
    except BaseException:  # noqa: BLE001 - a bug, or an error inside the solve: the driver raises it
        message = ("traceback", traceback.format_exc())
    try:
        # plain pickle: multiprocessing's would pass the tensors as shared-memory handles that this
        # process, about to end, must stay alive to serve
        send.send_bytes(pickle.dumps(message))
        send.close()
    except OSError:  # the driver is gone: nobody waits for this chunk
        pass
