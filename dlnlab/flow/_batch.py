"""A batch of initial states (B, p): each member under its own error control, never a batch-wide norm.

(dlnlab's own ``rk45`` gives every member its own steps itself: ``_rk45.py``.)

* ``dopri5``: torchode, one solve whose members take their own steps (their own step
  sizes, accepts and rejects) with every right-hand side evaluated for the whole batch at once. On the
  Figure 1 net, 64 members over t = 300 took 38 s against 525 s for 64 dopri5 solves one by one
  (13.8x) and 71 s for 64 LSODA solves (docs/scale.md). torchode has no events, and its
  solve runs to its end: it is called on chunks of output points (each restarting its step-size
  heuristic) so that ``progress`` and ``stop`` work.
* the other adaptive torchdiffeq methods: one system with a norm that is the largest member RMS, so
  that every member meets the tolerances as if alone (the steps are shared).
* fixed-step methods: one system (the same steps as alone: there is no error control to share).
* scipy's and SUNDIALS' stiff methods: member by member (their Jacobians are per member; a dense
  (B p) x (B p) Jacobian would waste B^2 / B of its memory), so each member equals its own solve.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from dlnlab.flow._run import FlowSolverError
from dlnlab.flow.solver import CHUNK_POINTS, TORCHDIFFEQ_FIXED, Solver
from dlnlab.trajectory import Interrupted, MemberStats, Status, Trajectory

__all__ = ["TORCHODE_METHODS", "member_norm", "integrate_torchode", "integrate_members"]

TORCHODE_METHODS = ("dopri5",)


def member_norm(scaled_error: Tensor) -> Tensor:
    """torchdiffeq's error norm for a batch (B, p): the largest member RMS (each member within tolerance)."""
    if scaled_error.ndim < 2:
        return scaled_error.pow(2).mean().sqrt()
    return scaled_error.pow(2).flatten(1).mean(dim=1).sqrt().max()


def batch_solver(solver: Solver) -> Solver:
    """The solver a batch runs with: torchdiffeq's adaptive methods get the per-member norm."""
    if solver.family != "torchdiffeq" or solver.method in TORCHDIFFEQ_FIXED or "norm" in solver.options:
        return solver
    return Solver(solver.method, solver.rtol, solver.atol, solver.step_size, solver.max_nfe,
                  {**solver.options, "norm": member_norm})  # fmt: skip


# torchode's Dopri5 evaluates the field twice to start a solve (f0 and the initial step's trial) and six
# times per step, accepted or rejected, for the whole batch (measured with torchode 1.0.1: 2 + 6 n for
# n steps); the budget becomes a step limit per chunk, so that a solve stops before it and keeps its rows
_START_EVALS, _STEP_EVALS = 2, 6


def integrate_torchode(field, theta0: Tensor, t: Tensor, solver: Solver, progress, stop) -> Trajectory:
    """theta0 (B, p) at t[0]; states (T, B, p) at t, each member with its own steps (``field``: the
    vector field, ``dlnlab.flow.field.GradientFlow`` or ``ModifiedFlow``). A member that fails (or the
    evaluation budget, ``solver.max_nfe``) ends the batch with the rows every member reached, as the other
    batched methods do; ``members`` gives each member's status, last grid time and counts."""
    import torchode

    start, nfe = time.perf_counter(), [0]

    def rhs(tt, y):
        nfe[0] += 1
        if solver.max_nfe is not None and nfe[0] > solver.max_nfe:  # not reached: the step limit stops first
            raise _Budget(f"budget of {solver.max_nfe} right-hand-side evaluations exhausted")
        return field(tt, y)

    term = torchode.ODETerm(rhs)
    stepper = torchode.Dopri5(term=term)
    control = torchode.IntegralController(atol=solver.atol, rtol=solver.rtol, term=term)
    ode = torchode.AutoDiffAdjoint(stepper, control)
    b = theta0.shape[0]
    outputs, steps, y, idx = [theta0.unsqueeze(0)], 0, theta0, 0
    counts = _TorchodeCounts(b, float(t[0]))

    def result(status: Status, message: str) -> Trajectory:
        theta = torch.cat(outputs, dim=0)
        return Trajectory(t=t[: theta.shape[0]].clone(), theta=theta, status=status, message=message,
                          method=f"{solver.method} (torchode, per member)", nfe=nfe[0], njev=0, n_steps=steps,
                          wall_time_s=time.perf_counter() - start, members=counts.stats(status, float(t[-1])))  # fmt: skip

    def failed(why: str) -> FlowSolverError:
        t_last = float(t[sum(o.shape[0] for o in outputs) - 1])
        msg = f"flow: {why}; output kept up to t = {t_last:.6g} (the rows every member reached)"
        return FlowSolverError(msg, t_last, result(Status.SOLVER_FAILED, msg))

    while idx < len(t) - 1:
        stop_at = min(idx + CHUNK_POINTS, len(t) - 1)
        if solver.max_nfe is not None:
            ode.max_steps = (solver.max_nfe - nfe[0] - _START_EVALS) // _STEP_EVALS
            if ode.max_steps < 1:
                raise failed(f"budget of {solver.max_nfe} right-hand-side evaluations exhausted")
        times = t[idx : stop_at + 1].to(theta0)
        try:
            sol = ode.solve(torchode.InitialValueProblem(y0=y, t_eval=times.expand(b, -1).contiguous()))
        except _Budget as exc:
            raise failed(str(exc)) from exc
        reached = counts.add(sol, t[idx : stop_at + 1])
        rows = int(reached.min())  # every member's rows of the chunk, its start included
        outputs.append(sol.ys[:, 1:rows].transpose(0, 1))
        steps += int(sol.stats["n_accepted"].max())
        status = sol.status.cpu()
        # torchode says REACHED_MAX_STEPS also of a member whose last allowed step reached the chunk's end
        done = (reached == len(times)) & (status == torchode.status_codes.REACHED_MAX_STEPS)
        bad = torch.nonzero((status != 0) & ~done).flatten().tolist()
        if bad:
            code = int(status[bad[0]])
            if code == torchode.status_codes.REACHED_MAX_STEPS:
                raise failed(
                    f"budget of {solver.max_nfe} right-hand-side evaluations exhausted (members {bad})"
                )
            raise failed(f"torchode {solver.method} failed for members {bad} between t = {float(t[idx]):.6g} "
                         f"and {float(t[stop_at]):.6g} (status {code})")  # fmt: skip
        y, idx = sol.ys[:, -1].contiguous(), stop_at
        if progress is not None:
            progress(float(t[idx]), float(t[-1]))
        if stop is not None and stop():
            raise Interrupted(result(Status.INTERRUPTED, f"interrupted at t = {float(t[idx]):.6g}"))
    return result(Status.OK, f"reached t = {float(t[-1]):g} ({len(t)} output points, {b} members)")


