"""Plateaus of the loss staircase, detected from the recorded series alone (no weights needed).

From near the origin a deep linear network learns the data's modes one at a time, largest first
(docs/theory.md sections 4, 5, 7). Each plateau of the loss is the trajectory passing close to a saddle: a
critical point whose product is P_S = Pi_S Syx Sxx^+ for the set S of modes learnt so far, at the
critical value L(P_S) = L_min + 1/2 sum_{k not in S} m_k^2.

* the set learnt at time t is S(t) = {k : u_k(t) >= m_k / 2} with u_k = u_k^T P Sxx^{1/2} v_k the mode
  strength (mode overlaps, never an enumeration of subsets); its critical value is L(P_S);
* a plateau is a stretch of constant S, other than the global minimum's set {0..min(r_max, q)-1},
  where the loss stays within ``loss_band * Delta_S`` of L(P_S) and ||grad L|| stays below
  ``grad_band * sqrt(Delta_S / tau_S)``, for at least ``min_duration * tau_S``. Delta_S = m_k^2 / 2
  is the drop that leaves it (k the largest unlearnt mode) and tau_S = 1 / (h m_k^(2-2/h)) the time
  constant of that mode (docs/theory.md section 5): every threshold scales with the problem;
* it is left when the next mode's strength crosses m_k / 2 (``t_exit``, interpolated).

Each plateau is a :class:`Plateau`; its :meth:`Plateau.to_dict` is the entry of summary.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.optimize import brentq

from dlnlab._util import jsonable
from dlnlab.errors import ArgumentError
from dlnlab.problem import RegressionProblem

__all__ = ["Plateau", "PlateauThresholds", "modes_learnt", "detect_plateaus"]


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


@dataclass(frozen=True, kw_only=True)
class Plateau:
    """One saddle plateau of a series (flow or SGD); times in the series' t (for SGD t = step * lr).

    t_start, t_end, duration: where the plateau's bands hold (t_end - t_start); level: the critical
    value L(P_S) (loss units); level_index: r when S = {0..r-1} (the top level L*_r), else None;
    is_top_set: S is {0..r-1}; modes_learnt: S, sorted 0-based mode indices; grad_norm_min: the
    smallest ||grad L|| on it, at t_grad_norm_min, where the loss is level + level_gap; exit_mode: the
    mode learnt on leaving, 0-based (the console numbers the modes from 1; None when the series ends on
    the plateau), t_exit: when its strength crosses m_k / 2; i_start, i_end, i_grad_norm_min: row indices into the series' (T,) arrays.

    Filled by :func:`~dlnlab.saddles.analyze_series` (None / {} from :func:`detect_plateaus`):
    label (strict, non-strict, inconclusive); lambda_min (the Hessian's, at the snapped critical
    point); evidence and escape (JSON-able dicts: :class:`~dlnlab.saddles.SaddleClassification` and
    :class:`~dlnlab.saddles.EscapeDirections` fields); classified_from: ``trajectory`` (the series'
    closest theta row, snapped) or ``constructed`` (the balanced critical point of S), None before a
    point was chosen (not stored: ``evidence["source"]`` says it); t_closest: the time of that row
    (None when constructed).
    """

    t_start: float
    t_end: float
    duration: float
    level: float
    level_index: int | None
    is_top_set: bool
    modes_learnt: list[int]
    grad_norm_min: float
    t_grad_norm_min: float
    level_gap: float
    exit_mode: int | None = None
    t_exit: float | None = None
    i_start: int
    i_end: int
    i_grad_norm_min: int
    label: str | None = None
    lambda_min: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    escape: dict[str, Any] = field(default_factory=dict)
    t_closest: float | None = None
    classified_from: str | None = None

    def to_dict(self) -> dict:
        """The summary.json entry: JSON-able fields (t_closest only once a point was chosen for the
        classification, classified_from left out)."""
        skip = ("classified_from",) if self.classified_from is not None else ("classified_from", "t_closest")
        return jsonable({f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip})


# ------------------------------------------------------------------------------------------------
# Scales of the problem and small helpers (shared by the other modules of the package)


def _modes_np(problem: RegressionProblem) -> np.ndarray:
    """The modes m_k, (q,) float64 numpy."""
    return problem.modes.detach().cpu().numpy().astype(np.float64)


def _s1(problem: RegressionProblem) -> float:
    """s_1 = m_1, the scale every tolerance is relative to (1 without modes)."""
    return float(problem.modes[0]) if problem.n_modes else 1.0


def modes_learnt(mode_strength, problem: RegressionProblem) -> np.ndarray:
    """Boolean (..., q): mode k counts as learnt when u_k^T P Sxx^{1/2} v_k >= m_k / 2.

    ``mode_strength`` is (..., q') array-like; missing modes (q' < q) and NaN count as not learnt.
    """
    m = _modes_np(problem)
    ms = np.asarray(mode_strength, dtype=np.float64)
    q = min(ms.shape[-1], m.size)
    out = np.zeros(ms.shape[:-1] + (m.size,), dtype=bool)
    with np.errstate(invalid="ignore"):
        out[..., :q] = ms[..., :q] >= 0.5 * m[:q]
    return out


def _next_drop(s: frozenset, m: np.ndarray, r_max: int, depth: int | None) -> tuple[float, float] | None:
    """(Delta_S, tau_S) of the drop that leaves the critical set S, or None at the global minimum.

    Below full rank the largest unlearnt mode k is learnt next: Delta = m_k^2/2, tau = 1/(h m_k^(2-2/h)).
    At full rank (|S| = r_max) a larger unlearnt mode k replaces the smallest learnt mode a:
    Delta = (m_k^2 - m_a^2)/2 and tau = 1/((m_k - m_a) m_a^((h-2)/h)) (docs/theory.md section 4).
    """
    unlearnt = [k for k in range(m.size) if k not in s]
    if not unlearnt:
        return None
    k = unlearnt[0]
    h = depth if depth is not None else 2
    if len(s) < r_max:
        return 0.5 * m[k] ** 2, 1.0 / (h * m[k] ** (2.0 - 2.0 / h))
    a = max(s)
    if k > a:
        return None
    gap = m[k] - m[a]
    if gap <= 0:
        return None
    return 0.5 * (m[k] ** 2 - m[a] ** 2), 1.0 / (gap * m[a] ** ((h - 2.0) / h))


def _crossing_time(t: np.ndarray, u: np.ndarray, level: float, i: int) -> float:
    """Time in [t[i-1], t[i]] where u (T,) crosses ``level`` upward (PCHIP through nearby points, else
    linear)."""
    t0, t1, u0, u1 = t[i - 1], t[i], u[i - 1], u[i]
    lo, hi = max(0, i - 3), min(len(t), i + 3)
    tt, uu = t[lo:hi], u[lo:hi]
    if len(tt) >= 3 and np.all(np.diff(tt) > 0) and np.all(np.isfinite(uu)):
        try:
            f = PchipInterpolator(tt, uu - level)
            if f(t0) <= 0 <= f(t1):
                return float(brentq(f, t0, t1, xtol=1e-14 * max(1.0, abs(t1)), rtol=1e-14))
        except (ValueError, RuntimeError):
            pass
    if u1 == u0:
        return float(t1)
    return float(t0 + (level - u0) * (t1 - t0) / (u1 - u0))


def _first_crossing(t: np.ndarray, u: np.ndarray, level: float, after: float = -math.inf) -> float | None:
    """First time >= ``after`` where u (T,) crosses ``level`` upward, within the finite prefix; or None."""
    n = _finite_prefix(t, u)
    for i in range(1, n):
        if t[i] >= after and u[i - 1] < level <= u[i]:
            return _crossing_time(t[:n], u[:n], level, i)
    return None


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
# Detection


def _series_arrays(t, loss, grad_norm, mode_strength) -> tuple[np.ndarray, ...]:
    """The series as float64 arrays t, loss, grad_norm (T,) and mode_strength (T, q); ArgumentError naming
    the first one that is not numbers of that shape."""
    out = []
    for name, value, ndim in (("t", t, 1), ("loss", loss, 1), ("grad_norm", grad_norm, 1),
                              ("mode_strength", mode_strength, 2)):  # fmt: skip
        try:
            a = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ArgumentError(name, f"{name}: not an array of numbers ({err})") from err
        if a.ndim != ndim:
            raise ArgumentError(
                name, f"{name}: expected {ndim} axis (T{', q' if ndim == 2 else ''}), got shape {a.shape}"
            )
        out.append(a)
    lengths = {name: len(a) for name, a in zip(("t", "loss", "grad_norm", "mode_strength"), out)}
    if len(set(lengths.values())) > 1:
        raise ArgumentError("t", f"the series' arrays disagree on the number of points: {lengths}")
    return tuple(out)


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
) -> list[Plateau]:
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

    Returns the :class:`Plateau` list in time order, with exit_mode and t_exit; label, lambda_min,
    evidence and escape are left empty for :func:`~dlnlab.saddles.analyze_series`. A series too short
    or not finite enough to hold a plateau has none ([]); arrays that are not numbers, or whose lengths
    disagree, raise :class:`~dlnlab.errors.ArgumentError`.
    """
    th = thresholds or PlateauThresholds()
    series = _finite_series(t, loss, grad_norm, mode_strength, problem)
    if series is None:
        return []
    t, loss, gn, ms = series
    n = t.size
    m = _modes_np(problem)
    learnt = modes_learnt(ms, problem)
    terminal = frozenset(range(min(int(r_max), m.size)))
    found = []  # (i_start, i_end, i_grad_norm_min, S, level)
    for a0, a1, s in _constant_set_stretches(learnt):
        if s == terminal or len(s) > r_max:
            continue
        hit = _plateau_rows(t, loss, gn, a0, a1, s, problem, m, int(r_max), depth, th)
        if hit is not None:
            found.append(hit + (s, problem.critical_value(sorted(s))))
    out = []
    for j, (i_s, i_e, i_g, s, level) in enumerate(found):
        stop = found[j + 1][0] if j + 1 < len(found) else n - 1
        exit_mode, t_exit = _exit(t, ms, learnt, m, set(s), i_e, stop)
        r = len(s)
        top = s == frozenset(range(r))
        out.append(
            Plateau(
                t_start=float(t[i_s]),
                t_end=float(t[i_e]),
                duration=float(t[i_e] - t[i_s]),
                level=float(level),
                level_index=r if top else None,
                is_top_set=bool(top),
                modes_learnt=sorted(int(k) for k in s),
                grad_norm_min=float(gn[i_g]),
                t_grad_norm_min=float(t[i_g]),
                level_gap=float(loss[i_g] - level),
                exit_mode=exit_mode,
                t_exit=t_exit,
                i_start=i_s,
                i_end=i_e,
                i_grad_norm_min=i_g,
            )
        )
    return out


