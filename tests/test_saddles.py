"""Saddles (dlnlab.saddles) at constructed critical points: strict vs non-strict, snapping, escape.

Oracles from docs/theory.md section 4: the origin (h = 2: lambda_min = -m_1; h >= 3: Hessian 0),
balanced top-r critical points (h = 2: -m_{r+1}; h >= 3: non-strict), a skipped larger mode (strict,
-(m_k - m_a) m_a^((h-2)/h) for a balanced point), layer ranks, and the escape branches' sign rule.
"""

from __future__ import annotations

import pytest
import torch
from _saddle_helpers import (
    F64,
    net,
    small_problem,
)

from dlnlab import saddles
from dlnlab.network import pack, product

# ------------------------------------------------------------------------------------------------
# Constructed critical points


@pytest.mark.parametrize("h", [2, 3, 4])
def test_origin_h2_strict_h3_non_strict(h):
    pr = small_problem()
    dims = net(h)
    ws = saddles.critical_point(pr, dims, [])
    theta = pack(ws)
    assert float(theta.abs().max()) == 0.0
    res = saddles.classify_saddle(pr, dims, theta, [])
    if h == 2:
        assert res.label == "strict"
        assert res.lambda_min == pytest.approx(-float(pr.modes[0]), abs=1e-6)
        assert res.escape.unstable_kind == "hessian"
        assert res.escape.unstable_mode == 0
    else:
        assert res.label == "non-strict"
        hess = pr.hessian(theta, dims)
        assert float(torch.linalg.matrix_norm(hess, ord=2)) <= 1e-8
        assert abs(res.lambda_min) <= 1e-8
        assert res.three_rank_r_layers and res.optimal_rank_r
        assert res.escape.unstable_kind == "sign_rule" and res.escape.hessian_degenerate
    assert res.escape.next_mode == 0
    assert res.ranks == [0] * h


@pytest.mark.parametrize("h", [2, 3, 4])
@pytest.mark.parametrize("r", [1, 2])
@pytest.mark.parametrize("balanced", [True, False])
def test_top_r_critical_points(h, r, balanced):
    pr = small_problem()
    dims = net(h)
    m = [float(v) for v in pr.modes]
    ws = saddles.critical_point(pr, dims, range(r), balanced=balanced, seed=3)
    theta = pack(ws)
    assert float(pr.gradient_theta(theta, dims).abs().max()) <= 1e-12
    torch.testing.assert_close(product(ws), pr.best_rank_product(r), atol=1e-12, rtol=0)
    assert float(pr.loss(ws)) == pytest.approx(float(pr.plateau_levels(3)[r]), rel=1e-12)
    res = saddles.classify_saddle(pr, dims, theta, range(r))
    assert res.snap == "none" and res.snap_grad_norm <= 1e-12
    assert res.ranks == [r] * h and res.rank_P == r
    assert res.optimal_rank_r
    if h == 2:  # d_1 = 4 > r: a hidden unit is free
        assert res.label == "strict"
        assert res.lambda_min == pytest.approx(-m[r], abs=1e-6)
        assert res.escape.unstable_mode == r
    else:
        assert res.label == "non-strict"
        assert res.lambda_min >= -1e-7
        assert res.three_rank_r_layers
    if balanced:
        cons = [ws[j + 1].T @ ws[j + 1] - ws[j] @ ws[j].T for j in range(h - 1)]
        assert max(float(c.abs().max()) for c in cons) <= 1e-12


@pytest.mark.parametrize("h", [2, 3, 4])
@pytest.mark.parametrize("modes", [[1], [2], [1, 2], [0, 2]])
def test_skipped_larger_mode_is_strict(h, modes):
    pr = small_problem()
    dims = net(h)
    m = [float(v) for v in pr.modes]
    ws = saddles.critical_point(pr, dims, modes, seed=4)
    theta = pack(ws)
    assert float(pr.gradient_theta(theta, dims).abs().max()) <= 1e-12
    res = saddles.classify_saddle(pr, dims, theta, modes)
    assert res.label == "strict"
    assert not res.is_top_set and not res.optimal_rank_r
    assert res.lambda_min < -0.1
    if h >= 3 and len(modes) == 1:  # balanced, learnt a, larger k = 0 unlearnt
        a = modes[0]
        expected = -(m[0] - m[a]) * m[a] ** ((h - 2) / h)
        assert res.lambda_min == pytest.approx(expected, rel=1e-6)
    assert res.escape.unstable_kind == "hessian"
    assert res.escape.unstable_mode == min(k for k in range(3) if k not in modes)


