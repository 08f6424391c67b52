"""``rk45``: Dormand-Prince 5(4), the tableau and step control of torchdiffeq's dopri5 and scipy's RK45,
with its stages stored contiguously and combined in place.

Why a hand-written one beside torchdiffeq's: on a wide net the vector work of a step, not the
gradient, dominates there. torchdiffeq keeps the 7 stages as the last axis of a (p, 7) tensor and
sums over it; at width 256, depth 8 (p = 524,288, one gradient 14.6 ms) that costs 185 ms per step,
13 gradients (scipy's RK45: 100 ms). Here the stages are rows of a (7, p) buffer and every combination
of them is one matrix-vector product over its rows (docs/scale.md).

The method: FSAL Dormand-Prince (scipy's ``RK45`` coefficients), error norm the RMS of
e / (atol + rtol max(|y0|, |y1|)), new step h (0.9 err^(-1/5)) clipped to [0.2 h, 10 h], the initial step by Hairer's rule;
a batch (B, p) gives every member its own step, error test and time (``_integrate_members``);
output points by the 4th-order continuous extension (scipy's ``RK45.P``). No events (use dopri5, a
scipy method or cvode for events).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dlnlab.flow._run import BudgetExceeded, Run
from dlnlab.status import Status
from dlnlab.trajectory import Interrupted, Trajectory

__all__ = ["integrate_rk45"]

C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
E = (-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40)  # y5 - y4, per stage
P = (  # the continuous extension: y(t0 + s h) = y0 + h sum_k K_k sum_j P[k][j] s^(j+1)
    (1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432),
    (0.0, 0.0, 0.0, 0.0),
    (0.0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799),
    (0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072),
    (0.0, 127303824393 / 49829197408, -318862633887 / 49829197408, 701980252875 / 199316789632),
    (0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844),
    (0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423),
)
SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0


def _stage_coefficients(like: torch.Tensor) -> list[torch.Tensor | None]:
    """[None, a_1, ..., a_5, b, e]: the coefficients of stage s as a vector over the stages before it,
    b of the 5th-order solution, e of the error estimate (over all 7 stages). Every combination of
    stages is then one matrix-vector product over the (7, p) buffer: one pass over the rows it reads,
    where an in-place add per stage read and wrote the sum again each time (measured at p = 524,288:
    6 adds 1.76 ms, the product 1.29 ms)."""
    rows = [None, *A[1:], B[:6], E]
    return [None if r is None else torch.tensor(r, dtype=like.dtype, device=like.device) for r in rows]


def _norm(x: torch.Tensor) -> float:
    """RMS over the state; a batch (B, p): the largest member's."""
    return float(torch.linalg.vector_norm(x, dim=-1).max()) / x.shape[-1] ** 0.5


def integrate_rk45(run: Run, stop: Callable[[], bool] | None = None) -> Trajectory:
    if (early := run.settled_at_start()) is not None:  # one output time (these methods take no events)
        return early
    try:
        return (_integrate_members if run.outputs[0].ndim == 3 else _integrate)(run, stop)
    except BudgetExceeded as exc:  # every output point passed is kept
        raise run.fail(str(exc), run.counter.t_reached) from exc


def _field_into(run: Run):
    """f(t, y, out): -grad L(y) written into out (a row of the stage buffer: no new 4 MB tensor per
    evaluation on a wide net), through the run's counter (evaluations, max_nfe, stop())."""
    counter, field = run.counter, run.field

    def f(t, y, out=None):
        counter.check_budget()
        return field(t, y) if out is None else field.into(y, out)

    return f