def _finite_series(
    t, loss, grad_norm, mode_strength, problem: RegressionProblem
) -> tuple[np.ndarray, ...] | None:
    """t, loss, grad_norm (n,), mode_strength (n, q) cut to their leading finite stretch, the strengths
    padded with zeros to the problem's q modes; None when there are no modes or under 3 finite points."""
    t, loss, gn, ms = _series_arrays(t, loss, grad_norm, mode_strength)
    if problem.n_modes == 0 or t.size == 0:
        return None
    n = _finite_prefix(t, loss, gn, ms)
    if n < 3:
        return None
    t, loss, gn, ms = t[:n], loss[:n], gn[:n], ms[:n]
    q = problem.n_modes
    if ms.shape[1] < q:
        ms = np.concatenate([ms, np.zeros((n, q - ms.shape[1]))], axis=1)
    return t, loss, gn, ms


def _constant_set_stretches(learnt: np.ndarray) -> list[tuple[int, int, frozenset]]:
    """The maximal stretches [i0, i1) of rows of ``learnt`` (T, q) with the same learnt set S. The
    stretches' ends are found by comparing neighbouring rows in numpy: a set for every row took 0.6 ms
    of each member's analysis at T = 41 (a 1000-member ensemble: 3 s of its run; measured)."""
    n = learnt.shape[0]
    if n == 0:
        return []
    ends = [*(np.flatnonzero(np.any(learnt[1:] != learnt[:-1], axis=1)) + 1).tolist(), n]
    starts = [0, *ends[:-1]]
    return [(i0, i1, frozenset(np.flatnonzero(learnt[i0]).tolist())) for i0, i1 in zip(starts, ends)]


