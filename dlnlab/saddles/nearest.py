"""The nearest critical point found from the trajectory, and when its negative curvature decides.

The snap of :func:`dlnlab.saddles.classify_saddle` projects the closest point onto its learnt channels
before Levenberg-Marquardt (LM). The gradient keeps that subspace invariant, so every W_j there has
rank r, and for a top set at depth h >= 3 the rank rule says non-strict and lambda_min = 0 by
construction. LM from the closest point itself (:func:`nearest_critical`) instead finds the critical
point of the same level nearest the trajectory, which may be strict. But a critical set is not a
point: next to a non-strict saddle (lambda_min = 0) lie critical points of the same level whose
lambda_min is negative and grows with their distance from it (the initialisation's left-overs kept as
chained extra channels). A negative lambda_min found d away from the trajectory therefore decides only
when it is larger than anything a point within reach of the trajectory could have picked up by moving.

The bound used: lambda_min is Lipschitz with the constant K = sup ||D^3 L|| over a ball (Weyl:
|lambda_min(x) - lambda_min(y)| <= ||H(x) - H(y)||_2 <= sup ||D^3 L|| ||x - y||), and
:func:`derivative_bounds` bounds ||D^3 L|| in closed form. Every point of the ball B(theta, d)
around the closest point theta lies within 2 d of the critical point theta* found (d = ||theta* -
theta||). So if lambda_min(theta*) < -(lam_tol + 2 K d), with K taken over B(theta*, 2 d), every
point of B(theta, d) has lambda_min < -lam_tol: every critical point within d of the closest point
is strict. That is the test; otherwise the evidence is recorded and does not decide. The test is
conservative by construction, not by the bound on ||D^3 L|| (within 1.1 - 1.2x of its measured maximum
near strict saddles): Weyl's inequality on the whole Hessian bounds lambda_min's rate by ||D^3 L||,
40 - 300x what it was measured to be there. On Figure 1-like flows the thresholds are far above any
curvature reached, so a non-strict label there means "no strict critical point proved within d", not
positive evidence.

Conventions as in ``dlnlab.network``: W_j has shape (d_j, d_{j-1}), theta (p,) packs W_1..W_h.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from dlnlab.network import Layout, product, unpack
from dlnlab.problem import RegressionProblem
from dlnlab.saddles.snap import _lm_snap, curvature_at

__all__: list[str] = []


@dataclass(frozen=True)
class NearestCritical:
    """The critical point LM reaches from the closest point itself, and whether it decides the label.

    reached: ||grad L|| <= grad_tol and P = P_S there (the same level); distance: from the closest
    point; max_distance: how far a critical point can lie and still decide (LM stops beyond); grad_norm, product_distance (||(P - P_S) Sxx^{1/2}||), iterations (LM steps); lambda_min
    and n_negative_eigenvalues (below -lam_tol; None above the dense Hessian size) there (NaN and None
    where no critical point was reached); lipschitz:
    the bound K on how fast lambda_min changes per unit distance over the ball of radius 2 distance
    around it; threshold: lam_tol + 2 K distance; strict: reached and lambda_min < -threshold (it
    decides the label).
    """

    reached: bool
    distance: float
    max_distance: float
    grad_norm: float
    product_distance: float
    iterations: int
    lambda_min: float
    n_negative_eigenvalues: int | None
    lipschitz: float  # NaN (null in JSON) where no critical point was reached: nothing to bound
    threshold: float
    strict: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def reason(self) -> str:
        """One line for the classification's reasons: what this evidence says and whether it decided."""
        found = (
            "the nearest critical point found from the trajectory (Levenberg-Marquardt from the closest "
            f"point, {self.distance:.3g} away)"
        )
        if not self.reached and self.distance > self.max_distance:
            return (
                f"{found} was left unfinished {self.distance:.3g} away: beyond {self.max_distance:.3g} = "
                "||H|| / K no critical point can have the curvature to decide"
            )
        if not self.reached:
            return (
                f"{found} was not reached (LM stopped after {self.iterations} steps at ||grad L|| = "
                f"{self.grad_norm:.3g}, ||P - P_S|| = {self.product_distance:.3g}): it does not decide"
            )
        bound = f"-{self.threshold:.3g} = -(tolerance + 2 K d), K = {self.lipschitz:.3g}"
        if self.strict:
            return (
                f"decided by {found}: lambda_min = {self.lambda_min:.3g} < {bound} (a bound on how fast "
                "lambda_min changes per unit distance): every critical point within that distance of the "
                "closest point is strict"
            )
        return (
            f"{found} has lambda_min = {self.lambda_min:.3g}, not below {bound}: a curvature that its "
            "distance from a non-strict point could give, so it does not decide"
        )


@dataclass(frozen=True)
class _DerivativeBounds:
    """Upper bounds over a ball: hessian >= ||H||_2 (= ||D^2 L||), third >= ||D^3 L|| (the rate K at
    which lambda_min, or any Hessian eigenvalue, can change per unit distance)."""

    hessian: float
    third: float


