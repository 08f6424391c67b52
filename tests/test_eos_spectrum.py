"""dlnlab.eos: the top Hessian eigenpairs (dense and LOBPCG) and the third derivative in closed form.

Oracles: eigh of the autograd Hessian of a plain loss, the balanced-minimum sharpness h m_1^(2-2/h),
torch autograd (double forward-mode through a plain loss, then reverse) for D^3 L, and finite
differences of eigvalsh for the gradient of the sharpness."""

import pytest
import torch
from torch.func import grad, jvp

from dlnlab import init
from dlnlab.analysis import balanced_sharpness
from dlnlab.eos import (
    SpectrumMethod,
    SpectrumTracker,
    curvature_gradient,
    pair_curvature_gradients,
    sharpness_along,
    top_eigenpairs,
    weighted_curvature_gradient,
)
from dlnlab.network import Layout, pack, product, unpack
from dlnlab.problem import RegressionProblem
from tests._helpers import bad_argument, eos_problem

F64 = torch.float64
FIG1 = (11, 6, 6, 6, 6, 4)


def plain_loss(problem: RegressionProblem, dims):
    """L(theta) = 1/(2N) ||Y - P X||^2 straight from the data, for autograd (no project formula)."""
    layout = Layout(tuple(dims))

    def loss(theta):
        r = problem.Y - product(unpack(theta, layout)) @ problem.X
        return 0.5 * (r * r).sum() / problem.n_samples

    return loss


def test_top_eigenpairs_dense_and_lobpcg_against_autograd_hessian(fig1_problem):
    theta = pack(init.gaussian(FIG1, 0.4, seed=3))
    ref = torch.linalg.eigvalsh(torch.func.hessian(plain_loss(fig1_problem, FIG1))(theta)).flip(0)
    dense = top_eigenpairs(fig1_problem, theta, FIG1, k=4)
    lob = top_eigenpairs(fig1_problem, theta, FIG1, k=4, dense_max=0)
    assert dense.method == SpectrumMethod.DENSE and lob.method == SpectrumMethod.LOBPCG
    assert lob.converged and lob.iterations > 0 and lob.residual <= 1e-9
    for res in (dense, lob):
        torch.testing.assert_close(res.values, ref[:4], rtol=1e-9, atol=1e-9)
        hv = fig1_problem.hvp_theta(theta, res.vectors.T, FIG1).T  # H v = lambda v, orthonormal columns
        torch.testing.assert_close(hv, res.vectors * res.values, rtol=0, atol=1e-6)
        torch.testing.assert_close(res.vectors.T @ res.vectors, torch.eye(4, dtype=F64), rtol=0, atol=1e-10)
    assert dense.sharpness == pytest.approx(float(ref[0]), rel=1e-12)


def test_lobpcg_says_whether_its_residuals_met_the_tolerance(fig1_problem):
    """converged reports ||H v - lambda v|| <= tol |lambda_1| for the pairs it returns, read here against
    the dense Hessian: true after a full solve, false after one iteration at a tolerance it cannot meet."""
    problem, theta = fig1_problem, pack(init.gaussian(FIG1, 0.4, seed=3))
    hess = problem.hessian(theta, FIG1)
    for max_iter, converged in ((200, True), (1, False)):
        res = top_eigenpairs(problem, theta, FIG1, 3, dense_max=0, max_iter=max_iter, tol=1e-9)
        resid = (hess @ res.vectors - res.vectors * res.values).norm(dim=0).max() / res.values[0].abs()
        assert res.converged is converged and (float(resid) <= 1e-9) is converged
        assert float(resid) == pytest.approx(res.residual, rel=1e-4)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_sharpness_at_the_balanced_minimum_is_h_m1_to_the_2_minus_2_over_h(depth):
    problem = RegressionProblem.teacher([3.0, 2.0, 1.0], d_x=5, d_y=3, n_samples=20, seed=1)
    dims = (5,) + (4,) * (depth - 1) + (3,)
    theta = pack(init.aligned(dims, problem, [3.0, 2.0, 1.0], seed=2))  # P = teacher, balanced
    expected = balanced_sharpness(3.0, depth)
    for dense_max in (10_000, 0):
        assert top_eigenpairs(problem, theta, dims, dense_max=dense_max).sharpness == pytest.approx(
            expected, rel=1e-8
        )


