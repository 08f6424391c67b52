"""Saddles: the loss staircase, the saddles a trajectory visits, and whether each is strict or non-strict.

From near the origin a deep linear network learns the data's modes one at a time, largest first
(math.md sections 4, 5, 7). Each plateau of the loss is the trajectory passing close to a saddle: a
critical point whose product is P_S = Pi_S Syx Sxx^+ for the set S of modes learnt so far, at the
critical value L(P_S) = L_min + 1/2 sum_{k not in S} m_k^2.

Plateaus (:func:`detect_plateaus`), from the recorded series alone:

* the set learnt at time t is S(t) = {k : u_k(t) >= m_k / 2} with u_k = u_k^T P Sxx^{1/2} v_k the mode
  strength (mode overlaps, never an enumeration of subsets); its critical value is L(P_S);
* a plateau is a stretch of constant S, other than the global minimum's set {0..min(r_max, q)-1},
  where the loss stays within ``loss_band * Delta_S`` of L(P_S) and ||grad L|| stays below
  ``grad_band * sqrt(Delta_S / tau_S)``, for at least ``min_duration * tau_S``. Delta_S = m_k^2 / 2
  is the drop that leaves it (k the largest unlearnt mode) and tau_S = 1 / (h m_k^(2-2/h)) the time
  constant of that mode (math.md section 5): every threshold scales with the problem;
* it is left when the next mode's strength crosses m_k / 2 (``t_exit``, interpolated).

Classification (:func:`classify_saddle`): a trajectory only passes near a saddle, and from a gaussian
initialisation the unlearnt components keep the size of the initialisation, so the layers look full
rank and the Hessian at the closest point is slightly negative even near a non-strict saddle. The
closest point is therefore snapped to the nearby critical point: its layers are projected onto the
channels that carry the learnt modes (the forward images of the learnt input directions), which
removes the initialisation's left-overs, and a few Levenberg-Marquardt steps on ||grad L||^2 then
make the gradient vanish (P becomes P_S). (Levenberg-Marquardt from the closest point itself,
``snap="lm"``, also converges, but to a critical point that keeps the initialisation's left-overs as
chained extra channels: on the Figure 1 flow it has ranks [6, 5, 5, 5, 4] and lambda_min of order
-1e-2, a curvature that vanishes with the initialisation scale.) The evidence is taken there: numerical ranks of the W_j and
of the partial products, whether P is the optimal rank-r map P*_r, the sufficient condition for a
non-strict saddle (at least three W_j of rank r and P optimal of rank r), the theory for strict
saddles (h = 2, or a larger mode skipped) and the smallest Hessian eigenvalue on theta. Every
threshold is relative to s_1 = m_1. Where the evidence disagrees the label is ``inconclusive``.

Escape (:func:`escape_directions`): the next mode, the unstable direction (the Hessian's lowest
eigenvector at a strict saddle, the sign-rule branch of the next mode where the Hessian is blind)
and, for every unlearnt mode, the unstable and stable branches of math.md section 4 built in a free
channel: along (a f_1 v_k^T, a f_2 f_1^T, ..., a u_k f_{h-1}^T) the product gains +a^h u_k v_k^T and the
loss falls by m_k a^h (the unstable branch); with the first layer's sign flipped it rises by as much
(the stable branch). For h = 2 these are the Hessian eigendirections with eigenvalues -m_k and +m_k;
for h >= 3 the Hessian is zero on them and only the sign rule separates the branches.

Constructed critical points (:func:`critical_point`) for any set S, balanced or not, with chosen
layer ranks, let a user probe the landscape directly.

:func:`analyze_run_saddles` applies all of it to a run: ``plateaus`` per series in summary.json,
SGD plateau exits against the flow's, and TensorBoard (``saddle/modes_learnt``, ``saddle/label``,
``saddle/exit_delay``, ``saddle/exit_time``, the text table ``saddle/plateaus``).

Pure torch / numpy / scipy, float64.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dlnlab.analysis import lanczos_extremes
from dlnlab.network import Layout, pack, product, unpack
from dlnlab.problem import RegressionProblem

__all__ = [
    "LABELS",
    "LABEL_CODES",
    "PlateauThresholds",
    "ClassifyTolerances",
    "modes_learnt",
    "detect_plateaus",
    "critical_point",
    "classify_saddle",
    "escape_directions",
    "analyze_series",
    "exits_vs_reference",
    "plateau_table",
    "analyze_run_saddles",
]

LABELS = ("strict", "non-strict", "inconclusive")
LABEL_CODES = {"none": 0, "strict": 1, "non-strict": 2, "inconclusive": 3}


@dataclass(frozen=True)
class PlateauThresholds:
    """Relative thresholds of :func:`detect_plateaus` (dimensionless: the scales come from the problem).

    loss_band: |L - L(P_S)| <= loss_band * Delta_S, Delta_S = the drop that ends the plateau.
    grad_band: ||grad L|| <= grad_band * sqrt(Delta_S / tau_S): the loss then falls by less than
        grad_band^2 of the coming drop per time constant tau_S.
    min_duration: the plateau lasts at least min_duration * tau_S.
    """

    loss_band: float = 0.1
    grad_band: float = 0.1
    min_duration: float = 1.0


@dataclass(frozen=True)
class ClassifyTolerances:
    """Relative tolerances of :func:`classify_saddle`; every scale is a power of s_1 = m_1.

    rank_rtol: a singular value of a product of l layers counts when > rank_rtol * s_1^(l/h).
    lam_rtol: lambda_min < -lam_rtol * h s_1^(2-2/h) is negative curvature (a strict saddle).
    grad_rtol: the snap reached a critical point when ||grad L|| <= grad_rtol * sqrt(h) s_1^(2-1/h).
    prod_rtol: P equals P_S when ||(P - P_S) Sxx^{1/2}|| <= prod_rtol * s_1.
    """

    rank_rtol: float = 1e-6
    lam_rtol: float = 1e-7
    grad_rtol: float = 1e-9
    prod_rtol: float = 1e-6
    max_iter: int = 60
    dense_max: int = 2000


# ------------------------------------------------------------------------------------------------
# Small helpers


def _layout(dims) -> Layout:
    return dims if isinstance(dims, Layout) else Layout(tuple(int(d) for d in dims))


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


def _modes_np(problem: RegressionProblem) -> np.ndarray:
    return problem.modes.detach().cpu().numpy().astype(np.float64)


def _s1(problem: RegressionProblem) -> float:
    return float(problem.modes[0]) if problem.n_modes else 1.0


def _fnum(x) -> float | None:
    """A finite python float or None."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _clean(x: Any) -> Any:
    """JSON-able copy: python scalars, None for NaN/inf, tensors and arrays dropped (vectors) or listed."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items() if not isinstance(v, Tensor)}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _fnum(x)
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    return x


def _rank(x: Tensor, tol: float) -> int:
    if x.numel() == 0:
        return 0
    return int((torch.linalg.svdvals(x) > tol).sum())


def _warn(msg: str) -> None:
    sys.stderr.write(f"warning: {msg}\n")
    sys.stderr.flush()


def modes_learnt(mode_strength, problem: RegressionProblem) -> np.ndarray:
    """Boolean (..., q): mode k counts as learnt when u_k^T P Sxx^{1/2} v_k >= m_k / 2."""
    return _learnt_mask(mode_strength, problem)


def _learnt_mask(mode_strength, problem: RegressionProblem) -> np.ndarray:
    m = _modes_np(problem)
    ms = np.asarray(mode_strength, dtype=np.float64)
    q = min(ms.shape[-1], m.size)
    out = np.zeros(ms.shape[:-1] + (m.size,), dtype=bool)
    with np.errstate(invalid="ignore"):
        out[..., :q] = ms[..., :q] >= 0.5 * m[:q]
    return out


def _next_drop(s: frozenset, m: np.ndarray, r_max: int, depth: int | None):
    """(k, Delta_S, tau_S) of the drop that leaves the critical set S, or None at the global minimum.

    Below full rank the largest unlearnt mode k is learnt next: Delta = m_k^2/2, tau = 1/(h m_k^(2-2/h)).
    At full rank (|S| = r_max) a larger unlearnt mode k replaces the smallest learnt mode a:
    Delta = (m_k^2 - m_a^2)/2 and tau = 1/((m_k - m_a) m_a^((h-2)/h)) (math.md section 4).
    """
    unlearnt = [k for k in range(m.size) if k not in s]
    if not unlearnt:
        return None
    k = unlearnt[0]
    h = depth if depth is not None else 2
    if len(s) < r_max:
        return k, 0.5 * m[k] ** 2, 1.0 / (h * m[k] ** (2.0 - 2.0 / h))
    a = max(s)
    if k > a:
        return None
    gap = m[k] - m[a]
    if gap <= 0:
        return None
    return k, 0.5 * (m[k] ** 2 - m[a] ** 2), 1.0 / (gap * m[a] ** ((h - 2.0) / h))


def _crossing_time(t: np.ndarray, u: np.ndarray, level: float, i: int) -> float:
    """Time in [t[i-1], t[i]] where u crosses ``level`` upward (PCHIP through nearby points, else linear)."""
    t0, t1, u0, u1 = t[i - 1], t[i], u[i - 1], u[i]
    lo, hi = max(0, i - 3), min(len(t), i + 3)
    tt, uu = t[lo:hi], u[lo:hi]
    if len(tt) >= 3 and np.all(np.diff(tt) > 0) and np.all(np.isfinite(uu)):
        try:
            from scipy.interpolate import PchipInterpolator
            from scipy.optimize import brentq

            f = PchipInterpolator(tt, uu - level)
            if f(t0) <= 0 <= f(t1):
                return float(brentq(f, t0, t1, xtol=1e-14 * max(1.0, abs(t1)), rtol=1e-14))
        except (ValueError, RuntimeError):
            pass
    if u1 == u0:
        return float(t1)
    return float(t0 + (level - u0) * (t1 - t0) / (u1 - u0))


def _finite_prefix(*arrays) -> int:
    """Length of the leading stretch where every array (first axis) is finite."""
    n = min(len(a) for a in arrays)
    ok = np.ones(n, dtype=bool)
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)[:n]
        ok &= np.isfinite(a.reshape(n, -1)).all(axis=1) if a.ndim > 1 else np.isfinite(a)
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if bad.size else n


# ------------------------------------------------------------------------------------------------
# Plateaus


def detect_plateaus(
    t,
    loss,
    mode_strength,
    grad_norm,
    problem: RegressionProblem,
    r_max: int,
    *,
    depth: int | None = None,
    thresholds: PlateauThresholds | None = None,
) -> list[dict]:
    """The saddle plateaus of one trajectory (flow or SGD), unclassified.

    Args:
        t (T,), loss (T,), mode_strength (T, q) (u_k^T P Sxx^{1/2} v_k), grad_norm (T,): the series
            (numpy arrays or anything array-like). Only the leading finite stretch is used.
        problem: the task (its modes m_k and critical values).
        r_max: min_j d_j, the largest rank of P.
        depth: h. It sets the time constants tau_S = 1/(h m_k^(2-2/h)); without it the gradient scale
            of a plateau is the largest ||grad L|| the series reaches from the plateau on (the drops
            still to come) and no minimum duration is imposed.
        thresholds: the relative bands (:class:`PlateauThresholds`).

    Returns a list of plateau dicts (JSON-able) in time order with keys t_start, t_end, duration,
    level (the critical value L(P_S)), level_index (r when S = {0..r-1}, else None), is_top_set,
    modes_learnt (sorted 0-based), grad_norm_min, t_grad_norm_min, exit_mode (the mode learnt on
    leaving, or None when the series ends on the plateau), t_exit (its strength crosses m_k/2),
    level_gap (loss - level at the smallest gradient), i_start, i_end, i_grad_norm_min (grid indices),
    and label / lambda_min / evidence / escape left empty for :func:`classify_saddle`.
    """
    th = thresholds or PlateauThresholds()
    try:
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        loss = np.asarray(loss, dtype=np.float64).reshape(-1)
        gn = np.asarray(grad_norm, dtype=np.float64).reshape(-1)
        ms = np.asarray(mode_strength, dtype=np.float64)
    except (TypeError, ValueError):
        return []
    if ms.ndim != 2 or problem.n_modes == 0 or t.size == 0:
        return []
    n = _finite_prefix(t, loss, gn, ms)
    if n < 3:
        return []
    t, loss, gn, ms = t[:n], loss[:n], gn[:n], ms[:n]
    m = _modes_np(problem)
    q = m.size
    if ms.shape[1] < q:
        ms = np.concatenate([ms, np.zeros((n, q - ms.shape[1]))], axis=1)
    learnt = modes_learnt(ms, problem)
    r_top = min(int(r_max), q)
    terminal = frozenset(range(r_top))
    keys = [frozenset(np.flatnonzero(row).tolist()) for row in learnt]

    # maximal stretches of constant S
    segments = []
    i0 = 0
    for i in range(1, n + 1):
        if i == n or keys[i] != keys[i0]:
            segments.append((i0, i, keys[i0]))
            i0 = i

    out = []
    for a0, a1, s in segments:
        if s == terminal or len(s) > r_max:
            continue
        drop = _next_drop(s, m, int(r_max), depth)
        if drop is None:
            continue
        _, delta, tau = drop
        level = problem.critical_value(sorted(s))
        if depth is not None:
            gscale = math.sqrt(delta / tau)
        else:
            gscale = float(np.max(gn[a0:]))
        idx = np.arange(a0, a1)
        ok = (np.abs(loss[idx] - level) <= th.loss_band * delta) & (gn[idx] <= th.grad_band * gscale)
        hits = idx[ok]
        if hits.size == 0:
            continue
        i_s, i_e = int(hits[0]), int(hits[-1])
        if i_e <= i_s:
            continue
        if depth is not None and t[i_e] - t[i_s] < th.min_duration * tau:
            continue
        seg = np.arange(i_s, i_e + 1)
        i_g = int(seg[np.argmin(gn[seg])])
        r = len(s)
        top = s == frozenset(range(r))
        out.append(
            {
                "t_start": float(t[i_s]),
                "t_end": float(t[i_e]),
                "duration": float(t[i_e] - t[i_s]),
                "level": float(level),
                "level_index": r if top else None,
                "is_top_set": bool(top),
                "modes_learnt": sorted(int(k) for k in s),
                "grad_norm_min": float(gn[i_g]),
                "t_grad_norm_min": float(t[i_g]),
                "level_gap": float(loss[i_g] - level),
                "exit_mode": None,
                "t_exit": None,
                "i_start": i_s,
                "i_end": i_e,
                "i_grad_norm_min": i_g,
                "label": None,
                "lambda_min": None,
                "evidence": {},
                "escape": {},
            }
        )
    for j, p in enumerate(out):
        stop = out[j + 1]["i_start"] if j + 1 < len(out) else n - 1
        k, te = _exit(t, ms, learnt, m, set(p["modes_learnt"]), p["i_end"], stop)
        p["exit_mode"], p["t_exit"] = k, te
    return out


def _exit(t, ms, learnt, m, s: set, i_end: int, stop: int) -> tuple[int | None, float | None]:
    """The mode learnt on leaving a plateau (set s, last index i_end) and the time its strength
    crosses m_k/2. Only crossings that persist count: the mode must still be learnt at ``stop`` (the
    start of the next plateau, or the end of the series), which skips the transient mixtures of
    close modes that rotate away after the jump (math.md section 7). Falls back to the first crossing.
    """
    first: tuple[float, int] | None = None
    best: tuple[float, int] | None = None
    for k in range(m.size):
        if k in s:
            continue
        ups = [i for i in range(i_end + 1, stop + 1) if learnt[i, k] and not learnt[i - 1, k]]
        if not ups:
            continue
        t_first = _crossing_time(t, ms[:, k], 0.5 * m[k], ups[0])
        if first is None or t_first < first[0]:
            first = (t_first, k)
        if learnt[stop, k]:
            t_last = _crossing_time(t, ms[:, k], 0.5 * m[k], ups[-1])
            if best is None or t_last < best[0]:
                best = (t_last, k)
    pick = best or first
    if pick is None:
        return None, None
    return int(pick[1]), _fnum(pick[0])


# ------------------------------------------------------------------------------------------------
# Constructed critical points


def _orthonormal(rows: int, cols: int, gen: torch.Generator, dtype=torch.float64) -> Tensor:
    """(rows, cols) with orthonormal columns, Haar (rows >= cols)."""
    if cols == 0:
        return torch.zeros(rows, 0, dtype=dtype)
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=dtype))
    sign = torch.sign(torch.diagonal(r))
    return q * torch.where(sign == 0, torch.ones_like(sign), sign)


def _complement(basis: Tensor, first: Tensor | None = None) -> Tensor:
    """Orthonormal basis of the orthogonal complement of span(basis) in R^d, the directions of
    ``first`` (projected off the basis) coming first."""
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
    """Weights [W_1..W_h] of a critical point with product P = P_S for the set S = ``modes`` (0-based).

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
    unlearnt input modes to the unlearnt output modes too closely (in the notation of math.md section 4,
    with a the length of the extra chain from the input and b the first layer of the chain to the
    output: b >= a + 3); otherwise a ValueError says so.
    """
    layout = _layout(dims)
    h = layout.depth
    if problem.d_x != layout.d_x or problem.d_y != layout.d_y:
        raise ValueError(
            f"dims {list(layout.dims)} do not fit the data (d_x={problem.d_x}, d_y={problem.d_y})"
        )
    s = sorted(set(int(k) for k in modes))
    bad = [k for k in s if not 0 <= k < problem.n_modes]
    if bad:
        raise ValueError(f"modes must be in 0..{problem.n_modes - 1}, got {bad}")
    r = len(s)
    if r > layout.r_max:
        raise ValueError(
            f"{r} modes do not fit through rank r_max = {layout.r_max} (dims {list(layout.dims)})"
        )
    dtype = problem.X.dtype
    gen = torch.Generator().manual_seed(int(seed))
    ps = problem.critical_product(s)
    u, sig, vh = torch.linalg.svd(ps, full_matrices=False)
    u_s, sig, v_s = u[:, :r], sig[:r], vh[:r].T
    amp = sig ** (1.0 / h) if r else sig
    frames = [v_s] + [_orthonormal(d, r, gen, dtype) for d in layout.dims[1:-1]] + [u_s]
    if balanced or r == 0:
        mix = [torch.eye(r, dtype=dtype) for _ in range(h + 1)]
    else:
        mix = [torch.eye(r, dtype=dtype)]
        for _ in range(h - 1):
            o1, o2 = _orthonormal(r, r, gen, dtype), _orthonormal(r, r, gen, dtype)
            scale = torch.exp((2 * torch.rand(r, generator=gen, dtype=dtype) - 1) * math.log(2.0))
            mix.append((o1 * scale) @ o2.T)
        mix.append(torch.eye(r, dtype=dtype))
    ws = []
    for j in range(1, h + 1):
        core = (
            mix[j] @ torch.diag(amp) @ torch.linalg.inv(mix[j - 1]) if r else torch.zeros(0, 0, dtype=dtype)
        )
        ws.append(frames[j] @ core @ frames[j - 1].T)
    if layer_ranks is not None:
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
        g = problem.gradient_theta(pack(ws), layout)
        pd = float(problem.product_distance(product(ws), ps))
        s1 = _s1(problem)
        if float(g.norm()) > 1e-9 * math.sqrt(h) * s1 ** (2 - 1 / h) or pd > 1e-9 * s1:
            raise ValueError(
                f"layer_ranks {ranks}: the extra channels connect unlearnt input and output modes, so this "
                f"is not a critical point (||grad L|| = {float(g.norm()):.3g}, ||P - P_S|| = {pd:.3g}); "
                "leave a rank-r layer between the extra chains from the input and to the output"
            )
    return ws


# ------------------------------------------------------------------------------------------------
# Snapping to the nearby critical point


def _project_learnt(
    problem: RegressionProblem, layout: Layout, ws: Sequence[Tensor], s: list[int]
) -> list[Tensor]:
    """Project every W_j onto the channels that carry the learnt modes S.

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


