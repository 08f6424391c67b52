"""The flow's solve ahead of Lightning's import: with a second core, the driver forks a process that
integrates the flow while it imports Lightning and opens the loggers, then records the flow from the
trajectory that process sends back.

Why: every series needs the flow, and the flow's recording needs the loggers (Lightning's classes), so a
run did the import (about 2 s here: ``lightning.fabric`` imports ``torch._dynamo`` and torchmetrics),
then the flow (0.6-0.9 s for the default run), one after the other on one core while the other idled.
Ahead, the flow's solve leaves that path: the default run with two workers lost the flow's time
(docs/performance.md). The solve is the very call the driver would make (same inputs, one torch
thread, the same BLAS threads), so the trajectory and every file are those of ``run.workers=1`` bit
for bit (tests/test_ahead.py).

Only where it pays: ``run.workers`` (null: the cores) above 1, the CPU, fork, and a method that hands
its rows over at the end of the solve (LSODA, BDF, Radau, DOP853, the batched stiff methods,
torchdiffeq's). rk45 and CVODE stream their rows to the flow's recorder while they integrate, so that
its metrics are computed meanwhile (at width 256 that overlap is worth more than the import); they
stay in the driver, and so does an ensemble's flow in chunks (``flow.chunk_members``), which the
driver solves in workers of its own (:mod:`dlnlab.lab.runner._flow_chunks`). A resume recomputes the
flow the same way.

Signals: the process runs with the run's handlers; a signal sent to the run's process group stops its
solve as it would stop the driver's (the rows so far come back, the flow is marked interrupted); one
sent to the driver alone is handed on while the driver waits. A solver failure, an interrupt or an
error comes back as what :func:`dlnlab.lab.runner._flow.run_flow` records for it. If the driver ends
early (a signal during the import, an error), the process is ended and reaped.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util  # noqa: F401 - registers its exit handler now, before this module's (at the end)
import pickle
import signal
import sys
import time
from dataclasses import dataclass

import torch

from dlnlab import flow as flowmod
from dlnlab.lab.config import ConfigError, Plan, flow_seconds, typed_config
from dlnlab.lab.runner._flow_chunks import in_chunks
from dlnlab.lab.runner._fork import POLL_S, asked_workers, can_fork, end_with_parent, kill
from dlnlab.lab.runner._progress import Progress
from dlnlab.network import Layout
from dlnlab.rundir import signals
from dlnlab.status import Status

__all__ = [
    "AheadOutcome",
    "FlowAhead",
    "claim",
    "flow_theta0",
    "goes_ahead",
    "one_flow",
    "keep_plan",
    "start_early",
    "take_plan",
    "worth_it",
]

STREAMING = ("rk45", "cvode")  # hand their rows to the recorder while they integrate: stay in the driver


def one_flow(plan) -> bool:
    """Whether an ensemble's members share their init (``ensemble.vary=sgd``): one flow for them all."""
    return bool(plan.seeds.members) and plan.cfg.ensemble.vary.name == "sgd"


def flow_theta0(plan) -> torch.Tensor:
    """The flow's initial state: one member's where the members share one flow (:func:`one_flow`)."""
    return plan.theta0[0] if one_flow(plan) else plan.theta0


# Below this many nominal seconds of flow (the cost model's, lab/config/_choose.py) the solve stays in
# the driver: the process costs a fork and the trajectory's pickling, 30-50 ms for the default run
# (19 MB of states), about what a 0.1 s flow would gain; the default run's flow is 0.45 s nominal
# (0.63 s measured), the tiny experiment's 0.01 s.
MIN_FLOW_S = 0.2


def goes_ahead(plan) -> bool:
    """Whether the flow is solved ahead of Lightning's import (see the module's docstring)."""
    if flow_seconds(plan.cfg, plan.solver.method, plan.lam_max) < MIN_FLOW_S:
        return False
    return (
        asked_workers(plan.cfg) > 1 and plan.cfg.device == "cpu" and can_fork() and plan.solver.method not in STREAMING
        and not in_chunks(plan, flow_theta0(plan))  # a chunked flow is solved by workers of its own
    )  # fmt: skip


