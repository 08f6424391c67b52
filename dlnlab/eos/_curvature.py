"""The third derivative of the loss in closed form: grad_theta (u^T H(theta) u) and grad_theta <U X U^T, H>.

The third derivative D^3 L is symmetric, so for a fixed direction u

    grad_theta (u^T H(theta) u) = D^3 L[u, u, .] = d^2/de^2 grad L(theta + e u) at e = 0

(docs/theory.md section 10). grad L is a polynomial in theta, and the closed-form gradient of
``RegressionProblem`` is a chain of matrix products (prefix products forward, D = (P - P_ls) Sxx,
then T_{j-1} = W_j^T T_j backward and grad_{W_j} = T_j P_{j-1:1}^T). Carrying every matrix of that
chain as a truncated Taylor polynomial a_0 + e a_1 + e^2 a_2 in the weights W_j + e U_j gives the
second derivative exactly: 2 times the e^2 coefficient of the gradient. A product of two such
polynomials needs three coefficients (a0 b0, a0 b1 + a1 b0, a0 b2 + a1 b1 + a2 b0), and since the
weights have no e^2 term a product with W_j + e U_j costs five matrix products: one pass costs about
6.5 gradients, whatever p (no p x p x p object, no p x p matrix). A batch of directions (m, p) goes
through one pass with batched products.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dlnlab.network import Layout, as_layout, pack, unpack
from dlnlab.problem import RegressionProblem

__all__ = ["curvature_gradient", "weighted_curvature_gradient", "pair_curvature_gradients"]

Poly = tuple[Tensor, Tensor, Tensor]  # a_0 + e a_1 + e^2 a_2


def _times_weight(w: Tensor, u: Tensor, a: Poly, transpose: bool = False) -> Poly:
    """(W + e U) a (or (W + e U)^T a), truncated after e^2."""
    if transpose:
        w, u = w.mT, u.mT
    return w @ a[0], w @ a[1] + u @ a[0], w @ a[2] + u @ a[1]


def _poly_product_top(a: Poly, b: Poly) -> Tensor:
    """The e^2 coefficient of a b."""
    return a[0] @ b[2] + a[1] @ b[1] + a[2] @ b[0]


def _second_directional_gradient(
    problem: RegressionProblem, weights: Sequence[Tensor], directions: Sequence[Tensor]
) -> list[Tensor]:
    """[d^2/de^2 grad_{W_j} L(W + e U)] at e = 0, for W_j (d_j, d_{j-1}) and U_j (..., d_j, d_{j-1})."""
    h = len(weights)
    zero = torch.zeros_like(directions[0])
    pre: list[Poly] = [(weights[0].expand_as(directions[0]), directions[0], zero)]  # P_{j:1}(e)
    for j in range(1, h):
        pre.append(_times_weight(weights[j], directions[j], pre[-1]))
    p0, p1, p2 = pre[-1]
    resid = p0 - problem.P_ls
    if problem.whitened:
        t: Poly = (resid, p1, p2)  # D(e) = (P(e) - P_ls) Sxx
    else:
        sxx = problem.Sxx
        t = (resid @ sxx, p1 @ sxx, p2 @ sxx)
    out: list[Tensor] = [None] * h  # type: ignore[list-item]
    for j in range(h - 1, 0, -1):
        left = pre[j - 1]
        out[j] = 2.0 * _poly_product_top(t, (left[0].mT, left[1].mT, left[2].mT))
        t = _times_weight(weights[j], directions[j], t, transpose=True)
    out[0] = 2.0 * t[2]
    return out


def curvature_gradient(
    problem: RegressionProblem, theta: Tensor, dims: Layout | Sequence[int], u: Tensor
) -> Tensor:
    """grad_theta (u^T H(theta) u) for a fixed u (p,), or for each row of a batch u (..., p).

    With u a unit eigenvector of H(theta) for a simple eigenvalue lambda, this is grad lambda
    (Hellmann-Feynman: the change of u contributes nothing). Returns the shape of u.
    """
    layout = as_layout(dims)
    ws = unpack(theta, layout)
    return pack(_second_directional_gradient(problem, ws, unpack(u, layout)))


def pair_curvature_gradients(
    problem: RegressionProblem, theta: Tensor, dims: Layout | Sequence[int], vectors: Tensor
) -> Tensor:
    """grad_theta (u_a^T H(theta) u_b) for every pair a <= b of the columns of ``vectors`` (p, m),
    as (m, m, p) (symmetric in a, b). The diagonal is one batched pass; the pairs a < b come from
    polarisation, 2 u_a^T H u_b = (u_a + u_b)^T H (u_a + u_b) - u_a^T H u_a - u_b^T H u_b, in the
    same pass: m (m + 1) / 2 directions in all."""
    m = vectors.shape[-1]
    cols = vectors.T
    pairs = [(a, b) for a in range(m) for b in range(a + 1, m)]
    batch = torch.cat([cols, torch.stack([cols[a] + cols[b] for a, b in pairs])]) if pairs else cols
    grads = curvature_gradient(problem, theta, dims, batch)
    out = grads.new_empty(m, m, grads.shape[-1])
    for a in range(m):
        out[a, a] = grads[a]
    for i, (a, b) in enumerate(pairs):
        out[a, b] = out[b, a] = 0.5 * (grads[m + i] - grads[a] - grads[b])
    return out


def weighted_curvature_gradient(
    problem: RegressionProblem, theta: Tensor, dims: Layout | Sequence[int], vectors: Tensor, weights: Tensor
) -> Tensor:
    """grad_theta <U X U^T, H(theta)> for U = ``vectors`` (p, m) and a symmetric X = ``weights`` (m, m).

    U X U^T = sum_i mu_i w_i w_i^T with X = V diag(mu) V^T and w_i = U v_i, so the gradient is
    sum_i mu_i grad (w_i^T H w_i): m directions in one batched pass (p,)."""
    mu, v = torch.linalg.eigh(0.5 * (weights + weights.mT))
    w = (vectors @ v).T  # (m, p)
    return mu @ curvature_gradient(problem, theta, dims, w)
