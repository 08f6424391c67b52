"""The exact gradient flow dtheta/dt = -grad L(theta) on the packed masked weights theta.

Two families of integrators, chosen explicitly by a :class:`Solver` (diffrax style):

* torchdiffeq (``TORCHDIFFEQ_ADAPTIVE``, ``TORCHDIFFEQ_FIXED``): ``torchdiffeq.odeint`` called in chunks
  of ``CHUNK_POINTS`` output points, each chunk continuing from the last state (and, for adaptive
  methods, from the last accepted step size). A failure keeps every output point the solver passed
  (finished chunks, plus a replay of the failed chunk up to the failure). A state may be one vector
  (p,) or a batch (B, p) integrated as one system (shared steps and error norm).
* scipy stiff (``SCIPY_STIFF``): ``scipy.integrate.BDF / Radau / LSODA`` driven step by step with
  the exact Jacobian -Hessian(theta) (dense p x p, on theta only); output times come from each step's
  dense output.

Events are continuous functions ``f(problem, dims, theta) -> float`` that are > 0 before the event and
<= 0 at it (:class:`LossLevel`, :class:`Convergence`, or any callable with that signature, an optional
``name`` (else its ``__name__``) and an optional ``batched = True`` when it also maps states (K, p) to
values (K,)). The first event to fire stops the solve; its time is located by root finding (torchdiffeq's
event bisection or brentq on scipy's dense output), not just at output points. An event is already
fired if it is <= 0 at t_eval[0]. A sign change that reverts between two checks is missed (checks:
every output point for torchdiffeq, every step end for scipy).

Everything runs in the problem's dtype (float64), under ``torch.no_grad()``, with one torch thread and
one BLAS thread (restored afterwards).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.integrate
import scipy.optimize
import torch
import torchdiffeq
from torch import Tensor

from dlnlab.errors import ArgumentError
from dlnlab.network import Layout, as_layout, unpack
from dlnlab.problem import RegressionProblem
from dlnlab.trajectory import Interrupted, Status, Trajectory

__all__ = [
    "TORCHDIFFEQ_ADAPTIVE",
    "TORCHDIFFEQ_FIXED",
    "SCIPY_STIFF",
    "METHODS",
    "DEFAULT_METHOD",
    "DEFAULT_RTOL",
    "DEFAULT_ATOL",
    "CHUNK_POINTS",
    "CHUNK_POINTS_EVENTS",
    "EXPLICIT_ADAMS_MAX_ORDER",
    "Solver",
    "LossLevel",
    "Convergence",
    "FlowResult",
    "FlowSolverError",
    "FlowInterrupted",
    "vector_field",
    "time_grid",
    "integrate",
]

TORCHDIFFEQ_ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
TORCHDIFFEQ_FIXED = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")  # need step_size
SCIPY_STIFF = ("bdf", "radau", "lsoda")  # scipy with the exact Jacobian -Hessian(theta)
METHODS = TORCHDIFFEQ_ADAPTIVE + TORCHDIFFEQ_FIXED + SCIPY_STIFF

# Chosen by scripts/bench_flow.py (docs/benchmarks/flow.md). On the stiff benchmark (Fig.-1 net,
# s = [10, 6, 3, 1], t_max = 300) LSODA with the exact Jacobian is the fastest method at every accuracy
# from 1e-4 to 1e-7; at rtol 1e-9 / atol 1e-11 it tracks a tight reference to ~1e-6 there and to ~4e-7
# on the Figure-1 setting s = [4, 3, 2, 1], in about 0.6 s (dopri5: ~30 s).
DEFAULT_METHOD = "lsoda"
DEFAULT_RTOL = 1e-9
DEFAULT_ATOL = 1e-11

CHUNK_POINTS = 256  # output points per torchdiffeq call
CHUNK_POINTS_EVENTS = 32  # ... when events are watched (they are checked after each chunk)
EXPLICIT_ADAMS_MAX_ORDER = 5  # default options["max_order"] for explicit_adams: Adams-Bashforth of order 4

_SCIPY_CLASSES = {"bdf": "BDF", "radau": "Radau", "lsoda": "LSODA"}
_RK_OPTIONS = frozenset(
    "first_step min_step max_step step_t jump_t safety ifactor dfactor max_num_steps dtype norm".split()
)
_FIXED_OPTIONS = frozenset({"interp", "perturb"})
_ADAMS_OPTIONS = _FIXED_OPTIONS | {"max_iters", "max_order"}
_SCIPY_OPTIONS = {
    "bdf": frozenset({"first_step", "max_step"}),
    "radau": frozenset({"first_step", "max_step"}),
    "lsoda": frozenset({"first_step", "min_step", "max_step", "lband", "uband"}),
}


def _allowed_options(method: str) -> frozenset[str]:
    if method in TORCHDIFFEQ_ADAPTIVE:
        return _RK_OPTIONS
    if method in ("explicit_adams", "implicit_adams"):
        return _ADAMS_OPTIONS
    if method in TORCHDIFFEQ_FIXED:
        return _FIXED_OPTIONS
    return _SCIPY_OPTIONS[method]


def _positive_float(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentError(key, f"must be a positive number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ArgumentError(key, f"must be finite and > 0, got {value:g}")
    return value


@dataclass(frozen=True)
class Solver:
    """An explicit solver choice, validated on construction.

    method: one of ``METHODS``. rtol, atol: tolerances (> 0; scipy needs rtol >= 100 eps).
    step_size: required for the fixed-step methods, not accepted otherwise.
    max_nfe: budget of right-hand-side evaluations; exceeding it raises :class:`FlowSolverError`.
    options: passed through to torchdiffeq (e.g. ``max_step``, ``interp``) or to the scipy solver
    (e.g. ``max_step``, ``first_step``); keys are checked against what the method accepts. One default
    differs from torchdiffeq's: explicit_adams gets ``max_order = 5`` (Adams-Bashforth of order 4)
    unless given, because torchdiffeq's order-11 default is unstable at any practical step size.
    Fixed-step methods interpolate linearly between their steps (torchdiffeq's ``interp="linear"``):
    choose a step that divides the output spacing, or pass ``options={"interp": "cubic"}``.
    """

    method: str = DEFAULT_METHOD
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    step_size: float | None = None
    max_nfe: int | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ArgumentError("method", f"unknown method {self.method!r}; allowed: {', '.join(METHODS)}")
        rtol = _positive_float("rtol", self.rtol)
        atol = _positive_float("atol", self.atol)
        if self.method in SCIPY_STIFF and rtol < 100 * np.finfo(float).eps:
            raise ArgumentError(
                "rtol",
                f"must be >= {100 * np.finfo(float).eps:.3g} for scipy method {self.method}, got {rtol:g}",
            )
        object.__setattr__(self, "rtol", rtol)
        object.__setattr__(self, "atol", atol)
        if self.method in TORCHDIFFEQ_FIXED:
            if self.step_size is None:
                raise ArgumentError("step_size", f"required for the fixed-step method {self.method}")
            object.__setattr__(self, "step_size", _positive_float("step_size", self.step_size))
        elif self.step_size is not None:
            raise ArgumentError(
                "step_size",
                f"only the fixed-step methods ({', '.join(TORCHDIFFEQ_FIXED)}) take a step size; "
                f"method {self.method} chooses its own steps (give none)",
            )
        if isinstance(self.max_nfe, float) and self.max_nfe.is_integer():  # 1e6 from a config file
            object.__setattr__(self, "max_nfe", int(self.max_nfe))
        if self.max_nfe is not None:
            if isinstance(self.max_nfe, bool) or not isinstance(self.max_nfe, int) or self.max_nfe < 1:
                raise ArgumentError("max_nfe", f"must be a positive integer or None, got {self.max_nfe!r}")
        if not isinstance(self.options, Mapping):
            raise ArgumentError("options", f"must be a mapping, got {type(self.options).__name__}")
        options = dict(self.options)
        if "step_size" in options:
            raise ArgumentError("options", "give the step as Solver(step_size=...), not as an option")
        allowed = _allowed_options(self.method)
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ArgumentError(
                "options",
                f"unknown option(s) {', '.join(map(repr, unknown))} for method {self.method}; "
                f"allowed: {', '.join(sorted(allowed))}",
            )
        object.__setattr__(self, "options", options)

    @property
    def family(self) -> str:
        """``"torchdiffeq"`` or ``"scipy"``."""
        return "scipy" if self.method in SCIPY_STIFF else "torchdiffeq"


# ----------------------------------------------------------------------------------------------
# Events


class LossLevel:
    """Event: stop when L(theta) <= level. Value L - level (batch-aware)."""

    batched = True

    def __init__(self, level: float, name: str = "loss_level") -> None:
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not math.isfinite(level):
            raise ValueError(f"LossLevel: level must be a finite number, got {level!r}")
        self.level = float(level)
        self.name = name

    def __call__(self, problem: RegressionProblem, dims, theta: Tensor) -> Tensor:
        return problem.loss(unpack(theta, dims)) - self.level

    def __repr__(self) -> str:
        return f"LossLevel(level={self.level!r})"


class Convergence:
    """Event: stop when ||grad L|| <= grad_tol and L - L_floor <= loss_tol.

    L_floor = problem.plateau_levels(r_max)[-1], the network's attainable minimum. The value is
    max(||g|| - grad_tol, (L - L_floor) - loss_tol) (batch-aware).
    """

    batched = True

    def __init__(self, grad_tol: float = 1e-8, loss_tol: float = 1e-10, name: str = "convergence") -> None:
        self.grad_tol = _positive_float("Convergence.grad_tol", grad_tol)
        self.loss_tol = _positive_float("Convergence.loss_tol", loss_tol)
        self.name = name
        self._floor: tuple[RegressionProblem, int, float] | None = None

    def floor(self, problem: RegressionProblem, dims) -> float:
        r_max = as_layout(dims).r_max
        if self._floor is None or self._floor[0] is not problem or self._floor[1] != r_max:
            self._floor = (problem, r_max, float(problem.plateau_levels(r_max)[-1]))
        return self._floor[2]

    def __call__(self, problem: RegressionProblem, dims, theta: Tensor) -> Tensor:
        loss, grads = problem.loss_and_gradient(unpack(theta, dims))
        gnorm = torch.sqrt(sum((g * g).sum(dim=(-2, -1)) for g in grads))
        return torch.maximum(gnorm - self.grad_tol, (loss - self.floor(problem, dims)) - self.loss_tol)

    def __repr__(self) -> str:
        return f"Convergence(grad_tol={self.grad_tol!r}, loss_tol={self.loss_tol!r})"


def _event_name(event, index: int) -> str:
    name = getattr(event, "name", None) or getattr(event, "__name__", None)
    return str(name) if name else f"event{index}"


def _event_values(events: Sequence, problem, layout: Layout, thetas: Tensor) -> np.ndarray:
    """Values (n_events, K) of every event at the K states thetas (K, p)."""
    out = np.empty((len(events), thetas.shape[0]))
    for i, ev in enumerate(events):
        if getattr(ev, "batched", False):  # declares that it maps (K, p) to (K,)
            out[i] = torch.as_tensor(ev(problem, layout, thetas), dtype=torch.float64).reshape(-1).numpy()
        else:
            out[i] = [float(ev(problem, layout, th)) for th in thetas]
    return out


# ----------------------------------------------------------------------------------------------
# Results and errors


FlowResult = Trajectory  # the flow's result is the one trajectory type of dlnlab.trajectory


class FlowSolverError(RuntimeError):
    """The solver failed; ``t_fail`` is the time reached and ``result`` the partial trajectory."""

    def __init__(self, message: str, t_fail: float, result: Trajectory) -> None:
        super().__init__(message)
        self.t_fail = t_fail
        self.result = result


FlowInterrupted = Interrupted  # raised with the partial trajectory


class _BudgetExceeded(Exception):
    pass


# What torchdiffeq raises when a solve fails: AssertionError ('underflow in dt', 'max_num_steps exceeded',
# non-finite state), RuntimeError (fixed-step event search), plus our NFE budget.
_FAILURES = (_BudgetExceeded, AssertionError, RuntimeError)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


# ----------------------------------------------------------------------------------------------
# The vector field and time grids


def _check_problem_dims(problem: RegressionProblem, layout: Layout) -> None:
    if problem.d_x != layout.d_x or problem.d_y != layout.d_y:
        raise ArgumentError(
            "dims", f"dims {list(layout.dims)} do not fit the data (d_x = {problem.d_x}, d_y = {problem.d_y})"
        )


def vector_field(problem: RegressionProblem, dims) -> Callable[[Tensor, Tensor], Tensor]:
    """(t, theta) -> -grad L(theta) for theta of shape (..., p) (closed-form gradient)."""
    layout = as_layout(dims)
    _check_problem_dims(problem, layout)

    def field(t: Tensor, theta: Tensor) -> Tensor:
        return -problem.gradient_theta(theta, layout)

    return field


def time_grid(
    t_max: float,
    dt: float | None = None,
    n: int | None = None,
    kind: str = "uniform",
    t_min: float | None = None,
) -> Tensor:
    """Output times, float64.

    uniform: ``0, dt, 2 dt, ... <= t_max`` (a point within 1e-9 dt of t_max counts), or ``n`` points
    ``linspace(0, t_max, n)`` when ``dt`` is not given. log: ``0`` followed by
    ``geomspace(t_min, t_max, n)``.
    """
    t_max = _positive_float("t_max", t_max)
    if kind == "uniform":
        if (dt is None) == (n is None):
            raise ValueError("time_grid(kind='uniform'): give exactly one of dt or n")
        if dt is not None:
            dt = _positive_float("dt", dt)
            count = int(math.floor(t_max / dt + 1e-9)) + 1
            return torch.arange(count, dtype=torch.float64) * dt
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"n must be an integer >= 2, got {n!r}")
        return torch.linspace(0.0, t_max, n, dtype=torch.float64)
    if kind == "log":
        if dt is not None:
            raise ValueError("time_grid(kind='log') takes t_min and n, not dt")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer for kind='log', got {n!r}")
        t_min = _positive_float("t_min", t_min)
        if t_min >= t_max and n > 1:
            raise ValueError(f"t_min must be < t_max, got t_min={t_min:g}, t_max={t_max:g}")
        pts = torch.from_numpy(np.geomspace(t_min, t_max, n)).to(torch.float64)
        return torch.cat([torch.zeros(1, dtype=torch.float64), pts])
    raise ValueError(f"time_grid: unknown kind {kind!r}; allowed: uniform, log")


# ----------------------------------------------------------------------------------------------
# Integration


class _Counter:
    """The right-hand side with an NFE counter and budget, plus torchdiffeq step callbacks."""

    def __init__(self, field, max_nfe: int | None, t_start: float) -> None:
        self.field = field
        self.max_nfe = max_nfe
        self.nfe = 0
        self.n_steps = 0
        self.t_reached = t_start
        self.last_dt: float | None = None

    def check_budget(self) -> None:
        if self.max_nfe is not None and self.nfe >= self.max_nfe:
            raise _BudgetExceeded(f"budget of {self.max_nfe} right-hand-side evaluations exhausted")
        self.nfe += 1

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


class _TorchFunc:
    def __init__(self, counter: _Counter, adaptive: bool) -> None:
        self._counter = counter
        if adaptive:
            self.callback_accept_step = counter.accept_step
        else:
            self.callback_step = counter.fixed_step

    def __call__(self, t, y):
        return self._counter(t, y)


def _as_solver(solver) -> Solver:
    if isinstance(solver, Solver):
        return solver
    if isinstance(solver, Mapping):
        return Solver(**dict(solver))
    raise ValueError(f"flow: solver must be a Solver or a mapping of its fields, got {type(solver).__name__}")


def _check_t_eval(t_eval) -> Tensor:
    t = torch.as_tensor(t_eval, dtype=torch.float64).detach().cpu()
    if t.ndim != 1 or t.numel() < 1:
        raise ValueError(f"t_eval must be a 1-D sequence of at least one time, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("t_eval must be finite")
    if t.numel() > 1:
        steps = t[1:] - t[:-1]
        if not (steps > 0).all():
            k = int(torch.nonzero(steps <= 0)[0])
            raise ValueError(
                f"t_eval must be strictly increasing: t_eval[{k}] = {float(t[k]):g} >= "
                f"t_eval[{k + 1}] = {float(t[k + 1]):g}"
            )
    return t.contiguous()


def _check_theta0(theta0, layout: Layout, dtype: torch.dtype) -> Tensor:
    if not isinstance(theta0, Tensor):
        theta0 = torch.as_tensor(theta0)
    if theta0.ndim not in (1, 2):
        raise ValueError(f"theta0 must have shape (p,) or (B, p), got {tuple(theta0.shape)}")
    if theta0.shape[-1] != layout.n_weights:
        raise ValueError(
            f"theta0 has {theta0.shape[-1]} entries, dims {list(layout.dims)} need p = {layout.n_weights}"
        )
    if theta0.ndim == 2 and theta0.shape[0] < 1:
        raise ValueError("theta0: the batch (B, p) is empty")
    theta0 = theta0.detach().to(dtype=dtype, device="cpu").clone().contiguous()
    if not torch.isfinite(theta0).all():
        raise ValueError("theta0 must be finite")
    return theta0


_BLAS_HANDLES: list | None = None


def _openblas_handles() -> list:
    """(get, set) thread-count functions of every OpenBLAS loaded in this process (numpy's and scipy's
    bundled copies), found through /proc/self/maps; empty where that is not possible."""
    global _BLAS_HANDLES
    if _BLAS_HANDLES is not None:
        return _BLAS_HANDLES
    handles = []
    try:
        with open("/proc/self/maps") as f:
            paths = {
                line.split()[-1] for line in f if "openblas" in os.path.basename(line.split()[-1]).lower()
            }
        for path in sorted(paths):
            lib = ctypes.CDLL(path)
            for prefix in ("scipy_", ""):
                for suffix in ("", "64_", "_64"):
                    get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
                    set_ = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
                    if get is not None and set_ is not None:
                        get.restype, set_.argtypes = ctypes.c_int, [ctypes.c_int]
                        handles.append((get, set_))
                        break
                else:
                    continue
                break
    except Exception:  # best effort: not Linux, or an unusual BLAS
        handles = []
    _BLAS_HANDLES = handles
    return handles


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread and one BLAS thread for the small-matrix hot loop (scipy's LU of a 198 x 198
    Jacobian is ~50x slower with a multi-threaded OpenBLAS on a loaded machine)."""
    n_torch = torch.get_num_threads()
    torch.set_num_threads(1)
    blas = [(get, set_, get()) for get, set_ in _openblas_handles()]
    for _, set_, _ in blas:
        set_(1)
    try:
        yield
    finally:
        for _, set_, n in blas:
            set_(n)
        torch.set_num_threads(n_torch)


def integrate(
    problem: RegressionProblem,
    dims,
    theta0: Tensor,
    t_eval: Tensor | Sequence[float],
    solver: Solver = Solver(),  # noqa: B008 (frozen, immutable default)
    events: Sequence = (),
    progress: Callable[[float, float], None] | None = None,
) -> Trajectory:
    """Integrate dtheta/dt = -grad L(theta) from theta0 at t_eval[0], reporting at t_eval.

    theta0: (p,) or a batch (B, p) (batches: torchdiffeq methods without events only).
    t_eval: strictly increasing times; t_eval[0] is the time of theta0.
    events: event functions (see the module docstring); the first to fire stops the solve.
    progress(t_reached, t_end): called after every chunk (torchdiffeq) or every ~1% of the horizon
    (scipy), and once at the end.
    Raises ValueError for bad arguments and FlowSolverError (with the partial result) on failure.
    """
    solver = _as_solver(solver)
    layout = as_layout(dims)
    _check_problem_dims(problem, layout)
    t = _check_t_eval(t_eval)
    theta0 = _check_theta0(theta0, layout, problem.X.dtype)
    events = tuple(events)
    for i, ev in enumerate(events):
        if not callable(ev):
            raise ArgumentError("events", f"events[{i}] must be callable f(problem, dims, theta), got {ev!r}")
    batched = theta0.ndim == 2
    if batched and solver.family == "scipy":
        raise ArgumentError(
            "solver",
            f"a batch of initial states (B, p) needs a torchdiffeq method "
            f"({', '.join(TORCHDIFFEQ_ADAPTIVE + TORCHDIFFEQ_FIXED)}), not {solver.method}; "
            "or integrate each state separately",
        )
    if batched and events:
        raise ArgumentError("events", "events are not supported for a batch of initial states (B, p)")

    with _one_thread(), torch.no_grad():
        state = _Run(problem, layout, theta0, t, solver, events, progress)
        impl = _integrate_scipy if solver.family == "scipy" else _integrate_torchdiffeq
        try:
            return impl(state)
        except KeyboardInterrupt as exc:
            if isinstance(exc, FlowInterrupted):
                raise
            t_last = float(t[state.n_out - 1])
            msg = f"interrupted at t = {state.counter.t_reached:.6g}; output kept up to t = {t_last:.6g}"
            raise FlowInterrupted(state.result("interrupted", msg)) from exc


class _Run:
    """Shared bookkeeping of one solve: outputs, counters, events, result construction."""

    def __init__(self, problem, layout, theta0, t, solver, events, progress) -> None:
        self.problem, self.layout, self.t, self.solver = problem, layout, t, solver
        self.events, self.progress = events, progress
        self.names = [_event_name(ev, i) for i, ev in enumerate(events)]
        self.counter = _Counter(vector_field(problem, layout), solver.max_nfe, float(t[0]))
        self.njev = 0
        self.outputs: list[Tensor] = [theta0.unsqueeze(0)]
        self.n_out = 1
        self.start = time.perf_counter()

    @property
    def t_end(self) -> float:
        return float(self.t[-1])

    def add(self, states: Tensor) -> None:
        if states.shape[0]:
            self.outputs.append(states)
            self.n_out += states.shape[0]

    def result(self, status: str, message: str, event=None, t_event=None, theta_event=None) -> Trajectory:
        theta = torch.cat(self.outputs, dim=0)
        return Trajectory(
            t=self.t[: self.n_out].clone(),
            theta=theta,
            status=Status(status),
            message=message,
            method=self.solver.method,
            nfe=self.counter.nfe,
            njev=self.njev,
            n_steps=self.counter.n_steps,
            wall_time_s=time.perf_counter() - self.start,
            event=event,
            t_event=t_event,
            theta_event=theta_event,
        )

    def fail(self, reason: str, t_fail: float) -> FlowSolverError:
        t_last = float(self.t[self.n_out - 1])
        msg = (
            f"flow: {self.solver.method} failed at t = {t_fail:.6g} (horizon {self.t_end:g}; output kept up "
            f"to t = {t_last:.6g}, {self.n_out} of {len(self.t)} points; nfe = {self.counter.nfe}): {reason}"
        )
        return FlowSolverError(msg, t_fail, self.result("solver_failed", msg))

    def event_result(self, index: int, t_event: float, theta_event: Tensor) -> Trajectory:
        keep = int(torch.searchsorted(self.t, torch.tensor(t_event, dtype=torch.float64), right=True))
        keep = min(keep, self.n_out)
        theta = torch.cat(self.outputs, dim=0)[:keep]
        self.outputs, self.n_out = [theta], keep
        name = self.names[index]
        msg = f"event {name!r} at t = {t_event:.10g}"
        if self.progress is not None:
            self.progress(t_event, self.t_end)
        return self.result("event", msg, event=name, t_event=t_event, theta_event=theta_event)

    def initial_event(self) -> FlowResult | None:
        if not self.events:
            return None
        vals = _event_values(self.events, self.problem, self.layout, self.outputs[0])[:, 0]
        hit = np.nonzero(vals <= 0)[0]
        if hit.size:
            return self.event_result(int(hit[0]), float(self.t[0]), self.outputs[0][0].clone())
        return None


def _integrate_torchdiffeq(run: _Run) -> Trajectory:
    problem, layout, theta0, t, solver = run.problem, run.layout, run.outputs[0][0], run.t, run.solver
    events, progress = run.events, run.progress
    early = run.initial_event()
    if early is not None:
        return early
    adaptive = solver.method in TORCHDIFFEQ_ADAPTIVE
    func = _TorchFunc(run.counter, adaptive)
    user_first_step = "first_step" in solver.options

    def options() -> dict:
        opts = dict(solver.options)
        if adaptive:
            if not user_first_step and run.counter.last_dt is not None:
                opts["first_step"] = run.counter.last_dt  # continue with the last accepted step size
            return opts
        opts["step_size"] = solver.step_size
        if solver.method == "explicit_adams":
            # torchdiffeq's default max_order 12 runs Adams-Bashforth up to order 11, whose stability
            # interval is so short that dy/dt = -y with step 0.01 blows up; order 4 is the usual choice.
            opts.setdefault("max_order", EXPLICIT_ADAMS_MAX_ORDER)
        return opts

    def odeint_raw(y0: Tensor, times: Tensor, event_fn=None):
        return torchdiffeq.odeint(
            func, y0, times, rtol=solver.rtol, atol=solver.atol, method=solver.method,
            options=options(), event_fn=event_fn,
        )  # fmt: skip

    def odeint(y0: Tensor, times: Tensor, event_fn=None):
        try:
            return odeint_raw(y0, times, event_fn)
        except _FAILURES as exc:
            raise run.fail(_reason(exc), run.counter.t_reached) from exc

    def chunk(y0: Tensor, idx: int, stop: int) -> Tensor:
        """Output points idx+1..stop. On a failure, first recover the points the solver had passed by
        replaying the chunk up to them (same start and first step, hence the same steps; the replay's
        evaluations count in nfe but not against max_nfe), then raise."""
        counter = run.counter
        last_dt = counter.last_dt
        try:
            return odeint_raw(y0, t[idx : stop + 1])[1:]
        except _FAILURES as exc:
            t_fail, reason, n_steps = counter.t_reached, _reason(exc), counter.n_steps
            k = int(torch.searchsorted(t, torch.tensor(t_fail, dtype=torch.float64), right=True)) - 1
            if idx < k < stop:
                budget, counter.max_nfe, counter.last_dt = counter.max_nfe, None, last_dt
                nfe = counter.nfe
                try:
                    ys = odeint_raw(y0, t[idx : k + 1])[1:]
                    finite = torch.isfinite(ys.reshape(ys.shape[0], -1)).all(dim=1)
                    n_ok = ys.shape[0] if finite.all() else int(torch.nonzero(~finite)[0])
                    run.add(ys[:n_ok])
                    reason += (
                        f" (a replay of the failed chunk, {counter.nfe - nfe} more evaluations, "
                        f"recovered its first {n_ok} output points)"
                    )
                except _FAILURES:
                    pass
                finally:
                    counter.max_nfe, counter.n_steps, counter.t_reached = budget, n_steps, t_fail
            raise run.fail(reason, t_fail) from exc

    y = theta0
    idx, last = 0, len(t) - 1
    size = CHUNK_POINTS_EVENTS if events else CHUNK_POINTS
    while idx < last:
        stop = min(idx + size, last)
        ys = chunk(y, idx, stop)
        finite = torch.isfinite(ys.reshape(ys.shape[0], -1)).all(dim=1)
        if not finite.all():
            bad = int(torch.nonzero(~finite)[0])
            run.add(ys[:bad])
            raise run.fail("non-finite state", float(t[idx + 1 + bad]))
        if events:
            vals = _event_values(events, problem, layout, ys)
            fired = np.nonzero((vals <= 0).any(axis=0))[0]
            if fired.size:
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
        run.add(ys)
        y, idx = ys[-1], stop
        run.counter.t_reached = max(run.counter.t_reached, float(t[idx]))
        if progress is not None:
            progress(float(t[idx]), run.t_end)
    msg = f"reached t = {run.t_end:g} ({len(t)} output points)"
    return run.result("ok", msg)


def _locate_torchdiffeq(odeint, event, problem, layout, y_lo, t_lo: float, t_hi: float):
    """The first root of event on (t_lo, t_hi], re-integrating from (t_lo, y_lo) with odeint's event handling
    (bisection on the solver's interpolant down to atol). The value is forced negative after t_hi."""
    minus_one = torch.tensor(-1.0, dtype=torch.float64)

    def event_fn(tt, yy):
        v = torch.as_tensor(event(problem, layout, yy), dtype=torch.float64)
        return torch.where(tt <= t_hi, v, minus_one)

    times = torch.tensor([t_lo, t_hi], dtype=torch.float64)
    t_event, sol = odeint(y_lo, times, event_fn=event_fn)
    return min(float(t_event), t_hi), sol[-1].clone()


def _integrate_scipy(run: _Run) -> Trajectory:
    problem, layout, theta0, t, solver = run.problem, run.layout, run.outputs[0][0], run.t, run.solver
    events, progress = run.events, run.progress
    early = run.initial_event()
    if early is not None:
        return early
    if len(t) == 1:
        return run.result("ok", f"reached t = {run.t_end:g} (1 output point)")
    counter = run.counter
    dtype = theta0.dtype

    def fun(tt, y):
        counter.check_budget()
        return (-problem.gradient_theta(torch.from_numpy(y), layout)).numpy()

    def jac(tt, y):
        run.njev += 1
        return (-problem.hessian(torch.from_numpy(y), layout)).numpy()

    def ev_value(i: int, y: np.ndarray) -> float:
        return float(events[i](problem, layout, torch.from_numpy(y)))

    cls = getattr(scipy.integrate, _SCIPY_CLASSES[solver.method])
    t0, t_end = float(t[0]), run.t_end
    t_np = t.numpy()
    try:
        ode = cls(fun, t0, theta0.numpy().astype(np.float64, copy=True), t_end,
                  rtol=solver.rtol, atol=solver.atol, jac=jac, **solver.options)  # fmt: skip
    except _BudgetExceeded as exc:
        raise run.fail(str(exc), t0) from exc
    prev_vals = np.array([ev_value(i, ode.y) for i in range(len(events))])
    next_out = 1
    progress_every = (t_end - t0) / 100
    next_progress = t0 + progress_every
    while next_out < len(t):
        t_old = ode.t
        try:
            message = ode.step()
        except _BudgetExceeded as exc:
            raise run.fail(str(exc), float(t_old)) from exc
        if ode.status == "failed":
            raise run.fail(f"scipy {cls.__name__}: {message}", float(ode.t))
        counter.n_steps += 1
        t_new = float(ode.t)
        counter.t_reached = t_new
        if not np.isfinite(ode.y).all():
            raise run.fail("non-finite state", t_new)
        dense = None
        hit = None
        if events:
            vals = np.array([ev_value(i, ode.y) for i in range(len(events))])
            crossed = np.nonzero(vals <= 0)[0]
            if crossed.size:
                dense = ode.dense_output()
                for i in crossed:
                    te = _locate_scipy(
                        lambda s, i=i, d=dense: ev_value(i, d(s)), float(t_old), t_new, prev_vals[i]
                    )
                    if hit is None or te < hit[1]:
                        hit = (int(i), te)
            prev_vals = vals
        t_stop = t_new if hit is None else hit[1]
        hi = int(np.searchsorted(t_np, t_stop, side="right"))
        if hi > next_out:
            if dense is None:
                dense = ode.dense_output()
            ts = t_np[next_out:hi]
            ys = np.atleast_2d(dense(ts).T) if ts.size else np.empty((0, theta0.numel()))
            if ts.size and ts[-1] == t_new:
                ys[-1] = ode.y
            run.add(torch.from_numpy(np.ascontiguousarray(ys)).to(dtype))
            next_out = hi
        if hit is not None:
            y_ev = ode.y if hit[1] == t_new else dense(hit[1])
            return run.event_result(hit[0], hit[1], torch.from_numpy(np.array(y_ev, dtype=np.float64)))
        if progress is not None and (t_new >= next_progress or next_out >= len(t)):
            progress(t_new, t_end)
            next_progress = t_new + progress_every
        if ode.status == "finished" and next_out < len(t):  # cannot happen: t_bound = t_eval[-1]
            raise run.fail("solver finished before the last output time", t_new)
    msg = f"reached t = {t_end:g} ({len(t)} output points); scipy {cls.__name__}"
    return run.result("ok", msg)


def _locate_scipy(g: Callable[[float], float], t_lo: float, t_hi: float, g_lo: float) -> float:
    """First time in (t_lo, t_hi] with g = 0, given g(t_lo) = g_lo > 0 and an event at the step end t_hi
    (brentq on the step's dense output, to ~1e-14 in t)."""
    if not g_lo > 0:
        return t_lo
    g_hi = g(t_hi)
    if g_hi >= 0:  # zero at the step end (or the dense output rounds to >= 0 there)
        return t_hi
    return float(scipy.optimize.brentq(g, t_lo, t_hi, xtol=1e-14, rtol=4 * np.finfo(float).eps, maxiter=200))
