"""The bookkeeping of one solve, shared by both integrator families: outputs, counters, results."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from dlnlab.flow.events import event_name, event_values
from dlnlab.flow.field import vector_field
from dlnlab.trajectory import Interrupted, MemberStats, Status, Trajectory

__all__ = ["FlowResult", "FlowSolverError", "FlowInterrupted", "Counter", "Run"]

FlowResult = Trajectory  # the flow's result is the one trajectory type of dlnlab.trajectory


class FlowSolverError(RuntimeError):
    """The solver failed; ``t_fail`` is the time reached and ``result`` the partial trajectory."""

    def __init__(self, message: str, t_fail: float, result: Trajectory) -> None:
        super().__init__(message)
        self.t_fail = t_fail
        self.result = result


FlowInterrupted = Interrupted  # raised with the partial trajectory


class BudgetExceeded(Exception):
    pass


# What torchdiffeq raises when a solve fails: AssertionError ('underflow in dt', 'max_num_steps exceeded',
# non-finite state), RuntimeError (fixed-step event search), plus our NFE budget.
FAILURES = (BudgetExceeded, AssertionError, RuntimeError)


def reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


STOP_EVERY = 50  # evaluations between two looks at stop() inside one chunk or output interval


class StopRequested(KeyboardInterrupt):
    """stop() said yes between two output points: the solve ends as interrupted, outputs kept."""


class Counter:
    """The right-hand side with an NFE counter and budget, plus torchdiffeq step callbacks. ``stop``
    is also looked at every ``STOP_EVERY`` evaluations, so that a stiff stretch between two output
    points (thousands of evaluations) does not delay a signal."""

    def __init__(self, field, max_nfe: int | None, t_start: float) -> None:
        self.field = field
        self.max_nfe = max_nfe
        self.stop = None
        self.nfe = 0
        self.n_steps = 0
        self.t_reached = t_start
        self.last_dt: float | None = None

    def check_budget(self) -> None:
        if self.max_nfe is not None and self.nfe >= self.max_nfe:
            raise BudgetExceeded(f"budget of {self.max_nfe} right-hand-side evaluations exhausted")
        self.nfe += 1
        if self.stop is not None and self.nfe % STOP_EVERY == 0 and self.stop():
            raise StopRequested

    def __call__(self, t, theta):
        self.check_budget()
        return self.field(t, theta)

    # torchdiffeq callbacks (attached per method family, see _torch_func)
    def accept_step(self, t0, y0, dt) -> None:
        self.n_steps += 1
        self.last_dt = float(dt)
        self.t_reached = max(self.t_reached, float(t0 + dt))

    def fixed_step(self, t0, y0, dt) -> None:
        self.n_steps += 1
        self.t_reached = max(self.t_reached, float(t0))


class Run:
    """Shared bookkeeping of one solve: outputs, counters, events, result construction."""

    def __init__(self, problem, layout, theta0, t, solver, events, progress, field=None) -> None:
        self.problem, self.layout, self.t, self.solver = problem, layout, t, solver
        self.events, self.progress = events, progress
        self.names = [event_name(ev, i) for i, ev in enumerate(events)]
        self.field = (
            field if field is not None else vector_field(problem, layout)
        )  # GradientFlow or ModifiedFlow
        self.counter = Counter(self.field, solver.max_nfe, float(t[0]))
        self.njev = 0
        self.outputs: list[Tensor] = [theta0.unsqueeze(0)]
        self.n_out = 1
        self.on_output: Callable[[int, Tensor], None] | None = None  # integrate(on_output=...)
        # per-member counts (bdf_batch, radau_batch)
        self.members: Callable[[Status], MemberStats] | None = None
        self.start = time.perf_counter()

    @property
    def t_end(self) -> float:
        return float(self.t[-1])

    def add(self, states: Tensor) -> None:
        if states.shape[0]:
            first = self.n_out
            self.outputs.append(states)
            self.n_out += states.shape[0]
            if self.on_output is not None:
                self.on_output(first, states)

    def result(self, status: Status, message: str, event=None, t_event=None, theta_event=None) -> Trajectory:
        # one piece (a solver that wrote every row into one buffer: see keep_rows) is not copied again
        theta = self.outputs[0] if len(self.outputs) == 1 else torch.cat(self.outputs, dim=0)
        return Trajectory(
            t=self.t[: self.n_out].clone(),
            theta=theta,
            status=status,
            message=message,
            method=self.solver.method,
            nfe=self.counter.nfe,
            njev=self.njev,
            n_steps=self.counter.n_steps,
            wall_time_s=time.perf_counter() - self.start,
            event=event,
            t_event=t_event,
            theta_event=theta_event,
            members=None if self.members is None else self.members(status),
        )

    def keep_rows(self, rows: Tensor) -> None:
        """The output so far is ``rows`` (the first n_out rows of a solver's own buffer, which every row
        handed out is a view of): the result takes it as it is, without concatenating the pieces again
        (304 MB for 64 Figure 1 nets at 3001 points: 0.2 s)."""
        self.outputs = [rows[: self.n_out]]

    def fail(self, reason: str, t_fail: float) -> FlowSolverError:
        t_last = float(self.t[self.n_out - 1])
        msg = (
            f"flow: {self.solver.method} failed at t = {t_fail:.6g} (horizon {self.t_end:g}; output kept up "
            f"to t = {t_last:.6g}, {self.n_out} of {len(self.t)} points; nfe = {self.counter.nfe}): {reason}"
        )
        return FlowSolverError(msg, t_fail, self.result(Status.SOLVER_FAILED, msg))

    def event_result(self, index: int, t_event: float, theta_event: Tensor) -> Trajectory:
        keep = int(torch.searchsorted(self.t, torch.tensor(t_event, dtype=torch.float64), right=True))
        keep = min(keep, self.n_out)
        theta = torch.cat(self.outputs, dim=0)[:keep]
        self.outputs, self.n_out = [theta], keep
        name = self.names[index]
        msg = f"event {name!r} at t = {t_event:.10g}"
        if self.progress is not None:
            self.progress(t_event, self.t_end)
        return self.result(Status.EVENT, msg, event=name, t_event=t_event, theta_event=theta_event)

    def settled_at_start(self) -> Trajectory | None:
        """The result when there is nothing to integrate: an event that holds at t0, or a single output
        time; else None."""
        early = self.initial_event()
        if early is None and len(self.t) == 1:
            return self.result(Status.OK, f"reached t = {self.t_end:g} (1 output point)")
        return early

    def initial_event(self) -> Trajectory | None:
        if not self.events:
            return None
        vals = event_values(self.events, self.problem, self.layout, self.outputs[0])[:, 0]
        hit = np.nonzero(vals <= 0)[0]
        if hit.size:
            return self.event_result(int(hit[0]), float(self.t[0]), self.outputs[0][0].clone())
        return None
