"""The snap of a trajectory's point to the nearby critical point, and the Hessian there.

Used by :func:`dlnlab.saddles.classify_saddle`: a trajectory only passes near a saddle, and from a
gaussian initialisation the unlearnt components keep the size of the initialisation, so the layers look
full rank and the Hessian at the closest point is slightly negative even near a non-strict saddle. The
closest point is therefore snapped to the nearby critical point: its layers are projected onto the
channels that carry the learnt modes (:func:`_project_learnt`), which removes the initialisation's
left-overs, and a few Levenberg-Marquardt steps on ||grad L||^2 (:func:`_lm_snap`) then make the
gradient vanish (P becomes P_S). :func:`_hessian` and :func:`_lambda_extremes` give the curvature that
the classification and the escape directions read there.

Conventions as in ``dlnlab.network``: W_j has shape (d_j, d_{j-1}), theta (p,) packs W_1..W_h.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from dlnlab.analysis import lanczos_extremes
from dlnlab.network import Layout
from dlnlab.problem import RegressionProblem

__all__: list[str] = []


def _project_learnt(
    problem: RegressionProblem, layout: Layout, ws: Sequence[Tensor], s: list[int]
) -> list[Tensor]:
    """Project every W_j (d_j, d_{j-1}) onto the channels that carry the learnt modes S.

    Frames: Q_0 = row space of P_S, Q_j = range of P_{j:1} Q_0 (top r), Q_h = U_S; W_j -> Q_j Q_j^T W_j
    Q_{j-1} Q_{j-1}^T. This keeps the learnt chain (with its imbalance) and drops the components the
    initialisation left in the other channels. S = {} gives the origin.
    """
    r = len(s)
    if r == 0:
        return [torch.zeros_like(w) for w in ws]
    ps = problem.critical_product(s)
    u, _, vh = torch.linalg.svd(ps, full_matrices=False)
    frames = [vh[:r].T]
    for j in range(layout.depth - 1):
        y = ws[j] @ frames[-1]
        uu, _, _ = torch.linalg.svd(y, full_matrices=False)
        frames.append(uu[:, :r])
    frames.append(u[:, :r])
    return [frames[j + 1] @ (frames[j + 1].T @ ws[j] @ frames[j]) @ frames[j].T for j in range(layout.depth)]


def _hessian(problem: RegressionProblem, theta: Tensor, layout: Layout, dense_max: int) -> Tensor | None:
    """The symmetrised dense Hessian (p, p) at theta (p,), or None when p > dense_max."""
    if theta.numel() > dense_max:
        return None
    hess = problem.hessian(theta, layout)
    return 0.5 * (hess + hess.T)


def _lambda_extremes(
    problem: RegressionProblem, theta: Tensor, layout: Layout, hess: Tensor | None
) -> tuple[float, float, Tensor, Tensor | None]:
    """(lambda_min, lambda_max, v_min (p,), all eigenvalues (p,) or None) of the Hessian at theta (p,).

    Dense ``eigh`` of ``hess`` (from :func:`_hessian`) when given, else Lanczos on Hessian-vector
    products (150 steps). Unlike ``dlnlab.analysis.hessian_extremes`` this also returns v_min and the
    spectrum, which the classification and the escape direction need.
    """
    if hess is not None:
        lam, vec = torch.linalg.eigh(hess)
        return float(lam[0]), float(lam[-1]), vec[:, 0], lam
    lo, hi, v_lo, _ = lanczos_extremes(
        lambda v: problem.hvp_theta(theta, v, layout), theta.numel(), iters=150
    )
    return lo, hi, v_lo, None


def curvature_at(problem: RegressionProblem, theta: Tensor, layout: Layout, dense_max: int) -> tuple:
    """(the Hessian at theta or None, (lambda_min, lambda_max, v_min, eigenvalues or None))."""
    hess = _hessian(problem, theta, layout, dense_max)
    return hess, _lambda_extremes(problem, theta, layout, hess)


def _lm_snap(
    problem: RegressionProblem,
    layout: Layout,
    theta: Tensor,
    tol: float,
    max_iter: int,
    dense_max: int,
    hscale: float,
    max_distance: float = math.inf,
) -> tuple[Tensor, int]:
    """Levenberg-Marquardt on ||grad L(theta)||^2 (Jacobian = Hessian): (H^2 + mu I) d = -H g.

    Returns (theta (p,), iterations); stops once ||grad L|| <= tol, or once theta has moved more than
    ``max_distance`` from where it started. Dense eigendecomposition of H up to ``dense_max`` weights,
    conjugate gradients on Hessian-vector products above.
    """
    th = theta.clone()
    g = problem.gradient_theta(th, layout)
    gn = float(g.norm())
    mu = 1e-8 * hscale**2
    iters = 0
    while iters < max_iter and math.isfinite(gn) and gn > tol and float((th - theta).norm()) <= max_distance:
        iters += 1
        hess = _hessian(problem, th, layout, dense_max)
        if hess is not None:
            lam, vec = torch.linalg.eigh(hess)
            gq = vec.T @ g

            def step(mu_, lam=lam, vec=vec, gq=gq):
                return -(vec @ (lam / (lam * lam + mu_) * gq))
        else:

            def step(mu_, th=th, g=g):
                def op(v):
                    return problem.hvp_theta(th, problem.hvp_theta(th, v, layout), layout) + mu_ * v

                return _cg(op, -problem.hvp_theta(th, g, layout), iters=200)

        accepted = False
        for _ in range(12):  # raise the damping until the step lowers ||grad L||
            cand = th + step(mu)
            gc = problem.gradient_theta(cand, layout)
            gcn = float(gc.norm())
            if math.isfinite(gcn) and gcn < gn:
                th, g, gn = cand, gc, gcn
                mu = max(mu * 0.1, 1e-14 * hscale**2)
                accepted = True
                break
            mu *= 10.0
        if not accepted:
            break
    return th, iters


def _cg(op: Callable[[Tensor], Tensor], b: Tensor, iters: int = 200, rtol: float = 1e-12) -> Tensor:
    """Conjugate gradients for op(x) = b, b (p,), op symmetric positive definite."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = float(r @ r)
    stop = rtol**2 * rs
    for _ in range(iters):
        if rs <= stop or rs == 0.0:
            break
        ap = op(p)
        alpha = rs / float(p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = float(r @ r)
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x
