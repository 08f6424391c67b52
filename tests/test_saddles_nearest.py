"""The nearest critical point found from the trajectory (dlnlab.saddles.nearest) in the classification.

Near a strict top-set saddle at depth h >= 3 (chained extra channels, docs/theory.md section 4) the
projected snap lands on a rank-r critical point where lambda_min = 0 by construction; Levenberg-Marquardt
from the point itself finds the strict one, and its negative curvature decides when it exceeds what the
distance allows (tolerance + 2 K d, K a closed-form bound on ||D^3 L||). Near a non-strict saddle the
critical points LM finds have |lambda_min| of the order of their distance, far below that threshold.
Oracles: autograd Hessians, the exact critical points of :func:`critical_point`.
"""

from __future__ import annotations

import json

import pytest
import torch

from dlnlab import RegressionProblem, saddles
from dlnlab.network import as_layout, pack, unpack
from dlnlab.saddles.nearest import derivative_bounds

F64 = torch.float64
DIMS = [3, 3, 3, 3, 3]  # h = 4
CHAINED = ([1, 2, 2, 1], [2, 2, 1, 1], [1, 1, 2, 2], [2, 1, 1, 2], [1, 2, 1, 2], [2, 1, 2, 1])


def _problem(whiten: bool = False) -> RegressionProblem:
    """Teacher s = (3, 2, 1), d_x = d_y = 3, not whitened (Sxx != I)."""
    return RegressionProblem.teacher([3.0, 2.0, 1.0], d_x=3, d_y=3, n_samples=30, seed=0, whiten=whiten)


def _noisy(theta: torch.Tensor, size: float = 1e-6) -> torch.Tensor:
    return theta + size * torch.randn(theta.shape, generator=torch.Generator().manual_seed(1), dtype=F64)


def _autograd_hessian(problem, layout, x):
    return torch.autograd.functional.hessian(lambda y: problem.loss(unpack(y, layout)), x)


@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("h", [2, 3, 4])
def test_derivative_bounds_hold(whiten, h):
    """||H(x)||_2 and ||H(x) - H(y)||_2 / ||x - y|| (autograd) stay below the closed-form bounds for
    x, y in the ball (a lower estimate of the true maximum: random pairs; power iteration found the bound
    on ||D^3 L|| within 1.1-1.2x of it near strict saddles)."""
    problem = _problem(whiten)
    dims = [3] * (h + 1)
    layout = as_layout(dims)
    gen = torch.Generator().manual_seed(3)
    theta = pack(saddles.critical_point(problem, dims, [0])) + 0.1 * torch.randn(
        layout.n_weights, generator=gen
    )
    radius = 0.2
    bound = derivative_bounds(problem, layout, theta, radius)
    worst2 = worst3 = 0.0
    for _ in range(8):
        u, v = (torch.randn(layout.n_weights, generator=gen, dtype=F64) for _ in range(2))
        x = theta + radius * float(torch.rand(1, generator=gen)) * u / u.norm()
        y = theta + radius * float(torch.rand(1, generator=gen)) * v / v.norm()
        hx, hy = _autograd_hessian(problem, layout, x), _autograd_hessian(problem, layout, y)
        worst2 = max(worst2, float(torch.linalg.matrix_norm(hx, ord=2)))
        worst3 = max(worst3, float(torch.linalg.matrix_norm(hx - hy, ord=2) / (x - y).norm()))
    assert worst2 <= bound.hessian <= 20 * worst2
    assert worst3 <= bound.third <= 50 * worst3


@pytest.mark.parametrize("layer_ranks", CHAINED)
def test_near_a_strict_top_set_saddle_the_nearest_critical_point_decides(layer_ranks):
    """1e-6 from a strict top-1 saddle (chained extra channels; autograd lambda_min -3.46): strict, at
    the critical point LM finds from the point itself, with the exact point's curvature."""
    problem = _problem()
    layout = as_layout(DIMS)
    exact = pack(saddles.critical_point(problem, DIMS, [0], layer_ranks=layer_ranks, chain_extra=True))
    lam_exact = float(torch.linalg.eigvalsh(_autograd_hessian(problem, layout, exact))[0])
    res = saddles.classify_saddle(problem, DIMS, _noisy(exact), [0])
    near = res.nearest_critical
    assert res.label == "strict" and res.snap == "nearest"
    assert near.reached and near.strict and near.distance < 1e-5
    assert near.lambda_min < -near.threshold and near.threshold < 1e-3
    assert res.lambda_min == pytest.approx(lam_exact, abs=1e-4) and lam_exact < -3.0
    assert near.n_negative_eigenvalues == res.n_negative_eigenvalues >= 1
    assert res.snap_distance == pytest.approx(near.distance)
    assert any(r.startswith("decided by the nearest critical point") for r in res.reasons)
    out = json.loads(json.dumps(res.to_dict()))
    assert out["nearest_critical"]["strict"] is True


