"""The strong and weak errors of an ensemble of series against one reference trajectory (the flow),
from their recorded arrays (docs/theory.md, section 9):

* strong error  e_s(t) = E ||theta_sgd(t) - theta_flow(t)||   (the mean of the series' ``dist_to_flow``),
* weak error    e_w(t) = ||E theta_sgd(t) - theta_flow(t)||,
* weak loss     e_L(t) = |E L_sgd(t) - L_flow(t)|,

E a weighted mean over the members (the plain mean, or a bootstrap resample's counts), over the
members ``keep`` names (the lab leaves a diverged member out: its arrays are its blow-up, inf or NaN
from some time on, and made every mean inf or NaN from there). The weak errors
compare with the reference's grid, so they use the rows whose exact time is a grid time. Pure numpy:
the lab fits their orders (``sgd_limit``), the plots draw them.

The mean of E members is off the true mean by a Monte Carlo error of covariance Cov / E, so
||mean - ref||^2 overstates ||E theta - ref||^2 by tr Cov / E on average, and a bootstrap resample's
mean (off the sample's mean by as much again) more: its interval lay above the estimate wherever the
weak error was near that floor. Both weak errors are therefore debiased:
sqrt(max(||mean - ref||^2 - tr S / E, 0)) with S the members' (weighted) covariance for the mean, and
twice that for a resample (its mean is off the members' mean by tr S / E again, and the members' mean is
its world's truth), so that the resamples spread about the estimate; 0 means the weak error is below what
E members can resolve.
"""

from __future__ import annotations

import numpy as np

from dlnlab._members import MEMBERLESS_KEYS
from dlnlab.metrics import theta_rows
from dlnlab.status import Status

__all__ = ["error_curves", "members_kept", "order_undetermined"]


def _aligned(arrays: dict, flow: dict) -> tuple[np.ndarray, np.ndarray]:
    """(rows, grid indices) of a series whose exact time equals the flow's grid time there."""
    grid, t = np.asarray(arrays["grid_index"]), np.asarray(arrays["t"], dtype=np.float64)
    ft = np.asarray(flow["t"], dtype=np.float64)
    rows = np.flatnonzero(grid < len(ft))
    same = np.abs(t[rows] - ft[grid[rows]]) <= 1e-9 * np.maximum(1.0, np.abs(ft[grid[rows]]))
    return rows[same], grid[rows[same]]


def error_curves(
    arrays: dict, flow: dict, weights: np.ndarray, resamples_from: int | None = None, keep=None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{kind: (rows (T,), curves (R, T))} of one series (rows: into its arrays); ``weights`` (R, E): a row
    per curve, each the members' weights (1/E for the plain mean, bootstrap counts / E for a resample);
    the rows from ``resamples_from`` on are bootstrap resamples (debiased twice: module docstring).
    ``keep`` (E,) bool: the members to average (default all); each row's weights are renormalised over
    them, so one resample of all E members serves every series whatever each leaves out."""
    if keep is not None:
        arrays, weights = _kept(arrays, weights, np.asarray(keep, dtype=bool))
    times = np.ones((weights.shape[0], 1))
    if resamples_from is not None:
        times[resamples_from:] = 2.0
    dist = np.asarray(arrays["dist_to_flow"])
    out = {"strong": (np.arange(dist.shape[1]), weights @ dist)}
    rows, ms = _aligned(arrays, flow)
    # deviations from the reference, not the values: the mean of E equal values is not always that value
    # in floating point, and at t = 0 (members and flow at one init) the weak error was 1e-16, not 0,
    # the largest over a horizon where it is below resolution, and an order was fitted to that rounding
    dev = np.asarray(arrays["loss"])[:, rows] - np.asarray(flow["loss"])[None, ms]
    mean_dev = weights @ dev
    spread = weights @ (dev * dev) - mean_dev**2  # the weighted variance (ddof 0), (R, T)
    out["weak_loss"] = (rows, _debiased(mean_dev**2, times * spread, dev.shape[0]))
    have, theta = theta_rows(arrays)
    frows, ftheta = theta_rows(flow)
    if theta is not None and ftheta is not None:
        where = {int(m): j for j, m in enumerate(np.asarray(flow["grid_index"])[frows])}
        at = {int(r): int(m) for r, m in zip(rows, ms)}
        keep = [i for i, r in enumerate(have) if int(r) in at and at[int(r)] in where]
        ref = ftheta[[where[at[int(have[i])]] for i in keep]]
        dev = theta[:, keep] - ref[None]
        mean_dev = np.einsum("re,ekp->rkp", weights, dev)
        gap = np.einsum("rkp,rkp->rk", mean_dev, mean_dev)
        spread = weights @ np.einsum("ekp,ekp->ek", dev, dev) - gap
        out["weak_theta"] = (have[keep], _debiased(gap, times * spread, dev.shape[0]))
    return out


def members_kept(entry: dict, size: int) -> np.ndarray:
    """(E,) bool: the members of an SGD series' summary entry that did not diverge, the ``keep`` of
    :func:`error_curves`. A series stays ok while any member is ok; a diverged member's arrays are its
    blow-up (inf, then NaN), which made every mean over the members inf or NaN from its divergence on.
    The summary's ``sgd_limit`` and the sgd_limit figure's error constants leave it out alike."""
    members = entry.get("members") or []
    gone = {i for i, m in enumerate(members) if isinstance(m, dict) and m.get("status") == Status.DIVERGED}
    return np.array([e not in gone for e in range(size)])


def _kept(arrays: dict, weights: np.ndarray, keep: np.ndarray) -> tuple[dict, np.ndarray]:
    """The kept members' arrays, and the weights restricted to them and renormalised per row (a row
    that drew none of them is NaN: that resample has no value)."""
    kept = {k: v if k in MEMBERLESS_KEYS else np.asarray(v)[keep] for k, v in arrays.items()}
    w = weights[:, keep]
    total = w.sum(axis=1, keepdims=True)
    return kept, np.divide(w, total, out=np.full_like(w, np.nan), where=total > 0)


def _debiased(gap2: np.ndarray, spread: np.ndarray, members: int) -> np.ndarray:
    """sqrt(max(gap^2 - tr S / E, 0)): ``spread`` the members' weighted second central moment (ddof 0;
    tr S = spread E / (E - 1)), so tr S / E = spread / (E - 1)."""
    if members < 2:
        return np.sqrt(gap2)
    return np.sqrt(np.maximum(gap2 - np.maximum(spread, 0.0) / (members - 1), 0.0))


def order_undetermined(order: float | None, ci90) -> bool:
    """An order in eta its bootstrap interval does not pin down: the interval holds 0 (no dependence on
    eta cannot be told apart) or is wider than the order itself. The weak errors need E well above
    1 / eta members; below that their mean is Monte Carlo noise and a slope through it means nothing
    (2.5 [-0.95, 4.0] for the weak loss at 4096 members on the Figure 1 net)."""
    if order is None or not ci90 or None in ci90:
        return False
    lo, hi = ci90
    return lo <= 0.0 <= hi or hi - lo > abs(order)