@dataclass
class AheadOutcome:
    """What the ahead solve gave: ``status`` OK (``result`` the trajectory), SOLVER_FAILED or
    INTERRUPTED (``result`` what it reached, or None) with ``message``, and the warning the driver's own
    solve would have given (None: none)."""

    status: Status
    result: flowmod.Trajectory | None
    message: str = ""
    warning: str | None = None


class FlowAhead:
    """The flow's solve in a forked process: :meth:`start` forks it, :meth:`outcome` waits for it."""

    def __init__(self, proc, conn, started: float) -> None:
        self.proc, self.conn, self.started = proc, conn, started  # started: time.perf_counter() (monotonic)
        self.signalled = self.ended = False

    @classmethod
    def start(cls, plan, all_t: torch.Tensor) -> FlowAhead:
        fork = multiprocessing.get_context("fork")
        receive, send = fork.Pipe(duplex=False)
        started = time.perf_counter()
        proc = fork.Process(target=_solve_here, args=(send, receive, plan, all_t), name="flow-ahead")
        with signals.blocked_in_children():  # the process takes the run's state before a signal reaches it
            proc.start()
        send.close()
        return cls(proc, receive, started)

    def outcome(self, progress: Progress, t_end: float) -> AheadOutcome:
        """Wait for the solve (a signal the driver got is handed on once), its progress on the driver's
        bar (the process reports its t: a bar it drew itself would cross the driver's start block);
        its outcome."""
        progress.start("flow", t_end)
        with signals.deferred(raise_at_end=False):
            while True:
                if self.conn.poll(POLL_S):
                    try:
                        message = pickle.loads(self.conn.recv_bytes())
                    except (EOFError, OSError):  # ended without a word: killed
                        break
                    if message[0] == "t":
                        progress(message[1])
                        continue
                    self.end()
                    return AheadOutcome(*message[1:])
                sig = signals.received()
                if sig is not None and not self.signalled:
                    self.signalled = True
                    kill(self.proc.pid, sig)
            self.end()
        message = f"the flow's process ended with exit code {self.proc.exitcode} before reporting"
        return AheadOutcome(Status.SOLVER_FAILED, None, message, f"flow: {message}")

    def seconds(self) -> float:
        """Since the solve started."""
        return time.perf_counter() - self.started

    def end(self) -> None:
        """End the process if it still runs, and reap it (the driver leaves early, or it has reported)."""
        if self.ended:
            return
        self.ended = True
        if self.proc.is_alive():
            kill(self.proc.pid, signal.SIGKILL)  # nothing of it is written anywhere: nothing to lose
        self.proc.join()
        self.conn.close()


_early: list[tuple[FlowAhead, tuple]] = []  # started by the command line's check, for its run to claim
# The plan that check built, for its run to take (:func:`take_plan`) instead of building it again: the
# stiffness estimate (Lanczos at the initial weights), the balanced minimum's sharpness and the timed
# gradient took 1.9 s of the README's 100-wide example, and every run built them twice.
_early_plan: list = []


def start_early(plan) -> None:
    """The command line's check of a single run (:func:`dlnlab.lab.cli.preflight`) calls this with the
    plan before it imports Lightning (to check the logger's class): the solve starts there, 2 s before
    the run itself would start it, and the run claims it (:func:`claim`) when its inputs are the same."""
    if not worth_it(plan):
        return
    all_t = _times(plan)
    _end_early()
    _early.append((FlowAhead.start(plan, all_t), _inputs(plan, all_t)))


def keep_plan(plan: Plan) -> None:
    """The command line's check of a single run calls this once the config has passed every check."""
    _early_plan[:] = [plan]


def take_plan(cfg) -> Plan | None:
    """The plan :func:`keep_plan` was given, once, if it was built from this very config (the typed
    configs equal: every input of the plan is a function of it, the seeds included); else None."""
    if not _early_plan:
        return None
    plan = _early_plan.pop()
    try:
        return plan if typed_config(cfg) == plan.cfg else None
    except ConfigError:  # the run's own prepare says why, in its words
        return None