@pytest.mark.parametrize(
    "kwargs",
    [
        {"layer_ranks": [1, 2, 2, 1], "chain_extra": False},
        {"layer_ranks": [1, 2, 2, 1], "chain_extra": False, "extra_scale": 0.3},
        {"layer_ranks": [2, 1, 1, 1]},
        {"balanced": True},
        {"balanced": False, "seed": 4},
    ],
)
def test_near_a_non_strict_saddle_the_nearest_critical_point_does_not_decide(kwargs):
    """1e-6 from a non-strict top-1 saddle: LM finds critical points whose lambda_min is at most of
    the order of their distance (the unchained one: -5e-6 at 1.5e-6), far above -(tol + 2 K d), and
    the label stays non-strict from the projected critical point."""
    problem = _problem()
    exact = pack(saddles.critical_point(problem, DIMS, [0], **kwargs))
    res = saddles.classify_saddle(problem, DIMS, _noisy(exact), [0])
    near = res.nearest_critical
    assert res.label == "non-strict" and res.snap == "project"
    assert near is not None and not near.strict and near.reached
    assert near.lambda_min > -near.threshold
    assert abs(near.lambda_min) <= 10 * near.distance  # the curvature grows no faster than the distance
    assert any("does not decide" in r for r in res.reasons)


def test_nearest_is_looked_for_only_where_the_projection_decides_by_construction():
    """h = 2 and a skipped larger mode: the theory calls every critical point of the level strict, so
    no nearest critical point is looked for; at a critical point itself neither."""
    problem = _problem()
    exact = pack(saddles.critical_point(problem, DIMS, [1]))
    res = saddles.classify_saddle(problem, DIMS, _noisy(exact), [1])
    assert res.label == "strict" and res.nearest_critical is None and res.snap == "project"
    dims2 = [3, 3, 3]
    res2 = saddles.classify_saddle(
        problem, dims2, _noisy(pack(saddles.critical_point(problem, dims2, [0]))), [0]
    )
    assert res2.label == "strict" and res2.nearest_critical is None
    at = saddles.classify_saddle(problem, DIMS, exact, [1])
    assert at.snap == "none" and at.nearest_critical is None


def test_the_bounds_are_attained_at_the_origin():
    """At theta = 0 and radius 0 only P_h is left: for one mode m of whitened data, ||H(0)||_2 = m at depth 2
    (autograd) and, at depth 3, |D^3 L[u, u, u]| = 6 m 3^(-3/2) along the mode's unit direction with equal
    layers: both bounds are attained there, so a factor lost in either shows (the random points of
    test_derivative_bounds_hold stay below a bound halved in its residual term; mutation audit)."""
    m = 2.0
    problem = RegressionProblem.teacher([m], d_x=3, d_y=3, n_samples=30, seed=0, whiten=True)
    two = as_layout([3, 3, 3])
    zero = torch.zeros(two.n_weights, dtype=F64)
    assert float(torch.linalg.matrix_norm(_autograd_hessian(problem, two, zero), ord=2)) == pytest.approx(m)
    assert derivative_bounds(problem, two, zero, 0.0).hessian == pytest.approx(m, rel=1e-12)
    three = as_layout([3, 3, 3, 3])
    e1, c = torch.eye(3, dtype=F64)[0], 3**-0.5
    u, v = problem.mode_u[:, 0], problem.mode_v[:, 0]
    direction = pack([c * torch.outer(e1, v), c * torch.outer(e1, e1), c * torch.outer(u, e1)])
    e = torch.zeros((), dtype=F64, requires_grad=True)
    d = problem.loss(unpack(e * direction, three))
    for _ in range(3):  # d^3/de^3 L(e u) at e = 0
        (d,) = torch.autograd.grad(d, e, create_graph=True)
    assert abs(float(d.detach())) == pytest.approx(6 * m * c**3, rel=1e-12)
    bound = derivative_bounds(problem, three, torch.zeros(three.n_weights, dtype=F64), 0.0)
    assert bound.third == pytest.approx(6 * m * c**3, rel=1e-12)


SPEAKS = ([2, 2, 1, 1], [1, 1, 2, 2], [2, 1, 1, 2])  # chained: a* = 3 or b* = 1 beside a rank-1 layer
NON_STRICT = (
    {"layer_ranks": [1, 2, 2, 1], "chain_extra": False},
    {"layer_ranks": [2, 1, 1, 1]},
    {"balanced": True},
)


@pytest.mark.parametrize(
    "kwargs", [{"layer_ranks": ranks, "chain_extra": True} for ranks in CHAINED] + [*NON_STRICT]
)
def test_the_partial_product_rule_agrees_with_the_hessian_where_it_speaks(kwargs):
    """docs/theory.md section 4's rule on exact top-1 critical points of chosen layer ranks: where it
    speaks, it says what the sign of the closed-form Hessian's lambda_min says (strict: -3.17; non-strict:
    0); it speaks where b* = a* + 1 (the chained points in SPEAKS) or b* >= a* + 2 through a rank-r middle
    (the non-strict ones). a* = min instead of max passed every test before (mutation audit)."""
    problem = _problem()
    exact = pack(saddles.critical_point(problem, DIMS, [0], **kwargs))
    lam_min = float(torch.linalg.eigvalsh(problem.hessian(exact, DIMS))[0])
    rule = saddles.classify_saddle(problem, DIMS, exact, [0]).partial_product_rule
    if kwargs.get("chain_extra", False) and kwargs["layer_ranks"] not in SPEAKS:
        assert rule is None
    else:
        assert lam_min < -1.0 or abs(lam_min) < 1e-9
        assert rule == ("strict" if lam_min < -1.0 else "non-strict")
