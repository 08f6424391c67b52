"""Initialisations (docs/theory.md section 3, item 5): gaussian, orthogonal, 0-balanced, aligned."""

import pytest
import torch
from _helpers import bad_argument

from dlnlab import init
from dlnlab.network import Layout, product

F64 = torch.float64
FIG1 = (11, 6, 6, 6, 6, 4)


def conservation(ws):
    """C_j = W_{j+1}^T W_{j+1} - W_j W_j^T, computed here independently of dlnlab.analysis."""
    return [ws[j].T @ ws[j] - ws[j - 1] @ ws[j - 1].T for j in range(1, len(ws))]


def test_gaussian_scale_shapes_and_seed():
    dims = (50, 40, 30, 20)
    ws = init.gaussian(dims, 0.1, seed=3)
    assert [tuple(w.shape) for w in ws] == list(Layout(dims).shapes)
    assert all(w.dtype == F64 for w in ws)
    flat = torch.cat([w.reshape(-1) for w in ws])
    assert float(flat.std()) == pytest.approx(0.1, rel=0.05)
    assert abs(float(flat.mean())) < 0.01
    same = init.gaussian(dims, 0.1, seed=3)
    other = init.gaussian(dims, 0.1, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(ws, same))
    assert not any(torch.equal(a, b) for a, b in zip(ws, other))
    gen = torch.Generator().manual_seed(3)
    assert all(torch.equal(a, b) for a, b in zip(ws, init.gaussian(dims, 0.1, seed=gen)))
    assert all(torch.count_nonzero(w) == 0 for w in init.gaussian(dims, 0.0, seed=3))
    with bad_argument("scale", "finite and >= 0"):
        init.gaussian(dims, -1.0)


@pytest.mark.parametrize("dims", [FIG1, (5, 8, 3, 3, 6)])
def test_orthogonal_singular_values_equal_scale(dims):
    ws = init.orthogonal(dims, 0.7, seed=1)
    for w in ws:
        sv = torch.linalg.svdvals(w)
        assert sv.numel() == min(w.shape)
        torch.testing.assert_close(sv, torch.full_like(sv, 0.7), rtol=0, atol=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(ws, init.orthogonal(dims, 0.7, seed=1)))
    assert not torch.equal(ws[0], init.orthogonal(dims, 0.7, seed=2)[0])


@pytest.mark.parametrize(
    "dims,u0", [((5, 4, 6, 3), [2.0, 0.5, 0.1]), (FIG1, [1.0, 0.3]), ((3, 5, 5, 5, 2), 0.2)]
)
def test_balanced_is_balanced_with_the_given_singular_values(dims, u0):
    ws = init.balanced(dims, u0, seed=2)
    assert [tuple(w.shape) for w in ws] == list(Layout(dims).shapes)
    for c in conservation(ws):
        assert float(c.abs().max()) <= 1e-12
    expected = [u0] * Layout(dims).r_max if isinstance(u0, float) else sorted(u0, reverse=True)
    sv = torch.linalg.svdvals(product(ws))
    k = len(expected)
    torch.testing.assert_close(sv[:k], torch.tensor(expected, dtype=F64), rtol=1e-12, atol=1e-14)
    assert all(float(v) <= 1e-14 for v in sv[k:])
    # each layer carries u0^(1/h)
    h = len(dims) - 1
    for w in ws:
        svw = torch.linalg.svdvals(w)[:k]
        torch.testing.assert_close(svw, torch.tensor(expected, dtype=F64) ** (1 / h), rtol=1e-12, atol=1e-14)
    with bad_argument("u0", "at most r_max"):
        init.balanced(dims, [1.0] * (Layout(dims).r_max + 1))


def test_aligned_mode_strengths_and_overlaps(fig1_problem):
    pr = fig1_problem
    u0 = [0.3, -0.2, 0.1, 1e-3]
    ws = init.aligned(FIG1, pr, u0, seed=3)
    p = product(ws)
    torch.testing.assert_close(pr.mode_strength(p), torch.tensor(u0, dtype=F64), rtol=0, atol=1e-12)
    overlap = pr.mode_u.T @ p @ pr.mode_v
    torch.testing.assert_close(overlap, torch.diag(torch.tensor(u0, dtype=F64)), rtol=0, atol=1e-12)
    for c in conservation(ws):
        assert float(c.abs().max()) <= 1e-12
    # scalar u0: every mode at the same strength; a different seed only changes the hidden frames
    ws2 = init.aligned(FIG1, pr, 1e-3, seed=4)
    torch.testing.assert_close(
        pr.mode_strength(product(ws2)), torch.full((4,), 1e-3, dtype=F64), rtol=1e-10, atol=0
    )
    assert not torch.equal(ws2[1], init.aligned(FIG1, pr, 1e-3, seed=5)[1])
    with bad_argument("u0", "one per mode"):
        init.aligned(FIG1, pr, [1.0, 2.0])
    with bad_argument("dims", "do not fit the data"):
        init.aligned((10, 6, 4), pr, 1e-3)


def test_initial_weights_dispatch_and_errors(fig1_problem):
    for kind, kw in [("gaussian", {"scale": 0.1}), ("orthogonal", {"scale": 0.1}), ("balanced", {"u0": 0.1})]:
        ws = init.initial_weights(kind, FIG1, seed=7, **kw)
        ref = getattr(init, kind)(FIG1, 0.1, seed=7)
        assert all(torch.equal(a, b) for a, b in zip(ws, ref))
    ws = init.initial_weights("aligned", FIG1, problem=fig1_problem, u0=1e-3, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(ws, init.aligned(FIG1, fig1_problem, 1e-3, seed=7)))
    with bad_argument("kind", "unknown initialisation") as err:
        init.initial_weights("xavier", FIG1, scale=0.1)
    for allowed in ("gaussian", "orthogonal", "balanced", "aligned"):
        assert allowed in str(err.value)
    with bad_argument("scale", "required"):
        init.initial_weights("gaussian", FIG1)
    with bad_argument("u0", "required"):
        init.initial_weights("balanced", FIG1)
    with bad_argument("problem", "aligned"):
        init.initial_weights("aligned", FIG1, u0=1e-3)


def test_aligned_on_non_whitened_data_has_the_requested_mode_strengths():
    from dlnlab.init import aligned
    from dlnlab.network import product
    from dlnlab.problem import RegressionProblem

    prob = RegressionProblem.teacher([3.0, 1.0], 5, 3, 30, whiten=False, noise=0.1, seed=1)
    dims = [5, 4, 3]
    u0 = [0.1, 0.2, 0.3]
    w = aligned(dims, prob, u0, seed=0)
    torch.testing.assert_close(prob.mode_strength(product(w)), torch.tensor(u0, dtype=torch.float64))
    # u0 = m_k gives the critical product P_S of all learnable modes: a critical point at L(P_S)
    w = aligned(dims, prob, prob.modes[:3].tolist(), seed=0)
    grad_norm = torch.sqrt(sum((g * g).sum() for g in prob.gradient(w)))
    assert grad_norm < 1e-10
    assert abs(float(prob.loss(w)) - prob.critical_value(range(3))) < 1e-10