def _integrate(run: Run, stop) -> Trajectory:
    theta0, t, solver, counter = run.outputs[0][0], run.t, run.solver, run.counter
    f = _field_into(run)
    k = theta0.new_empty(7, *theta0.shape)  # the stages, one contiguous row each
    y, y_new, scratch = theta0.clone(), torch.empty_like(theta0), torch.empty_like(theta0)
    tol, tmp = torch.empty_like(theta0), torch.empty_like(theta0)  # no allocation inside the loop
    t_now, t_end = float(t[0]), run.t_end
    coeffs = _stage_coefficients(theta0)
    f(t_now, y, out=k[0])
    h = _initial_step(f, t_now, y, k[0], solver, t_end)
    h = min(float(solver.options.get("first_step", h)), float(solver.options.get("max_step", h)))
    max_step = float(solver.options.get("max_step", float("inf")))
    out_idx = 1
    while out_idx < len(t):
        h = min(h, t_end - t_now, max_step)
        if h <= 1e-14 * max(1.0, abs(t_now)):
            raise run.fail(f"step size underflow (h = {h:.3g})", t_now)
        for s in range(1, 7):  # stages 1..5, then the 5th-order solution and its FSAL derivative
            # y_new = y + h sum_j a_sj k_j as one product with the stage rows: one pass over them
            torch.addmv(y, k[:s].T, coeffs[s], alpha=h, out=y_new)
            f(t_now + h * (C[s] if s < 6 else 1.0), y_new, out=k[s])
        torch.mv(k.T, coeffs[7], out=scratch).mul_(h)
        torch.abs(y, out=tol)
        torch.maximum(tol, torch.abs(y_new, out=tmp), out=tol)
        err = _norm(scratch.div_(tol.mul_(solver.rtol).add_(solver.atol)))
        if err != err:  # NaN: a non-finite state
            raise run.fail("non-finite state", t_now)
        if err <= 1.0:
            t_new = t_end if h == t_end - t_now else t_now + h
            while out_idx < len(t) and float(t[out_idx]) <= t_new * (1 + 1e-14):
                run.add(_dense(y, k, h, (float(t[out_idx]) - t_now) / h).unsqueeze(0))
                out_idx += 1
            counter.n_steps += 1
            counter.t_reached = t_now = t_new
            y, y_new = y_new, y
            k[0] = k[6]  # FSAL
            if run.progress is not None:
                run.progress(t_now, t_end)
            if stop is not None and stop():
                msg = f"interrupted at t = {t_now:.6g}; output kept up to t = {float(t[run.n_out - 1]):.6g}"
                raise Interrupted(run.result(Status.INTERRUPTED, msg))
        factor = MAX_FACTOR if err == 0 else min(MAX_FACTOR, max(MIN_FACTOR, SAFETY * err**-0.2))
        h *= factor if err <= 1.0 else min(1.0, factor)
    return run.result(Status.OK, f"reached t = {t_end:g} ({len(t)} output points); dlnlab rk45")


def _integrate_members(run: Run, stop) -> Trajectory:
    """A batch (B, p) with a step size, an error test and a time per member: the flow is autonomous
    (dtheta/dt = -grad L(theta) has no t), so every member takes its own steps while the right-hand side
    is evaluated for all of them at once. Members that are done (or whose step was rejected) keep their
    state. On the Figure 1 net, 64 members to t = 300: docs/benchmarks/size.md."""
    theta0, t, solver, counter = run.outputs[0][0], run.t, run.solver, run.counter
    b, n_out = theta0.shape[0], len(t)
    f = _field_into(run)
    k = theta0.new_empty(7, *theta0.shape)
    rows, coeffs = k.view(7, -1), _stage_coefficients(theta0)
    y, y_new, acc, tol = (torch.empty_like(theta0) for _ in range(4))
    y.copy_(theta0)
    t_end = run.t_end
    t_now = torch.full((b,), float(t[0]), dtype=torch.float64)
    f(float(t[0]), y, out=k[0])
    h = _initial_steps(f, y, k[0], solver, t_end - float(t[0]))
    h = h.clamp(max=float(solver.options.get("first_step", float("inf"))))
    max_step = float(solver.options.get("max_step", float("inf")))
    out = torch.full((n_out, *theta0.shape), float("nan"), dtype=theta0.dtype, device=theta0.device)
    out[0] = theta0
    out_idx = torch.ones(b, dtype=torch.long)
    tt = t.to(torch.float64)
    try:
        while bool((out_idx < n_out).any()):
            active = out_idx < n_out
            h = torch.minimum(torch.minimum(h, t_end - t_now), torch.tensor(max_step, dtype=torch.float64))
            if bool((active & (h <= 1e-14 * t_now.abs().clamp(min=1.0))).any()):
                raise run.fail("step size underflow", float(t_now[active].min()))
            hc = h.to(theta0)[:, None]
            for s in range(1, 7):
                torch.mv(rows[:s].T, coeffs[s], out=acc.view(-1))  # sum_j a_sj k_j, every member
                torch.addcmul(y, hc, acc, out=y_new)
                f(float(t_now.min()), y_new, out=k[s])
            torch.mv(rows.T, coeffs[7], out=acc.view(-1))
            torch.maximum(y.abs(), y_new.abs(), out=tol)
            err = (acc.mul_(hc).div_(tol.mul_(solver.rtol).add_(solver.atol))).pow(2).mean(dim=-1).sqrt()
            if bool((active & ~torch.isfinite(err.to(torch.float64))).any()):
                raise run.fail("non-finite state", float(t_now[active].min()))
            err = err.to(torch.float64)
            accept = active & (err <= 1.0)
            if bool(accept.any()):
                t_new = torch.where(h == t_end - t_now, torch.tensor(t_end, dtype=torch.float64), t_now + h)
                _dense_members(out, out_idx, tt, t_now, t_new, h, y, k, accept)
                y[accept], k[0][accept], t_now[accept] = y_new[accept], k[6][accept], t_new[accept]
                counter.n_steps += 1
            factor = torch.where(
                err == 0, MAX_FACTOR, (SAFETY * err.clamp(min=1e-300) ** -0.2).clamp(MIN_FACTOR, MAX_FACTOR)
            )
            h = h * torch.where(accept, factor, factor.clamp(max=1.0))
            counter.t_reached = float(t_now.min())
            if run.progress is not None:
                run.progress(counter.t_reached, t_end)
            if stop is not None and stop():
                raise Interrupted(
                    run.result(Status.INTERRUPTED, f"interrupted at t = {counter.t_reached:.6g}")
                )
    finally:
        done = int(out_idx.min())  # rows every member has reached
        run.add(out[1:done])
    return run.result(Status.OK, f"reached t = {t_end:g} ({n_out} output points, {b} members); dlnlab rk45")


