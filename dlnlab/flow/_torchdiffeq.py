"""torchdiffeq's methods, called in chunks of output points (a failure keeps every point passed)."""

from __future__ import annotations

import numpy as np
import torch
import torchdiffeq
from torch import Tensor

from dlnlab.flow._run import FAILURES, Counter, Run
from dlnlab.flow._run import reason as failure_reason
from dlnlab.flow.events import event_values
from dlnlab.flow.solver import (
    CHUNK_POINTS,
    CHUNK_POINTS_EVENTS,
    EXPLICIT_ADAMS_MAX_ORDER,
    TORCHDIFFEQ_ADAPTIVE,
)
from dlnlab.status import Status
from dlnlab.trajectory import Interrupted, Trajectory

__all__ = ["integrate_torchdiffeq"]


class _TorchFunc:
    def __init__(self, counter: Counter, adaptive: bool) -> None:
        self._counter = counter
        if adaptive:
            self.callback_accept_step = counter.accept_step
        else:
            self.callback_step = counter.fixed_step

    def __call__(self, t, y):
        return self._counter(t, y)


class _Odeint:
    """torchdiffeq.odeint with the run's method, tolerances and options, on the counted right-hand side."""

    def __init__(self, run: Run) -> None:
        self.run, self.solver = run, run.solver
        self.adaptive = run.solver.method in TORCHDIFFEQ_ADAPTIVE
        self.func = _TorchFunc(run.counter, self.adaptive)
        self.user_first_step = "first_step" in run.solver.options

    def options(self) -> dict:
        solver = self.solver
        opts = dict(solver.options)
        if self.adaptive:
            if not self.user_first_step and self.run.counter.last_dt is not None:
                opts["first_step"] = self.run.counter.last_dt  # continue with the last accepted step size
            return opts
        opts["step_size"] = solver.step_size
        if solver.method == "explicit_adams":
            # torchdiffeq's default max_order 12 runs Adams-Bashforth up to order 11, whose stability
            # interval is so short that dy/dt = -y with step 0.01 blows up; order 4 is the usual choice.
            opts.setdefault("max_order", EXPLICIT_ADAMS_MAX_ORDER)
        return opts

    def raw(self, y0: Tensor, times: Tensor, event_fn=None):
        solver = self.solver
        return torchdiffeq.odeint(
            self.func, y0, times, rtol=solver.rtol, atol=solver.atol, method=solver.method,
            options=self.options(), event_fn=event_fn,
        )  # fmt: skip

    def __call__(self, y0: Tensor, times: Tensor, event_fn=None):
        """odeint; a failure raises the run's FlowSolverError."""
        try:
            return self.raw(y0, times, event_fn)
        except FAILURES as exc:
            raise self.run.fail(failure_reason(exc), self.run.counter.t_reached) from exc

    def chunk(self, y0: Tensor, idx: int, stop: int) -> Tensor:
        """Output points idx+1..stop. On a failure, first recover the points the solver had passed by
        replaying the chunk up to them (same start and first step, hence the same steps; the replay's
        evaluations count in nfe but not against max_nfe), then raise."""
        run, t = self.run, self.run.t
        counter = run.counter
        last_dt = counter.last_dt
        try:
            return self.raw(y0, t[idx : stop + 1].to(y0.device))[1:]
        except FAILURES as exc:
            t_fail, reason, n_steps = counter.t_reached, failure_reason(exc), counter.n_steps
            k = int(torch.searchsorted(t, torch.tensor(t_fail, dtype=torch.float64), right=True)) - 1
            if idx < k < stop:
                budget, counter.max_nfe, counter.last_dt = counter.max_nfe, None, last_dt
                nfe = counter.nfe
                try:
                    ys = self.raw(y0, t[idx : k + 1].to(y0.device))[1:]
                    finite = torch.isfinite(ys.reshape(ys.shape[0], -1)).all(dim=1)
                    n_ok = ys.shape[0] if finite.all() else int(torch.nonzero(~finite)[0])
                    run.add(ys[:n_ok])
                    reason += (
                        f" (a replay of the failed chunk, {counter.nfe - nfe} more evaluations, "
                        f"recovered its first {n_ok} output points)"
                    )
                except FAILURES:
                    pass
                finally:
                    counter.max_nfe, counter.n_steps, counter.t_reached = budget, n_steps, t_fail
            raise run.fail(reason, t_fail) from exc


