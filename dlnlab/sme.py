"""The stochastic modified equation (SME) of minibatch SGD, integrated with torchsde.

Minibatch SGD at step eta with batches of B of the N samples follows, in law and to first order in eta
(Li, Tai and E 2017; docs/theory.md, section 9), the Ito SDE

    dTheta = -grad L(Theta) dt + sqrt(eta) (c Sigma(Theta))^(1/2) dW,

Sigma = (1/N) sum_i (g_i - g)(g_i - g)^T the covariance of the per-sample gradients g_i = grad l_i
(l_i = ||y_i - P x_i||^2 / 2, L = mean_i l_i, g = grad L), and c = 1/B for batches drawn with
replacement, (N - B) / (B (N - 1)) without. Sigma has an exact square root, the p x N matrix
G = (g_1 - g, ..., g_N - g) / sqrt(N) (Sigma = G G^T), so the noise is torchsde's "general" noise of
N Brownian motions and nothing p x p is formed. The per-sample gradients come in closed form: with
the residuals r_i = P x_i - y_i, grad_{W_j} l_i = (W_h...W_{j+1})^T r_i (W_{j-1}...W_1 x_i)^T.
Euler-Maruyama (weak order 1, what the first-order SME is accurate to) at a step of eta / 8.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor

from dlnlab.descent import SAMPLINGS
from dlnlab.errors import ArgumentError
from dlnlab.network import Layout, as_layout, matmul, pack, prefix_products, unpack
from dlnlab.problem import RegressionProblem, check_problem_dims
from dlnlab.trajectory import Status, Trajectory

__all__ = ["per_sample_gradients", "noise_scale", "noise_factor", "integrate_sme"]


def per_sample_gradients(problem: RegressionProblem, theta: Tensor, dims: Layout | Sequence[int]) -> Tensor:
    """grad l_i on theta for every sample i: (..., N, p) for theta (..., p); their mean is grad L."""
    layout = as_layout(dims)
    ws = unpack(theta, layout)
    pre = prefix_products(ws)
    x, y = problem.X, problem.Y
    t = matmul(pre[-1], x) - y  # residuals r_i as columns, (..., d_y, N)
    grads: list[Tensor] = [None] * layout.depth  # type: ignore[list-item]
    for j in range(layout.depth - 1, -1, -1):
        a = x if j == 0 else matmul(pre[j - 1], x)  # (..., d_{j-1}, N): W_{j-1}...W_1 x_i
        grads[j] = torch.einsum("...an,...bn->...nab", t, a)
        if j:
            t = matmul(ws[j].mT, t)
    return pack(grads)


def noise_scale(n_samples: int, batch_size: int, sampling: str) -> float:
    """c: the covariance of a minibatch gradient is c Sigma."""
    if sampling not in SAMPLINGS:
        raise ArgumentError("sampling", f"unknown sampling {sampling!r}; allowed: {', '.join(SAMPLINGS)}")
    if sampling == "reshuffle":
        raise ArgumentError(
            "sampling",
            "reshuffle's minibatches within an epoch are not independent: the SME (independent "
            "steps, each of covariance c Sigma) models with_replacement or without_replacement",
        )
    if not 1 <= batch_size <= (n_samples if sampling == "without_replacement" else math.inf):
        raise ArgumentError(
            "batch_size", f"must be in 1 .. N = {n_samples} without replacement, got {batch_size}"
        )
    if sampling == "with_replacement":
        return 1.0 / batch_size
    return 0.0 if n_samples == 1 else (n_samples - batch_size) / (batch_size * (n_samples - 1))


def noise_factor(problem, theta: Tensor, dims, batch_size: int, sampling: str = "with_replacement") -> Tensor:
    """(c Sigma)^(1/2) as the exact (..., p, N) factor sqrt(c / N) (g_i - g): times its transpose it is
    the covariance of one minibatch gradient at theta."""
    per = per_sample_gradients(problem, theta, dims)
    centred = per - per.mean(dim=-2, keepdim=True)
    scale = math.sqrt(noise_scale(problem.n_samples, batch_size, sampling) / problem.n_samples)
    return (centred * scale).mT


class _SME(torch.nn.Module):
    noise_type, sde_type = "general", "ito"

    def __init__(self, problem, layout, lr, batch_size, sampling) -> None:
        super().__init__()
        self.problem, self.layout, self.root_lr = problem, layout, math.sqrt(lr)
        self.batch_size, self.sampling = batch_size, sampling
        self.nfe = 0

    def f(self, t, y):  # drift
        self.nfe += 1
        return -self.problem.gradient_theta(y, self.layout)

    def g(self, t, y):  # diffusion, (R, p, N)
        return self.root_lr * noise_factor(self.problem, y, self.layout, self.batch_size, self.sampling)

    def f_and_g_prod(self, t, y, v):
        """The drift and G v for the Brownian increments v (R, N), without forming G: sum_i (g_i - g) v_i
        is the gradient of the loss with sample weights v_i - mean(v), one backward pass, where G costs
        N per-sample gradients (measured: 31 ms against 0.77 ms a call on the Figure 1 net with 128 members)."""
        scale = self.root_lr * math.sqrt(noise_scale(self.problem.n_samples, self.batch_size, self.sampling)
                                         / self.problem.n_samples)  # fmt: skip
        self.nfe += 1
        centred = v - v.mean(dim=-1, keepdim=True)
        grad, noise = self.problem.gradient_and_weighted_gradient(unpack(y, self.layout), centred)
        return -pack(grad), pack(noise) * scale


def integrate_sme(
    problem: RegressionProblem,
    dims,
    theta0: Tensor,
    t_eval: Tensor | Sequence[float],
    lr: float,
    batch_size: int,
    sampling: str = "with_replacement",
    seed: int = 0,
    dt: float | None = None,
) -> Trajectory:
    """An ensemble of the SME of SGD at step ``lr`` with batches of ``batch_size``: theta0 (R, p) (each
    member its own Brownian motions, from ``seed``) reported at t_eval; theta (T, R, p). Euler-Maruyama
    at ``dt`` (default lr / 8)."""
    import torchsde

    layout = check_problem_dims(problem, as_layout(dims))
    if theta0.ndim != 2 or theta0.shape[1] != layout.n_weights:
        raise ArgumentError(
            "theta0", f"an ensemble (R, {layout.n_weights}) is needed, got {tuple(theta0.shape)}"
        )
    t = torch.as_tensor(t_eval, dtype=theta0.dtype)
    sde = _SME(problem, layout, float(lr), int(batch_size), sampling)
    step = float(dt) if dt is not None else lr / 8
    start = time.perf_counter()
    bm = torchsde.BrownianInterval(
        float(t[0]), float(t[-1]), size=(theta0.shape[0], problem.n_samples), dtype=theta0.dtype, entropy=int(seed)
    )  # fmt: skip
    with torch.no_grad():
        ys = torchsde.sdeint(sde, theta0, t, method="euler", dt=step, bm=bm)
    return Trajectory(
        t=t.clone(), theta=ys, status=Status.OK, message=f"Euler-Maruyama, dt = {step:g}", method="sme_euler",
        nfe=sde.nfe, njev=0, n_steps=sde.nfe, wall_time_s=time.perf_counter() - start,
    )  # fmt: skip