def test_critical_points_with_chosen_layer_ranks():
    """h = 4, one mode learnt, extra rank in W_2 and W_3: chained extra channels make the saddle
    strict, unchained ones non-strict (docs/theory.md section 4); an extra chain from input to output
    is not critical."""
    pr = small_problem()
    dims = net(4)
    chained = saddles.critical_point(pr, dims, [0], layer_ranks=[1, 2, 2, 1], chain_extra=True, seed=5)
    unchained = saddles.critical_point(pr, dims, [0], layer_ranks=[1, 2, 2, 1], chain_extra=False, seed=5)
    for ws in (chained, unchained):
        assert float(pr.gradient_theta(pack(ws), dims).abs().max()) <= 1e-12
        torch.testing.assert_close(product(ws), pr.best_rank_product(1), atol=1e-12, rtol=0)
    a = saddles.classify_saddle(pr, dims, pack(chained), [0])
    b = saddles.classify_saddle(pr, dims, pack(unchained), [0])
    assert a.ranks == b.ranks == [1, 2, 2, 1]
    assert not a.three_rank_r_layers
    assert a.label == "strict" and a.lambda_min < -0.1
    assert b.label == "non-strict" and b.lambda_min >= -1e-7
    # three rank-1 layers: the sufficient condition holds
    c = saddles.classify_saddle(
        pr, dims, pack(saddles.critical_point(pr, dims, [0], layer_ranks=[2, 1, 1, 1])), [0]
    )
    assert c.three_rank_r_layers and c.label == "non-strict"
    assert "sufficient" in c.reasons[0]
    with pytest.raises(ValueError, match="not a critical point"):
        saddles.critical_point(pr, dims, [0], layer_ranks=[2, 2, 2, 1])
    with pytest.raises(ValueError, match="r_max"):
        saddles.critical_point(pr, (5, 2, 3), [0, 1, 2])
    with pytest.raises(ValueError, match="modes must be in"):
        saddles.critical_point(pr, dims, [3])


@pytest.mark.parametrize("h", [2, 3])
def test_snap_from_a_perturbed_saddle(h):
    """Near (not at) the top-1 saddle, with full-rank noise of relative size 1e-2 in every layer: the
    learnt set is read from the mode strengths, the snap lands on a critical point with P = P*_1."""
    pr = small_problem()
    dims = net(h)
    theta = pack(saddles.critical_point(pr, dims, [0], balanced=False, seed=7))
    noise = torch.randn(theta.shape, generator=torch.Generator().manual_seed(8), dtype=F64)
    near = theta + 1e-2 * noise
    res = saddles.classify_saddle(pr, dims, near.numpy())
    assert res.modes_learnt == [0] and res.snap == "project"
    assert res.closest["ranks"] == [min(a, b) for a, b in zip(dims[1:], dims[:-1])]
    assert res.ranks == [1] * h and res.optimal_rank_r
    assert res.snap_grad_norm <= 1e-9 and res.product_distance <= 1e-9
    assert res.label == ("strict" if h == 2 else "non-strict")
    assert res.theta_critical.shape == theta.shape
    with pytest.raises(ValueError, match="finite"):
        saddles.classify_saddle(pr, dims, torch.full_like(theta, float("nan")))


@pytest.mark.parametrize("h", [2, 3])
def test_escape_branches_follow_the_sign_rule(h):
    pr = small_problem()
    dims = net(h)
    theta = pack(saddles.critical_point(pr, dims, [0], seed=6))
    esc = saddles.escape_directions(pr, dims, theta, [0])
    assert esc.next_mode == 1 and esc.free_channel
    branches = {b["mode"]: b for b in esc.branches}
    assert set(branches) == {1, 2}
    for k, b in branches.items():
        mk = float(pr.modes[k])
        assert b["sign_rule_ok"]
        # signed alike, L(theta + delta) - L(theta): a^h = 1e-3 m_k (the default amplitude), so the
        # leading order is -+ m_k a^h = -+ 1e-3 m_k^2
        assert b["predicted_unstable_loss_change"] == pytest.approx(-1e-3 * mk**2, rel=1e-12)
        assert b["predicted_stable_loss_change"] == pytest.approx(1e-3 * mk**2, rel=1e-12)
        assert b["unstable_loss_change"] == pytest.approx(b["predicted_unstable_loss_change"], rel=1e-2)
        assert b["stable_loss_change"] == pytest.approx(b["predicted_stable_loss_change"], rel=1e-2)
        assert "predicted_loss_change" not in b  # the former magnitude, of no sign
        if h == 2:  # the branches are Hessian eigendirections (1, 1) and (1, -1)
            assert b["unstable_curvature"] == pytest.approx(-mk, rel=1e-8)
            assert b["stable_curvature"] == pytest.approx(mk, rel=1e-8)
        else:  # the Hessian is blind to them; the order-h sign rule decides
            assert abs(b["unstable_curvature"]) <= 1e-10 and abs(b["stable_curvature"]) <= 1e-10
    d = esc.unstable_direction
    assert d.shape == theta.shape and float(d.norm()) == pytest.approx(1.0)
    assert esc.unstable_mode == 1
    assert esc.unstable_kind == ("hessian" if h == 2 else "sign_rule")
