"""Small problems and recorded series shared by the saddle tests."""

from __future__ import annotations

import math

import torch

from dlnlab import flow
from dlnlab.lab.config import derive_seed
from dlnlab.network import product, unpack
from dlnlab.problem import RegressionProblem

F64 = torch.float64
FIG1 = (11, 6, 6, 6, 6, 4)
PLATEAU_KEYS = {
    "t_start",
    "t_end",
    "duration",
    "level",
    "level_index",
    "is_top_set",
    "modes_learnt",
    "grad_norm_min",
    "t_grad_norm_min",
    "exit_mode",
    "t_exit",
    "label",
    "lambda_min",
    "evidence",
    "escape",
}


def small_problem() -> RegressionProblem:
    """Whitened teacher s = (3, 2, 1), d_x = 5, d_y = 3."""
    return RegressionProblem.teacher([3.0, 2.0, 1.0], d_x=5, d_y=3, n_samples=20, whiten=True, seed=1)


def net(h: int) -> tuple[int, ...]:
    return (5,) + (4,) * (h - 1) + (3,)


def series_of(problem, dims, theta0, t_max, dt, method="lsoda", rtol=1e-10, atol=1e-12) -> dict:
    """The flow on a grid, with the arrays the recorder stores (LSODA: the solver is not what its users
    check, and it took a quarter to a half of dopri5's time on their flows, with the same plateaus)."""
    t = flow.time_grid(t_max, dt=dt)
    res = flow.integrate(problem, dims, theta0, t, flow.Solver(method=method, rtol=rtol, atol=atol))
    return arrays_of(problem, dims, res.t, res.theta)


def arrays_of(problem, dims, t, thetas) -> dict:
    ws = unpack(thetas, dims)
    loss, grads = problem.loss_and_gradient(ws)
    gn = torch.sqrt(sum((g * g).sum(dim=(-2, -1)) for g in grads))
    return {
        "t": torch.as_tensor(t).numpy(),
        "loss": loss.numpy(),
        "grad_norm": gn.numpy(),
        "mode_strength": problem.mode_strength(product(ws)).numpy(),
        "theta": thetas.numpy(),
    }


def gd_arrays(problem, dims, theta0, lr, t_max) -> dict:
    """Plain full-batch GD theta <- theta - lr grad L, recorded at every step (t = k lr)."""
    steps = int(math.ceil(t_max / lr))
    th = theta0.clone()
    out = [th.clone()]
    for _ in range(steps):
        th = th - lr * problem.gradient_theta(th, dims)
        out.append(th.clone())
    return arrays_of(problem, dims, torch.arange(steps + 1, dtype=F64) * lr, torch.stack(out))


def fig1_setting():
    """The default run's problem and gaussian(0.1) start (seeds as scripts/train.py derives them)."""
    prob = RegressionProblem.teacher(
        [4.0, 3.0, 2.0, 1.0], d_x=11, d_y=4, n_samples=110, whiten=True, seed=derive_seed(0, "data")
    )
    return prob, derive_seed(0, "init")
