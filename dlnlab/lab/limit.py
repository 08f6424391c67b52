"""Minibatch SGD as a stochastic flow, measured on an ensemble that shares its init (``ensemble.vary=sgd``).

For every learning rate, from the members' series against the one flow they share (docs/theory.md,
section 9):

* strong error  e_s(t) = E ||theta_sgd(t) - theta_flow(t)||   (expected order 1/2 in eta),
* weak error    e_w(t) = ||E theta_sgd(t) - theta_flow(t)||   (expected order 1),
* weak loss     e_L(t) = |E L_sgd(t) - L_flow(t)|             (expected order 1),

E the mean over the members. Each is reduced to its largest value over the grid, and its order in eta
is the slope of log error against log eta over the ``sgd.order_fit`` smallest learning rates. The
confidence interval (90%) comes from the bootstrap over members (members drawn with replacement,
``BOOTSTRAP`` times, every statistic and slope recomputed). The Monte Carlo error of a mean over E
members is about sqrt(eta / E) times a constant, so the weak errors need E well above 1 / eta.
"""

from __future__ import annotations

import numpy as np

from dlnlab.lab.summary import Status, series_name
from dlnlab.metrics import theta_rows

__all__ = ["sgd_limit", "record_limit", "LIMIT_KEYS", "BOOTSTRAP"]

LIMIT_KEYS = ("strong", "weak_theta", "weak_loss")
BOOTSTRAP = 200


def _curves(arrays: dict, flow: dict, weights: np.ndarray | None) -> dict[str, np.ndarray]:
    """The three error curves of one series; ``weights`` (R, E): bootstrap resamples (counts / E), each
    row a curve, or None for the plain mean (one row)."""
    n = min(np.shape(arrays["loss"])[1], len(flow["loss"]))  # a flow that stopped early: its rows only
    dist, loss = np.asarray(arrays["dist_to_flow"])[:, :n], np.asarray(arrays["loss"])[:, :n]
    e = dist.shape[0]
    w = np.full((1, e), 1.0 / e) if weights is None else weights
    out = {"strong": w @ dist, "weak_loss": np.abs(w @ loss - np.asarray(flow["loss"])[None, :n])}
    rows, theta = theta_rows(arrays)
    frows, ftheta = theta_rows(flow)
    if theta is not None and ftheta is not None:
        where = {int(m): j for j, m in enumerate(np.asarray(flow["grid_index"])[frows])}
        grid = np.asarray(arrays["grid_index"])[rows]
        keep = [i for i, m in enumerate(grid) if int(m) in where]
        mean = np.einsum("re,ekp->rkp", w, theta[:, keep])
        ref = ftheta[[where[int(grid[i])] for i in keep]]
        out["weak_theta"] = np.linalg.norm(mean - ref[None], axis=-1)
    return out


def _slope(lrs, values) -> float | None:
    pts = [(a, v) for a, v in zip(lrs, values) if v is not None and np.isfinite(v) and v > 0]
    if len(pts) < 2:
        return None
    return float(np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)[0])


