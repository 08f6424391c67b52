"""Classification of a saddle: strict, non-strict or inconclusive (:func:`classify_saddle`).

The point is first snapped to the nearby critical point (``dlnlab.saddles.critical``). (Levenberg-
Marquardt from the closest point itself, ``snap="lm"``, also converges, but to a critical point that
keeps the initialisation's left-overs as chained extra channels: on the Figure 1 flow it has ranks
[6, 5, 5, 5, 4] and lambda_min of order -1e-2, a curvature that vanishes with the initialisation
scale.) For a top set at depth h >= 3 the projected point is non-strict by construction (every W_j of
rank r), so the critical point LM finds from the closest point itself is weighed first: it decides
``strict`` where its negative curvature exceeds what its distance allows (``dlnlab.saddles.nearest``).
The evidence is taken at the critical point used: ranks of the W_j and the partial products, whether P
is the optimal rank-r map P*_r, the sufficient condition for a non-strict saddle (three W_j of rank r,
P optimal of rank r), the theory for strict saddles (h = 2, or a larger mode skipped) and lambda_min
on theta. Thresholds are relative to s_1 = m_1; where the evidence disagrees: ``inconclusive``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields

import numpy as np
from torch import Tensor

from dlnlab.network import as_layout, pack, product, unpack
from dlnlab.problem import RegressionProblem
from dlnlab.saddles.critical import ClassifyTolerances, _as_theta, critical_point
from dlnlab.saddles.escape import EscapeDirections, escape_directions
from dlnlab.saddles.nearest import NearestCritical, nearest_critical
from dlnlab.saddles.plateaus import _s1
from dlnlab.saddles.plateaus import modes_learnt as _learnt  # the argument modes_learnt shadows it
from dlnlab.saddles.ranks import _partial_product_rule, _rank_evidence
from dlnlab.saddles.snap import _hessian, _lambda_extremes, _lm_snap, _project_learnt, curvature_at

__all__ = ["LABELS", "ClassifyTolerances", "SaddleClassification", "classify_saddle"]

LABELS = ("strict", "non-strict", "inconclusive")


@dataclass
class SaddleClassification:
    """A saddle, classified at the critical point itself.

    label: strict, non-strict or inconclusive; lambda_min, lambda_max: the Hessian's extremes on theta
    at the critical point (lambda_tolerance: what counts as zero); n_negative_eigenvalues,
    n_zero_eigenvalues (dense Hessians only); ranks (of W_1..W_h), partial_product_ranks ({"prefix":
    rank P_{j:1} for j = 1..h-1, "suffix": rank W_h..W_j for j = 2..h}), rank_P; optimal_rank_r (P is
    P*_r, the optimal rank-r map), three_rank_r_layers (the sufficient condition for non-strict),
    n_rank_r_layers; is_top_set, is_global_minimum; partial_product_rule; theory (what the literature
    says) and numeric (what lambda_min says); snap (the method used), snap_grad_norm, snap_distance
    (||theta* - theta||), snap_iterations; product_distance (||(P - P_S) Sxx^{1/2}||); reasons (why the
    label); closest ({grad_norm, lambda_min, lambda_max, product_distance, ranks} at theta itself); modes_learnt
    (the set S), level (L(P_S)); escape (:class:`EscapeDirections` at the critical point, None if it
    failed); theta_critical (the (p,) critical point); nearest_critical (:class:`NearestCritical`: the
    critical point Levenberg-Marquardt reaches from theta itself, its distance, lambda_min and whether
    it decides the label; None unless snap is auto, theta is not already critical and S is a top set,
    not the global minimum, at depth h >= 3).
    """

    label: str
    lambda_min: float
    lambda_max: float
    lambda_tolerance: float
    n_negative_eigenvalues: int | None
    n_zero_eigenvalues: int | None
    ranks: list[int]
    partial_product_ranks: dict
    rank_P: int
    optimal_rank_r: bool
    three_rank_r_layers: bool
    n_rank_r_layers: int
    is_top_set: bool
    is_global_minimum: bool
    partial_product_rule: str | None
    theory: str | None
    numeric: str
    snap: str
    snap_grad_norm: float
    snap_distance: float
    snap_iterations: int
    product_distance: float
    reasons: list[str]
    closest: dict
    modes_learnt: list[int]
    level: float
    escape: EscapeDirections | None
    theta_critical: Tensor
    nearest_critical: NearestCritical | None = None

    def to_dict(self) -> dict:
        """JSON-able fields (escape and nearest_critical as dicts, the critical point left out)."""
        skip = ("escape", "theta_critical", "nearest_critical")
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        out["escape"] = None if self.escape is None else self.escape.to_dict()
        out["nearest_critical"] = None if self.nearest_critical is None else self.nearest_critical.to_dict()
        return out


@dataclass(frozen=True)
class _Scales:
    """The problem's scales (powers of s_1 = m_1) and the absolute tolerances they give."""

    s1: float
    hessian: float  # h s_1^(2-2/h): the size of the Hessian near the saddles
    grad_tol: float  # ||grad L|| at or below this is a critical point
    prod_tol: float  # ||(P - P_S) Sxx^{1/2}|| at or below this is P = P_S
    lam_tol: float  # |lambda| at or below this counts as zero curvature


