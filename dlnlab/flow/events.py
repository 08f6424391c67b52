"""Events of the flow: continuous functions f(problem, dims, theta) > 0 before the event, <= 0 at it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from dlnlab.flow.solver import positive_float
from dlnlab.network import Layout, as_layout, unpack
from dlnlab.problem import RegressionProblem

__all__ = ["LossLevel", "Convergence", "event_name", "event_values"]


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
        self.grad_tol = positive_float("Convergence.grad_tol", grad_tol)
        self.loss_tol = positive_float("Convergence.loss_tol", loss_tol)
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


def event_name(event, index: int) -> str:
    name = getattr(event, "name", None) or getattr(event, "__name__", None)
    return str(name) if name else f"event{index}"


def event_values(events: Sequence, problem, layout: Layout, thetas: Tensor) -> np.ndarray:
    """Values (n_events, K) of every event at the K states thetas (K, p)."""
    out = np.empty((len(events), thetas.shape[0]))
    for i, ev in enumerate(events):
        if getattr(ev, "batched", False):  # declares that it maps (K, p) to (K,)
            out[i] = torch.as_tensor(ev(problem, layout, thetas), dtype=torch.float64).reshape(-1).numpy()
        else:
            out[i] = [float(ev(problem, layout, th)) for th in thetas]
    return out
