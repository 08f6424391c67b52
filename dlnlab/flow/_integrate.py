"""``integrate``: the flow's one entry point (the package docstring describes the methods): the
inputs checked once, the solver dispatched, one torch and one BLAS thread."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from dlnlab.errors import ArgumentError
from dlnlab.flow._batch import TORCHODE_METHODS, batch_solver, integrate_members, integrate_torchode
from dlnlab.flow._bdf import integrate_bdf
from dlnlab.flow._radau import integrate_radau
from dlnlab.flow._rk45 import integrate_rk45
from dlnlab.flow._run import FlowInterrupted, FlowSolverError, Run
from dlnlab.flow._scipy import integrate_scipy
from dlnlab.flow._sundials import integrate_cvode
from dlnlab.flow._torchdiffeq import integrate_torchdiffeq
from dlnlab.flow.field import GradientFlow, check_problem_dims, vector_field
from dlnlab.flow.solver import (
    Solver,
    as_solver,
)
from dlnlab.network import Layout, as_layout
from dlnlab.problem import RegressionProblem
from dlnlab.status import Status
from dlnlab.trajectory import Trajectory

__all__ = ["integrate"]


def _check_t_eval(t_eval) -> Tensor:
    t = torch.as_tensor(t_eval, dtype=torch.float64).detach().cpu()
    if t.ndim != 1 or t.numel() < 1:
        raise ArgumentError(
            "t_eval", f"t_eval must be a 1-D sequence of at least one time, got shape {tuple(t.shape)}"
        )
    if not torch.isfinite(t).all():
        raise ArgumentError("t_eval", "t_eval must be finite")
    if t.numel() > 1:
        steps = t[1:] - t[:-1]
        if not (steps > 0).all():
            k = int(torch.nonzero(steps <= 0)[0])
            raise ArgumentError(
                "t_eval",
                f"t_eval must be strictly increasing: t_eval[{k}] = {float(t[k]):g} >= "
                f"t_eval[{k + 1}] = {float(t[k + 1]):g}",
            )
    return t.contiguous()


def _check_theta0(theta0, layout: Layout, dtype: torch.dtype, device: torch.device) -> Tensor:
    if not isinstance(theta0, Tensor):  # a list of Python floats would be float32 by torch's default
        theta0 = torch.as_tensor(theta0, dtype=dtype)
    if theta0.ndim not in (1, 2):
        raise ArgumentError("theta0", f"theta0 must have shape (p,) or (B, p), got {tuple(theta0.shape)}")
    if theta0.shape[-1] != layout.n_weights:
        shape = "" if theta0.ndim == 1 else f" in its last dimension (shape {tuple(theta0.shape)})"
        raise ArgumentError(
            "theta0",
            f"theta0 has {theta0.shape[-1]} entries{shape}, dims {list(layout.dims)} need p = {layout.n_weights}",
        )
    if theta0.ndim == 2 and theta0.shape[0] < 1:
        raise ArgumentError("theta0", "theta0: the batch (B, p) is empty")
    theta0 = theta0.detach().to(dtype=dtype, device=device).clone().contiguous()
    if not torch.isfinite(theta0).all():
        raise ArgumentError("theta0", "theta0 must be finite")
    return theta0


def _check_solver_fits(solver: Solver, problem: RegressionProblem) -> None:
    """The solvers that step numpy arrays (scipy's, SUNDIALS', bdf_batch, radau_batch) need a float64
    problem on the CPU (a float32 one failed deep in a matrix product, or came back float64)."""
    if not solver.on_cpu_only:
        return
    if problem.X.device.type != "cpu":
        raise ArgumentError(
            "solver",
            f"{solver.family}'s {solver.method} runs on the CPU; for a problem on {problem.X.device} use a "
            "torchdiffeq method",
        )
    if problem.X.dtype != torch.float64:
        raise ArgumentError(
            "solver",
            f"{solver.method} solves in float64 and the problem is {problem.X.dtype}: make the problem "
            "float64 (RegressionProblem.from_data(X, Y) is) or use rk45 or a torchdiffeq method",
        )


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread and one BLAS thread for the small-matrix hot loop (scipy's LU of a 198 x 198
    Jacobian is ~50x slower with a multi-threaded OpenBLAS on a loaded machine)."""
    n_torch = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(n_torch)


