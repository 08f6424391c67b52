"""Sigma = U X U^T of the central flow: the complementarity problem for X >= 0 (docs/theory.md section 11).

With K_ab = grad_theta (u_a^T H u_b) for the critical eigenvectors u_1..u_m, J[X] = sum_ab X_ab K_ab,
the velocity v = -(g + J[X] / 2), gaps A = diag(2/eta - lambda_a) and the lookahead delta, X solves

    X >= 0,   Z = J^T(2 g + J[X]) + 2 A / delta >= 0,   <X, Z> = 0,

the optimality conditions of the convex problem min_{X >= 0} ||2 g + J[X]||^2 + 4 <A, X> / delta. With
1 / delta = 0 and every critical eigenvalue at 2/eta, v is the projection of -g onto the cone
{v : U^T (D H[v]) U <= 0} (Moreau): the velocity that keeps the critical block from rising.

m = 1 (one critical eigenvalue) is closed form: sigma^2 = max(0, 2 (<-g, grad S> - gap / delta) /
||grad S||^2). Several: a log-barrier Newton method on the m (m + 1) / 2 entries of X, then a polish that
solves the problem exactly on the face the barrier found (X = V Y V^T with V its range, an unconstrained
least-squares problem) and keeps that answer when it passes the optimality conditions. Written here
rather than taken from a package: scipy has no semidefinite cone, the problem has at most a handful of
unknowns (m is the number of eigenvalues at the edge, 1 on every net measured), and an SDP package
(CVXPY with its solvers) would add several dependencies for it; the polish brings the optimality
residual below 1e-9 (measured: the objective equal to a brute-force minimum to 1e-15) in 2-40 ms for
m = 2, 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
from torch import Tensor

__all__ = ["SigmaMethod", "SigmaSolution", "solve_sigma", "kkt_residual"]

KKT_TOL = 1e-9  # relative optimality residual for accepting a polished answer
_MAX_NEWTON = 60
_MAX_OUTER = 40


class SigmaMethod(str, Enum):
    NONE = "none"  # no critical eigenvalue: X is empty
    CLOSED_FORM = "closed_form"  # one critical eigenvalue
    POLISHED = "polished"  # barrier, then exact on the face it found
    BARRIER = "barrier"  # barrier only (the polish failed its check)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SigmaSolution:
    """X (m, m) >= 0 in the basis of the critical eigenvectors, how it was found, and its relative
    optimality residual (:func:`kkt_residual`)."""

    X: Tensor
    method: SigmaMethod
    residual: float


def _pairs(m: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(m) for b in range(a, m)]


def _basis(m: int) -> np.ndarray:
    """E_i (n, m, m) for the pairs a <= b: e_a e_a^T, or e_a e_b^T + e_b e_a^T."""
    pairs = _pairs(m)
    out = np.zeros((len(pairs), m, m))
    for i, (a, b) in enumerate(pairs):
        out[i, a, b] = out[i, b, a] = 1.0
    return out


def _reduced(k: np.ndarray, g: np.ndarray, gaps: np.ndarray, inv_delta: float):
    """G (n, n), c (n,) with ||2 g + J[X]||^2 + 4 <A, X> / delta = x^T G x + 2 c^T x + ||2g||^2, X = sum x_i E_i."""
    m = k.shape[0]
    basis = _basis(m)
    kmat = np.einsum("iab,abp->ip", basis, k)  # J[E_i]
    a = np.diag(gaps)
    return kmat @ kmat.T, 2.0 * kmat @ g + 2.0 * inv_delta * np.einsum("iab,ab->i", basis, a), basis


def _dual(k: np.ndarray, g: np.ndarray, gaps: np.ndarray, inv_delta: float, x: np.ndarray) -> np.ndarray:
    """Z = J^T(2 g + J[X]) + 2 A / delta (m, m)."""
    w = 2.0 * g + np.einsum("abp,ab->p", k, x)
    return np.einsum("abp,p->ab", k, w) + 2.0 * inv_delta * np.diag(gaps)


def kkt_residual(k: np.ndarray, g: np.ndarray, gaps: np.ndarray, inv_delta: float, x: np.ndarray) -> float:
    """max of ||X Z||, -lambda_min(X), -lambda_min(Z), each relative to the sizes of X and of Z's parts."""
    z = _dual(k, g, gaps, inv_delta, x)
    z_scale = np.linalg.norm(np.einsum("abp,p->ab", k, 2.0 * g)) + np.linalg.norm(2.0 * inv_delta * gaps)
    z_scale = max(z_scale, np.linalg.norm(z), 1e-300)
    x_scale = max(np.linalg.norm(x), 1e-300)
    lx, lz = np.linalg.eigvalsh(x)[0] if x.size else 0.0, np.linalg.eigvalsh(z)[0] if z.size else 0.0
    return float(max(np.linalg.norm(x @ z) / (x_scale * z_scale), -lx / x_scale, -lz / z_scale, 0.0))


