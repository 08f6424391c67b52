"""Upper bounds of the loss, its gradient and its Hessian at given weights, as log10, overflow-safe.

With P = W_h ... W_1, the layers' spectral norms |W_k| and the data's second moments, in exact
arithmetic (docs/theory.md has the loss and its derivatives; G = dL/dP = P Sxx - Syx):

    L(theta)        <= 1/2 (pi sqrt(tr Sxx) + sqrt(tr Syy))^2,          pi = prod_k |W_k|
    |G|_F           <= pi |Sxx|_F + |Syx|_F
    |grad L|        <= |G|_F sqrt(sum_j c_j^2),                          c_j = prod_{k != j} |W_k|
    |H| (spectral)  <= |Sxx| sum_j c_j^2 + |G|_F sqrt(sum_{i != j} b_ij^2),  b_ij = prod_{k != i, j} |W_k|

The Hessian's bound is the Gauss-Newton part |dP[v] Sxx^(1/2)|^2 <= |Sxx| (sum_j c_j |v_j|)^2 plus the
residual part <G, d^2 P[v, v]>, whose coefficient matrix (b_ij) has spectral norm at most its Frobenius
norm. Every product is a sum of logs, so weights of 1e300 give a bound of 1e1200 (a number to compare),
not inf. A batch of weights (E, d_j, d_{j-1}) gives its largest member's bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dlnlab.problem import RegressionProblem

__all__ = ["Magnitudes", "magnitudes", "log10_norm"]

NEG_INF = -math.inf


@dataclass(frozen=True)
class Magnitudes:
    """log10 of upper bounds at some weights (-inf for a bound of 0)."""

    loss: float
    gradient: float  # the gradient's Euclidean norm on theta
    hessian: float  # the Hessian's spectral norm on theta: |lambda| of every eigenvalue is below it
    sxx: float = NEG_INF  # the data's part of the Hessian's bound: |Sxx| (spectral)
    layers: float = NEG_INF  # the weights' part: sum_j c_j^2 (the largest member's)


def log10_norm(m: Tensor, ord: str | int = "fro") -> float:
    """log10 of a matrix norm ("fro" or 2, spectral) without overflow: the norm of m / max|m|."""
    big = float(m.abs().max()) if m.numel() else 0.0
    if big == 0.0:
        return NEG_INF
    if not math.isfinite(big):
        return math.inf
    value = float(torch.linalg.matrix_norm(m / big, ord=ord))
    return math.log10(big) + math.log10(value) if value > 0 else NEG_INF


def _lse(logs: Sequence[float]) -> float:
    """log10(sum 10^x) of log10 values (-inf entries are zeros)."""
    finite = [x for x in logs if x != NEG_INF]
    if not finite:
        return NEG_INF
    top = max(finite)
    if math.isinf(top):
        return top
    return top + math.log10(sum(10.0 ** (x - top) for x in finite))


def _data_logs(problem: RegressionProblem) -> dict[str, float]:
    sxx = problem.Sxx.double().cpu()
    return {
        "sxx_2": log10_norm(sxx, 2),
        "sxx_f": log10_norm(sxx),
        "syx_f": log10_norm(problem.Syx.double().cpu()),
        "tr_sxx": _log10(float(torch.diagonal(sxx).sum())),
        "tr_syy": _log10(problem.tr_Syy),
    }


def _log10(x: float) -> float:
    return math.log10(x) if x > 0 else NEG_INF


class _Products:
    """log10 of the product of the layers' norms leaving out one or two layers, each in O(1): the sum of
    the finite logs less the left-out ones; -inf while a zero norm (a_k = -inf) is left in."""

    def __init__(self, a: list[float]) -> None:
        self.a = a
        self.zeros = {k for k, x in enumerate(a) if x == NEG_INF}
        self.total = math.fsum(x for x in a if x != NEG_INF)

    def without(self, *skip: int) -> float:
        if not self.zeros <= set(skip):
            return NEG_INF
        return self.total - math.fsum(self.a[k] for k in set(skip) if self.a[k] != NEG_INF)


def _member(data: dict[str, float], a: list[float]) -> Magnitudes:
    """The bounds of one net whose layers have log10 spectral norms ``a`` (O(h^2) terms)."""
    h = len(a)
    prod = _Products(a)
    pi = prod.without()
    c = [prod.without(j) for j in range(h)]
    b = [prod.without(i, j) for i in range(h) for j in range(h) if i != j]
    loss = 2.0 * _lse([pi + 0.5 * data["tr_sxx"], 0.5 * data["tr_syy"]]) - math.log10(2.0)
    g = _lse([pi + data["sxx_f"], data["syx_f"]])
    sum_c2 = _lse([2.0 * x for x in c])
    gradient = g + 0.5 * sum_c2
    residual = g + 0.5 * _lse([2.0 * x for x in b]) if b else NEG_INF
    hessian = _lse([data["sxx_2"] + sum_c2, residual])
    return Magnitudes(loss=loss, gradient=gradient, hessian=hessian, sxx=data["sxx_2"], layers=sum_c2)


def magnitudes(problem: RegressionProblem, weights: Sequence[Tensor]) -> Magnitudes:
    """log10 upper bounds of L, |grad L| and the Hessian's spectral norm at ``weights`` [W_1, ..., W_h]
    (each (d_j, d_{j-1}), or (E, d_j, d_{j-1}) for a batch: the largest member's)."""
    data = _data_logs(problem)
    ws = [w.detach().double().cpu() for w in weights]
    stacks = [w.unsqueeze(0) if w.ndim == 2 else w for w in ws]
    members = [[log10_norm(w[e], 2) for w in stacks] for e in range(stacks[0].shape[0])]
    each = [_member(data, a) for a in members]
    return Magnitudes(
        loss=max(m.loss for m in each),
        gradient=max(m.gradient for m in each),
        hessian=max(m.hessian for m in each),
        sxx=data["sxx_2"],
        layers=max(m.layers for m in each),
    )
