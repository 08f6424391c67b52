"""Minibatch SGD as a stochastic flow, measured on an ensemble that shares its init (``ensemble.vary=sgd``).

For every learning rate, from the members' series against the one flow they share (docs/theory.md,
section 9):

* strong error  e_s(t) = E ||theta_sgd(t) - theta_flow(t)||   (expected order 1/2 in eta),
* weak error    e_w(t) = ||E theta_sgd(t) - theta_flow(t)||   (expected order 1),
* weak loss     e_L(t) = |E L_sgd(t) - L_flow(t)|             (expected order 1),

E the mean over the members that did not diverge (``members_used`` per learning rate; a diverged
member's arrays are its blow-up). The strong error uses each series' ``dist_to_flow`` (the flow at the
series' exact times k tau); the weak errors compare with the flow's recorded grid, so they use the
rows whose time k tau is a grid time (all rows when eta divides ``log.dt``). Each is reduced to its
largest value over a window of time, and its order in eta is the slope of log error against log eta
over the ``sgd.order_fit`` smallest learning rates with an error (the rule of GD's convergence order:
with fewer, no order; ``lrs_used`` records the rates fitted). The windows are the whole horizon and the
stretches between the flow's saddle escapes (its plateau exits): the error constant of a stretch,
C = error / eta^p with p the expected order, shows how much each escape amplifies the noise. The
confidence intervals (90%) come from the bootstrap over members (members drawn with replacement,
``BOOTSTRAP`` times, every statistic and slope recomputed). The Monte Carlo error of a mean over E
members is about sqrt(eta / E) times a constant, so the weak errors need E well above 1 / eta.
"""

from __future__ import annotations

import numpy as np

from dlnlab.ensemble_errors import error_curves, members_kept
from dlnlab.lab.results._summary import fit_order
from dlnlab.metrics import theta_rows
from dlnlab.rundir import SME_PREFIX, lr_series_name, series_name
from dlnlab.status import Status

__all__ = [
    "sgd_limit",
    "record_limit",
    "add_exit_spreads",
    "LIMIT_KEYS",
    "EXPECTED_ORDER",
    "BOOTSTRAP",
]

LIMIT_KEYS = ("strong", "weak_theta", "weak_loss")
EXPECTED_ORDER = {"strong": 0.5, "weak_theta": 1.0, "weak_loss": 1.0}
# random reshuffling: an epoch's noises cancel, so SGD is O(eta) from the flow path by path
RESHUFFLE_ORDER = {"strong": 1.0, "weak_theta": 1.0, "weak_loss": 1.0}
BOOTSTRAP = 200


def _window_max(t: np.ndarray, curves: np.ndarray, lo: float, hi: float) -> np.ndarray | None:
    """The largest value of each curve (R, T) over lo <= t < hi; None when no point is in the window
    or every value there is NaN."""
    sel = (t >= lo) & (t < hi)
    if not sel.any() or not np.isfinite(curves[:, sel]).any():
        return None
    return np.nanmax(curves[:, sel], axis=1)


def _window_stats(lrs: list, n_fit: int, mean: list, boot: list, order_expected: float) -> dict:
    """Order, its 90% bootstrap interval and the error constant of one kind over one window; ``mean``
    per lr the largest error of the mean curve (or None), ``boot`` per lr its R resampled values. The
    order follows GD's rule (:func:`fit_order`: the ``n_fit`` smallest rates with an error, else none);
    each resample is fitted over the same rates, and one that lacks a value at any of them is left out."""
    order, used, message = fit_order(lrs, mean, n_fit, "an error")
    pick = [lrs.index(lr) for lr in used]
    slopes = []
    if order is not None:
        for b in range(BOOTSTRAP):
            slope = fit_order(used, [boot[i][b] if boot[i] is not None else None for i in pick], n_fit)[0]
            if slope is not None:
                slopes.append(slope)
    ci = [float(np.quantile(slopes, 0.05)), float(np.quantile(slopes, 0.95))] if slopes else None
    logs = [np.log(mean[i]) - order_expected * np.log(lrs[i]) for i in pick]
    return {
        "max": [None if v is None else float(v) for v in mean],
        "max_ci90": [
            None if b is None else [float(np.quantile(b, 0.05)), float(np.quantile(b, 0.95))] for b in boot
        ],  # fmt: skip
        "order": order,
        "ci90": ci,
        "lrs_used": used,
        "message": message,
        "constant": float(np.exp(np.mean(logs))) if logs else None,
    }