def _plateau_rows(
    t: np.ndarray,
    loss: np.ndarray,
    gn: np.ndarray,
    a0: int,
    a1: int,
    s: frozenset,
    problem: RegressionProblem,
    m: np.ndarray,
    r_max: int,
    depth: int | None,
    th: PlateauThresholds,
) -> tuple[int, int, int] | None:
    """(i_start, i_end, i_grad_norm_min) of the plateau of S within the stretch [a0, a1): the first and
    last rows inside both bands, if they are two and (with ``depth``) last min_duration * tau_S; else
    None."""
    drop = _next_drop(s, m, r_max, depth)
    if drop is None:
        return None
    delta, tau = drop
    level = problem.critical_value(sorted(s))
    if depth is not None:
        gscale = math.sqrt(delta / tau)
    else:
        gscale = float(np.max(gn[a0:]))
    idx = np.arange(a0, a1)
    ok = (np.abs(loss[idx] - level) <= th.loss_band * delta) & (gn[idx] <= th.grad_band * gscale)
    hits = idx[ok]
    if hits.size == 0:
        return None
    i_s, i_e = int(hits[0]), int(hits[-1])
    if i_e <= i_s:
        return None
    if depth is not None and t[i_e] - t[i_s] < th.min_duration * tau:
        return None
    seg = np.arange(i_s, i_e + 1)
    i_g = int(seg[np.argmin(gn[seg])])
    return i_s, i_e, i_g


def _exit(t, ms, learnt, m, s: set, i_end: int, stop: int) -> tuple[int | None, float | None]:
    """The mode learnt on leaving a plateau (set s, last index i_end) and the time its strength
    crosses m_k/2; t (T,), ms (T, q), learnt (T, q) boolean, m (q,).

    Only crossings that persist count: the mode must still be learnt at ``stop`` (the start of the
    next plateau, or the end of the series), which skips the transient mixtures of close modes that
    rotate away after the jump (docs/theory.md section 7). Falls back to the first crossing.
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
    return int(pick[1]), jsonable(pick[0])