def _dense_members(out, out_idx, tt, t_now, t_new, h, y, k, accept) -> None:
    """Write each accepted member's output points inside its step (the continuous extension)."""
    n_out = out.shape[0]
    while True:
        idx = out_idx.clamp(max=n_out - 1)
        due = accept & (out_idx < n_out) & (tt[idx] <= t_new * (1 + 1e-14))
        if not bool(due.any()):
            return
        ms = torch.nonzero(due).flatten()
        s = ((tt[idx[ms]] - t_now[ms]) / h[ms]).to(y)
        powers = torch.stack([s, s * s, s**3, s**4], dim=1)  # (n, 4)
        weights = (powers @ torch.tensor(P, dtype=y.dtype, device=y.device).T) * h[ms].to(y)[
            :, None
        ]  # (n, 7)
        val = y[ms] + torch.einsum("ni,inp->np", weights, k[:, ms])
        out[idx[ms], ms] = val
        out_idx[ms] += 1


def _initial_steps(f, y0, f0, solver, span: float) -> torch.Tensor:
    """Hairer, Norsett and Wanner's rule per member of a batch (B, p): (B,) steps."""

    def rms(x):
        return x.pow(2).mean(dim=-1).sqrt().to(torch.float64)

    scale = y0.abs().mul(solver.rtol).add_(solver.atol)
    d0, d1 = rms(y0 / scale), rms(f0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1).clamp(max=span)
    f1 = f(0.0, y0 + h0.to(y0)[:, None] * f0)
    d2 = rms((f1 - f0) / scale) / h0
    big = torch.maximum(d1, d2)
    h1 = torch.where(big <= 1e-15, (h0 * 1e-3).clamp(min=1e-6), (0.01 / big.clamp(min=1e-300)) ** (1 / 5))
    return torch.minimum(torch.minimum(100 * h0, h1), torch.tensor(span, dtype=torch.float64))


def _dense(y0: torch.Tensor, k: torch.Tensor, h: float, s: float) -> torch.Tensor:
    """The continuous extension at t0 + s h (s in [0, 1])."""
    out = y0.clone()
    for i, row in enumerate(P):
        w = h * sum(c * s ** (j + 1) for j, c in enumerate(row))
        if w:
            out.add_(k[i], alpha=w)
    return out


def _initial_step(f, t0: float, y0, f0, solver, t_end: float) -> float:
    """Hairer, Norsett and Wanner's rule (II.4), as scipy's select_initial_step."""
    scale = y0.abs().mul(solver.rtol).add_(solver.atol)
    d0, d1 = _norm(y0 / scale), _norm(f0 / scale)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, t_end - t0)
    f1 = f(t0 + h0, y0 + h0 * f0)
    d2 = _norm((f1 - f0) / scale) / h0
    h1 = max(1e-6, h0 * 1e-3) if d1 <= 1e-15 and d2 <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
    return min(100 * h0, h1, t_end - t0)
