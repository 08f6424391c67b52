"""The rank evidence of :func:`dlnlab.saddles.classify_saddle`: numerical ranks of the layers W_j and of
their partial products at a point (every tolerance relative to s_1 = m_1), and docs/theory.md section
4's partial-product rule."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dlnlab.network import prefix_products, product
from dlnlab.saddles.critical import _suffix_products

__all__: list[str] = []


def _rank(x: Tensor, tol: float) -> int:
    """Numerical rank of x (a, b): singular values > tol."""
    if x.numel() == 0:
        return 0
    return int((torch.linalg.svdvals(x) > tol).sum())


def _rank_evidence(ws: Sequence[Tensor], s1: float, rtol: float) -> dict:
    """Ranks of W_1..W_h, of the prefixes P_{j:1} (j = 1..h-1), the suffixes W_h..W_j (j = 2..h), of P,
    and ``mid_rank(lo, hi)`` = rank W_hi...W_lo; a product of l layers uses tolerance rtol s1^(l/h)."""
    h = len(ws)

    def tol(length: int) -> float:
        return rtol * s1 ** (length / h)

    ranks = [_rank(w, tol(1)) for w in ws]
    prefix = [_rank(x, tol(j + 1)) for j, x in enumerate(prefix_products(ws))]  # P_{j:1}, j = 1..h
    suffix = [_rank(y, tol(i + 1)) for i, y in enumerate(_suffix_products(ws))][::-1]  # W_h..W_j

    def mid_rank(lo: int, hi: int) -> int:  # rank of W_hi ... W_lo (1-based, lo <= hi)
        return _rank(product(ws[lo - 1 : hi]), tol(hi - lo + 1))

    return {
        "ranks": ranks,
        "prefix": prefix[:-1],
        "suffix": suffix[1:],
        "rank_P": prefix[-1],
        "mid_rank": mid_rank,
    }


def _partial_product_rule(ev: dict, dims: Sequence[int], r: int) -> str | None:
    """docs/theory.md section 4's refinement: a* = max{i : rank P_{i-1:1} > r}, b* = min{j : rank P_{h:j+1} > r};
    b* = a*+1: strict; b* >= a*+2 with rank P_{b*-1:a*+1} = r: non-strict; otherwise silent.
    (Informational: it has a known counterexample.)"""
    h = len(dims) - 1
    pre = [dims[0]] + ev["prefix"] + [ev["rank_P"]]  # pre[i] = rank P_{i:1}, i = 0..h
    suf = [ev["rank_P"]] + ev["suffix"] + [dims[-1]]  # suf[j] = rank P_{h:j+1}, j = 0..h
    a_cand = [i for i in range(1, h + 1) if pre[i - 1] > r]
    b_cand = [j for j in range(0, h + 1) if suf[j] > r]
    if not a_cand or not b_cand:
        return None
    a, b = max(a_cand), min(b_cand)
    if b == a + 1:
        return "strict"
    if b >= a + 2 and ev["mid_rank"](a + 1, b - 1) == r:
        return "non-strict"
    return None
