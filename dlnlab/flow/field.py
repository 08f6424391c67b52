"""The vector field -grad L(theta) of the flow, and the time grids it is reported on."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from dlnlab.errors import ArgumentError
from dlnlab.flow.solver import positive_float
from dlnlab.network import Layout, as_layout
from dlnlab.problem import RegressionProblem

__all__ = ["check_problem_dims", "vector_field", "time_grid"]


def check_problem_dims(problem: RegressionProblem, layout: Layout) -> None:
    if problem.d_x != layout.d_x or problem.d_y != layout.d_y:
        raise ArgumentError(
            "dims", f"dims {list(layout.dims)} do not fit the data (d_x = {problem.d_x}, d_y = {problem.d_y})"
        )


def vector_field(problem: RegressionProblem, dims) -> Callable[[Tensor, Tensor], Tensor]:
    """(t, theta) -> -grad L(theta) for theta of shape (..., p) (closed-form gradient)."""
    layout = as_layout(dims)
    check_problem_dims(problem, layout)

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
    t_max = positive_float("t_max", t_max)
    if kind == "uniform":
        if (dt is None) == (n is None):
            raise ValueError("time_grid(kind='uniform'): give exactly one of dt or n")
        if dt is not None:
            dt = positive_float("dt", dt)
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
        t_min = positive_float("t_min", t_min)
        if t_min >= t_max and n > 1:
            raise ValueError(f"t_min must be < t_max, got t_min={t_min:g}, t_max={t_max:g}")
        pts = torch.from_numpy(np.geomspace(t_min, t_max, n)).to(torch.float64)
        return torch.cat([torch.zeros(1, dtype=torch.float64), pts])
    raise ValueError(f"time_grid: unknown kind {kind!r}; allowed: uniform, log")