def derivative_bounds(
    problem: RegressionProblem, layout: Layout, theta: Tensor, radius: float
) -> _DerivativeBounds:
    """Closed-form bounds on ||D^2 L|| and ||D^3 L|| over the ball of ``radius`` around theta (p,).

    For a unit direction u = (U_1..U_h), P(theta + e u) = sum_k e^k P_k, and with R = P - P_ls,
    <A, B> = tr(A Sxx B^T), the loss L = 1/2 <R(e), R(e)> + const gives D^2 L[u, u] = <P_1, P_1> +
    2 <R, P_2> and D^3 L[u, u, u] = 6 (<R, P_3> + <P_1, P_2>). P_k sums, over the k-subsets J of the
    layers, products with U_j for j in J and W_j elsewhere, so ||P_k||_F <= a^(h-k) e_k(||U_1||_F, ..)
    <= a^(h-k) C(h, k) h^(-k/2) (Maclaurin's inequality with sum ||U_j||_F^2 = 1), a = max_j ||W_j||_2
    over the ball <= max_j ||W_j(theta)||_2 + radius. |<A, B>| <= ||A Sxx^{1/2}||_F ||B||_F
    ||Sxx||^{1/2}, and ||R Sxx^{1/2}||_F over the ball is at most its value at theta plus ||Sxx||^{1/2}
    ((a_0 + radius)^h - a_0^h). A symmetric multilinear form's norm is its sup over equal unit
    arguments (Banach), and ||D^3 L|| bounds ||H(x) - H(y)||_2 / ||x - y|| (tested against autograd).
    """
    ws = unpack(theta, layout)
    h = layout.depth
    a0 = max(float(torch.linalg.matrix_norm(w, ord=2)) for w in ws)
    a = a0 + radius
    sxx = 1.0 if problem.whitened else float(torch.linalg.matrix_norm(problem.Sxx, ord=2))
    resid = float(problem.product_distance(product(ws), problem.P_ls))  # ||R Sxx^{1/2}||_F at theta
    resid += math.sqrt(sxx) * (a**h - a0**h)

    def pk(k: int) -> float:  # the bound on ||P_k||_F
        return math.comb(h, k) * h ** (-k / 2.0) * a ** (h - k) if k <= h else 0.0

    return _DerivativeBounds(
        hessian=sxx * pk(1) ** 2 + 2.0 * resid * math.sqrt(sxx) * pk(2),
        third=6.0 * (resid * math.sqrt(sxx) * pk(3) + sxx * pk(1) * pk(2)),
    )


def nearest_critical(
    problem: RegressionProblem,
    layout: Layout,
    th0: Tensor,
    ps: Tensor,
    hess_norm0: float,
    tols: tuple[float, float, float],
    max_iter: int,
    dense_max: int,
    hscale: float,
) -> tuple[NearestCritical, Tensor, tuple | None]:
    """LM from the closest point th0 (p,) itself, at most ``max_iter`` steps and no further than a
    deciding critical point can lie; hess_norm0 = ||H(th0)||_2; tols = (grad_tol, prod_tol, lam_tol).
    Returns (the evidence, the point reached, (hessian or None, (lambda_min, lambda_max, v_min,
    eigenvalues or None)) there, or None where no critical point was reached) so that a deciding point
    is not analysed twice."""
    grad_tol, prod_tol, lam_tol = tols
    # How far a deciding critical point theta* can lie: |lambda_min(theta*)| <= ||H(theta*)|| <=
    # ||H(theta0)|| + K d, and deciding needs |lambda_min| > 2 K d, so K d < ||H(theta0)||; the K over
    # B(theta*, 2 d), which holds theta0, is at least the bound K_0 at theta0 alone, so d < ||H|| / K_0.
    # LM stops once it has moved further: on the default run it would take 12-60 steps to critical
    # points 0.3-0.9 away; the reach there is 0.06-0.22 and LM stops after 1-4 steps.
    k0 = derivative_bounds(problem, layout, th0, 0.0).third
    reach = hess_norm0 / k0 if k0 > 0.0 else math.inf
    th, iters = _lm_snap(problem, layout, th0, grad_tol, max_iter, dense_max, hscale, max_distance=reach)
    gn = float(problem.gradient_theta(th, layout).norm())
    pd = float(problem.product_distance(product(unpack(th, layout)), ps))
    dist = float((th - th0).norm())
    reached = math.isfinite(gn) and gn <= grad_tol and pd <= prod_tol
    curvature, lam, n_neg, lip, threshold = None, math.nan, None, math.nan, math.nan
    if reached:  # the curvature (and its bound) at a point that is not critical would say nothing
        curvature = curvature_at(problem, th, layout, dense_max)
        extremes = curvature[1]
        lam = extremes[0]
        n_neg = int((extremes[3] < -lam_tol).sum()) if extremes[3] is not None else None
        lip = derivative_bounds(problem, layout, th, 2.0 * dist).third
        threshold = lam_tol + 2.0 * lip * dist
    evidence = NearestCritical(
        reached=bool(reached),
        distance=dist,
        max_distance=reach,
        grad_norm=gn,
        product_distance=pd,
        iterations=iters,
        lambda_min=lam,
        n_negative_eigenvalues=n_neg,
        lipschitz=lip,
        threshold=threshold,
        strict=bool(reached and lam < -threshold),
    )
    return evidence, th, curvature
