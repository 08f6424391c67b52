"""Critical points constructed for any learnt set S (:func:`critical_point`).

Constructed critical points for any set S, balanced or not, with chosen layer ranks, let a user probe
the landscape directly. The snap of a trajectory's point to the nearby critical point is in
``dlnlab.saddles.snap``.

The tolerances of the snap and of the classification (:class:`ClassifyTolerances`) live here.
Conventions as in ``dlnlab.network``: W_j has shape (d_j, d_{j-1}), theta (p,) packs W_1..W_h.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dlnlab.analysis import DENSE_HESSIAN_MAX
from dlnlab.network import Layout, as_layout, pack, product
from dlnlab.problem import RegressionProblem, haar_orthonormal
from dlnlab.saddles.plateaus import _s1

__all__ = ["ClassifyTolerances", "critical_point"]


# ------------------------------------------------------------------------------------------------
# Tolerances, points and layer products


@dataclass(frozen=True)
class ClassifyTolerances:
    """Relative tolerances of the snap and of :func:`dlnlab.saddles.classify_saddle`; every scale is a
    power of s_1 = m_1.

    rank_rtol: a singular value of a product of l layers counts when > rank_rtol * s_1^(l/h).
    lam_rtol: lambda_min < -lam_rtol * h s_1^(2-2/h) is negative curvature (a strict saddle).
    grad_rtol: the snap reached a critical point when ||grad L|| <= grad_rtol * sqrt(h) s_1^(2-1/h).
    prod_rtol: P equals P_S when ||(P - P_S) Sxx^{1/2}|| <= prod_rtol * s_1.
    max_iter: at most max_iter Levenberg-Marquardt steps in the snap.
    dense_max: dense Hessians up to dense_max weights, Hessian-vector products above.
    """

    rank_rtol: float = 1e-6
    lam_rtol: float = 1e-7
    grad_rtol: float = 1e-9
    prod_rtol: float = 1e-6
    max_iter: int = 60
    dense_max: int = DENSE_HESSIAN_MAX


def _as_theta(theta, layout: Layout, dtype=torch.float64) -> Tensor:
    """theta (p,) as a float64 tensor copy; also accepts numpy arrays and the list [W_1, ..., W_h]."""
    if isinstance(theta, (list, tuple)) and theta and isinstance(theta[0], Tensor):
        theta = pack([w.to(dtype) for w in theta])
    if not isinstance(theta, Tensor):
        theta = torch.from_numpy(np.asarray(theta, dtype=np.float64))
    th = theta.detach().to(dtype).reshape(-1).clone()
    if th.numel() != layout.n_weights:
        raise ValueError(f"theta has {th.numel()} entries, dims {list(layout.dims)} need {layout.n_weights}")
    if not bool(torch.isfinite(th).all()):
        raise ValueError("theta must be finite")
    return th


def _suffix_products(ws: Sequence[Tensor]) -> list[Tensor]:
    """[W_h, W_h W_{h-1}, ..., W_h...W_1] (the partial products P_{h:j}, j = h..1)."""
    out = [ws[-1]]
    for w in reversed(ws[:-1]):
        out.append(out[-1] @ w)
    return out


# ------------------------------------------------------------------------------------------------
# Constructed critical points


def _complement(basis: Tensor, first: Tensor | None = None) -> Tensor:
    """Orthonormal basis (d, d - k) of the orthogonal complement of span(basis) (d, k) in R^d, the
    directions of ``first`` (d, f) (projected off the basis) coming first."""
    d = basis.shape[0]
    cols = [] if first is None else [first]
    cols.append(torch.eye(d, dtype=basis.dtype))
    cand = torch.cat(cols, dim=1)
    if basis.shape[1]:
        cand = cand - basis @ (basis.T @ cand)
    out = []
    for i in range(cand.shape[1]):
        v = cand[:, i].clone()
        for _ in range(2):
            for w in out:
                v = v - w * (w @ v)
            if basis.shape[1]:
                v = v - basis @ (basis.T @ v)
        nv = float(v.norm())
        if nv > 1e-8:
            out.append(v / nv)
        if len(out) == d - basis.shape[1]:
            break
    return torch.stack(out, dim=1) if out else torch.zeros(d, 0, dtype=basis.dtype)


def critical_point(
    problem: RegressionProblem,
    dims,
    modes: Iterable[int],
    balanced: bool = True,
    layer_ranks: Sequence[int] | None = None,
    seed: int = 0,
    *,
    chain_extra: bool = True,
    extra_scale: float | None = None,
) -> list[Tensor]:
    """Weights [W_1..W_h] (each (d_j, d_{j-1})) of a critical point with product P = P_S for the set
    S = ``modes`` (0-based).

    The learnt part factorises P_S = U_S diag(sigma) V_S^T (its thin SVD; for whitened data sigma = m_S)
    through random orthonormal hidden frames Q_j (d_j x r, from ``seed``):
    balanced (C_j = 0): W_j = Q_j diag(sigma^(1/h)) Q_{j-1}^T;
    ``balanced=False``: the same with a random well-conditioned G_j in GL(r) inserted between layers
    (W_j -> Q_j G_j diag(sigma^(1/h)) G_{j-1}^{-1} Q_{j-1}^T), which keeps P and criticality.

    ``layer_ranks`` (h ints, each >= r) adds rank rho_j - r to W_j in the channels orthogonal to the
    learnt ones (W_1 reads the unlearnt input modes first, W_h writes the unlearnt output modes first),
    with singular values ``extra_scale`` (default: the mean learnt layer amplitude). With
    ``chain_extra`` the extra channel of W_j reads what W_{j-1}'s extra channel writes; otherwise it
    reads other free directions. The result is critical only if no chain of extra channels connects the
    unlearnt input modes to the unlearnt output modes too closely (in the notation of docs/theory.md section 4,
    with a the length of the extra chain from the input and b the first layer of the chain to the
    output: b >= a + 3); otherwise a ValueError says so.
    """
    layout = as_layout(dims)
    s = _checked_modes(problem, layout, modes)
    gen = torch.Generator().manual_seed(int(seed))
    ps = problem.critical_product(s)
    frames, amp = _learnt_frames(problem, layout, ps, len(s), gen)
    mix = _mixing(layout.depth, len(s), balanced, gen, problem.X.dtype)
    ws = _learnt_chain(frames, amp, mix, problem.X.dtype)
    if layer_ranks is None:
        return ws
    ranks, extra = _extra_ranks(layout, len(s), layer_ranks)
    _add_extra_channels(problem, layout, ws, frames, s, extra, amp, chain_extra, extra_scale)
    _check_critical(problem, layout, ws, ps, ranks)
    return ws


def _checked_modes(problem: RegressionProblem, layout: Layout, modes: Iterable[int]) -> list[int]:
    """S = ``modes``, sorted; ValueError when the dims do not fit the data or S does not fit through them."""
    if problem.d_x != layout.d_x or problem.d_y != layout.d_y:
        raise ValueError(
            f"dims {list(layout.dims)} do not fit the data (d_x={problem.d_x}, d_y={problem.d_y})"
        )
    s = sorted(set(int(k) for k in modes))
    bad = [k for k in s if not 0 <= k < problem.n_modes]
    if bad:
        raise ValueError(f"modes must be in 0..{problem.n_modes - 1}, got {bad}")
    if len(s) > layout.r_max:
        raise ValueError(
            f"{len(s)} modes do not fit through rank r_max = {layout.r_max} (dims {list(layout.dims)})"
        )
    return s


def _learnt_frames(
    problem: RegressionProblem, layout: Layout, ps: Tensor, r: int, gen: torch.Generator
) -> tuple[list[Tensor], Tensor]:
    """The frames Q_0 = V_S, random orthonormal Q_j (d_j, r) (drawn from ``gen``), Q_h = U_S of the thin
    SVD P_S = U_S diag(sigma) V_S^T, and the layer amplitudes sigma^(1/h) (r,)."""
    dtype = problem.X.dtype
    u, sig, vh = torch.linalg.svd(ps, full_matrices=False)
    u_s, sig, v_s = u[:, :r], sig[:r], vh[:r].T
    amp = sig ** (1.0 / layout.depth) if r else sig
    frames = [v_s] + [haar_orthonormal(d, r, gen, dtype) for d in layout.dims[1:-1]] + [u_s]
    return frames, amp


def _mixing(h: int, r: int, balanced: bool, gen: torch.Generator, dtype) -> list[Tensor]:
    """G_0..G_h (r, r): identities when balanced, else random well-conditioned G_1..G_{h-1} (singular
    values in [1/2, 2], drawn from ``gen`` after the frames) between identities at the ends."""
    if balanced or r == 0:
        return [torch.eye(r, dtype=dtype) for _ in range(h + 1)]
    mix = [torch.eye(r, dtype=dtype)]
    for _ in range(h - 1):
        o1, o2 = haar_orthonormal(r, r, gen, dtype), haar_orthonormal(r, r, gen, dtype)
        scale = torch.exp((2 * torch.rand(r, generator=gen, dtype=dtype) - 1) * math.log(2.0))
        mix.append((o1 * scale) @ o2.T)
    mix.append(torch.eye(r, dtype=dtype))
    return mix


def _learnt_chain(frames: Sequence[Tensor], amp: Tensor, mix: Sequence[Tensor], dtype) -> list[Tensor]:
    """W_j = Q_j G_j diag(amp) G_{j-1}^{-1} Q_{j-1}^T, j = 1..h."""
    r = amp.numel()
    ws = []
    for j in range(1, len(frames)):
        core = (
            mix[j] @ torch.diag(amp) @ torch.linalg.inv(mix[j - 1]) if r else torch.zeros(0, 0, dtype=dtype)
        )
        ws.append(frames[j] @ core @ frames[j - 1].T)
    return ws


def _extra_ranks(layout: Layout, r: int, layer_ranks: Sequence[int]) -> tuple[list[int], list[int]]:
    """(rho_j, rho_j - r) for j = 1..h; ValueError when a rank is below r or does not fit W_j."""
    h = layout.depth
    ranks = [int(x) for x in layer_ranks]
    if len(ranks) != h:
        raise ValueError(f"layer_ranks needs {h} entries (one per W_j), got {len(ranks)}")
    extra = [x - r for x in ranks]
    for j, e in enumerate(extra, start=1):
        cap = min(layout.dims[j], layout.dims[j - 1]) - r
        if e < 0 or e > cap:
            raise ValueError(
                f"layer_ranks[{j - 1}] = {ranks[j - 1]}: W_{j} can have rank {r}..{r + cap} at a "
                f"critical point of {r} modes"
            )
    return ranks, extra


def _add_extra_channels(
    problem: RegressionProblem,
    layout: Layout,
    ws: list[Tensor],
    frames: Sequence[Tensor],
    s: list[int],
    extra: list[int],
    amp: Tensor,
    chain_extra: bool,
    extra_scale: float | None,
) -> None:
    """Add rank extra[j-1] to W_j in place, in the channels orthogonal to the learnt frames (W_1 reads
    the unlearnt input modes first, W_h writes the unlearnt output modes first)."""
    h = layout.depth
    r = len(s)
    unl = [k for k in range(problem.n_modes) if k not in s]
    w_in = problem.sxx_pinv_sqrt @ problem.mode_v[:, unl] if unl else None
    comp = [_complement(frames[0], w_in)]
    comp += [_complement(frames[j]) for j in range(1, h)]
    comp.append(_complement(frames[h], problem.mode_u[:, unl] if unl else None))
    c = (
        float(extra_scale)
        if extra_scale is not None
        else (float(amp.mean()) if r else _s1(problem) ** (1 / h))
    )
    for j in range(1, h + 1):
        e = extra[j - 1]
        if e == 0:
            continue
        off = 0 if (chain_extra or j == 1) else extra[j - 2]
        if off + e > comp[j - 1].shape[1]:
            raise ValueError(f"no room for {e} unchained extra channels in W_{j}")
        ws[j - 1] = ws[j - 1] + c * comp[j][:, :e] @ comp[j - 1][:, off : off + e].T


def _check_critical(
    problem: RegressionProblem, layout: Layout, ws: Sequence[Tensor], ps: Tensor, ranks: list[int]
) -> None:
    """ValueError unless ws is a critical point with P = P_S (the extra channels may connect the
    unlearnt input and output modes)."""
    h = layout.depth
    g = problem.gradient_theta(pack(ws), layout)
    pd = float(problem.product_distance(product(ws), ps))
    s1 = _s1(problem)
    if float(g.norm()) > 1e-9 * math.sqrt(h) * s1 ** (2 - 1 / h) or pd > 1e-9 * s1:
        raise ValueError(
            f"layer_ranks {ranks}: the extra channels connect unlearnt input and output modes, so this "
            f"is not a critical point (||grad L|| = {float(g.norm()):.3g}, ||P - P_S|| = {pd:.3g}); "
            "leave a rank-r layer between the extra chains from the input and to the output"
        )
