"""Loss, gradient, Hessian, modes and critical values of the regression problem (docs/theory.md sections 2, 4, 8)."""

import numpy as np
import pytest
import scipy.linalg
import torch
from _helpers import bad_argument

from dlnlab import init
from dlnlab.analysis import conservation_laws
from dlnlab.network import Layout, adjacency_from_weights, pack, unpack
from dlnlab.problem import RegressionProblem
from tests._helpers import figure1_problem

F64 = torch.float64


def random_weights(dims, seed=0, scale=0.5):
    gen = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(dims[j], dims[j - 1], generator=gen, dtype=F64) for j in range(1, len(dims))]


def explicit_product(weights):
    return weights[0] if len(weights) == 1 else torch.linalg.multi_dot(list(reversed(weights)))


def direct_loss(weights, X, Y):
    """1/(2N) ||Y - P X||_F^2 straight from the data."""
    r = Y - explicit_product(weights) @ X
    return 0.5 * (r * r).sum() / X.shape[1]


def autograd_gradient(weights, X, Y):
    ws = [w.clone().requires_grad_(True) for w in weights]
    return list(torch.autograd.grad(direct_loss(ws, X, Y), ws))


def noisy_problem(seed=1):
    """Gaussian (non-whitened) inputs with label noise: data modes differ from the teacher's."""
    return RegressionProblem.teacher(
        [3.0, 2.0, 1.5], d_x=5, d_y=4, n_samples=40, whiten=False, noise=0.3, seed=seed
    )


def whitened_problem():
    return RegressionProblem.teacher([3.0, 2.0, 1.0], d_x=5, d_y=4, n_samples=30, whiten=True, seed=2)


CASES = [
    ("whitened", (5, 4, 3, 4)),
    ("noisy", (5, 4, 3, 4)),
    ("noisy", (5, 6, 2, 3, 4)),
    ("whitened", (5, 4)),
]


def make(kind):
    return whitened_problem() if kind == "whitened" else noisy_problem()