def _stretches(windows: list, lrs: list, n_fit: int, mean: dict, boot: dict, expected: dict) -> list[dict]:
    """The stretches between the flow's escapes (``windows[1:]``; ``windows[0]`` is the horizon): per kind
    the window's stats (``mean[kind][w]``, ``boot[kind][w]`` as :func:`_window_stats` takes them) and
    ``growth``, its error constant over the stretch before's."""
    stretches: list[dict] = []
    for w, (lo, hi) in enumerate(windows[1:], start=1):
        entry = {"t_start": lo, "t_end": None if np.isinf(hi) else hi, "escapes_before": w - 1}
        for k in LIMIT_KEYS:
            entry[k] = _window_stats(lrs, n_fit, mean[k][w], boot[k][w], expected[k])
            before = stretches[-1][k]["constant"] if stretches else None
            now = entry[k]["constant"]
            entry[k]["growth"] = now / before if now is not None and before else None
        stretches.append(entry)
    return stretches


def _flow_escapes(state) -> list[tuple[float, int]]:
    """(t_exit, mode) of the flow's plateau exits in time order (detection only: no classification)."""
    from dlnlab.saddles import analyze_series

    plats = analyze_series(
        state.plan.problem, tuple(state.plan.cfg.model.dims), state.arrays["flow"], classify=False
    )
    return [(float(p.t_exit), int(p.exit_mode)) for p in plats if p.t_exit is not None]


def _usable(state) -> list[tuple[float, dict]]:
    """(lr, arrays) of the SGD series that ran (ok or unstable) and were compared with the flow."""
    out = []
    for lr in state.plan.lrs:
        entry, arrays = state.series.get(series_name(lr)), state.arrays.get(series_name(lr))
        if entry and arrays and entry["status"] in (Status.OK, Status.UNSTABLE) and "dist_to_flow" in arrays:
            out.append((lr, arrays))
    return out


def sgd_limit(state, seed: int = 0) -> dict | None:
    """The strong and weak errors of every SGD series, their orders and bootstrap intervals over the
    horizon and between the flow's saddle escapes; None unless the run is an ensemble with one shared
    init and the flow finished. ``curves`` {lr: {kind: (grid indices, values)}}: the mean curves (not
    in summary.json)."""
    plan, cfg = state.plan, state.plan.cfg
    flow = state.arrays.get("flow") or {}
    if not plan.seeds.members or cfg.ensemble.vary.name != "sgd" or np.ndim(flow.get("loss")) != 1:
        return None
    usable = _usable(state)
    if not usable:
        return None
    lrs = [lr for lr, _ in usable]
    n_fit = cfg.sgd.order_fit
    size = cfg.ensemble.size
    escapes = _flow_escapes(state)
    edges = [0.0, *(t for t, _ in escapes), np.inf]
    windows = [(0.0, np.inf), *zip(edges[:-1], edges[1:])]  # the horizon, then the stretches
    expected = RESHUFFLE_ORDER if cfg.sgd.sampling.name == "reshuffle" else EXPECTED_ORDER
    rng = np.random.default_rng(seed)
    mean = {k: [[None] * len(lrs) for _ in windows] for k in LIMIT_KEYS}
    boot = {k: [[None] * len(lrs) for _ in windows] for k in LIMIT_KEYS}
    out = {"members": size, "bootstrap": BOOTSTRAP, "lrs": lrs, "fit_lrs": sorted(lrs)[:n_fit], "curves": {}}
    # one resample of the members for every learning rate: member e shares its minibatch seed across
    # them (common random numbers), so their errors are correlated and resampled together
    counts = rng.multinomial(size, np.full(size, 1.0 / size), size=BOOTSTRAP) / size
    out["members_used"] = []
    for i, (lr, arrays) in enumerate(usable):
        keep = members_kept(state.series[series_name(lr)], size)  # a diverged member is its blow-up
        out["members_used"].append(int(keep.sum()))
        weights = np.vstack([np.full(size, 1.0 / size), counts])
        curves = error_curves(arrays, flow, weights, resamples_from=1, keep=keep)
        t, grid = np.asarray(arrays["t"], dtype=np.float64), np.asarray(arrays["grid_index"])
        out["curves"][lr] = {k: (grid[rows], values[0]) for k, (rows, values) in curves.items()}
        for k, (rows, values) in curves.items():
            for w, (lo, hi) in enumerate(windows):
                got = _window_max(t[rows], values, lo, hi)
                if got is not None:
                    mean[k][w][i], boot[k][w][i] = float(got[0]), got[1:]
    for k in LIMIT_KEYS:
        out[k] = _window_stats(lrs, n_fit, mean[k][0], boot[k][0], expected[k])
    stretches = _stretches(windows, lrs, n_fit, mean, boot, expected)
    out["escapes"] = {
        "t_exit": [t for t, _ in escapes],
        "exit_mode": [m for _, m in escapes],
        "expected_order": expected,
        "stretches": stretches,
    }
    return out