def _scales(problem: RegressionProblem, h: int, tol: ClassifyTolerances) -> _Scales:
    s1 = _s1(problem)
    hscale = h * s1 ** (2.0 - 2.0 / h)
    gscale = math.sqrt(h) * s1 ** (2.0 - 1.0 / h)
    return _Scales(
        s1=s1,
        hessian=hscale,
        grad_tol=tol.grad_rtol * gscale,
        prod_tol=tol.prod_rtol * s1,
        lam_tol=tol.lam_rtol * hscale,
    )


def _learnt_set(problem: RegressionProblem, layout, th0: Tensor, modes_learnt) -> list[int]:
    """The set S, sorted (default: the modes with u_k >= m_k / 2 at th0); ValueError if it is not one."""
    if modes_learnt is None:
        ms = problem.mode_strength(product(unpack(th0, layout))).numpy()
        s = sorted(np.flatnonzero(_learnt(ms, problem)).tolist())
    else:
        s = sorted(set(int(k) for k in modes_learnt))
    bad = [k for k in s if not 0 <= k < problem.n_modes]
    if bad:
        raise ValueError(f"modes_learnt must be in 0..{problem.n_modes - 1}, got {bad}")
    if len(s) > layout.r_max:
        raise ValueError(f"{len(s)} learnt modes do not fit through r_max = {layout.r_max}")
    return s


def _closest_evidence(
    problem: RegressionProblem, layout, th0: Tensor, ps: Tensor, scales: _Scales, tol: ClassifyTolerances
) -> dict:
    """{grad_norm, lambda_min, lambda_max, product_distance, ranks} at theta itself (the closest approach), kept so
    that a reader sees what the snap changed; the curvature and ranks only where the gradient is finite."""
    ws0 = unpack(th0, layout)
    g0 = float(problem.gradient_theta(th0, layout).norm())
    pd0 = float(problem.product_distance(product(ws0), ps))
    hess0 = _hessian(problem, th0, layout, tol.dense_max)
    lam0, lam0_max = (
        _lambda_extremes(problem, th0, layout, hess0)[:2] if math.isfinite(g0) else (math.nan,) * 2
    )
    ev0 = _rank_evidence(ws0, scales.s1, tol.rank_rtol) if math.isfinite(g0) else None
    return {
        "grad_norm": g0,
        "lambda_min": lam0,
        "lambda_max": lam0_max,
        "product_distance": pd0,
        "ranks": None if ev0 is None else ev0["ranks"],
    }


@dataclass(frozen=True)
class _Snapped:
    """Where the evidence is read: the method (``snap``; in auto mode none, nearest or project), theta*
    (p,), the LM iterations, the nearest critical point's evidence and, where theta* is that point, its
    curvature (:func:`~dlnlab.saddles.snap.curvature_at`'s), so that it is not computed twice."""

    method: str
    theta: Tensor
    iterations: int
    nearest: NearestCritical | None = None
    curvature: tuple | None = None


def _snap_to_critical(
    problem: RegressionProblem,
    layout,
    th0: Tensor,
    s: list[int],
    snap: str,
    closest: dict,
    scales: _Scales,
    tol: ClassifyTolerances,
) -> _Snapped:
    """The critical point that ``snap`` gives. Auto mode off a critical point: for a top set S (not
    the global minimum) at depth h >= 3, the nearest critical point LM finds from th0 itself where its
    negative curvature decides (``dlnlab.saddles.nearest``), else the projection onto the learnt
    channels followed by LM. Elsewhere the theory calls every critical point of the level strict (h = 2,
    a larger mode skipped), so the nearest one could not change the label and is not looked for."""
    method = snap
    nearest = None
    if snap == "auto":
        at_critical = (
            closest["grad_norm"] <= scales.grad_tol and closest["product_distance"] <= scales.prod_tol
        )
        method = "none" if at_critical else "project"
        r = len(s)
        by_construction = layout.depth >= 3 and s == list(range(r)) and r < min(layout.r_max, problem.n_modes)
        if not at_critical and by_construction:
            ps = problem.critical_product(s)
            tols = (scales.grad_tol, scales.prod_tol, scales.lam_tol)
            hess_norm0 = max(abs(closest["lambda_min"]), abs(closest["lambda_max"]))
            nearest, th_lm, curvature = nearest_critical(
                problem, layout, th0, ps, hess_norm0, tols, tol.max_iter, tol.dense_max, scales.hessian
            )
            if nearest.strict:
                return _Snapped("nearest", th_lm, nearest.iterations, nearest, curvature)
    iters = 0
    if method == "none":
        th = th0
    elif method == "construct":
        th = pack(critical_point(problem, layout, s))
    elif method in ("project", "lm"):
        start = pack(_project_learnt(problem, layout, unpack(th0, layout), s)) if method == "project" else th0
        th, iters = _lm_snap(
            problem, layout, start, 1e-4 * scales.grad_tol, tol.max_iter, tol.dense_max, scales.hessian
        )
    else:
        raise ValueError(f"snap must be one of auto, project, lm, construct, none; got {snap!r}")
    return _Snapped(method, th, iters, nearest)


