"""Analysis: mode-dynamics oracles (docs/theory.md section 5), invariants, spectra and Hessian extremes."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from torchdiffeq import odeint

from dlnlab import init
from dlnlab.analysis import (
    adjacency_commutator,
    balanced_minimum_sharpness,
    balanced_product_rhs,
    balanced_sharpness,
    conservation_drift,
    conservation_laws,
    gd_stability_threshold,
    layer_singular_values,
    mode_half_time,
    mode_solution,
    mode_time,
    nearest_level,
)
from dlnlab.network import Layout, adjacency_from_weights, pack, product, unpack
from dlnlab.problem import RegressionProblem

F64 = torch.float64
FIG1 = (11, 6, 6, 6, 6, 4)


def random_weights(dims, seed=0, scale=0.5):
    gen = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(dims[j], dims[j - 1], generator=gen, dtype=F64) for j in range(1, len(dims))]


# ----------------------------------------------------------------------------------------------
# Scalar mode dynamics: the reference numbers of docs/theory.md section 5
@pytest.mark.parametrize(
    "h,expected", [(2, 1.334339), (3, 3.136267), (4, 5.217433), (5, 6.999005), (6, 8.339316)]
)
def test_half_time_table(h, expected):
    assert mode_half_time(3.0, 1e-3, h) == pytest.approx(expected, rel=1e-6)
    assert mode_time(3.0, 1e-3, 1.5, h) == mode_half_time(3.0, 1e-3, h)


@pytest.mark.parametrize("h,expected", [(2, 1.700543), (3, 3.325217), (4, 5.342256), (5, 7.091579)])
def test_time_to_ninety_percent(h, expected):
    assert mode_time(3.0, 1e-3, 2.7, h) == pytest.approx(expected, rel=1e-6)


def test_h2_value_at_t1():
    assert float(mode_solution(1.0, 3.0, 1e-3, 2)) == pytest.approx(0.3557125, abs=5e-8)
    assert float(mode_solution(np.array([1.0]), 3.0, 1e-3, 2)[0]) == pytest.approx(0.3557125, abs=5e-8)


@pytest.mark.parametrize(
    "u0,expected",
    [(1e-3, [5.2509, 6.9990, 10.4925, 20.9532]), (1e-4, [20.9265, 27.9003, 41.8461, 83.6699])],
)
def test_figure1_half_times(u0, expected):
    got = [mode_half_time(s, u0, 5) for s in (4.0, 3.0, 2.0, 1.0)]
    np.testing.assert_allclose(got, expected, rtol=0, atol=6e-5)


def h4_closed_form(s, u0, u):
    """docs/theory.md section 5, h = 4, z = sqrt(u)."""
    z0, z, r = math.sqrt(u0), math.sqrt(u), math.sqrt(s)
    return (1 / (2 * s)) * (1 / z0 - 1 / z + math.log((r + z) * (r - z0) / ((r - z) * (r + z0))) / (2 * r))


def h2_closed_form(s, u0, u):
    return math.log(u * (s - u0) / (u0 * (s - u))) / (2 * s)


@pytest.mark.parametrize(
    "s,u0,u", [(3.0, 1e-3, 1.5), (3.0, 1e-10, 2.9), (0.7, 0.1, 0.69), (3.0, 1.0, 1.2), (5.0, 1e-6, 1e-5)]
)
def test_closed_forms_agree_with_quadrature(s, u0, u):
    assert mode_time(s, u0, u, 4) == pytest.approx(h4_closed_form(s, u0, u), rel=1e-12)
    assert mode_time(s, u0, u, 2) == pytest.approx(h2_closed_form(s, u0, u), rel=1e-12)
    assert mode_time(s, u, u0, 4) == pytest.approx(-h4_closed_form(s, u0, u), rel=1e-12)


@pytest.mark.parametrize(
    "s,u0,u,h",
    [
        (3.0, 1e-3, 1.5, 3),
        (3.0, 1e-9, 2.99, 5),
        (2.0, 1e-3, 1.999999, 6),
        (3.0, 5.0, 3.1, 4),  # from above, decaying to s
        (3.0, -1.0, -1e-3, 3),  # stable branch
        (3.0, -1.0, -1e-6, 5),
        (1.0, -2.0, -0.5, 2),
        (3.0, 1e-3, 1.5, 7),
    ],
)
def test_mode_time_against_high_precision(s, u0, u, h):
    mp = pytest.importorskip("mpmath")
    with mp.workdps(30):
        f = lambda v: 1 / (h * abs(v) ** (2 - mp.mpf(2) / h) * (s - v))  # noqa: E731
        pts = [mp.mpf(u0) * 10**k for k in range(12) if abs(u0 * 10**k) < abs(u)] + [mp.mpf(u)]
        ref = float(mp.quad(f, [mp.mpf(u0)] + pts if abs(u) > abs(u0) else [mp.mpf(u0), mp.mpf(u)]))
    assert mode_time(s, u0, u, h) == pytest.approx(ref, rel=1e-12)


def test_mode_time_bad_arguments():
    for args in [
        (3.0, 1.0, 3.5, 3),
        (3.0, -0.5, 0.5, 3),
        (3.0, 0.0, 1.0, 3),
        (0.0, 0.1, 0.2, 3),
        (3.0, 0.1, 0.2, 0),
    ]:
        with pytest.raises(ValueError):
            mode_time(*args)
    assert mode_time(3.0, 0.5, 0.5, 4) == 0.0
    assert mode_time(3.0, 1.0, 2.0, 1) == pytest.approx(math.log(2.0), rel=1e-14)  # du/dt = s - u


@pytest.mark.parametrize("h", [2, 3, 4, 5, 6])
def test_mode_solution_inverts_mode_time(h):
    s, u0 = 3.0, 1e-3
    targets = np.array([2e-3, 0.01, 0.5, 1.5, 2.5, 2.99])
    times = np.array([mode_time(s, u0, u, h) for u in targets])
    np.testing.assert_allclose(mode_solution(times, s, u0, h), targets, rtol=1e-9)
    # the same for a mode above s and one on the stable branch
    for u0b, ub in [(5.0, np.array([4.0, 3.5, 3.01])), (-1.0, np.array([-0.5, -1e-2, -1e-4]))]:
        tb = np.array([mode_time(s, u0b, u, h) for u in ub])
        np.testing.assert_allclose(mode_solution(tb, s, u0b, h), ub, rtol=1e-9)


@pytest.mark.parametrize("h", [3, 5])
def test_mode_solution_lsoda_for_figures(h):
    """The figures' LSODA curve (closed-form Jacobian) against the closed-form time of each value."""
    s, u0 = 4.0, 9.1e-4  # the Figure 1 net's largest mode and reference u0: stiff once u is near s
    targets = np.array([2e-3, 0.01, 0.5, 2.0, 3.5, 3.99, 3.9999])
    times = np.array([mode_time(s, u0, u, h) for u in targets])
    t = np.append(times, 300.0)
    u = mode_solution(t, s, u0, h, method="LSODA")
    np.testing.assert_allclose(u[:-1], targets, rtol=1e-7)
    assert abs(u[-1] - s) < 1e-7 * s  # settled at s
    with pytest.raises(ValueError):  # not a method solve_ivp knows
        mode_solution(t, s, u0, h, method="Euler")