def claim(plan, all_t: torch.Tensor) -> FlowAhead | None:
    """The solve :func:`start_early` started, if its inputs are this run's (the same problem, initial
    weights, times and solver); else None (and it is ended)."""
    if not _early:
        return None
    ((ahead, inputs),) = _early
    _early.clear()
    if _same(inputs, _inputs(plan, all_t)):
        return ahead
    ahead.end()
    return None


def _lightning_imported() -> bool:
    return "lightning" in sys.modules


def worth_it(plan) -> bool:
    """:func:`goes_ahead`, and Lightning not imported yet: else there is nothing to overlap the solve
    with but the loggers' opening (0.1 s), less than what the process costs (a fork, the trajectory
    pickled: tens of ms, and another process on the cores; in-process runs after the first, as in
    the tests, would pay it for nothing)."""
    return goes_ahead(plan) and not _lightning_imported()


def _end_early() -> None:
    for ahead, _ in _early:
        ahead.end()
    _early.clear()


def _times(plan) -> torch.Tensor:
    from dlnlab.lab.runner._times import SeriesTimes

    return SeriesTimes.of(plan).all_t


def _inputs(plan, all_t: torch.Tensor) -> tuple:
    problem = plan.device_problem
    return (problem.X, problem.Y, flow_theta0(plan), all_t, tuple(plan.cfg.model.dims), plan.solver)


def _same(a: tuple, b: tuple) -> bool:
    return all(
        (torch.equal(x, y) if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) else x == y)
        for x, y in zip(a, b, strict=True)
    )


def _solve_here(send, receive, plan, all_t: torch.Tensor) -> None:
    """In the forked process: the driver's integrate call, its outcome on the pipe. Pickled by plain
    pickle, the tensors' bytes inline: multiprocessing's own pickler hands a tensor over as shared memory
    that this process must keep alive until the driver has read it (it did not: the driver's read
    failed once this process had ended)."""
    receive.close()
    signals.in_forked_child()
    end_with_parent()
    torch.set_num_threads(1)  # as the driver's solve (and a pool a fork may have broken is never entered)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # a signal from here on stops the solve
    try:
        with signals.deferred(raise_at_end=False):
            res = flowmod.integrate(
                plan.device_problem, Layout(tuple(plan.cfg.model.dims)), flow_theta0(plan), all_t,
                plan.solver, progress=_Reports(send, float(all_t[-1])), stop=lambda: signals.received() is not None,
            )  # fmt: skip
        message = ("outcome", Status.OK, res, "", None)
    except flowmod.FlowSolverError as err:
        message = ("outcome", Status.SOLVER_FAILED, err.result, str(err), str(err))
    except flowmod.FlowInterrupted as err:
        message = ("outcome", Status.INTERRUPTED, err.result, err.result.message, None)
    except KeyboardInterrupt:
        message = ("outcome", Status.INTERRUPTED, None, "interrupted", None)
    except Exception as err:  # noqa: BLE001 - e.g. out of memory: recorded as the driver's own solve would
        text = f"{type(err).__name__}: {err}"
        message = ("outcome", Status.SOLVER_FAILED, None, text, f"flow: {text}")
    try:
        with signals.deferred(raise_at_end=False):
            send.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
            send.close()
    except OSError:  # the driver is gone
        pass


class _Reports:
    """integrate's progress in the process: t to the driver, at most every 1/200 of the horizon (a
    few kB in all: the pipe never fills while the driver imports)."""

    def __init__(self, send, t_end: float) -> None:
        self.send, self.step, self.last = send, t_end / 200, -float("inf")

    def __call__(self, t: float, t_end: float | None = None) -> None:
        if t - self.last >= self.step:
            self.last = t
            try:
                self.send.send_bytes(pickle.dumps(("t", float(t))))
            except OSError:  # the driver is gone
                pass


# Registered after multiprocessing.util's exit handler (imported above), so it runs first: that handler
# joins its children, and would wait for an unclaimed solve blocked on its pipe.
atexit.register(_end_early)
