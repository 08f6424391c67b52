"""The vector fields of the flow (-grad L(theta), and GD's modified flow), and the time grids."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from dlnlab._steps import uniform_times
from dlnlab.errors import ArgumentError
from dlnlab.flow.solver import positive_float
from dlnlab.network import Layout, as_layout
from dlnlab.problem import RegressionProblem, check_problem_dims

__all__ = ["check_problem_dims", "vector_field", "time_grid", "GradientFlow", "ModifiedFlow"]


class GradientFlow:
    """The gradient flow dtheta/dt = -grad L(theta), for theta (..., p): the right-hand side, written
    into a given tensor, and the Jacobian -H(theta) (dense p x p, or as products with v).

    The dims are checked when it is made; a stack of states (B, p) is not checked at each evaluation
    (the solvers' hot loop: ``RegressionProblem.field_gradient``), but once where a solve starts
    (``integrate``'s theta0): a direct call takes states of the layout's width."""

    def __init__(self, problem: RegressionProblem, layout: Layout) -> None:
        self.problem, self.layout = problem, check_problem_dims(problem, as_layout(layout))

    def __call__(self, t, theta: Tensor) -> Tensor:
        return -self.problem.field_gradient(theta, self.layout)

    def into(self, theta: Tensor, out: Tensor) -> Tensor:
        """The right-hand side written into ``out`` (no new tensor)."""
        return self.problem.field_gradient(theta, self.layout, out=out, scale=-1.0)

    def jacobian(self, theta: Tensor) -> Tensor:
        return -self.problem.hessian(theta, self.layout)

    def jvp(self, theta: Tensor, v: Tensor) -> Tensor:
        return -self.problem.hvp_theta(theta, v, self.layout)


class ModifiedFlow(GradientFlow):
    """GD's modified flow at step eta (backward error analysis; docs/theory.md, section 9):
    dtheta/dt = -(I + (eta/2) H) grad L = -grad(L + (eta/4) ||grad L||^2), which GD follows to O(eta^2)
    on a finite horizon, where it follows the plain flow to O(eta). H grad L is one closed-form
    Hessian-vector product. The Jacobian handed to the stiff solvers, -(H + (eta/2) H^2), leaves out
    the third-derivative term (eta/2) D^3 L[grad L]: it only steers their Newton iterations, whose
    convergence, not their accuracy, depends on it."""

    def __init__(self, problem: RegressionProblem, layout: Layout, lr: float) -> None:
        super().__init__(problem, layout)
        self.lr = positive_float("modified_lr", lr)

    def __call__(self, t, theta: Tensor) -> Tensor:
        g = self.problem.field_gradient(theta, self.layout)
        return -(g + (0.5 * self.lr) * self.problem.hvp_theta(theta, g, self.layout))

    def into(self, theta: Tensor, out: Tensor) -> Tensor:
        return out.copy_(self(None, theta))

    def jacobian(self, theta: Tensor) -> Tensor:
        h = self.problem.hessian(theta, self.layout)
        return -(h + (0.5 * self.lr) * (h @ h))

    def jvp(self, theta: Tensor, v: Tensor) -> Tensor:
        hv = self.problem.hvp_theta(theta, v, self.layout)
        return -(hv + (0.5 * self.lr) * self.problem.hvp_theta(theta, hv, self.layout))


def vector_field(problem: RegressionProblem, dims, modified_lr: float | None = None) -> GradientFlow:
    """(t, theta) -> -grad L(theta) for theta of shape (..., p) (closed-form gradient); with
    ``modified_lr`` = eta, GD's modified flow -(I + (eta/2) H) grad L instead (:class:`ModifiedFlow`)."""
    layout = as_layout(dims)
    check_problem_dims(problem, layout)
    return (
        GradientFlow(problem, layout) if modified_lr is None else ModifiedFlow(problem, layout, modified_lr)
    )


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
    ``geomspace(t_min, t_max, n)`` (n >= 2, t_min < t_max).
    """
    t_max = positive_float("t_max", t_max)
    if kind == "uniform":
        if (dt is None) == (n is None):
            raise ArgumentError("dt", "give exactly one of dt or n for a uniform grid")
        if dt is not None:
            dt = positive_float("dt", dt)
            return torch.from_numpy(uniform_times(t_max, dt))  # the grid the config checks counted
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ArgumentError("n", f"must be an integer >= 2, got {n!r}")
        return torch.linspace(0.0, t_max, n, dtype=torch.float64)
    if kind == "log":
        if dt is not None:
            raise ArgumentError("dt", "kind='log' takes t_min and n, not dt")
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:  # from t_min to t_max: two points at least
            raise ArgumentError("n", f"must be an integer >= 2 for kind='log', got {n!r}")
        t_min = positive_float("t_min", t_min)
        if t_min >= t_max:
            raise ArgumentError("t_min", f"must be < t_max, got t_min={t_min:g}, t_max={t_max:g}")
        pts = torch.from_numpy(np.geomspace(t_min, t_max, n)).to(torch.float64)
        return torch.cat([torch.zeros(1, dtype=torch.float64), pts])
    raise ArgumentError("kind", f"unknown kind {kind!r}; allowed: uniform, log")