class _TorchodeCounts:
    """Each member's counts over the chunks of a torchode solve, and the last grid time it reached."""

    def __init__(self, b: int, t0: float) -> None:
        self.t_reached = torch.full((b,), t0, dtype=torch.float64)
        self.nfe, self.n_steps, self.n_rejected = (torch.zeros(b, dtype=torch.int64) for _ in range(3))

    def add(self, sol, times: Tensor) -> Tensor:
        """A chunk's solution on ``times``; the rows each member has (torchode's ``n_initialized``)."""
        taken, accepted = sol.stats["n_steps"].cpu(), sol.stats["n_accepted"].cpu()
        self.nfe += _START_EVALS + _STEP_EVALS * taken  # the evaluations its own steps needed
        self.n_steps += accepted
        self.n_rejected += taken - accepted
        reached = sol.stats["n_initialized"].cpu()
        self.t_reached = times.to(torch.float64)[reached - 1]
        return reached

    def stats(self, status: Status, t_end: float) -> MemberStats:
        """OK for a member at the end of the grid; the solve's status for the others."""
        zeros = torch.zeros_like(self.nfe)
        return MemberStats(
            status=tuple(Status.OK if float(r) >= t_end else status for r in self.t_reached),
            t_reached=self.t_reached.clone(), nfe=self.nfe.clone(), njev=zeros, nlu=zeros.clone(),
            n_steps=self.n_steps.clone(), n_rejected=self.n_rejected.clone(),
        )  # fmt: skip


class _Budget(RuntimeError):
    pass


def integrate_members(solve_one, theta0: Tensor, t: Tensor, method: str) -> Trajectory:
    """Member by member with ``solve_one(theta0_b) -> Trajectory``; stacked to (T, B, p). A member
    that fails or is interrupted ends the batch, with the rows every member reached (as a batch solved
    at once, or in chunks, keeps): the members not started have their initial row only, so then the
    batch has one row. ``members`` gives each member's status, time reached and counts."""
    start, done = time.perf_counter(), []
    b = theta0.shape[0]

    def stacked(status: Status, message: str) -> Trajectory:
        rows = min(len(r.t) for r in done) if len(done) == b else 1
        theta = theta0.unsqueeze(0).repeat(rows, 1, 1)  # a member not started: its initial row
        for i, res in enumerate(done):
            theta[:, i] = res.theta[:rows]
        return Trajectory(t=t[:rows].clone(), theta=theta, status=status, message=message,
                          method=f"{method} (member by member)", nfe=sum(r.nfe for r in done),
                          njev=sum(r.njev for r in done), n_steps=sum(r.n_steps for r in done),
                          wall_time_s=time.perf_counter() - start, members=_stats(done, b, t, status))  # fmt: skip

    for i in range(b):
        try:
            done.append(solve_one(i, theta0[i]))
        except FlowSolverError as err:
            done.append(err.result)
            msg = f"member {i}: {err}"
            raise FlowSolverError(msg, err.t_fail, stacked(Status.SOLVER_FAILED, msg)) from err
        except Interrupted as err:
            done.append(err.result)
            raise Interrupted(stacked(Status.INTERRUPTED, f"member {i}: {err.result.message}")) from err
    return stacked(Status.OK, f"reached t = {float(t[-1]):g} ({len(t)} output points, {b} members)")


def _stats(done: list[Trajectory], b: int, t: Tensor, status: Status) -> MemberStats:
    """Each member's status and counts; a member not started has the batch's status, t[0] reached and
    no work. The scipy and SUNDIALS solves do not report their factorisations and rejected steps per
    member here: -1."""
    n, unknown = len(done), torch.full((b,), -1, dtype=torch.int64)

    def counts(of) -> Tensor:
        return torch.tensor([of(r) for r in done] + [0] * (b - n), dtype=torch.int64)

    return MemberStats(
        status=tuple(r.status for r in done) + (status,) * (b - n),
        t_reached=torch.tensor([float(r.t[-1]) for r in done] + [float(t[0])] * (b - n), dtype=torch.float64),
        nfe=counts(lambda r: r.nfe),
        njev=counts(lambda r: r.njev),
        nlu=unknown,
        n_steps=counts(lambda r: r.n_steps),
        n_rejected=unknown,
    )