def test_tracker_warm_starts_save_iterations_and_at_least_grows_k(fig1_problem):
    theta = pack(init.gaussian(FIG1, 0.3, seed=5))
    path = torch.stack(
        [theta - s * fig1_problem.gradient_theta(theta, FIG1) for s in (0.0, 1e-3, 2e-3, 3e-3)]
    )
    warm = SpectrumTracker(fig1_problem, FIG1, 3, dense_max=0)
    cold_iters = 0
    for th in path:
        res = warm(th)
        cold = top_eigenpairs(fig1_problem, th, FIG1, 3, dense_max=0)
        cold_iters += cold.iterations
        torch.testing.assert_close(
            res.values, top_eigenpairs(fig1_problem, th, FIG1, 3).values, rtol=1e-9, atol=0
        )
    assert warm.calls == 4 and warm.iterations < cold_iters
    dense = top_eigenpairs(fig1_problem, theta, FIG1, 8).values
    grown = top_eigenpairs(fig1_problem, theta, FIG1, 1, at_least=float(dense[5]) - 1e-9, dense_max=0)
    assert grown.k >= 6  # grown from 1 until its last eigenvalue fell below the bound
    torch.testing.assert_close(grown.values[:6], dense[:6], rtol=1e-9, atol=0)
    series = sharpness_along(fig1_problem, FIG1, path, k=2)
    assert series.values.shape == (4, 2) and series.top_vectors.shape == path.shape
    assert bool(series.converged.all()) and series.method == SpectrumMethod.DENSE


def test_top_eigenpairs_refuses_bad_k(fig1_problem):
    theta = pack(init.gaussian(FIG1, 0.3, seed=5))
    with bad_argument("k", match="1..198"):
        top_eigenpairs(fig1_problem, theta, FIG1, k=0)
    with bad_argument("k", match="1..198"):
        top_eigenpairs(fig1_problem, theta, FIG1, k=199)


CASES = [  # dims, whitened
    ((3, 2), True),  # h = 1: L is quadratic, D^3 L = 0
    ((4, 3, 2), True),
    ((4, 5, 3, 3), False),
    ((3, 4, 4, 4, 4, 2), False),
]


def _autograd_quadratic_form_gradient(loss, theta, u, v):
    """grad_theta (u^T H(theta) v) by autograd: forward-over-forward for u^T H v, then reverse."""

    def form(th):
        return jvp(lambda t: jvp(loss, (t,), (u,))[1], (th,), (v,))[1]

    return grad(form)(theta)


@pytest.mark.parametrize("dims, whitened", CASES)
def test_curvature_gradient_against_autograd(dims, whitened):
    problem = RegressionProblem.teacher(
        [1.5, 0.7][: min(dims[0], dims[-1])], d_x=dims[0], d_y=dims[-1], n_samples=9, whiten=whitened,
        noise=0.1, seed=1,
    )  # fmt: skip
    theta = pack(init.gaussian(dims, 0.6, seed=2))
    p = theta.numel()
    gen = torch.Generator().manual_seed(3)
    us = torch.randn(3, p, generator=gen, dtype=F64)
    loss = plain_loss(problem, dims)
    batch = curvature_gradient(problem, theta, dims, us)
    for i in range(3):
        ref = _autograd_quadratic_form_gradient(loss, theta, us[i], us[i])
        torch.testing.assert_close(
            curvature_gradient(problem, theta, dims, us[i]), ref, rtol=1e-10, atol=1e-10
        )
        torch.testing.assert_close(batch[i], ref, rtol=1e-10, atol=1e-10)
    if len(dims) == 2:
        assert float(batch.abs().max()) == 0.0
    vecs = torch.linalg.qr(us.T)[0]  # (p, 3) orthonormal
    pairs = pair_curvature_gradients(problem, theta, dims, vecs)
    for a, b in [(0, 1), (1, 2), (2, 2)]:
        ref = _autograd_quadratic_form_gradient(loss, theta, vecs[:, a], vecs[:, b])
        torch.testing.assert_close(pairs[a, b], ref, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(pairs[b, a], pairs[a, b], rtol=0, atol=0)
    x = torch.tensor([[2.0, 0.3, -0.1], [0.3, 1.0, 0.2], [-0.1, 0.2, 0.5]], dtype=F64)
    ref = sum(x[a, b] * _autograd_quadratic_form_gradient(loss, theta, vecs[:, a], vecs[:, b])
              for a in range(3) for b in range(3))  # fmt: skip
    torch.testing.assert_close(
        weighted_curvature_gradient(problem, theta, dims, vecs, x), ref, rtol=1e-9, atol=1e-9
    )


def test_curvature_gradient_of_the_top_eigenvector_is_the_gradient_of_the_sharpness():
    dims = (4, 4, 4, 3)
    problem = eos_problem()
    theta = pack(init.gaussian(dims, 0.4, seed=5))
    top = top_eigenpairs(problem, theta, dims, 2)
    assert float(top.values[0] - top.values[1]) > 0.1  # simple: S is differentiable
    grad_s = curvature_gradient(problem, theta, dims, top.vectors[:, 0])
    gen = torch.Generator().manual_seed(0)
    eps = 1e-5
    for _ in range(3):
        d = torch.randn(theta.numel(), generator=gen, dtype=F64)
        up = torch.linalg.eigvalsh(problem.hessian(theta + eps * d, dims))[-1]
        down = torch.linalg.eigvalsh(problem.hessian(theta - eps * d, dims))[-1]
        assert float(grad_s @ d) == pytest.approx(float(up - down) / (2 * eps), rel=1e-7)