@pytest.mark.parametrize("h", [2, 3, 5])
def test_mode_solution_against_direct_integration(h):
    s, t = 2.0, np.linspace(0.0, 4.0, 9)
    for u0 in [0.05, 3.0, -0.4]:
        rhs = lambda _, u: h * np.abs(u) ** (2 - 2 / h) * (s - u)  # noqa: E731
        ref = solve_ivp(rhs, (0, 4), [u0], t_eval=t, method="DOP853", rtol=1e-12, atol=1e-15).y[0]
        np.testing.assert_allclose(mode_solution(t, s, u0, h), ref, rtol=1e-8, atol=1e-14)


def test_mode_solution_branches_and_shapes():
    t = np.array([[3.0, 0.0], [1.0, 10.0]])  # any order and shape
    for h in (2, 4):
        u = mode_solution(t, 3.0, 1e-3, h)
        assert u.shape == (2, 2) and u[0, 1] == 1e-3
        assert 1e-3 < u[1, 0] < u[0, 0] < u[1, 1] <= 3.0
        np.testing.assert_array_equal(mode_solution(t, 3.0, 0.0, h), np.zeros((2, 2)))  # dead mode
        ts = np.linspace(0, 20, 41)
        neg = mode_solution(ts, 3.0, -0.5, h)  # stable branch: |u| decays to 0, sign kept
        assert np.all(neg < 0) and np.all(np.diff(neg) > 0) and abs(neg[-1]) < 1e-2
    with pytest.raises(ValueError):
        mode_solution([-1.0], 3.0, 0.1, 3)
    np.testing.assert_allclose(
        mode_solution([0.0, 1.0], 3.0, 0.0, 1), [0.0, 3 * (1 - math.exp(-1))], rtol=1e-14
    )