@dataclass(frozen=True)
class _RankFacts:
    """What the ranks and the product say at the critical point (r = |S|)."""

    rank_p: int
    top: bool  # S = {0..r-1}
    optimal: bool  # P is P*_r, the optimal rank-r map
    n_rank_r: int  # how many W_j have rank r
    three: bool  # at least three W_j of rank r and rank P = r: the sufficient condition for non-strict
    is_min: bool  # S is the top set of size min(r_max, q): the global minimum


def _rank_facts(ev: dict, s: list[int], pd: float, scales: _Scales, layout, problem) -> _RankFacts:
    r = len(s)
    rank_p = ev["rank_P"]
    top = s == list(range(r))
    n_rank_r = sum(1 for x in ev["ranks"] if x == r)
    r_top = min(layout.r_max, problem.n_modes)
    return _RankFacts(
        rank_p=rank_p,
        top=top,
        optimal=bool(top and rank_p == r and pd <= scales.prod_tol),
        n_rank_r=n_rank_r,
        three=bool(n_rank_r >= 3 and rank_p == r),
        is_min=bool(top and r == r_top),
    )


def _theory(h: int, s: list[int], facts: _RankFacts) -> tuple[str | None, str]:
    """(what the literature says, or None where it is silent; why)."""
    r = len(s)
    if h == 1:
        return None, "h = 1: the loss is convex in W_1, the only critical point is the minimum"
    if facts.is_min:
        return None, "S is the top set of size min(r_max, q): the global minimum, not a saddle"
    if h == 2:
        return "strict", "h = 2: every saddle is strict"
    if not facts.top:
        return "strict", f"a larger mode is skipped (S = {s} is not a top set)"
    if facts.three and facts.optimal:
        why = f"{facts.n_rank_r} of the W_j have rank r = {r} and P is the optimal rank-{r} map (sufficient)"
        return "non-strict", why
    return None, ""


def _decide(
    h: int, facts: _RankFacts, snapped: bool, theory: str | None, theory_why: str, numeric: str,
    gn: float, pd: float, lam_min: float, lam_tol: float,
) -> tuple[str, str]:  # fmt: skip
    """(label, reason): the theory and lambda_min must agree, at a critical point with P = P_S."""
    if h == 1 or facts.is_min:
        return "inconclusive", theory_why
    if not snapped:
        return (
            "inconclusive",
            f"no critical point with P = P_S reached (||grad L|| = {gn:.3g}, ||P - P_S|| = {pd:.3g})",
        )
    if theory is None:
        return (
            numeric,
            f"lambda_min = {lam_min:.3g} (tolerance {lam_tol:.2g}); the rank conditions are silent",
        )
    if theory == numeric:
        return numeric, f"{theory_why}; lambda_min = {lam_min:.3g} agrees"
    return "inconclusive", f"{theory_why}, but lambda_min = {lam_min:.3g} says {numeric}"


def _snap_reasons(method: str, nearest: NearestCritical | None, dist: float, top: bool, h: int) -> list[str]:
    """What the label rests on: the nearest critical point found from the trajectory, and, where the
    projected critical point was used, that its rank rule holds by construction."""
    out = [] if nearest is None else [nearest.reason()]
    if method == "project" and top and h >= 3:  # say what the label rests on (a review found it unclear)
        out.append(
            f"classified at the critical point on the closest point's learnt channels ({dist:.3g} away): "
            "every W_j has rank r there, so the rank rule and lambda_min = 0 hold by construction"
        )
    return out