def _barrier_path(gmat: np.ndarray, c: np.ndarray, basis: np.ndarray):
    """Points X(t) of the central path of min x^T G x + 2 c^T x over X(x) >= 0 (Newton on
    t f - log det X, t increased tenfold), one per t, from a duality gap of ~1e-3 of the objective's
    scale down to 1e-15 of it: the caller polishes each and stops at the first that passes."""
    n, m = len(c), basis.shape[1]
    gam = max(np.trace(gmat) / n, 1e-300)
    gmat = gmat + 1e-14 * gam * np.eye(n)  # bounded below even where J has a null direction
    tau = max(np.linalg.norm(c) / gam, 1e-300)
    x = np.einsum("iab,ab->i", basis, tau * np.eye(m)) / np.einsum("iab,iab->i", basis, basis)
    t, f_scale = 1.0 / (gam * tau * tau), gam * tau * tau

    def mat(v: np.ndarray) -> np.ndarray:
        return np.einsum("i,iab->ab", v, basis)

    def phi(v: np.ndarray) -> float:
        try:
            chol = np.linalg.cholesky(mat(v))
        except np.linalg.LinAlgError:
            return np.inf
        return t * (v @ gmat @ v + 2 * c @ v) - 2 * np.log(np.diag(chol)).sum()

    for _ in range(_MAX_OUTER):
        for _ in range(_MAX_NEWTON):
            xi = np.linalg.inv(mat(x))
            grad = t * (2 * gmat @ x + 2 * c) - np.einsum("ab,iab->i", xi, basis)
            bi = np.einsum("ab,ibc,cd->iad", xi, basis, xi)
            hess = 2 * t * gmat + np.einsum("iab,jab->ij", bi, basis)
            step = -np.linalg.lstsq(hess, grad, rcond=None)[0]
            decrement = -grad @ step
            if not decrement > 1e-10:
                break
            s, f0 = 1.0, phi(x)
            while phi(x + s * step) > f0 - 0.25 * s * decrement and s > 1e-12:
                s *= 0.5
            x = x + s * step
        if m / t < 1e-3 * f_scale:
            yield mat(x)
        if m / t < 1e-15 * f_scale:
            return
        t *= 10.0


def _on_face(k: np.ndarray, g: np.ndarray, gaps: np.ndarray, inv_delta: float, v: np.ndarray) -> np.ndarray:
    """The minimiser over X = V Y V^T with Y symmetric, free (least squares), for V (m, r)."""
    r = v.shape[1]
    if r == 0:
        return np.zeros((k.shape[0],) * 2)
    kr = np.einsum("ac,bd,abp->cdp", v, v, k)
    ar = v.T @ np.diag(gaps) @ v
    gmat, c, basis = _reduced(kr, g, np.zeros(r), 0.0)
    c = c + 2.0 * inv_delta * np.einsum("iab,ab->i", basis, ar)
    y = np.linalg.lstsq(gmat, -c, rcond=None)[0]
    return v @ np.einsum("i,iab->ab", y, basis) @ v.T


def solve_sigma(
    pair_grads: Tensor, g: Tensor, gaps: Tensor, inv_delta: float = 0.0, *, general: bool = False
) -> SigmaSolution:
    """X >= 0 of the complementarity problem above.

    pair_grads: K (m, m, p), K_ab = grad_theta (u_a^T H u_b); g: grad L (p,); gaps: 2/eta - lambda_a
    (m,); inv_delta: 1 / lookahead (0: every critical eigenvalue counts as at the edge). general: take
    the barrier and polish also for m = 1 (a check of the closed form).
    """
    m = pair_grads.shape[0]
    like = g
    if m == 0:
        return SigmaSolution(like.new_zeros(0, 0), SigmaMethod.NONE, 0.0)
    k, gv, gp = (x.detach().cpu().numpy().astype(np.float64) for x in (pair_grads, g, gaps))
    if m == 1 and not general:
        norm2 = float(k[0, 0] @ k[0, 0])
        s2 = max(0.0, 2.0 * (-(k[0, 0] @ gv) - inv_delta * gp[0]) / norm2) if norm2 > 0 else 0.0
        x = np.array([[s2]])
        return SigmaSolution(
            torch.from_numpy(x).to(like), SigmaMethod.CLOSED_FORM, kkt_residual(k, gv, gp, inv_delta, x)
        )
    gmat, c, basis = _reduced(k, gv, gp, inv_delta)
    best, best_res = np.zeros((m, m)), kkt_residual(k, gv, gp, inv_delta, np.zeros((m, m)))
    if best_res <= KKT_TOL:
        return SigmaSolution(torch.from_numpy(best).to(like), SigmaMethod.POLISHED, best_res)
    for xb in _barrier_path(gmat, c, basis):
        res = kkt_residual(k, gv, gp, inv_delta, xb)
        if res < best_res:
            best, best_res, method = xb, res, SigmaMethod.BARRIER
        x, res = _polish(k, gv, gp, inv_delta, xb)
        if res <= KKT_TOL:
            return SigmaSolution(torch.from_numpy(x).to(like), SigmaMethod.POLISHED, res)
    return SigmaSolution(torch.from_numpy(best).to(like), method, best_res)


def _polish(k, g, gaps, inv_delta, xb: np.ndarray) -> tuple[np.ndarray, float]:
    """The exact minimiser on the face spanned by xb's top r eigenvectors, for r = m .. 1: the first
    that passes the optimality check (else the last tried)."""
    mu, vecs = np.linalg.eigh(xb)
    vecs = vecs[:, np.argsort(-mu)]
    res = np.inf
    for r in range(xb.shape[0], 0, -1):
        x = _on_face(k, g, gaps, inv_delta, vecs[:, :r])
        x = 0.5 * (x + x.T)
        res = kkt_residual(k, g, gaps, inv_delta, x)
        if res <= KKT_TOL:
            break
    return x, res