def _hessian(problem, theta, layout, dense_max: int) -> Tensor | None:
    if theta.numel() > dense_max:
        return None
    hess = problem.hessian(theta, layout)
    return 0.5 * (hess + hess.T)


def _lm_snap(
    problem, layout: Layout, theta: Tensor, tol: float, max_iter: int, dense_max: int, hscale: float
):
    """Levenberg-Marquardt on ||grad L(theta)||^2 (Jacobian = Hessian): (H^2 + mu I) d = -H g.

    Returns (theta, ||grad||, iterations). Dense eigendecomposition of H up to ``dense_max`` weights,
    conjugate gradients on Hessian-vector products above.
    """
    th = theta.clone()
    g = problem.gradient_theta(th, layout)
    gn = float(g.norm())
    mu = 1e-8 * hscale**2
    iters = 0
    while iters < max_iter and math.isfinite(gn) and gn > tol:
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
    return th, gn, iters


def _cg(op, b: Tensor, iters: int = 200, rtol: float = 1e-12) -> Tensor:
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


def _lambda_extremes(problem, theta, layout, hess: Tensor | None):
    """(lambda_min, lambda_max, v_min, eigenvalues or None)."""
    if hess is not None:
        lam, vec = torch.linalg.eigh(hess)
        return float(lam[0]), float(lam[-1]), vec[:, 0], lam
    lo, hi, v_lo, _ = lanczos_extremes(
        lambda v: problem.hvp_theta(theta, v, layout), theta.numel(), iters=150
    )
    return lo, hi, v_lo, None