@pytest.mark.parametrize("h", [2, 3, 4])
def test_balanced_sharpness_is_the_hessian_lambda_max_at_a_balanced_minimum(h):
    """Independent of the formula: lambda_max of the dense Hessian at the balanced global minimum
    (aligned init with u0 = the modes) for s1 = 3 (docs/theory.md: 6.000, 12.980, 20.785)."""
    pr = RegressionProblem.teacher([3.0, 1.5], d_x=4, d_y=3, n_samples=16, whiten=True, seed=5)
    dims = (4,) + (3,) * (h - 1) + (3,)
    ws = init.aligned(dims, pr, [float(v) for v in pr.modes], seed=6)
    theta = pack(ws)
    assert float(pr.gradient_theta(theta, dims).norm()) <= 1e-12  # a critical point ...
    ev = torch.linalg.eigvalsh(pr.hessian(theta, dims))
    assert float(ev[0]) >= -1e-10  # ... and a minimum
    assert balanced_sharpness(3.0, h) == pytest.approx(float(ev[-1]), rel=1e-6)
    assert gd_stability_threshold(3.0, h) == pytest.approx(2 / float(ev[-1]), rel=1e-6)


@pytest.mark.parametrize("h", [1, 2, 3])
def test_balanced_minimum_sharpness_of_data_not_whitened_is_the_hessians(h):
    """Without whitening h m_1^(2-2/h) is not the balanced minimum's sharpness (h = 1: lambda_max(Sxx)
    = 2.20, not 1; h = 2: 13.0, not 8.3): the minimum built here from the SVD of P_ls with random hidden
    frames, checked critical and balanced (C_j = 0), against eigvalsh of the autograd Hessian of a loss
    written from X and Y. Whitened, the closed form."""
    pr = RegressionProblem.teacher([3.0, 2.0, 1.0], d_x=5, d_y=3, n_samples=20, whiten=False, seed=1)
    dims = (5,) + (4,) * (h - 1) + (3,)
    u, s, vh = torch.linalg.svd(pr.P_ls, full_matrices=False)  # rank 3 = r_max: P_ls is the minimum
    gen = torch.Generator().manual_seed(7)
    hidden = [torch.linalg.qr(torch.randn(4, 3, generator=gen, dtype=F64))[0] for _ in range(h - 1)]
    frames = [vh.T, *hidden, u]
    ws = [frames[j] @ torch.diag(s ** (1 / h)) @ frames[j - 1].T for j in range(1, h + 1)]
    for j in range(h - 1):
        torch.testing.assert_close(ws[j + 1].T @ ws[j + 1], ws[j] @ ws[j].T, rtol=0, atol=1e-12)
    theta = pack(ws)
    assert float(pr.gradient_theta(theta, dims).norm()) <= 1e-12

    def loss(th):
        r = pr.Y - product(unpack(th, dims)) @ pr.X
        return 0.5 * (r * r).sum() / pr.n_samples

    ev = torch.linalg.eigvalsh(torch.func.hessian(loss)(theta))
    assert float(ev[0]) >= -1e-10
    got = balanced_minimum_sharpness(pr, dims)
    assert got == pytest.approx(float(ev[-1]), rel=1e-9)
    assert abs(got / balanced_sharpness(float(pr.modes[0]), h) - 1) > 0.1  # the closed form is off here
    white = RegressionProblem.teacher([3.0, 2.0, 1.0], d_x=5, d_y=3, n_samples=20, whiten=True, seed=1)
    assert balanced_minimum_sharpness(white, dims) == pytest.approx(balanced_sharpness(3.0, h), rel=1e-12)


def test_gd_stability_threshold_figure1():
    assert gd_stability_threshold(4.0, 5) == pytest.approx(0.043528, abs=5e-7)
    assert gd_stability_threshold(3.0, 2) == pytest.approx(1 / 3, rel=1e-14)  # h = 2: 1/s_1


