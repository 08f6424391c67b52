"""The loss's second order on the weights in closed form: Hessian-vector products and the dense Hessian.

Split out of dlnlab/problem.py (which keeps the methods ``RegressionProblem.hvp`` / ``.hessian`` as the
public names); the functions read only the problem's statistics, named by :class:`Statistics`, so this
module does not import the problem (no circle).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from dlnlab.network import Layout, matmul, unpack

__all__ = ["Statistics", "hessian", "hvp"]


class Statistics(Protocol):
    """What the second order reads of a regression problem (see :class:`dlnlab.problem.RegressionProblem`)."""

    P_ls: Tensor  # (d_y, d_x), the least-squares map
    Sxx: Tensor  # (d_x, d_x)
    sxx_sqrt: Tensor  # Sxx^{1/2}
    whitened: bool  # Sxx == I to rounding: the products by Sxx are skipped


def hvp(stats: Statistics, weights: Sequence[Tensor], directions: Sequence[Tensor]) -> list[Tensor]:
    """Hessian-vector products in closed form: d/de grad L(W + e V) at e = 0.

    weights: W_j (d_j, d_{j-1}); directions: V_j (..., d_j, d_{j-1}) with any batch of
    directions. Returns [(H V)_j] with the batch shape of the directions.
    """
    h = len(weights)
    pre = [weights[0]]
    dpre = [directions[0]]
    for j in range(1, h):
        dpre.append(weights[j] @ dpre[-1] + directions[j] @ pre[-1])
        pre.append(weights[j] @ pre[-1])
    p, dp = pre[-1], dpre[-1]
    e = p - stats.P_ls
    d = e if stats.whitened else e @ stats.Sxx
    dd = dp if stats.whitened else dp @ stats.Sxx
    # Backward sweep: T_j = Suf_j^T D with Suf_j = W_h...W_{j+1}; its derivative dT_j.
    t, dt = d, dd
    out: list[Tensor] = [None] * h  # type: ignore[list-item]
    for j in range(h - 1, -1, -1):
        left = pre[j - 1] if j > 0 else None
        dleft = dpre[j - 1] if j > 0 else None
        if left is None:
            out[j] = dt
        else:
            out[j] = dt @ left.mT + t @ dleft.mT
        if j > 0:
            w, v = weights[j], directions[j]
            dt = w.mT @ dt + v.mT @ t
            t = w.mT @ t
    return out


def hessian(stats: Statistics, theta: Tensor, dims: Layout | Sequence[int]) -> Tensor:
    """The dense Hessian on theta, (p, p), or (..., p, p) for a batch theta (..., p) (an ensemble's
    stiff flow), assembled in closed form from the blocks.

    d^2 L[U, V] = <dP[U] Sxx, dP[V]> + <D, d^2 P[U, V]>: a Gauss-Newton part J^T J with
    J_j = d vec(P Sxx^{1/2}) / d vec(W_j) = Suf_j (x) (Pre_{j-1} Sxx^{1/2})^T, and for i < j the
    blocks <D, Suf_j V_j M U_i Pre_{i-1}> = K[a, d] M[b, c] with M = W_{j-1}...W_{i+1} and
    K = Suf_j^T D Pre_{i-1}^T. Costs a few einsums, not p Hessian-vector products.
    """
    layout = dims if isinstance(dims, Layout) else Layout(tuple(dims))
    ws = unpack(theta, layout)
    h, d, batch = len(ws), layout.dims, theta.shape[:-1]
    pre = [torch.eye(d[0], dtype=theta.dtype, device=theta.device).expand(*batch, d[0], d[0])]
    for w in ws:
        pre.append(matmul(w, pre[-1]))
    suf = [torch.eye(d[-1], dtype=theta.dtype, device=theta.device).expand(*batch, d[-1], d[-1])]
    for w in reversed(ws):
        suf.append(matmul(suf[-1], w))
    suf = suf[::-1]  # suf[j] = W_h ... W_{j+1}, j = 0..h
    e = pre[-1] - stats.P_ls
    dmat = e if stats.whitened else e @ stats.Sxx
    jac = []
    for j in range(1, h + 1):
        right = pre[j - 1] if stats.whitened else pre[j - 1] @ stats.sxx_sqrt
        jac.append(torch.einsum("...ya,...bx->...yxab", suf[j], right).reshape(*batch, d[-1] * d[0], -1))
    jac = torch.cat(jac, dim=-1)
    hess = jac.mT @ jac
    sl = layout.theta_slices
    for j in range(2, h + 1):
        k_mat = matmul(suf[j].mT, dmat)  # (d_j, d_x), completed below per i
        mid = torch.eye(d[j - 1], dtype=theta.dtype, device=theta.device)  # W_{j-1}...W_{i+1}
        for i in range(j - 1, 0, -1):
            kk = matmul(k_mat, pre[i - 1].mT)  # (d_j, d_{i-1})
            block = torch.einsum("...ad,...bc->...abcd", kk, mid.expand(*batch, *mid.shape[-2:]))
            block = block.reshape(*batch, d[j] * d[j - 1], d[i] * d[i - 1])
            hess[..., sl[j - 1], sl[i - 1]] += block
            hess[..., sl[i - 1], sl[j - 1]] += block.mT
            mid = matmul(mid, ws[i - 1])
    return hess
