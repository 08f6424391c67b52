"""The stochastic modified equation of SGD: its drift and diffusion against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlnlab import init
from dlnlab.descent import MinibatchSampler, gd
from dlnlab.network import pack, unpack
from dlnlab.problem import RegressionProblem
from dlnlab.sme import integrate_sme, noise_factor, noise_scale, per_sample_gradients
from tests._helpers import bad_argument

DIMS = [4, 3, 3, 2]


@pytest.fixture(scope="module")
def small():
    problem = RegressionProblem.teacher([2.0, 1.0], 4, 2, 20, seed=0)
    return problem, pack(init.gaussian(DIMS, 0.5, seed=1))


def test_per_sample_gradients_are_autograds_and_average_to_the_gradient(small):
    problem, theta = small
    per = per_sample_gradients(problem, theta, DIMS)
    assert per.shape == (20, theta.numel())
    torch.testing.assert_close(per.mean(dim=0), problem.gradient_theta(theta, DIMS), rtol=1e-12, atol=1e-14)
    for i in (0, 7, 19):
        x = theta.clone().requires_grad_(True)
        p = unpack(x, DIMS)
        out = p[2] @ p[1] @ p[0] @ problem.X[:, i]
        (g,) = torch.autograd.grad(0.5 * ((out - problem.Y[:, i]) ** 2).sum(), x)
        torch.testing.assert_close(per[i], g, rtol=1e-12, atol=1e-14)
    batch = per_sample_gradients(problem, torch.stack([theta, 2 * theta]), DIMS)
    torch.testing.assert_close(batch[1], per_sample_gradients(problem, 2 * theta, DIMS))


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
def test_the_diffusion_is_the_covariance_of_a_minibatch_gradient(small, sampling):
    """G G^T against the covariance of 200,000 minibatch gradients drawn as SGD draws them (its sampler)."""
    problem, theta = small
    b = 5
    factor = noise_factor(problem, theta, DIMS, b, sampling)
    cov = factor @ factor.T
    n, draws = problem.n_samples, 200_000
    idx = MinibatchSampler(n, b, sampling, seed=0).draw(draws)
    per = per_sample_gradients(problem, theta, DIMS)
    mc = per[idx].mean(dim=1)  # the minibatch gradients
    emp = torch.cov(mc.T)
    assert float((emp - cov).abs().max()) <= 0.02 * float(cov.abs().max())
    exact = torch.cov(per.T, correction=0) * noise_scale(n, b, sampling)  # Sigma by the definition
    torch.testing.assert_close(cov, exact, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
def test_the_solver_noise_is_the_factor_times_the_increments(small, sampling):
    """f_and_g_prod (one weighted backward pass, what Euler-Maruyama calls) against the p x N factor
    of the per-sample gradients times the Brownian increments, on an ensemble."""
    from dlnlab.network import as_layout
    from dlnlab.sme import _SME

    problem, theta = small
    thetas = torch.stack([theta, 0.5 * theta, theta.flip(0)])
    sde = _SME(problem, as_layout(DIMS), 0.02, 5, sampling)
    v = torch.randn(3, problem.n_samples, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    drift, noise = sde.f_and_g_prod(0.0, thetas, v)
    want = torch.einsum("rpn,rn->rp", sde.g(0.0, thetas), v)
    torch.testing.assert_close(noise, want, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(drift, -problem.gradient_theta(thetas, DIMS), rtol=0, atol=0)
    assert float(want.abs().max()) > 1e-3


def test_no_noise_without_randomness(small):
    problem, theta = small
    assert noise_scale(20, 20, "without_replacement") == 0.0
    assert float(noise_factor(problem, theta, DIMS, 20, "without_replacement").abs().max()) == 0.0


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
def test_the_sde_ensemble_spreads_like_sgd(small, sampling):
    """Var L(t) of 1000 SGD runs against 1000 SME paths (batch 4 of 20, eta = 0.02, t <= 1), many steps
    each: the steps' noises are independent in both samplings (a reshuffled epoch's cancel: no SME)."""
    problem, theta = small
    lr, r = 0.02, 1000  # the ratio's sampling error 2 / sqrt(r) = 0.06: 0.8 and 1.25 are 3.3 and 4 of it
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    start = theta.expand(r, -1).contiguous()
    run = gd(problem, DIMS, start, lr, 50, batch_size=4, sampling=sampling, seed=list(range(r)),
             record_steps=[0, 20, 50])  # fmt: skip
    sme = integrate_sme(problem, DIMS, start, t, lr, 4, sampling, seed=0)
    loss_sgd = problem.loss(unpack(run.theta, DIMS))
    loss_sme = problem.loss(unpack(sme.theta, DIMS))
    ratio = (loss_sgd[1:].var(dim=1) / loss_sme[1:].var(dim=1)).numpy()
    assert np.all((0.8 < ratio) & (ratio < 1.25)), ratio
    gap = (loss_sgd[1:].mean(dim=1) - loss_sme[1:].mean(dim=1)).abs()
    assert float(gap.max()) < 3 * float(loss_sgd[1:].std(dim=1).max()) / r**0.5 + 0.02 * lr


def test_reshuffled_epochs_are_order_one_from_the_flow_and_fresh_subsets_order_one_half():
    """E ||theta_sgd - theta_flow|| (largest over t <= 1, 200 runs, batch 4 of 16): a fresh subset a step
    (without_replacement) adds independent noise, order 1/2 like with_replacement; reshuffling's epochs
    sum every sample once, their noises cancel, order 1 (docs/theory.md, section 9)."""
    from dlnlab.flow import integrate

    problem = RegressionProblem.teacher([2.0, 1.0], d_x=3, d_y=2, n_samples=16, seed=0)
    dims, lrs, r = [3, 3, 2], [0.04, 0.02, 0.01], 200
    theta0 = pack(init.gaussian(dims, 0.5, seed=1))
    orders = {}
    for sampling in ("without_replacement", "reshuffle"):
        errors = []
        for lr in lrs:
            steps = round(1.0 / lr)
            run = gd(problem, dims, theta0.expand(r, -1).clone(), lr, steps, batch_size=4, sampling=sampling,
                     seed=list(range(r)), record_steps=range(steps + 1))  # fmt: skip
            flow = integrate(problem, dims, theta0, run.t.clone())
            errors.append(float((run.theta - flow.theta[:, None]).norm(dim=-1).mean(dim=1).max()))
        orders[sampling] = float(np.polyfit(np.log(lrs), np.log(errors), 1)[0])
    assert 0.4 < orders["without_replacement"] < 0.6 and 0.85 < orders["reshuffle"] < 1.15, orders


def test_dims_that_do_not_fit_the_data_or_a_stack_of_another_width_are_refused(small):
    """Checked where integrate_sme starts (before, the dims were refused only by the drift's first call, from
    inside torchsde's own checks): the dims against the data, the stack's width against the dims."""
    problem, theta = small
    t = torch.linspace(0, 0.1, 3)
    wrong = [5, 3, 2]
    with bad_argument("dims", r"dims \[5, 3, 2\] do not fit the data \(d_x = 4, d_y = 2\)"):
        integrate_sme(problem, wrong, torch.zeros(2, 5 * 3 + 3 * 2), t, 0.05, 4)
    with bad_argument("theta0", rf"an ensemble \(R, {theta.numel()}\) is needed, got \(2, 7\)"):
        integrate_sme(problem, DIMS, torch.zeros(2, 7), t, 0.05, 4)