def sgd_limit(state, seed: int = 0) -> dict | None:
    """The strong and weak errors of every SGD series, their orders and bootstrap intervals; None unless
    the run is an ensemble with one shared init and the flow finished."""
    plan, cfg = state.plan, state.plan.cfg
    flow = state.arrays.get("flow") or {}
    if (
        not plan.seeds.members
        or cfg.ensemble.vary.name != "sgd"
        or "loss" not in flow
        or np.ndim(flow["loss"]) != 1
    ):
        return None
    usable = []
    for lr in plan.lrs:
        entry, arrays = state.series.get(series_name(lr)), state.arrays.get(series_name(lr))
        if entry and arrays and entry["status"] in (Status.OK, Status.UNSTABLE) and "dist_to_flow" in arrays:
            usable.append((lr, arrays))
    if not usable:
        return None
    fit = sorted(lr for lr, _ in usable)[: cfg.sgd.order_fit]
    size = plan.cfg.ensemble.size
    rng = np.random.default_rng(seed)
    out = {
        "members": size,
        "bootstrap": BOOTSTRAP,
        "lrs": [lr for lr, _ in usable],
        "fit_lrs": fit,
        "curves": {},
    }
    boot: dict[str, list] = {k: [] for k in LIMIT_KEYS}
    for lr, arrays in usable:
        mean = {k: v[0] for k, v in _curves(arrays, flow, None).items()}
        counts = rng.multinomial(size, np.full(size, 1.0 / size), size=BOOTSTRAP) / size
        resampled = _curves(arrays, flow, counts)
        out["curves"][lr] = mean
        for k in LIMIT_KEYS:
            boot[k].append(np.nanmax(resampled[k], axis=1) if k in resampled else np.full(BOOTSTRAP, np.nan))
    for k in LIMIT_KEYS:
        maxima = [
            float(np.nanmax(out["curves"][lr][k])) if k in out["curves"][lr] else None for lr, _ in usable
        ]
        pick = [i for i, (lr, _) in enumerate(usable) if lr in fit]
        order = _slope([usable[i][0] for i in pick], [maxima[i] for i in pick])
        slopes = [
            _slope([usable[i][0] for i in pick], [boot[k][i][b] for i in pick]) for b in range(BOOTSTRAP)
        ]
        slopes = np.asarray([s for s in slopes if s is not None])
        ci = [float(np.quantile(slopes, 0.05)), float(np.quantile(slopes, 0.95))] if len(slopes) else None
        out[k] = {"max": maxima, "order": order, "ci90": ci}
    return out


def _ratio_stats(num: np.ndarray, den: np.ndarray) -> dict | None:
    """median and 10-90% range over the grid of num / den (where both are finite and den > 0)."""
    ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
    if not ok.any():
        return None
    r = num[ok] / den[ok]
    return {
        "median": float(np.median(r)),
        "p10": float(np.quantile(r, 0.1)),
        "p90": float(np.quantile(r, 0.9)),
    }


def sme_spread(state) -> dict:
    """{lr: the SGD ensemble's spread over the SME ensemble's along the trajectory}: Var L(t) and the total
    variance of theta(t) (its covariance's trace), as ratios over the grid points after t = 0."""
    from dlnlab.lab.sme_series import sme_name

    out = {}
    for lr in state.plan.lrs:
        sgd, sme = state.arrays.get(series_name(lr)), state.arrays.get(sme_name(lr))
        if not sgd or not sme or "loss" not in sgd or "loss" not in sme:
            continue
        n = min(np.shape(sgd["loss"])[1], np.shape(sme["loss"])[1])
        ratios = {
            "var_loss": _ratio_stats(
                np.var(sgd["loss"][:, 1:n], axis=0, ddof=1), np.var(sme["loss"][:, 1:n], axis=0, ddof=1)
            )
        }
        (_, a), (_, b) = theta_rows(sgd), theta_rows(sme)
        if a is not None and b is not None and a.shape[1] == b.shape[1]:
            va, vb = np.var(a, axis=0, ddof=1).sum(axis=-1), np.var(b, axis=0, ddof=1).sum(axis=-1)
            ratios["var_theta"] = _ratio_stats(va[1:], vb[1:])
        out[repr(float(lr))] = ratios  # JSON keys: the learning rate as the series names write it
    return out


def record_limit(state, ctx) -> None:
    """The run's strong and weak errors into its state (summary.json: ``sgd_limit``) and its loggers;
    with sgd.sme, the SGD ensemble's spread against the SME ensemble's (``sgd_limit.sme``)."""
    from dlnlab.lab.report import log_limit

    state.limit = sgd_limit(state, seed=state.plan.seeds.seed)
    if state.limit is not None:
        if state.plan.cfg.sgd.sme:
            size = state.plan.cfg.ensemble.size
            state.limit["sme"] = {
                "spread_ratio": sme_spread(state),
                "sampling_error": 2.0 / np.sqrt(max(size - 1, 1)),  # of a variance ratio, normal data
            }
        log_limit(ctx, state.limit)