def _escape_or_reason(
    problem: RegressionProblem,
    layout,
    th: Tensor,
    s: list[int],
    th0: Tensor,
    hess: Tensor | None,
    lam: tuple,
    tol: ClassifyTolerances,
    reasons: list[str],
) -> EscapeDirections | None:
    """The escape directions at the critical point th (reusing its Hessian and lambda_min), or None
    with the failure appended to ``reasons``: the escape analysis must not lose the label."""
    try:
        return escape_directions(problem, layout, th, s, trajectory_theta=th0, _hess=hess, _lam=lam, _tol=tol)
    except Exception as err:  # noqa: BLE001 - the escape analysis must not lose the label
        reasons.append(f"escape analysis failed: {type(err).__name__}: {err}")
        return None


def classify_saddle(
    problem: RegressionProblem,
    dims,
    theta,
    modes_learnt: Iterable[int] | None = None,
    *,
    snap: str = "auto",
    tolerances: ClassifyTolerances | None = None,
) -> SaddleClassification:
    """Snap theta to the nearby critical point and classify it: strict, non-strict or inconclusive.

    Args:
        theta: (p,) weights near a saddle (the closest approach of a trajectory) or a critical point.
        modes_learnt: the set S (0-based); default: the modes with u_k >= m_k / 2 at theta.
        snap: ``auto`` (keep theta if it is already a critical point with P = P_S, else ``project``),
            ``project`` (project the layers onto the learnt channels, then Levenberg-Marquardt on
            ||grad L||^2), ``lm`` (Levenberg-Marquardt from theta itself), ``construct`` (the balanced
            critical point of S from :func:`critical_point`), ``none`` (classify theta as it is).

    Returns a :class:`SaddleClassification`.
    """
    tol = tolerances or ClassifyTolerances()
    layout = as_layout(dims)
    h = layout.depth
    th0 = _as_theta(theta, layout, problem.X.dtype)
    s = _learnt_set(problem, layout, th0, modes_learnt)
    scales = _scales(problem, h, tol)
    ps = problem.critical_product(s)
    closest = _closest_evidence(problem, layout, th0, ps, scales, tol)
    snapped_to = _snap_to_critical(problem, layout, th0, s, snap, closest, scales, tol)
    method, th, iters = snapped_to.method, snapped_to.theta, snapped_to.iterations
    ws = unpack(th, layout)
    gn = float(problem.gradient_theta(th, layout).norm())
    pd = float(problem.product_distance(product(ws), ps))
    curv = snapped_to.curvature or curvature_at(problem, th, layout, tol.dense_max)
    hess, (lam_min, lam_max, v_min, evals) = curv
    ev = _rank_evidence(ws, scales.s1, tol.rank_rtol)
    facts = _rank_facts(ev, s, pd, scales, layout, problem)
    rule = _partial_product_rule(ev, layout.dims, len(s)) if facts.top and h > 1 else None
    theory, theory_why = _theory(h, s, facts)
    lam_tol = scales.lam_tol
    numeric = "strict" if lam_min < -lam_tol else "non-strict"
    snapped = gn <= scales.grad_tol and pd <= scales.prod_tol
    label, reason = _decide(h, facts, snapped, theory, theory_why, numeric, gn, pd, lam_min, lam_tol)
    snap_distance = float((th - th0).norm())
    reasons = [reason] + _snap_reasons(method, snapped_to.nearest, snap_distance, facts.top, h)
    n_neg = int((evals < -lam_tol).sum()) if evals is not None else None
    n_zero = int((evals.abs() <= lam_tol).sum()) if evals is not None else None
    escape = _escape_or_reason(problem, layout, th, s, th0, hess, (lam_min, v_min, n_neg), tol, reasons)
    return SaddleClassification(
        label=label,
        lambda_min=lam_min,
        lambda_max=lam_max,
        lambda_tolerance=lam_tol,
        n_negative_eigenvalues=n_neg,
        n_zero_eigenvalues=n_zero,
        ranks=ev["ranks"],
        partial_product_ranks={"prefix": ev["prefix"], "suffix": ev["suffix"]},
        rank_P=facts.rank_p,
        optimal_rank_r=facts.optimal,
        three_rank_r_layers=facts.three,
        n_rank_r_layers=facts.n_rank_r,
        is_top_set=bool(facts.top),
        is_global_minimum=facts.is_min,
        partial_product_rule=rule,
        theory=theory,
        numeric=numeric,
        snap=method,
        snap_grad_norm=gn,
        snap_distance=snap_distance,
        snap_iterations=iters,
        product_distance=pd,
        reasons=reasons,
        closest=closest,
        modes_learnt=s,
        level=problem.critical_value(s),
        escape=escape,
        theta_critical=th,
        nearest_critical=snapped_to.nearest,
    )
