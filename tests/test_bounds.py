"""The overflow-safe bounds of dlnlab.bounds against the loss, its gradient and its Hessian computed
independently (straight from the data, autograd, autograd's dense Hessian), and their scaling law far
beyond float64's range."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from dlnlab.bounds import log10_norm, magnitudes
from dlnlab.network import pack, unpack
from dlnlab.problem import RegressionProblem

F64 = torch.float64


def random_weights(dims, seed, scale):
    gen = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(dims[j], dims[j - 1], generator=gen, dtype=F64) for j in range(1, len(dims))]


def direct_loss(theta, dims, X, Y):
    ws = unpack(theta, dims)
    p = ws[0]
    for w in ws[1:]:
        p = w @ p
    r = Y - p @ X
    return 0.5 * (r * r).sum() / X.shape[1]


CASES = [  # dims, whitened inputs, label noise, init scale
    ((4, 3, 3, 2), True, 0.0, 0.1),
    ((4, 3, 3, 2), True, 0.0, 1.0),
    ((5, 3), False, 0.3, 1.0),
    ((5, 4, 3), False, 0.3, 0.7),
    ((6, 4, 4, 4, 3), False, 0.1, 2.0),
    ((11, 6, 6, 6, 6, 4), True, 0.0, 0.5),
]


@pytest.mark.parametrize("dims, whiten, noise, scale", CASES)
def test_the_bounds_hold_and_are_within_a_small_factor(dims, whiten, noise, scale):
    k = min(dims[0], dims[-1])
    problem = RegressionProblem.teacher(
        [3.0, 2.0, 1.0][:k], dims[0], dims[-1], 30, whiten=whiten, noise=noise, seed=2
    )
    weights = random_weights(dims, seed=len(dims), scale=scale)
    theta = pack(weights).requires_grad_(True)
    loss = direct_loss(theta, dims, problem.X, problem.Y)
    (grad,) = torch.autograd.grad(loss, theta)
    hess = torch.autograd.functional.hessian(
        lambda th: direct_loss(th, dims, problem.X, problem.Y), theta.detach()
    )
    lam = float(torch.linalg.eigvalsh(hess).abs().max())
    mag = magnitudes(problem, weights)
    for name, true, bound in (
        ("loss", float(loss.detach()), mag.loss),
        ("gradient", float(grad.norm()), mag.gradient),
        ("hessian", lam, mag.hessian),
    ):
        assert true <= 10**bound * (1 + 1e-12), (name, true, 10**bound)
        assert 10**bound <= 500 * true, (name, true, 10**bound)  # a bound to compare orders of magnitude with


def test_an_ensemble_gets_its_largest_member():
    problem = RegressionProblem.teacher([2.0, 1.0], 4, 2, 20, seed=1)
    small, large = random_weights((4, 3, 3, 2), 0, 0.1), random_weights((4, 3, 3, 2), 1, 3.0)
    both = [torch.stack([a, b]) for a, b in zip(small, large)]
    assert magnitudes(problem, both) == magnitudes(problem, large)


def test_far_beyond_float64_the_bounds_follow_the_scaling_law_without_overflow():
    """Weights scaled by c: the loss grows like c^(2h), the gradient like c^(2h-1), the Hessian like
    c^(2h-2) (both of its parts); at c = 1e300 every number is finite and no warning is raised."""
    dims = (4, 3, 3, 2)
    h = len(dims) - 1
    problem = RegressionProblem.teacher([2.0, 1.0], 4, 2, 20, seed=1)
    weights = random_weights(dims, 3, 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = magnitudes(problem, [w * 1e200 for w in weights])
        b = magnitudes(problem, [w * 1e300 for w in weights])
    assert all(math.isfinite(x) for x in (b.loss, b.gradient, b.hessian)) and b.loss > 1790
    assert b.loss - a.loss == pytest.approx(2 * h * 100, abs=1e-9)
    assert b.gradient - a.gradient == pytest.approx((2 * h - 1) * 100, abs=1e-9)
    assert b.hessian - a.hessian == pytest.approx((2 * h - 2) * 100, abs=1e-9)


def test_at_zero_weights():
    """h = 3: no gradient and no Hessian at zero; h = 2: the Hessian's residual part is nonzero there."""
    problem = RegressionProblem.teacher([2.0, 1.0], 4, 2, 20, seed=1)
    deep = magnitudes(
        problem, [torch.zeros(3, 4, dtype=F64), torch.zeros(3, 3, dtype=F64), torch.zeros(2, 3, dtype=F64)]
    )
    assert deep.gradient == -math.inf and deep.hessian == -math.inf
    assert 10**deep.loss >= problem.tr_Syy / 2
    zeros = [torch.zeros(3, 4, dtype=F64), torch.zeros(2, 3, dtype=F64)]
    lam = float(torch.linalg.eigvalsh(problem.hessian(pack(zeros), (4, 3, 2))).abs().max())
    assert 0 < lam <= 10 ** magnitudes(problem, zeros).hessian * (1 + 1e-12)


def test_log10_norm_is_the_norm_without_overflow():
    m = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=F64)
    assert 10 ** log10_norm(m) == pytest.approx(5.0)
    assert 10 ** log10_norm(m, 2) == pytest.approx(float(torch.linalg.matrix_norm(m, ord=2)))
    assert log10_norm(m * 1e300) == pytest.approx(300 + math.log10(5.0))
    assert log10_norm(torch.zeros(2, 2, dtype=F64)) == -math.inf


def test_a_single_layer_attains_the_hessian_bound():
    """h = 1: the Hessian is Sxx on each row of W, so ||H||_2 = lambda_max(Sxx) (numpy, from X) and the
    bound, |Sxx| (spectral) times the empty product, is exact: a Frobenius norm for the spectral one shows
    (the other cases sit inside the factor 500; mutation audit)."""
    problem = RegressionProblem.teacher([3.0, 2.0, 1.0], 5, 3, 30, whiten=False, noise=0.3, seed=2)
    x = problem.X.numpy()
    lam_sxx = float(np.linalg.eigvalsh(x @ x.T / x.shape[1])[-1])
    weights = random_weights((5, 3), seed=1, scale=1.0)
    hess = torch.autograd.functional.hessian(
        lambda th: direct_loss(th, (5, 3), problem.X, problem.Y), pack(weights)
    )
    assert float(torch.linalg.eigvalsh(hess)[-1]) == pytest.approx(lam_sxx, rel=1e-12)
    mag = magnitudes(problem, weights)
    assert mag.hessian == pytest.approx(math.log10(lam_sxx), abs=1e-12)
    assert mag.sxx == pytest.approx(math.log10(lam_sxx), abs=1e-12)
