"""Initialisations of the weights W_1..W_h, seeded through explicit torch generators.

``gaussian`` and ``orthogonal`` take ``scale``, the size of one entry or layer. ``balanced`` and
``aligned`` take ``u0``, the strength of the end-to-end map (a scalar, or one value per mode).
Every function returns a list of h float64 matrices [W_1, ..., W_h], W_j of shape (d_j, d_{j-1}).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from dlnlab.errors import ArgumentError
from dlnlab.network import Layout, as_layout
from dlnlab.problem import RegressionProblem, haar_orthonormal

__all__ = ["INITS", "gaussian", "orthogonal", "balanced", "aligned", "initial_weights"]

INITS = ("gaussian", "orthogonal", "balanced", "aligned")


def _generator(seed: int | torch.Generator) -> torch.Generator:
    return seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))


def _semi_orthogonal(rows: int, cols: int, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    """Orthonormal rows if rows <= cols, orthonormal columns otherwise."""
    if rows >= cols:
        return haar_orthonormal(rows, cols, gen, dtype)
    return haar_orthonormal(cols, rows, gen, dtype).T.contiguous()


def _is_scalar(u0) -> bool:
    """A number: Python's, numpy's or a 0-d tensor or array."""
    return np.ndim(u0) == 0


def _strengths(u0: float | Sequence[float], k: int) -> list[float]:
    if _is_scalar(u0):
        vals = [float(u0)] * k
    else:
        vals = [float(v) for v in u0]
    if len(vals) != k:
        raise ArgumentError("u0", f"expected a number or {k} values (one per mode), got {len(vals)}")
    if not all(math.isfinite(v) for v in vals):
        raise ArgumentError("u0", f"every strength must be finite, got {vals}")
    return vals


def _check_scale(scale: float) -> None:
    if not (math.isfinite(scale) and scale >= 0):
        raise ArgumentError("scale", f"must be finite and >= 0, got {scale}")


def gaussian(
    dims: Layout | Sequence[int], scale: float, seed: int | torch.Generator = 0, dtype=torch.float64
) -> list[Tensor]:
    """W_j with i.i.d. N(0, scale^2) entries."""
    _check_scale(scale)
    layout, gen = as_layout(dims), _generator(seed)
    return [scale * torch.randn(r, c, generator=gen, dtype=dtype) for r, c in layout.shapes]


def orthogonal(
    dims: Layout | Sequence[int], scale: float, seed: int | torch.Generator = 0, dtype=torch.float64
) -> list[Tensor]:
    """W_j = scale * a Haar semi-orthogonal matrix (every singular value equals ``scale``)."""
    _check_scale(scale)
    layout, gen = as_layout(dims), _generator(seed)
    return [scale * _semi_orthogonal(r, c, gen, dtype) for r, c in layout.shapes]


def _balanced_factors(
    dims: tuple[int, ...], out_vecs: Tensor, in_vecs: Tensor, strengths: list[float], inner: list[Tensor]
) -> list[Tensor]:
    """0-balanced factorisation of P0 = U0 diag(u) V0^T (docs/theory.md section 3, item 5).

    W_1 = Q_1 S^{1/h} V0^T, W_j = Q_j S^{1/h} Q_{j-1}^T, W_h = U0 S^{1/h} Q_{h-1}^T with the sign of
    each u_k put on W_1, so that the product has strengths u_k and every C_j = 0.
    """
    h = len(dims) - 1
    u = torch.tensor(strengths, dtype=out_vecs.dtype)
    a = u.abs() ** (1.0 / h)
    sign = torch.where(u < 0, -torch.ones_like(u), torch.ones_like(u))
    frames = [in_vecs] + inner + [out_vecs]  # frames[j]: (d_j, k), orthonormal columns
    ws = []
    for j in range(1, h + 1):
        scale = a * sign if j == 1 else a
        ws.append((frames[j] * scale) @ frames[j - 1].T)
    return ws


def balanced(
    dims: Layout | Sequence[int],
    u0: float | Sequence[float],
    seed: int | torch.Generator = 0,
    dtype=torch.float64,
) -> list[Tensor]:
    """0-balanced weights (C_j = 0) whose product is a random map with singular values ``u0``.

    A scalar ``u0`` gives rank r_max with all singular values u0; a list gives one singular value
    per entry (at most r_max of them).
    """
    layout, gen = as_layout(dims), _generator(seed)
    k = layout.r_max if _is_scalar(u0) else len(u0)
    if k > layout.r_max:
        raise ArgumentError(
            "u0", f"at most r_max = min(dims) = {layout.r_max} values for dims {list(layout.dims)}, got {k}"
        )
    strengths = [abs(v) for v in _strengths(u0, k)]
    out_vecs = haar_orthonormal(layout.d_y, k, gen, dtype)
    in_vecs = haar_orthonormal(layout.d_x, k, gen, dtype)
    inner = [haar_orthonormal(d, k, gen, dtype) for d in layout.dims[1:-1]]
    return _balanced_factors(layout.dims, out_vecs, in_vecs, strengths, inner)


def aligned(
    dims: Layout | Sequence[int],
    problem: RegressionProblem,
    u0: float | Sequence[float],
    seed: int | torch.Generator = 0,
    dtype=torch.float64,
) -> list[Tensor]:
    """Spectral (decoupled) init: data mode k starts at product strength u0_k, balanced across layers.

    P0 = sum_k u0_k u_k (Sxx^{+1/2} v_k)^T over the first min(q, r_max) data modes (u_k, v_k from
    ``problem.mode_u``, ``problem.mode_v``); hidden frames are random orthonormal (from ``seed``).
    A negative u0_k puts mode k on the stable branch (docs/theory.md section 4). W_1 reads the input along
    Sxx^{+1/2} v_k, so the mode strengths u_k^T P Sxx^{1/2} v_k equal u0 for any data; only for
    whitened data are the layers also exactly balanced (C_j = 0), the form preserved by the flow and
    each mode an independent du/dt = h |u|^(2-2/h) (m_k - u).
    """
    layout, gen = as_layout(dims), _generator(seed)
    if problem.d_x != layout.d_x or problem.d_y != layout.d_y:
        raise ArgumentError(
            "dims", f"dims {list(layout.dims)} do not fit the data (d_x = {problem.d_x}, d_y = {problem.d_y})"
        )
    k = min(problem.n_modes, layout.r_max)
    strengths = _strengths(u0, k)
    out_vecs = problem.mode_u[:, :k].to(dtype)
    # Input directions Sxx^{+1/2} v_k, so that mode k's strength u_k^T P Sxx^{1/2} v_k is exactly u0_k and
    # u0 = m_k gives the critical product P_S; for whitened data these are the v_k themselves.
    in_vecs = (problem.sxx_pinv_sqrt @ problem.mode_v[:, :k]).to(dtype)
    inner = [haar_orthonormal(d, k, gen, dtype) for d in layout.dims[1:-1]]
    return _balanced_factors(layout.dims, out_vecs, in_vecs, strengths, inner)


def initial_weights(
    kind: str,
    dims: Layout | Sequence[int],
    problem: RegressionProblem | None = None,
    scale: float | None = None,
    u0: float | Sequence[float] | None = None,
    seed: int = 0,
) -> list[Tensor]:
    """Dispatch by name: gaussian/orthogonal take ``scale``, balanced/aligned ``u0``."""
    if kind in ("gaussian", "orthogonal"):
        if scale is None:
            raise ArgumentError("scale", f"required for the {kind} initialisation")
        return (gaussian if kind == "gaussian" else orthogonal)(dims, scale, seed)
    if kind in ("balanced", "aligned"):
        if u0 is None:
            raise ArgumentError("u0", f"required for the {kind} initialisation")
        if kind == "balanced":
            return balanced(dims, u0, seed)
        if problem is None:
            raise ArgumentError("problem", "the aligned initialisation needs the problem (its data modes)")
        return aligned(dims, problem, u0, seed)
    raise ArgumentError("kind", f"unknown initialisation {kind!r}; allowed: {', '.join(INITS)}")