# ------------------------------------------------------------------------------------------------
# Evidence


def _rank_evidence(ws: Sequence[Tensor], s1: float, rtol: float) -> dict:
    h = len(ws)

    def tol(length: int) -> float:
        return rtol * s1 ** (length / h)

    ranks = [_rank(w, tol(1)) for w in ws]
    prefix, x = [], None
    for j in range(h):  # P_{j:1}, j = 1..h
        x = ws[j] if x is None else ws[j] @ x
        prefix.append(_rank(x, tol(j + 1)))
    suffix, y = [], None
    for j in range(h - 1, -1, -1):  # P_{h:j}, j = h..1
        y = ws[j] if y is None else y @ ws[j]
        suffix.append(_rank(y, tol(h - j)))
    suffix = suffix[::-1]  # suffix[j-1] = rank W_h...W_j

    def mid_rank(lo: int, hi: int) -> int:  # rank of W_hi ... W_lo (1-based, lo <= hi)
        z = ws[lo - 1]
        for j in range(lo, hi):
            z = ws[j] @ z
        return _rank(z, tol(hi - lo + 1))

    return {
        "ranks": ranks,
        "prefix": prefix[:-1],
        "suffix": suffix[1:],
        "rank_P": prefix[-1],
        "mid_rank": mid_rank,
    }