def _ratio_stats(r: np.ndarray) -> dict | None:
    """median and 10-90% range of the finite ratios of a curve."""
    r = r[np.isfinite(r)]
    if not r.size:
        return None
    return {
        "median": float(np.median(r)),
        "p10": float(np.quantile(r, 0.1)),
        "p90": float(np.quantile(r, 0.9)),
    }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den where both are finite and den > 0, NaN elsewhere."""
    ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
    return np.where(ok, num / np.where(ok, den, 1.0), np.nan)


def _var_theta_ratio(sgd: dict, sme: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(grid indices, SGD's total variance of theta over the SME's) at the grid points after t = 0 where
    both kept theta (every point, or every k-th with ``theta_sub``), or None."""
    (ra, a), (rb, b) = theta_rows(sgd), theta_rows(sme)
    if a is None or b is None or a.shape[-1] != b.shape[-1]:
        return None
    ga, gb = np.asarray(sgd["grid_index"])[ra], np.asarray(sme["grid_index"])[rb]
    common = np.intersect1d(ga, gb)
    common = common[common > 0]
    ia, ib = np.searchsorted(ga, common), np.searchsorted(gb, common)
    va = np.var(a[:, ia], axis=0, ddof=1).sum(axis=-1)
    vb = np.var(b[:, ib], axis=0, ddof=1).sum(axis=-1)
    return common, _ratio(va, vb)


def sme_spread(state) -> tuple[dict, dict]:
    """The SGD ensemble's spread over the SME ensemble's along the trajectory, per learning rate: Var L(t)
    and the total variance of theta(t) (its covariance's trace), as ratios at the grid points after
    t = 0. Returns ({lr: {kind: median and 10-90 % range}} for the summary, {lr: {"sme/var_<kind>_ratio":
    (grid indices, ratios)}} the curves for the loggers)."""
    stats, curves = {}, {}
    for lr in state.plan.lrs:
        sgd, sme = state.arrays.get(series_name(lr)), state.arrays.get(lr_series_name(SME_PREFIX, lr))
        if not sgd or not sme or "loss" not in sgd or "loss" not in sme:
            continue
        n = min(np.shape(sgd["loss"])[1], np.shape(sme["loss"])[1])
        grid = np.asarray(sgd["grid_index"])[1:n]
        var_loss = _ratio(
            np.var(sgd["loss"][:, 1:n], axis=0, ddof=1), np.var(sme["loss"][:, 1:n], axis=0, ddof=1)
        )
        found = {"var_loss": (grid, var_loss)}
        theta = _var_theta_ratio(sgd, sme)
        if theta is not None:
            found["var_theta"] = theta
        # keys as series names write lr
        stats[repr(float(lr))] = {k: _ratio_stats(r) for k, (_, r) in found.items()}
        curves[lr] = {f"sme/{k}_ratio": (g, r) for k, (g, r) in found.items()}
    return stats, curves


def record_limit(state, ctx) -> None:
    """The run's strong and weak errors into its state (summary.json: ``sgd_limit``) and its loggers;
    with sgd.sme, the SGD ensemble's spread against the SME ensemble's (``sgd_limit.sme``)."""
    from dlnlab.lab.results._report import log_limit

    state.limit = sgd_limit(state, seed=state.plan.seeds.seed)
    if state.limit is not None:
        if state.plan.cfg.sgd.sme:
            size = state.plan.cfg.ensemble.size
            stats, curves = sme_spread(state)
            state.limit["sme"] = {
                "spread_ratio": stats,
                "sampling_error": 2.0 / np.sqrt(max(size - 1, 1)),  # of a variance ratio, normal data
            }
            for lr, c in curves.items():
                state.limit["curves"].setdefault(lr, {}).update(c)
        log_limit(ctx, state.limit)


def add_exit_spreads(state) -> None:
    """After the saddle analysis: per learning rate and mode, the spread (std) of the plateau exit times
    of the SGD ensemble over the SME ensemble's (``sgd_limit.sme.exit_spread``), with the sampling error
    of a ratio of two standard deviations, sqrt(1 / (2 (n1 - 1)) + 1 / (2 (n2 - 1))) for normal data."""
    if state.limit is None or "sme" not in state.limit:
        return
    out = {}
    for lr in state.plan.lrs:
        get = lambda name: ((state.series.get(name) or {}).get("ensemble") or {}).get("plateau_exits") or []  # noqa: E731
        sme = {e["mode"]: e.get("t_exit") for e in get(lr_series_name(SME_PREFIX, lr))}
        rows = []
        for e in get(series_name(lr)):
            a, b = e.get("t_exit"), sme.get(e["mode"])
            if not a or not b or a["n"] < 2 or b["n"] < 2 or not b["std"]:
                continue
            rows.append({
                "mode": e["mode"], "sgd_mean": a["mean"], "sme_mean": b["mean"], "sgd_std": a["std"],
                "sme_std": b["std"], "n_sgd": a["n"], "n_sme": b["n"], "std_ratio": a["std"] / b["std"],
                "sampling_error": float(np.sqrt(0.5 / (a["n"] - 1) + 0.5 / (b["n"] - 1))),
            })  # fmt: skip
        out[repr(float(lr))] = rows
    state.limit["sme"]["exit_spread"] = out