def _first_event(run: Run, odeint: _Odeint, ys: Tensor, y: Tensor, idx: int) -> Trajectory | None:
    """The run's result at the first event among the output points ys (idx+1.., y at idx), located
    between the output points around it; None when no event fired in the chunk."""
    events, problem, layout, t = run.events, run.problem, run.layout, run.t
    vals = event_values(events, problem, layout, ys)
    fired = np.nonzero((vals <= 0).any(axis=0))[0]
    if not fired.size:
        return None
    k = int(fired[0])  # first output point past an event
    run.add(ys[:k])
    t_lo = float(t[idx + k])
    y_lo = ys[k - 1] if k > 0 else y
    t_hi = float(t[idx + k + 1])
    best = None
    for i in np.nonzero(vals[:, k] <= 0)[0]:
        te, ye = _locate_torchdiffeq(odeint, events[i], problem, layout, y_lo, t_lo, t_hi)
        if best is None or te < best[1]:
            best = (int(i), te, ye)
    if best[1] >= t_hi:  # no crossing before t_hi on re-integration: the output point
        best = (best[0], t_hi, ys[k].clone())
    return run.event_result(*best)


def integrate_torchdiffeq(run: Run, stop=None) -> Trajectory:
    theta0, t, events, progress = run.outputs[0][0], run.t, run.events, run.progress
    early = run.initial_event()
    if early is not None:
        return early
    odeint = _Odeint(run)
    y = theta0
    idx, last = 0, len(t) - 1
    size = CHUNK_POINTS_EVENTS if events else CHUNK_POINTS
    while idx < last:
        stop_at = min(idx + size, last)
        ys = odeint.chunk(y, idx, stop_at)
        finite = torch.isfinite(ys.reshape(ys.shape[0], -1)).all(dim=1)
        if not finite.all():
            bad = int(torch.nonzero(~finite)[0])
            run.add(ys[:bad])
            raise run.fail("non-finite state", float(t[idx + 1 + bad]))
        if events:
            hit = _first_event(run, odeint, ys, y, idx)
            if hit is not None:
                return hit
        run.add(ys)
        y, idx = ys[-1], stop_at
        run.counter.t_reached = max(run.counter.t_reached, float(t[idx]))
        if progress is not None:
            progress(float(t[idx]), run.t_end)
        if stop is not None and stop():
            msg = f"interrupted at t = {float(t[idx]):.6g}; output kept up to t = {float(t[idx]):.6g}"
            raise Interrupted(run.result(Status.INTERRUPTED, msg))
    msg = f"reached t = {run.t_end:g} ({len(t)} output points)"
    return run.result(Status.OK, msg)


def _locate_torchdiffeq(odeint, event, problem, layout, y_lo, t_lo: float, t_hi: float):
    """The first root of event on (t_lo, t_hi], re-integrating from (t_lo, y_lo) with odeint's event handling
    (bisection on the solver's interpolant down to atol). The value is forced negative after t_hi."""
    minus_one = torch.tensor(-1.0, dtype=torch.float64)

    def event_fn(tt, yy):
        v = torch.as_tensor(event(problem, layout, yy), dtype=torch.float64)
        return torch.where(tt <= t_hi, v, minus_one)

    times = torch.tensor([t_lo, t_hi], dtype=torch.float64, device=y_lo.device)
    t_event, sol = odeint(y_lo, times, event_fn=event_fn)
    return min(float(t_event), t_hi), sol[-1].clone()
