"""The flow's solver choices as one explicit, validated object (diffrax style): :class:`Solver`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from dlnlab.errors import ArgumentError

__all__ = [
    "TORCHDIFFEQ_ADAPTIVE", "TORCHDIFFEQ_FIXED", "SCIPY_STIFF", "METHODS", "DEFAULT_METHOD", "DEFAULT_RTOL",
    "DEFAULT_ATOL", "CHUNK_POINTS", "CHUNK_POINTS_EVENTS", "EXPLICIT_ADAMS_MAX_ORDER", "Solver", "as_solver",
    "positive_float", "SUNDIALS", "NATIVE",
]  # fmt: skip

TORCHDIFFEQ_ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
TORCHDIFFEQ_FIXED = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")  # need step_size
SCIPY_STIFF = ("bdf", "radau", "lsoda")  # scipy with the exact Jacobian -Hessian(theta)
SUNDIALS = ("cvode",)  # BDF, Newton-Krylov with exact Hessian-vector products: no p x p matrix
# dlnlab's own: Dormand-Prince with contiguous stages (wide nets: flow/_rk45.py), the batched stiff solvers
# (flow/_bdf.py, flow/_radau.py)
NATIVE = ("rk45", "bdf_batch", "radau_batch")
METHODS = TORCHDIFFEQ_ADAPTIVE + TORCHDIFFEQ_FIXED + SCIPY_STIFF + SUNDIALS + NATIVE

# Chosen by python -m scripts.bench.flow (docs/benchmarks/flow.md). On the stiff benchmark (Fig.-1 net,
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
    "cvode": frozenset({"first_step", "min_step", "max_step", "max_order", "krylov_dim", "max_num_steps"}),
    "rk45": frozenset({"first_step", "max_step"}),
    "bdf_batch": frozenset({"first_step", "max_step"}),
    "radau_batch": frozenset({"first_step", "max_step"}),
}


def _allowed_options(method: str) -> frozenset[str]:
    if method in TORCHDIFFEQ_ADAPTIVE:
        return _RK_OPTIONS
    if method in ("explicit_adams", "implicit_adams"):
        return _ADAMS_OPTIONS
    if method in TORCHDIFFEQ_FIXED:
        return _FIXED_OPTIONS
    return _SCIPY_OPTIONS[method]


def positive_float(key: str, value) -> float:
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
        rtol = positive_float("rtol", self.rtol)
        atol = positive_float("atol", self.atol)
        if (
            self.method in (*SCIPY_STIFF, *SUNDIALS, "bdf_batch", "radau_batch")
            and rtol < 100 * np.finfo(float).eps
        ):
            raise ArgumentError(
                "rtol",
                f"must be >= {100 * np.finfo(float).eps:.3g} for scipy method {self.method}, got {rtol:g}",
            )
        object.__setattr__(self, "rtol", rtol)
        object.__setattr__(self, "atol", atol)
        if self.method in TORCHDIFFEQ_FIXED:
            if self.step_size is None:
                raise ArgumentError("step_size", f"required for the fixed-step method {self.method}")
            object.__setattr__(self, "step_size", positive_float("step_size", self.step_size))
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
        """``"torchdiffeq"``, ``"scipy"``, ``"sundials"`` or ``"dlnlab"`` (rk45, bdf_batch, radau_batch)."""
        if self.method in SUNDIALS:
            return "sundials"
        if self.method in NATIVE:
            return "dlnlab"
        return "scipy" if self.method in SCIPY_STIFF else "torchdiffeq"

    @property
    def on_cpu_only(self) -> bool:
        """scipy's and SUNDIALS' solvers and the batched stiff solvers step numpy arrays on the CPU."""
        return self.family in ("scipy", "sundials") or self.method in ("bdf_batch", "radau_batch")


def as_solver(solver) -> Solver:
    """A Solver from a Solver, a mapping of its fields, or a method's name at its default tolerances
    (``"dopri5"``: torchdiffeq's ``method=`` habit; checked as ``Solver(method)`` checks it)."""
    if isinstance(solver, Solver):
        return solver
    if isinstance(solver, Mapping):
        return Solver(**dict(solver))
    if isinstance(solver, str):
        return Solver(solver)
    raise ArgumentError(
        "solver", f"must be a Solver, a mapping of its fields or a method's name, got {type(solver).__name__}"
    )