@pytest.mark.parametrize("kind,dims", CASES)
def test_loss_and_gradient_equal_autograd_of_direct_loss(kind, dims):
    pr = make(kind)
    ws = random_weights(dims, seed=3)
    torch.testing.assert_close(pr.loss(ws), direct_loss(ws, pr.X, pr.Y), rtol=1e-12, atol=0)
    ref = autograd_gradient(ws, pr.X, pr.Y)
    loss, grads = pr.loss_and_gradient(ws)
    torch.testing.assert_close(loss, direct_loss(ws, pr.X, pr.Y), rtol=1e-12, atol=0)
    for g, g2, r in zip(pr.gradient(ws), grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(g2, r, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(pr.gradient_theta(pack(ws), dims), pack(ref), rtol=1e-10, atol=1e-13)


def test_gradient_per_layer_formula(fig1_problem):
    """grad_{W_j} L = (P_{h:j+1})^T D (P_{j-1:1})^T with D = P Sxx - Syx (docs/theory.md section 2)."""
    pr, dims = fig1_problem, (11, 6, 6, 6, 6, 4)
    ws = random_weights(dims, seed=4)
    h = len(ws)
    X, Y, N = pr.X, pr.Y, pr.X.shape[1]
    D = explicit_product(ws) @ (X @ X.T / N) - Y @ X.T / N
    for j, g in enumerate(pr.gradient(ws), start=1):
        suffix = explicit_product(ws[j:]) if j < h else torch.eye(dims[h], dtype=F64)
        prefix = explicit_product(ws[: j - 1]) if j > 1 else torch.eye(dims[0], dtype=F64)
        torch.testing.assert_close(g, suffix.T @ D @ prefix.T, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kind", ["whitened", "noisy"])
def test_gradient_matches_central_finite_differences(kind):
    pr, dims = make(kind), (5, 4, 3, 4)
    theta = pack(random_weights(dims, seed=5))
    g = pr.gradient_theta(theta, dims)
    eps = 1e-6
    fd = torch.empty_like(theta)
    for i in range(theta.numel()):
        e = torch.zeros_like(theta)
        e[i] = eps
        fd[i] = (pr.loss(unpack(theta + e, dims)) - pr.loss(unpack(theta - e, dims))) / (2 * eps)
    assert float((fd - g).abs().max()) <= 1e-7 * float(g.abs().max())
    v = torch.randn(theta.shape, dtype=F64, generator=torch.Generator().manual_seed(6))
    dd = (pr.loss(unpack(theta + eps * v, dims)) - pr.loss(unpack(theta - eps * v, dims))) / (2 * eps)
    assert abs(float(dd - g @ v)) <= 1e-7 * abs(float(g @ v))


def test_off_mask_gradient_is_exactly_zero(fig1_problem):
    pr, dims = fig1_problem, (11, 6, 6, 6, 6, 4)
    lay = Layout(dims)
    h, o = lay.depth, lay.offsets
    ws = random_weights(dims, seed=7)
    mask = lay.mask()
    # assembled from the closed form
    ga = adjacency_from_weights(pr.gradient(ws))
    assert torch.count_nonzero(ga * ~mask) == 0
    # autograd through the dense power A^h (loss of its block (h, 0))
    a = adjacency_from_weights(ws).requires_grad_(True)
    p = torch.linalg.matrix_power(a, h)[o[h] : o[h + 1], o[0] : o[1]]
    r = pr.Y - p @ pr.X
    (grad_a,) = torch.autograd.grad(0.5 * (r * r).sum() / pr.n_samples, a)
    assert torch.count_nonzero(grad_a * ~mask) == 0
    torch.testing.assert_close(grad_a, ga, rtol=1e-10, atol=1e-13)
    # and the adjacency closed form sum_j (A^{h-j})^T (A^h C - E) (A^{j-1})^T of docs/theory.md section 2
    n = lay.n_nodes
    C, E = torch.zeros(n, n, dtype=F64), torch.zeros(n, n, dtype=F64)
    C[o[0] : o[1], o[0] : o[1]] = pr.Sxx
    E[o[h] : o[h + 1], o[0] : o[1]] = pr.Syx
    a = a.detach()
    pw = [torch.linalg.matrix_power(a, k) for k in range(h + 1)]
    closed = sum(pw[h - j].T @ (pw[h] @ C - E) @ pw[j - 1].T for j in range(1, h + 1))
    assert torch.count_nonzero(closed * ~mask) == 0
    torch.testing.assert_close(closed, ga, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kind", ["whitened", "noisy"])
def test_minibatch_loss_and_gradient(kind):
    pr, dims = make(kind), (5, 4, 3, 4)
    ws = random_weights(dims, seed=8)
    idx = torch.randperm(pr.n_samples, generator=torch.Generator().manual_seed(9))[:7]
    loss, grads = pr.minibatch_loss_and_gradient(ws, idx)
    xb, yb = pr.X[:, idx], pr.Y[:, idx]
    torch.testing.assert_close(loss, direct_loss(ws, xb, yb), rtol=1e-12, atol=0)
    for g, r in zip(grads, autograd_gradient(ws, xb, yb)):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-13)
    # the full batch is the full loss
    loss, grads = pr.minibatch_loss_and_gradient(ws, torch.arange(pr.n_samples))
    torch.testing.assert_close(loss, pr.loss(ws), rtol=1e-12, atol=0)


@pytest.mark.parametrize("whiten", [True, False])
def test_stable_loss_near_the_minimum(whiten):
    """L - L_min = 1/2 ||E Sxx^{1/2}||^2 eps^2 at P = P_ls + eps E; the expanded form cancels badly."""
    pr = figure1_problem(whiten)
    gen = torch.Generator().manual_seed(10)
    worst_expanded = 0.0
    for _ in range(5):
        E = torch.randn(4, 11, generator=gen, dtype=F64)
        P = pr.P_ls + 1e-8 * E
        true = 0.5e-16 * float(((E @ pr.X) ** 2).sum()) / pr.n_samples
        L = float(pr.loss_of_product(P))
        assert L >= pr.L_min >= 0
        assert (L - pr.L_min) == pytest.approx(true, rel=1e-6)
        expanded = 0.5 * pr.tr_Syy - float((P * pr.Syx).sum()) + 0.5 * float(((P @ pr.Sxx) * P).sum())
        worst_expanded = max(worst_expanded, abs(expanded - pr.L_min - true) / true)
    assert worst_expanded > 1e-2  # the expanded form is off by O(1) here
    assert float(pr.loss_of_product(pr.P_ls)) == pr.L_min


def modes_independent(pr):
    """m_k = singular values of Syx Sxx^{-1/2} via scipy."""
    X, Y = pr.X.numpy(), pr.Y.numpy()
    N = X.shape[1]
    sxx_inv_sqrt = np.linalg.inv(scipy.linalg.sqrtm(X @ X.T / N).real)
    return np.linalg.svd((Y @ X.T / N) @ sxx_inv_sqrt, compute_uv=False)


def factorise(p, dims):
    """A (non-balanced) factorisation W_h...W_1 = P for P of rank <= min(dims)."""
    u, s, vh = torch.linalg.svd(p)
    k = min(dims)
    h = len(dims) - 1
    ws = []
    for j in range(1, h + 1):
        w = torch.zeros(dims[j], dims[j - 1], dtype=F64)
        if j == 1:
            w[:k] = s[:k, None] * vh[:k]
        else:
            w[:k, :k] = torch.eye(k, dtype=F64)
        ws.append(w)
    ws[-1] = u[:, :k] @ ws[-1][:k]
    return ws


def test_critical_values_at_factorised_critical_products():
    pr, dims = noisy_problem(seed=11), (5, 6, 4, 4)
    m = modes_independent(pr)
    assert m.size == pr.n_modes == 4
    np.testing.assert_allclose(pr.modes.numpy(), m, rtol=1e-10)
    subsets = [(), (0,), (1,), (3,), (0, 2), (1, 3), (0, 1, 2), (0, 1, 2, 3)]
    for S in subsets:
        ws = factorise(pr.critical_product(S), dims)
        torch.testing.assert_close(explicit_product(ws), pr.critical_product(S), rtol=0, atol=1e-12)
        expected = 0.5 * pr.tr_Syy - 0.5 * sum(m[k] ** 2 for k in S)
        assert float(direct_loss(ws, pr.X, pr.Y)) == pytest.approx(expected, rel=1e-10)
        assert pr.critical_value(S) == pytest.approx(expected, rel=1e-10)
        # P_S is a critical point of the loss as a function of P
        d = (pr.critical_product(S) @ pr.X - pr.Y) @ pr.X.T / pr.n_samples
        torch.testing.assert_close(
            pr.critical_product(S).T @ d, torch.zeros(5, 5, dtype=F64), atol=1e-12, rtol=0
        )
    for r in range(5):
        torch.testing.assert_close(pr.best_rank_product(r), pr.critical_product(range(r)), rtol=0, atol=1e-14)
    with pytest.raises(ValueError):
        pr.critical_value([4])


def test_figure1_levels_and_modes(fig1_problem):
    pr = fig1_problem
    assert pr.whitened
    torch.testing.assert_close(pr.Sxx, torch.eye(11, dtype=F64), rtol=0, atol=1e-13)
    torch.testing.assert_close(pr.modes, torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=F64), rtol=0, atol=1e-12)
    levels = pr.plateau_levels(4)
    torch.testing.assert_close(
        levels, torch.tensor([15.0, 7.0, 2.5, 0.5, 0.0], dtype=F64), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(pr.plateau_levels(2), levels[:3])
    assert pr.L_min == pytest.approx(0.0, abs=1e-20)
    # the teacher map is P_ls, and its mode strengths are the modes
    torch.testing.assert_close(pr.P_ls, pr.teacher_map, rtol=0, atol=1e-13)
    torch.testing.assert_close(pr.mode_strength(pr.teacher_map), pr.modes, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        pr.mode_u.T @ pr.teacher_map @ pr.mode_v, torch.diag(pr.modes), rtol=0, atol=1e-12
    )


def test_data_modes_differ_from_teacher_modes_without_whitening():
    pr = figure1_problem(whiten=False)
    assert not pr.whitened
    np.testing.assert_allclose(pr.modes.numpy(), modes_independent(pr), rtol=1e-10)
    assert float((pr.modes - pr.teacher_singular_values).abs().max()) > 1e-2
    assert pr.critical_value(range(4)) == pytest.approx(pr.L_min, abs=1e-12)


def autograd_hessian(pr, theta, dims):
    return torch.autograd.functional.hessian(lambda th: direct_loss(unpack(th, dims), pr.X, pr.Y), theta)


@pytest.mark.parametrize(
    "kind,dims", [("noisy", (5, 4, 3, 4)), ("whitened", (5, 6, 2, 3, 4)), ("noisy", (5, 4))]
)
def test_hvp_and_hessian_equal_autograd(kind, dims):
    pr = make(kind)
    theta = pack(random_weights(dims, seed=12))
    ref = autograd_hessian(pr, theta, dims)
    H = pr.hessian(theta, dims)
    torch.testing.assert_close(H, ref, rtol=1e-10, atol=1e-12)
    V = torch.randn(3, theta.numel(), dtype=F64, generator=torch.Generator().manual_seed(13))
    torch.testing.assert_close(pr.hvp_theta(theta, V, dims), V @ ref, rtol=1e-10, atol=1e-12)


def test_hessian_fig1_equals_autograd(fig1_problem):
    dims = (11, 6, 6, 6, 6, 4)
    theta = pack(random_weights(dims, seed=14, scale=0.4))
    ref = autograd_hessian(fig1_problem, theta, dims)
    torch.testing.assert_close(fig1_problem.hessian(theta, dims), ref, rtol=1e-10, atol=1e-12)


def test_hessian_at_the_origin(fig1_problem):
    pr = fig1_problem
    dims2 = (11, 6, 4)
    ev = torch.linalg.eigvalsh(pr.hessian(torch.zeros(Layout(dims2).n_weights, dtype=F64), dims2))
    assert float(ev[0]) == pytest.approx(-4.0, abs=1e-6)
    assert float(ev[-1]) == pytest.approx(4.0, abs=1e-6)
    for dims in [(11, 6, 6, 6, 6, 4), (11, 5, 5, 4)]:
        H = pr.hessian(torch.zeros(Layout(dims).n_weights, dtype=F64), dims)
        assert float(torch.linalg.matrix_norm(H, ord=2)) <= 1e-8


@pytest.mark.parametrize("dims", [(11, 6, 4), (11, 6, 6, 4), (11, 6, 6, 6, 6, 4)])
@pytest.mark.parametrize("r", [1, 2, 3])
def test_balanced_top_r_critical_points(fig1_problem, dims, r):
    pr = fig1_problem
    m = [float(v) for v in pr.modes]
    u0 = m[:r] + [0.0] * (4 - r)
    ws = init.aligned(dims, pr, u0, seed=15)
    theta = pack(ws)
    grad = pr.gradient_theta(theta, dims)
    assert float(grad.abs().max()) <= 1e-12
    assert float(pr.loss(ws)) == pytest.approx(pr.plateau_levels(4)[r].item(), rel=1e-12)
    lam_min = float(torch.linalg.eigvalsh(pr.hessian(theta, dims))[0])
    if len(dims) == 3:  # h = 2, d_1 = 6 > r: strict saddle
        assert lam_min == pytest.approx(-m[r], abs=1e-6)
    else:  # h >= 3: non-strict
        assert lam_min >= -1e-7


@pytest.mark.parametrize("h,expected", [(2, 6.000), (3, 12.980), (4, 20.785)])
def test_balanced_global_minimum_sharpness(h, expected):
    pr = RegressionProblem.teacher([3.0, 2.0, 1.0], d_x=5, d_y=3, n_samples=20, whiten=True, seed=16)
    dims = (5,) + (4,) * (h - 1) + (3,)
    ws = init.aligned(dims, pr, [float(v) for v in pr.modes], seed=17)
    assert float(pr.loss(ws)) <= 1e-24
    ev = torch.linalg.eigvalsh(pr.hessian(pack(ws), dims))
    assert float(ev[-1]) == pytest.approx(h * 3.0 ** (2 - 2 / h), rel=1e-6)
    assert float(ev[-1]) == pytest.approx(expected, abs=5e-4)
    assert float(ev[0]) >= -1e-10  # a minimum


def test_gd_step_breaks_conservation_by_eta_squared(fig1_problem):
    """Oracle 6: C_j^{k+1} - C_j^k = eta^2 (G_{j+1}^T G_{j+1} - G_j G_j^T)."""
    pr, dims = fig1_problem, (11, 6, 6, 6, 6, 4)
    ws = random_weights(dims, seed=18, scale=0.4)
    lay = Layout(dims)
    for eta in [0.05, 0.01]:
        g = pr.gradient(ws)
        new = [w - eta * gj for w, gj in zip(ws, g)]
        for j, (c1, c0) in enumerate(zip(conservation_laws(new), conservation_laws(ws)), start=1):
            pred = eta**2 * (g[j].T @ g[j] - g[j - 1] @ g[j - 1].T)
            torch.testing.assert_close(c1 - c0, pred, rtol=0, atol=1e-13)
        # the same step on A keeps the mask exactly
        a1 = adjacency_from_weights(ws) - eta * adjacency_from_weights(g)
        assert torch.count_nonzero(a1 * ~lay.mask()) == 0
        torch.testing.assert_close(a1, adjacency_from_weights(new), rtol=0, atol=0)


def test_bad_arguments_name_the_argument():
    with bad_argument("singular_values", "at most min"):
        RegressionProblem.teacher([4, 3, 2, 1, 0.5], d_x=11, d_y=4, n_samples=110)
    with bad_argument("singular_values", "finite and >= 0"):
        RegressionProblem.teacher([4, -1], d_x=11, d_y=4, n_samples=110)
    with bad_argument("n_samples", "whitened"):
        RegressionProblem.teacher([4, 3], d_x=11, d_y=4, n_samples=10, whiten=True)
    RegressionProblem.teacher([4, 3], d_x=11, d_y=4, n_samples=10, whiten=False)  # fine without whitening
    with bad_argument("noise", "finite and >= 0"):
        RegressionProblem.teacher([4, 3], d_x=11, d_y=4, n_samples=20, noise=-1.0)
    with pytest.raises(ValueError, match="samples"):
        RegressionProblem(torch.zeros(3, 10, dtype=F64), torch.zeros(2, 9, dtype=F64))
    with pytest.raises(ValueError):
        RegressionProblem(torch.zeros(3, 10, dtype=F64), torch.zeros(10, dtype=F64))
    with pytest.raises(ValueError):
        RegressionProblem(torch.full((3, 10), float("nan"), dtype=F64), torch.zeros(2, 10, dtype=F64))


def test_teacher_is_reproducible_and_the_inputs_whitened():
    a = RegressionProblem.teacher([2.0, 1.0], 6, 3, 12, seed=5)
    b = RegressionProblem.teacher([2.0, 1.0], 6, 3, 12, seed=5)
    c = RegressionProblem.teacher([2.0, 1.0], 6, 3, 12, seed=6)
    assert torch.equal(a.X, b.X) and torch.equal(a.Y, b.Y)
    assert not torch.equal(a.X, c.X)
    assert a.X.dtype == F64 and a.X.shape == (6, 12) and a.Y.shape == (3, 12)
    torch.testing.assert_close(a.X @ a.X.T / 12, torch.eye(6, dtype=F64), rtol=0, atol=1e-13)
    sv = torch.linalg.svdvals(a.teacher_map)
    torch.testing.assert_close(sv, torch.tensor([2.0, 1.0, 0.0], dtype=F64), rtol=0, atol=1e-13)


def test_loss_batched_weights(fig1_problem):
    dims = (11, 6, 6, 6, 6, 4)
    batch = [random_weights(dims, seed=s) for s in range(3)]
    stacked = [torch.stack(ws) for ws in zip(*batch)]
    losses = fig1_problem.loss(stacked)
    grads = fig1_problem.gradient(stacked)
    for b, ws in enumerate(batch):
        torch.testing.assert_close(losses[b], fig1_problem.loss(ws), rtol=1e-14, atol=0)
        for g, gb in zip(grads, fig1_problem.gradient(ws)):
            torch.testing.assert_close(g[b], gb, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dims", [[5, 4], [4, 7, 1, 3], [11, 6, 6, 6, 6, 4]])
def test_gradient_theta_written_in_place_is_the_packed_gradient_to_the_bit(dims):
    """One theta: the layers' products go straight into their blocks of the result (and the flow's
    scale -1 onto dL/dP); the same products as packing the per-layer gradients, so the same bits.
    A batch takes the packing path; both agree with autograd (test above)."""
    problem = RegressionProblem.teacher([2.0, 1.0][: min(dims[0], dims[-1])], dims[0], dims[-1], 30, seed=2)
    theta = pack(init.gaussian(dims, 0.4, seed=3))
    packed = pack(problem.gradient(unpack(theta, dims)))
    assert torch.equal(problem.gradient_theta(theta, dims), packed)
    out = torch.full_like(theta, float("nan"))
    assert problem.gradient_theta(theta, dims, out=out, scale=-1.0) is out
    assert torch.equal(out, -packed)
    batch = torch.stack([theta, 2 * theta])
    torch.testing.assert_close(problem.gradient_theta(batch, dims)[0], packed, rtol=1e-13, atol=0)


@pytest.mark.parametrize(
    "kind,dims", [("noisy", (5, 4, 3, 4)), ("whitened", (5, 6, 2, 3, 4)), ("noisy", (5, 4))]
)
def test_a_stack_of_thetas_takes_numpy_and_equals_each_alone(kind, dims):
    """gradient_theta on (B, p) (numpy, written into its blocks) and hessian on (B, p) (the batched
    stiff flow's Jacobians) against one theta at a time, to rounding; the flow's scale -1 too."""
    pr = make(kind)
    thetas = torch.stack([pack(random_weights(dims, seed=20 + k)) for k in range(3)])
    out = torch.full_like(thetas, float("nan"))
    assert pr.gradient_theta(thetas, dims, out=out, scale=-1.0) is out
    hess = pr.hessian(thetas, dims)
    assert hess.shape == (3, thetas.shape[1], thetas.shape[1])
    for k in range(3):
        torch.testing.assert_close(out[k], -pr.gradient_theta(thetas[k], dims), rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(hess[k], pr.hessian(thetas[k], dims), rtol=1e-13, atol=1e-14)