def integrate(
    problem: RegressionProblem,
    dims,
    theta0: Tensor,
    t_eval: Tensor | Sequence[float],
    solver: Solver | Mapping | str = Solver(),  # noqa: B008 (frozen, immutable default)
    events: Sequence = (),
    progress: Callable[[float, float], None] | None = None,
    stop: Callable[[], bool] | None = None,
    modified_lr: float | None = None,
    on_output: Callable[[int, Tensor], None] | None = None,
    field: GradientFlow | None = None,
) -> Trajectory:
    """Integrate dtheta/dt = -grad L(theta) from theta0 at t_eval[0], reporting at t_eval.

    modified_lr: eta to integrate GD's modified flow dtheta/dt = -(I + (eta/2) H) grad L instead, the
    flow GD at step eta follows to O(eta^2) (:class:`~dlnlab.flow.field.ModifiedFlow`).
    field: another vector field to integrate (an object like :class:`~dlnlab.flow.field.GradientFlow`:
    ``field(t, theta)`` and ``field.into(theta, out)``, plus ``jacobian`` / ``jvp`` for the stiff
    methods), e.g. the central flow of ``dlnlab.eos``; not with modified_lr.

    theta0: (p,) or a batch (B, p) (no events for a batch; the dlnlab.flow package docstring says how
    each member keeps its own error control), moved to the problem's device (a problem on a GPU:
    ``problem.to("cuda")``, torchdiffeq methods only; a float32 problem: rk45 or torchdiffeq). The trajectory's times are on the CPU, its
    states, (T, p) or (T, B, p), on the problem's device.
    t_eval: strictly increasing times; t_eval[0] is the time of theta0.
    solver: a :class:`Solver`, a mapping of its fields, or a method's name (``"dopri5"``).
    events: event functions (see the dlnlab.flow package docstring); the first to fire stops the solve.
    progress(t_reached, t_end): called after every chunk (torchdiffeq) or every ~1% of the horizon
    (scipy), and once at the end. stop(): when it returns True (checked after every chunk or step)
    the solve stops as if interrupted.
    on_output(i, rows): called with every output row once, in order (rows (k, ...) are the states at
    t_eval[i : i + k], row 0 first): by rk45 and cvode step by step as they go (a consumer can work
    while the solve goes on), by solve_ivp's and torchdiffeq's methods at the end; also the rows of a
    failed or interrupted solve. Not with events (an event takes back the rows after it).
    Returns a :class:`~dlnlab.trajectory.Trajectory`. Raises ArgumentError for bad arguments,
    FlowSolverError on failure and FlowInterrupted on Ctrl+C or ``stop()``, both with the partial
    trajectory as ``.result``.
    """
    solver = as_solver(solver)
    layout = as_layout(dims)
    check_problem_dims(problem, layout)
    t = _check_t_eval(t_eval)
    theta0 = _check_theta0(theta0, layout, problem.X.dtype, problem.X.device)
    events = tuple(events)
    for i, ev in enumerate(events):
        if not callable(ev):
            raise ArgumentError("events", f"events[{i}] must be callable f(problem, dims, theta), got {ev!r}")
    batched = theta0.ndim == 2
    _check_solver_fits(solver, problem)
    if batched and events:
        raise ArgumentError("events", "events are not supported for a batch of initial states (B, p)")
    if events and on_output is not None:
        raise ArgumentError("on_output", "on_output is not supported with events")
    if events and solver.family == "dlnlab":
        raise ArgumentError(
            "events", f"{solver.method} takes no events; use dopri5, lsoda or cvode for events"
        )
    if field is not None and modified_lr is not None:
        raise ArgumentError("field", "give either a vector field or modified_lr, not both")
    field = vector_field(problem, layout, modified_lr) if field is None else field
    report = _Reporter(on_output)
    # the rows handed over at the end too, with one thread: a copy large enough for torch's pool would
    # otherwise enter a pool that a fork may have left broken (a chunk's worker hung there for lsoda)
    with _one_thread(), torch.no_grad():
        try:
            res = _dispatch(field, theta0, t, solver, events, progress, stop, report)
        except (FlowSolverError, FlowInterrupted) as err:
            report.rest(err.result.theta)
            raise
        report.rest(res.theta)
    return res


class _Reporter:
    """integrate's on_output, with what it has been given: the rows a solver did not stream are given
    at the end."""

    def __init__(self, fn: Callable[[int, Tensor], None] | None) -> None:
        self.fn, self.done = fn, 0

    def __call__(self, first: int, rows: Tensor) -> None:
        if self.fn is not None and first + rows.shape[0] > self.done:
            self.fn(first, rows)
            self.done = first + rows.shape[0]

    def rest(self, theta: Tensor | None) -> None:
        if theta is not None and theta.shape[0] > self.done:
            self(self.done, theta[self.done :])


def _dispatch(field, theta0, t, solver, events, progress, stop, report) -> Trajectory:
    """The solve, by the solver's family and whether theta0 is a batch."""
    if theta0.ndim == 1 or solver.family == "dlnlab":  # rk45 keeps each member's error control itself
        return _solve(field, theta0, t, solver, events, progress, stop, report)
    if solver.method in TORCHODE_METHODS:
        return integrate_torchode(field, theta0, t, solver, progress, stop)
    if solver.on_cpu_only:
        return integrate_members(_member_solver(field, t, solver, progress, stop, len(theta0)),
                                 theta0, t, solver.method)  # fmt: skip
    return _solve(field, theta0, t, batch_solver(solver), events, progress, stop, report)


def _member_solver(field, t, solver, progress, stop, n_members):
    """solve_one(i, theta0_i) for :func:`integrate_members`, its progress mapped onto the whole batch."""
    t_end = float(t[-1])

    def solve_one(i: int, theta0: Tensor) -> Trajectory:
        def member_progress(tt: float, _end: float) -> None:
            progress((i + tt / t_end) / n_members * t_end, t_end)

        return _solve(field, theta0, t, solver, (), member_progress if progress else None, stop)

    return solve_one


def _solve(field, theta0, t, solver, events, progress, stop, report=None) -> Trajectory:
    state = Run(field.problem, field.layout, theta0, t, solver, events, progress, field)
    state.counter.stop = stop
    if report is not None and report.fn is not None:
        state.on_output = report
        report(0, state.outputs[0])
    try:
        if solver.family == "scipy":
            return integrate_scipy(state, stop)
        if solver.family == "sundials":
            return integrate_cvode(state, stop)
        if solver.method == "bdf_batch":
            return integrate_bdf(state, stop)
        if solver.method == "radau_batch":
            return integrate_radau(state, stop)
        if solver.family == "dlnlab":
            return integrate_rk45(state, stop)
        return integrate_torchdiffeq(state, stop)
    except KeyboardInterrupt as exc:
        if isinstance(exc, FlowInterrupted):
            raise
        t_last = float(t[state.n_out - 1])
        msg = f"interrupted at t = {state.counter.t_reached:.6g}; output kept up to t = {t_last:.6g}"
        raise FlowInterrupted(state.result(Status.INTERRUPTED, msg)) from exc