# ----------------------------------------------------------------------------------------------
# Invariants and spectra
def test_adjacency_commutator_blocks_are_the_conservation_laws():
    dims = FIG1
    ws = random_weights(dims, seed=1)
    lay = Layout(dims)
    o, h = lay.offsets, lay.depth
    comm = adjacency_commutator(adjacency_from_weights(ws), dims)
    blocks = [ws[0].T @ ws[0]] + [ws[j].T @ ws[j] - ws[j - 1] @ ws[j - 1].T for j in range(1, h)]
    blocks += [-ws[-1] @ ws[-1].T]
    expected = torch.block_diag(*blocks)
    torch.testing.assert_close(comm, expected, rtol=0, atol=1e-12)
    for j, c in enumerate(conservation_laws(ws), start=1):
        assert c.shape == (dims[j], dims[j])
        torch.testing.assert_close(comm[o[j] : o[j + 1], o[j] : o[j + 1]], c, rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        adjacency_commutator(torch.zeros(5, 5, dtype=F64), dims)


def test_conservation_laws_and_drift_batch():
    dims = (4, 3, 5, 2)
    batch = [random_weights(dims, seed=s) for s in range(3)]
    stacked = [torch.stack(ws) for ws in zip(*batch)]
    cs = conservation_laws(stacked)
    # batched and per-sample matmuls are different BLAS calls: equal to a few ulps, not bit for bit
    # (they differ by 1e-16 between AVX2 and AVX-512 kernels)
    eps = torch.finfo(torch.float64).eps
    for b, ws in enumerate(batch):
        for c, cb in zip(cs, conservation_laws(ws)):
            torch.testing.assert_close(c[b], cb, rtol=8 * eps, atol=8 * eps * float(cb.abs().max()))
    drift = conservation_drift(stacked, batch[0])
    assert drift.shape == (3, 2)
    assert float(drift[0].max()) <= 1e-14  # identical weights, up to the batched kernels' rounding
    for b in range(3):
        for j in range(2):
            diff = conservation_laws(batch[b])[j] - conservation_laws(batch[0])[j]
            assert float(drift[b, j]) == pytest.approx(float(diff.square().sum().sqrt()), rel=1e-14)
    assert conservation_drift(random_weights((3, 2), seed=1), random_weights((3, 2), seed=2)).shape == (0,)
    # balanced weights: C_j = 0
    for c in conservation_laws(init.balanced(FIG1, [1.0, 0.5], seed=0)):
        assert float(c.abs().max()) <= 1e-12


@pytest.mark.parametrize("dims", [FIG1, (3, 7, 2), (5, 4)])
def test_layer_singular_values_are_those_of_the_dense_adjacency(dims):
    ws = random_weights(dims, seed=2)
    ref = torch.linalg.svdvals(adjacency_from_weights(ws))
    sv = layer_singular_values(ws)
    assert sv.shape == ref.shape == (sum(dims),)
    torch.testing.assert_close(sv, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer_singular_values(ws, top=3), ref[:3], rtol=0, atol=1e-12)
    stacked = [torch.stack([w, 2 * w]) for w in ws]
    svb = layer_singular_values(stacked, top=4)
    assert svb.shape == (2, 4)
    torch.testing.assert_close(svb[1], 2 * ref[:4], rtol=0, atol=1e-12)


def test_nearest_level():
    levels = torch.tensor([15.0, 7.0, 2.5, 0.5, 0.0], dtype=F64)
    loss = torch.tensor([16.0, 7.1, 4.5, 1.4, 0.2, 1e-9], dtype=F64)
    r, gap = nearest_level(loss, levels)
    assert r.dtype == torch.long and r.tolist() == [0, 1, 2, 3, 4, 4]
    torch.testing.assert_close(gap, loss - levels[r], rtol=0, atol=0)
    r1, g1 = nearest_level(torch.tensor(6.9, dtype=F64), levels)
    assert r1.shape == () and int(r1) == 1 and float(g1) == pytest.approx(-0.1, abs=1e-14)
    r2, g2 = nearest_level(loss.reshape(2, 3), levels)
    assert r2.shape == (2, 3) and r2.reshape(-1).tolist() == r.tolist()


# ----------------------------------------------------------------------------------------------
# Arora et al.'s balanced end-to-end ODE
def problems():
    return {
        "whitened": RegressionProblem.teacher(
            [3.0, 2.0, 1.0], d_x=5, d_y=3, n_samples=20, whiten=True, seed=6
        ),
        "noisy": RegressionProblem.teacher(
            [3.0, 2.0, 1.0], d_x=5, d_y=3, n_samples=30, whiten=False, noise=0.2, seed=7
        ),
    }


def direct_loss(weights, pr):
    r = pr.Y - product(weights) @ pr.X
    return 0.5 * (r * r).sum() / pr.n_samples


@pytest.mark.parametrize("kind", ["whitened", "noisy"])
@pytest.mark.parametrize("h", [2, 3, 4])
@pytest.mark.parametrize("u0", [[1.5, 0.7, 0.2], [0.8]])
def test_balanced_product_rhs_is_the_product_velocity(kind, h, u0):
    """At a 0-balanced point, d/dt (W_h...W_1) under dW/dt = -grad L equals the end-to-end ODE."""
    pr = problems()[kind]
    dims = (5,) + (4,) * (h - 1) + (3,)
    ws = init.balanced(dims, u0, seed=8)
    wsg = [w.clone().requires_grad_(True) for w in ws]
    grads = torch.autograd.grad(direct_loss(wsg, pr), wsg)  # autograd, not the closed form
    _, dp = torch.autograd.functional.jvp(lambda *w: product(list(w)), tuple(ws), tuple(-g for g in grads))
    assert float(dp.abs().max()) > 1e-2
    rhs = balanced_product_rhs(product(ws), pr, h)
    torch.testing.assert_close(rhs, dp, rtol=1e-10, atol=1e-12)
    # sum_j Suf_j (-G_j) Pre_{j-1} with the problem's closed-form gradient
    g = pr.gradient(ws)
    eye_x, eye_y = torch.eye(5, dtype=F64), torch.eye(3, dtype=F64)
    terms = [
        (product(ws[j:]) if j < h else eye_y) @ (-g[j - 1]) @ (product(ws[: j - 1]) if j > 1 else eye_x)
        for j in range(1, h + 1)
    ]
    torch.testing.assert_close(rhs, sum(terms), rtol=1e-10, atol=1e-12)
    # batch dims
    batched = balanced_product_rhs(torch.stack([product(ws), product(ws)]), pr, h)
    torch.testing.assert_close(batched[1], rhs, rtol=1e-13, atol=1e-15)


def test_balanced_product_rhs_needs_balance():
    """Sanity check of the test above: an unbalanced factorisation moves P differently (h >= 2)."""
    pr = problems()["whitened"]
    dims = (5, 4, 4, 3)
    ws = [w.clone() for w in init.balanced(dims, [1.5, 0.7, 0.2], seed=8)]
    ws[1] = 2.0 * ws[1]
    ws[2] = 0.5 * ws[2]  # same product, C_j != 0
    g = pr.gradient(ws)
    _, dp = torch.autograd.functional.jvp(lambda *w: product(list(w)), tuple(ws), tuple(-x for x in g))
    assert float((balanced_product_rhs(product(ws), pr, 3) - dp).abs().max()) > 1e-2


@pytest.mark.parametrize("kind", ["whitened", "noisy"])
def test_balanced_end_to_end_ode_equals_full_gradient_flow(kind):
    """Oracle 10: the end-to-end ODE and the full GF give the same product up to t = 3 (atol 1e-8)."""
    pr, h = problems()[kind], 3
    dims = (5, 4, 4, 3)
    ws0 = init.balanced(dims, [0.9, 0.4, 0.05], seed=9)
    t = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0], dtype=F64)
    opts = dict(method="dopri5", rtol=1e-11, atol=1e-12)
    theta = odeint(lambda _, th: -pr.gradient_theta(th, dims), pack(ws0), t, **opts)
    p_end = odeint(lambda _, p: balanced_product_rhs(p, pr, h), product(ws0), t, **opts)
    p_full = product(unpack(theta, dims))
    torch.testing.assert_close(p_end, p_full, rtol=0, atol=1e-8)
    assert float((p_full[-1] - p_full[0]).abs().max()) > 0.1  # it actually moved
    assert float(pr.loss(unpack(theta[-1], dims))) < float(pr.loss(ws0))
    drift = conservation_drift(unpack(theta, dims), ws0)  # the flow keeps C_j = 0
    assert float(drift.max()) <= 1e-9