def _partial_product_rule(ev: dict, dims: Sequence[int], r: int) -> str | None:
    """math.md section 4's refinement: a* = max{i : rank P_{i-1:1} > r}, b* = min{j : rank P_{h:j+1} > r};
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


def classify_saddle(
    problem: RegressionProblem,
    dims,
    theta,
    modes_learnt: Iterable[int] | None = None,
    *,
    snap: str = "auto",
    tolerances: ClassifyTolerances | None = None,
) -> dict:
    """Snap theta to the nearby critical point and classify it: strict, non-strict or inconclusive.

    Args:
        theta: (p,) weights near a saddle (the closest approach of a trajectory) or a critical point.
        modes_learnt: the set S (0-based); default: the modes with u_k >= m_k / 2 at theta.
        snap: ``auto`` (keep theta if it is already a critical point with P = P_S, else ``project``),
            ``project`` (project the layers onto the learnt channels, then Levenberg-Marquardt on
            ||grad L||^2), ``lm`` (Levenberg-Marquardt from theta itself), ``construct`` (the balanced
            critical point of S from :func:`critical_point`), ``none`` (classify theta as it is).

    Returns a dict: label, lambda_min (at the critical point), lambda_max, ranks (of W_1..W_h),
    partial_product_ranks ({"prefix": rank P_{j:1} for j = 1..h-1, "suffix": rank W_h..W_j for
    j = 2..h}), rank_P, optimal_rank_r (P is P*_r, the optimal rank-r map), three_rank_r_layers,
    snap_grad_norm, snap (the method used), snap_distance (||theta* - theta||), snap_iterations,
    product_distance (||(P - P_S) Sxx^{1/2}||), theory (what the literature says), partial_product_rule,
    reasons (why the label), closest ({grad_norm, lambda_min, ranks} at theta itself), modes_learnt,
    escape (:func:`escape_directions` at the critical point) and theta_critical (the (p,) tensor).
    """
    tol = tolerances or ClassifyTolerances()
    layout = _layout(dims)
    h = layout.depth
    th0 = _as_theta(theta, layout, problem.X.dtype)
    if modes_learnt is None:
        ms = problem.mode_strength(product(unpack(th0, layout))).numpy()
        s = sorted(np.flatnonzero(_learnt_mask(ms, problem)).tolist())
    else:
        s = sorted(set(int(k) for k in modes_learnt))
    bad = [k for k in s if not 0 <= k < problem.n_modes]
    if bad:
        raise ValueError(f"modes_learnt must be in 0..{problem.n_modes - 1}, got {bad}")
    if len(s) > layout.r_max:
        raise ValueError(f"{len(s)} learnt modes do not fit through r_max = {layout.r_max}")
    r = len(s)
    s1 = _s1(problem)
    hscale = h * s1 ** (2.0 - 2.0 / h)
    gscale = math.sqrt(h) * s1 ** (2.0 - 1.0 / h)
    g_tol = tol.grad_rtol * gscale
    p_tol = tol.prod_rtol * s1
    lam_tol = tol.lam_rtol * hscale
    ps = problem.critical_product(s)

    # at theta itself (the closest approach)
    ws0 = unpack(th0, layout)
    g0 = float(problem.gradient_theta(th0, layout).norm())
    pd0 = float(problem.product_distance(product(ws0), ps))
    hess0 = _hessian(problem, th0, layout, tol.dense_max)
    lam0 = _lambda_extremes(problem, th0, layout, hess0)[0] if math.isfinite(g0) else float("nan")
    ev0 = _rank_evidence(ws0, s1, tol.rank_rtol) if math.isfinite(g0) else None
    closest = {
        "grad_norm": g0,
        "lambda_min": lam0,
        "product_distance": pd0,
        "ranks": None if ev0 is None else ev0["ranks"],
    }

    method = snap
    if snap == "auto":
        method = "none" if (g0 <= g_tol and pd0 <= p_tol) else "project"
    iters = 0
    if method == "none":
        th = th0
    elif method == "construct":
        th = pack(critical_point(problem, layout, s))
    elif method in ("project", "lm"):
        start = pack(_project_learnt(problem, layout, ws0, s)) if method == "project" else th0
        th, _, iters = _lm_snap(problem, layout, start, 1e-4 * g_tol, tol.max_iter, tol.dense_max, hscale)
    else:
        raise ValueError(f"snap must be one of auto, project, lm, construct, none; got {snap!r}")

    ws = unpack(th, layout)
    gn = float(problem.gradient_theta(th, layout).norm())
    pd = float(problem.product_distance(product(ws), ps))
    hess = _hessian(problem, th, layout, tol.dense_max)
    lam_min, lam_max, v_min, evals = _lambda_extremes(problem, th, layout, hess)
    ev = _rank_evidence(ws, s1, tol.rank_rtol)
    rank_p = ev["rank_P"]
    top = s == list(range(r))
    optimal = bool(top and rank_p == r and pd <= p_tol)
    n_rank_r = sum(1 for x in ev["ranks"] if x == r)
    three = bool(n_rank_r >= 3 and rank_p == r)
    r_top = min(layout.r_max, problem.n_modes)
    is_min = bool(top and r == r_top)
    rule = _partial_product_rule(ev, layout.dims, r) if top and h > 1 else None

    theory = None
    theory_why = ""
    if h == 1:
        theory_why = "h = 1: the loss is convex in W_1, the only critical point is the minimum"
    elif is_min:
        theory_why = "S is the top set of size min(r_max, q): the global minimum, not a saddle"
    elif h == 2:
        theory, theory_why = "strict", "h = 2: every saddle is strict"
    elif not top:
        theory, theory_why = "strict", f"a larger mode is skipped (S = {s} is not a top set)"
    elif three and optimal:
        theory = "non-strict"
        theory_why = f"{n_rank_r} of the W_j have rank r = {r} and P is the optimal rank-{r} map (sufficient)"
    numeric = "strict" if lam_min < -lam_tol else "non-strict"
    reasons = []
    snapped = gn <= g_tol and pd <= p_tol
    if h == 1 or is_min:
        label = "inconclusive"
        reasons.append(theory_why)
    elif not snapped:
        label = "inconclusive"
        reasons.append(
            f"no critical point with P = P_S reached (||grad L|| = {gn:.3g}, ||P - P_S|| = {pd:.3g})"
        )
    elif theory is None:
        label = numeric
        reasons.append(
            f"lambda_min = {lam_min:.3g} (tolerance {lam_tol:.2g}); the rank conditions are silent"
        )
    elif theory == numeric:
        label = numeric
        reasons.append(f"{theory_why}; lambda_min = {lam_min:.3g} agrees")
    else:
        label = "inconclusive"
        reasons.append(f"{theory_why}, but lambda_min = {lam_min:.3g} says {numeric}")
    n_neg = int((evals < -lam_tol).sum()) if evals is not None else None
    n_zero = int((evals.abs() <= lam_tol).sum()) if evals is not None else None

    try:
        escape = escape_directions(
            problem, layout, th, s, trajectory_theta=th0, _hess=hess, _lam=(lam_min, v_min, n_neg), _tol=tol
        )
    except Exception as err:  # noqa: BLE001 - the escape analysis must not lose the label
        escape = {"error": f"{type(err).__name__}: {err}"}
    return {
        "label": label,
        "lambda_min": lam_min,
        "lambda_max": lam_max,
        "lambda_tolerance": lam_tol,
        "n_negative_eigenvalues": n_neg,
        "n_zero_eigenvalues": n_zero,
        "ranks": ev["ranks"],
        "partial_product_ranks": {"prefix": ev["prefix"], "suffix": ev["suffix"]},
        "rank_P": rank_p,
        "optimal_rank_r": optimal,
        "three_rank_r_layers": three,
        "n_rank_r_layers": n_rank_r,
        "is_top_set": bool(top),
        "is_global_minimum": is_min,
        "partial_product_rule": rule,
        "theory": theory,
        "numeric": numeric,
        "snap": method,
        "snap_grad_norm": gn,
        "snap_distance": float((th - th0).norm()),
        "snap_iterations": iters,
        "product_distance": pd,
        "reasons": reasons,
        "closest": closest,
        "modes_learnt": s,
        "level": problem.critical_value(s),
        "escape": escape,
        "theta_critical": th,
    }


# ------------------------------------------------------------------------------------------------
# Escape


def _free_channels(ws: Sequence[Tensor], s1: float, rtol: float) -> list[Tensor | None]:
    """For each hidden layer j = 1..h-1 an orthonormal basis of the directions orthogonal to
    range(W_j) and to the row space of W_{j+1} (None when there are none)."""
    h = len(ws)
    out = []
    for j in range(1, h):
        a = torch.cat([ws[j - 1], ws[j].T], dim=1)
        u, sv, _ = torch.linalg.svd(a, full_matrices=True)
        k = int((sv > rtol * s1 ** (1.0 / h)).sum())
        out.append(u[:, k:] if k < u.shape[1] else None)
    return out


def _mode_content(problem, ws, direction_ws, unlearnt: list[int]) -> int | None:
    """The unlearnt mode a direction (V_1..V_h) moves most: first-order dP and the order-h chain
    V_h...V_1, in mode coordinates U^T X Sxx^{1/2} V."""
    if not unlearnt:
        return None
    h = len(ws)
    dp = torch.zeros_like(problem.P_ls)
    for j in range(h):
        left = torch.eye(ws[-1].shape[0], dtype=dp.dtype)
        for i in range(h - 1, j, -1):
            left = left @ ws[i]
        right = torch.eye(ws[0].shape[1], dtype=dp.dtype)
        for i in range(j):
            right = ws[i] @ right
        dp = dp + left @ direction_ws[j] @ right
    chain = product(direction_ws)
    uu, vv = problem.mode_u, problem.mode_v

    def coords(x):
        xs = x if problem.whitened else x @ problem.sxx_sqrt
        return (uu.T @ xs @ vv).abs()

    c1, c2 = coords(dp), coords(chain)
    score = {k: float(c1[k, :].sum() + c1[:, k].sum() + c2[k, k]) for k in unlearnt}
    best = max(score, key=score.get)
    return best if score[best] > 0 else None


def escape_directions(
    problem: RegressionProblem,
    dims,
    theta,
    modes_learnt: Iterable[int],
    *,
    trajectory_theta=None,
    amplitude: float = 1e-3,
    _hess: Tensor | None = None,
    _lam: tuple | None = None,
    _tol: ClassifyTolerances | None = None,
) -> dict:
    """How a trajectory leaves the critical point theta (learnt set S): next mode, unstable direction,
    and the stable / unstable branches of every unlearnt mode (math.md section 4's sign rule).

    For each unlearnt mode k with a free channel (a unit f_j in every hidden layer orthogonal to
    range(W_j) and to the row space of W_{j+1}) the branch directions are
    delta^+ = (a f_1 w_k^T, a f_2 f_1^T, ..., a u_k f_{h-1}^T) and delta^- (first layer negated), with
    w_k = Sxx^{+1/2} v_k and a^h = ``amplitude`` * m_k. Along delta^+ the product gains +a^h u_k w_k^T
    and the loss changes by -m_k a^h + O(a^2h) (unstable branch, u_k grows to m_k); along delta^- by
    +m_k a^h (stable branch, u_k decays). Reported: the measured loss changes, their leading-order
    prediction, the curvatures delta^T H delta / |delta|^2 (-m_k and +m_k for h = 2; 0 for h >= 3,
    where the Hessian is degenerate and the order-h sign rule decides), and, with
    ``trajectory_theta``, the sign of the trajectory's own mode strength (which branch it is on).

    The unstable direction is the lowest Hessian eigenvector when lambda_min < 0 (exponential escape,
    rate -lambda_min), else the unstable branch of the next mode (algebraic escape, order h).
    Returned tensors: ``unstable_direction`` (p,), unit norm, or None.
    """
    tol = _tol or ClassifyTolerances()
    layout = _layout(dims)
    h = layout.depth
    th = _as_theta(theta, layout, problem.X.dtype)
    ws = unpack(th, layout)
    s = sorted(set(int(k) for k in modes_learnt))
    m = _modes_np(problem)
    s1 = _s1(problem)
    hscale = h * s1 ** (2.0 - 2.0 / h)
    lam_tol = tol.lam_rtol * hscale
    unlearnt = [k for k in range(m.size) if k not in s]
    r = len(s)
    if r < layout.r_max and unlearnt:
        next_mode = unlearnt[0]
    elif unlearnt and s and unlearnt[0] < max(s):
        next_mode = unlearnt[0]  # a swap: the larger unlearnt mode replaces the smallest learnt one
    else:
        next_mode = None
    hess = _hess if _hess is not None else _hessian(problem, th, layout, tol.dense_max)
    if _lam is not None:
        lam_min, v_min, n_neg = _lam
    else:
        lam_min, _, v_min, evals = _lambda_extremes(problem, th, layout, hess)
        n_neg = int((evals < -lam_tol).sum()) if evals is not None else None

    def curvature(v: Tensor) -> float:
        hv = hess @ v if hess is not None else problem.hvp_theta(th, v, layout)
        return float(v @ hv / (v @ v))

    traj_strength = None
    if trajectory_theta is not None:
        tt = _as_theta(trajectory_theta, layout, problem.X.dtype)
        traj_strength = problem.mode_strength(product(unpack(tt, layout))).numpy()
    free = _free_channels(ws, s1, tol.rank_rtol) if h > 1 else []
    has_free = all(f is not None for f in free)
    loss0 = float(problem.loss(ws))
    branches = []
    branch_dirs = {}
    for k in unlearnt:
        entry: dict[str, Any] = {"mode": k, "m_k": float(m[k]), "order": h}
        if traj_strength is not None and k < traj_strength.size:
            u_k = float(traj_strength[k])
            entry["trajectory_strength"] = u_k
            entry["trajectory_branch"] = "unstable" if u_k > 0 else ("stable" if u_k < 0 else "dead")
        if not has_free or h == 1:
            entry["free_channel"] = False
            branches.append(entry)
            continue
        a = (amplitude * m[k]) ** (1.0 / h)
        w_in = problem.sxx_pinv_sqrt @ problem.mode_v[:, k]
        fs = [w_in] + [f[:, 0] for f in free] + [problem.mode_u[:, k]]
        plus = [a * torch.outer(fs[j + 1], fs[j]) for j in range(h)]
        minus = [-plus[0]] + plus[1:]
        dplus, dminus = pack(plus), pack(minus)
        lp = float(problem.loss(unpack(th + dplus, layout))) - loss0
        lm = float(problem.loss(unpack(th + dminus, layout))) - loss0
        entry.update(
            free_channel=True,
            amplitude=a,
            unstable_loss_change=lp,
            stable_loss_change=lm,
            predicted_loss_change=float(m[k] * a**h),
            unstable_curvature=curvature(dplus),
            stable_curvature=curvature(dminus),
            sign_rule_ok=bool(lp < 0 < lm),
        )
        branch_dirs[k] = (dplus / dplus.norm(), plus)
        branches.append(entry)

    if lam_min < -lam_tol and v_min is not None:
        kind, direction, rate = "hessian", v_min / v_min.norm(), -lam_min
        mode = _mode_content(problem, ws, unpack(direction, layout), unlearnt)
        order = 2
    elif next_mode is not None and next_mode in branch_dirs:
        kind, direction, rate, mode, order = "sign_rule", branch_dirs[next_mode][0], None, next_mode, h
    else:
        kind, direction, rate, mode, order = None, None, None, None, None
    return {
        "next_mode": next_mode,
        "free_channel": bool(has_free),
        "unstable_kind": kind,
        "unstable_rate": rate,
        "unstable_mode": mode,
        "unstable_order": order,
        "escape": None if kind is None else ("exponential" if kind == "hessian" else "algebraic"),
        "hessian_degenerate": bool(lam_min >= -lam_tol),
        "lambda_min": lam_min,
        "n_negative_eigenvalues": n_neg,
        "branches": branches,
        "unstable_direction": direction,
    }


# ------------------------------------------------------------------------------------------------
# Whole series and runs


def analyze_series(
    problem: RegressionProblem,
    dims,
    arrays: Mapping[str, np.ndarray],
    *,
    thresholds: PlateauThresholds | None = None,
    tolerances: ClassifyTolerances | None = None,
    classify: bool = True,
) -> list[dict]:
    """Plateaus of one recorded series (the arrays of ``series/<name>.npz``), each classified.

    The saddle of a plateau is classified from the point of the plateau closest to P_S (``theta``
    rows), snapped to the critical point; without ``theta`` from the balanced critical point of the
    learnt modes (evidence ``source`` = ``constructed``). Never raises: returns [] on bad input.
    """
    layout = _layout(dims)
    try:
        t, loss = arrays.get("t"), arrays.get("loss")
        ms, gn = arrays.get("mode_strength"), arrays.get("grad_norm")
        if t is None or loss is None or ms is None or gn is None:
            return []
        plats = detect_plateaus(
            t, loss, ms, gn, problem, layout.r_max, depth=layout.depth, thresholds=thresholds
        )
    except Exception as err:  # noqa: BLE001 - analysis never raises
        _warn(f"plateau detection failed: {type(err).__name__}: {err}")
        return []
    if not classify:
        return plats
    theta = arrays.get("theta")
    theta = None if theta is None else np.asarray(theta, dtype=np.float64)
    if theta is not None and (theta.ndim != 2 or theta.shape[1] != layout.n_weights):
        theta = None
    for p in plats:
        s = p["modes_learnt"]
        try:
            ps = problem.critical_product(s)
            idx = None
            if theta is not None:
                rows = np.arange(p["i_start"], p["i_end"] + 1)
                rows = rows[rows < theta.shape[0]]
                rows = rows[np.isfinite(theta[rows]).all(axis=1)] if rows.size else rows
                if rows.size:
                    ths = torch.from_numpy(theta[rows])
                    dist = problem.product_distance(product(unpack(ths, layout)), ps)
                    idx = int(rows[int(torch.argmin(dist))])
            if idx is not None:
                res = classify_saddle(problem, layout, torch.from_numpy(theta[idx]), s, tolerances=tolerances)
                source = "trajectory"
                p["t_closest"] = float(np.asarray(t)[idx])
            else:
                res = classify_saddle(
                    problem, layout, pack(critical_point(problem, layout, s)), s, tolerances=tolerances
                )
                source = "constructed"
                p["t_closest"] = None
            _fill_plateau(p, res, source)
        except Exception as err:  # noqa: BLE001 - one plateau's classification must not lose the rest
            p["label"] = "inconclusive"
            p["evidence"] = {"error": f"{type(err).__name__}: {err}"}
    return plats


def _fill_plateau(p: dict, res: dict, source: str) -> None:
    p["label"] = res["label"]
    p["lambda_min"] = _fnum(res["lambda_min"])
    keys = (
        "ranks",
        "partial_product_ranks",
        "rank_P",
        "optimal_rank_r",
        "three_rank_r_layers",
        "n_rank_r_layers",
        "partial_product_rule",
        "theory",
        "numeric",
        "lambda_max",
        "lambda_tolerance",
        "n_negative_eigenvalues",
        "n_zero_eigenvalues",
        "snap",
        "snap_grad_norm",
        "snap_distance",
        "snap_iterations",
        "product_distance",
        "reasons",
        "closest",
    )
    p["evidence"] = _clean({"source": source, **{k: res.get(k) for k in keys}})
    esc = dict(res.get("escape") or {})
    esc.pop("unstable_direction", None)
    esc["exit_mode"] = p.get("exit_mode")
    esc["next_mode_agrees"] = (
        None
        if p.get("exit_mode") is None or esc.get("next_mode") is None
        else esc["next_mode"] == p["exit_mode"]
    )
    p["escape"] = _clean(esc)


def _first_crossing(t: np.ndarray, u: np.ndarray, level: float, after: float = -math.inf) -> float | None:
    n = _finite_prefix(t, u)
    for i in range(1, n):
        if t[i] >= after and u[i - 1] < level <= u[i]:
            return _crossing_time(t[:n], u[:n], level, i)
    return None


def exits_vs_reference(
    ref_plateaus: list[dict],
    plateaus: list[dict],
    problem: RegressionProblem,
    arrays: Mapping[str, np.ndarray] | None = None,
    lr: float | None = None,
) -> list[dict]:
    """Plateau exits of a series against a reference (the flow), matched by exit mode.

    [{"mode", "t_exit_flow", "t_exit", "delay" (t_exit - t_exit_flow), "delay_over_lr"}]; when the series
    has no plateau leaving by that mode, its t_exit is the first time the mode's strength crosses m_k/2.
    """
    m = _modes_np(problem)
    out = []
    own = {p["exit_mode"]: p["t_exit"] for p in plateaus if p.get("exit_mode") is not None}
    for p in ref_plateaus:
        k = p.get("exit_mode")
        if k is None or p.get("t_exit") is None:
            continue
        te = own.get(k)
        if te is None and arrays is not None and arrays.get("mode_strength") is not None:
            ms = np.asarray(arrays["mode_strength"], dtype=np.float64)
            if ms.ndim == 2 and k < ms.shape[1]:
                te = _first_crossing(np.asarray(arrays["t"], dtype=np.float64), ms[:, k], 0.5 * m[k])
        delay = None if te is None else te - p["t_exit"]
        out.append(
            {
                "mode": int(k),
                "t_exit_flow": float(p["t_exit"]),
                "t_exit": _fnum(te),
                "delay": _fnum(delay),
                "delay_over_lr": _fnum(delay / lr) if (delay is not None and lr) else None,
            }
        )
    return out


def plateau_table(plateaus: list[dict]) -> str:
    """A markdown table of plateaus (TensorBoard text)."""
    if not plateaus:
        return "no saddle plateau"

    def f(x, fmt=".4g"):
        return "-" if x is None else format(x, fmt)

    lines = [
        "| # | t start | t end | duration | level | r | modes learnt | min grad | exit mode | t exit | label | lambda_min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, p in enumerate(plateaus):
        lines.append(
            f"| {i} | {f(p['t_start'])} | {f(p['t_end'])} | {f(p['duration'])} | {f(p['level'])} | "
            f"{'-' if p['level_index'] is None else p['level_index']} | {p['modes_learnt']} | "
            f"{f(p['grad_norm_min'], '.3g')} | {'-' if p['exit_mode'] is None else p['exit_mode']} | "
            f"{f(p['t_exit'])} | {p.get('label') or '-'} | {f(p.get('lambda_min'), '.3g')} |"
        )
    return "\n".join(lines)


def _write_tensorboard(out_dir: Path, name: str, arrays, plateaus, exits, problem) -> None:
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard" / name))
    try:
        t = np.asarray(arrays.get("t", np.zeros(0)), dtype=np.float64)
        ms = arrays.get("mode_strength")
        steps = arrays.get("grid_index")
        steps = np.arange(len(t)) if steps is None else np.asarray(steps)
        fw = writer._get_file_writer()
        if ms is not None and len(t):
            ms = np.asarray(ms, dtype=np.float64)
            finite = np.isfinite(ms).all(axis=1)
            count = modes_learnt(ms, problem).sum(axis=1)
            codes = np.zeros(len(t))
            for p in plateaus:
                sel = (t >= p["t_start"]) & (t <= p["t_end"])
                codes[sel] = LABEL_CODES.get(p.get("label") or "inconclusive", 3)
            for i in range(min(len(t), len(steps))):
                if not finite[i]:
                    continue
                vals = [("saddle/modes_learnt", float(count[i])), ("saddle/label", float(codes[i]))]
                summ = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in vals])
                fw.add_summary(summ, global_step=int(steps[i]))
        writer.add_text("saddle/plateaus", plateau_table(plateaus), 0)
        # Exit times and delays for the modes the flow leaves its plateaus by (the same tags in every
        # series; NaN where this series never learns that mode; the flow's own delays are 0).
        for e in exits or []:
            step = int(e["mode"])
            te = e.get("t_exit")
            de = e.get("delay")
            writer.add_scalar("saddle/exit_time", float("nan") if te is None else te, step)
            writer.add_scalar("saddle/exit_delay", float("nan") if de is None else de, step)
        writer.flush()
    finally:
        writer.close()


def analyze_run_saddles(
    out_dir,
    problem: RegressionProblem,
    dims,
    series_arrays: Mapping[str, Mapping[str, np.ndarray]],
    series: dict[str, dict],
    tensorboard: bool = True,
) -> None:
    """Plateaus and saddles of every series of a run; fills the summary entries and TensorBoard.

    Sets ``series[name]["plateaus"]`` (JSON-able plateau dicts, see :func:`detect_plateaus`, with
    label, lambda_min, evidence and escape) and, for SGD series, ``plateau_exits_vs_flow``
    (:func:`exits_vs_reference`). With ``tensorboard``, writes into ``out_dir/tensorboard/<name>``:
    ``saddle/modes_learnt`` and ``saddle/label`` (0 none, 1 strict, 2 non-strict, 3 inconclusive) on
    the grid steps, ``saddle/exit_time`` (step = mode), for SGD ``saddle/exit_delay`` (step = mode)
    and the text ``saddle/plateaus``. Never raises for a bad series (its plateaus are []).
    """
    layout = _layout(dims)
    names = sorted(series_arrays, key=lambda n: (n != "flow", n))
    results: dict[str, list[dict]] = {}
    for name in names:
        arrays = series_arrays[name] or {}
        try:
            results[name] = analyze_series(problem, layout, arrays)
        except Exception as err:  # noqa: BLE001
            _warn(f"{name}: saddle analysis failed: {type(err).__name__}: {err}")
            results[name] = []
        entry = series.setdefault(name, {})
        entry["plateaus"] = _clean(results[name])
    flow_plats = results.get("flow")
    for name in names:
        entry = series[name]
        exits = None
        if flow_plats is not None:
            try:
                if name == "flow":
                    exits = [
                        {
                            "mode": p["exit_mode"],
                            "t_exit_flow": p["t_exit"],
                            "t_exit": p["t_exit"],
                            "delay": 0.0,
                        }
                        for p in flow_plats
                        if p.get("exit_mode") is not None and p.get("t_exit") is not None
                    ]
                else:
                    lr = entry.get("lr")
                    exits = exits_vs_reference(flow_plats, results[name], problem, series_arrays[name], lr)
            except Exception as err:  # noqa: BLE001
                _warn(f"{name}: plateau exits failed: {type(err).__name__}: {err}")
                exits = []
            if name != "flow":
                entry["plateau_exits_vs_flow"] = _clean(exits)
        if tensorboard:
            try:
                _write_tensorboard(
                    Path(out_dir), name, series_arrays[name] or {}, results[name], exits, problem
                )
            except Exception as err:  # noqa: BLE001
                _warn(f"{name}: saddle TensorBoard failed: {type(err).__name__}: {err}")
