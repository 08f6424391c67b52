"""Figures of an ensemble run (``ensemble.size`` > 1): each series' members as a band around their median.

The single-run figures draw member 0 of each series; these two show the whole ensemble: the loss, and
the distance of each member to its own flow. Per series: the members' median (line), interquartile
range (band) and range (dashed), at every grid point over the members that are finite there.
"""

from __future__ import annotations

import warnings

import numpy as np
from matplotlib.figure import Figure

from dlnlab.ensemble_errors import order_undetermined
from dlnlab.plots._common import colors_of, draw_order, level_lines, log_limits, no_data
from dlnlab.plots._panels import bars_floor, legend, lr_axis, time_axis
from dlnlab.plots._style import COLUMN, new_figure
from dlnlab.rundir import SME_PREFIX, RunData, format_lr, lr_series_name, read_npz

__all__ = [
    "ENSEMBLE_FIGURES",
    "ensemble_figures",
    "fig_ensemble_loss",
    "fig_ensemble_dist_to_flow",
    "fig_sgd_limit",
    "fig_sme_spread",
]


def _bands(ax, t: np.ndarray, y: np.ndarray, color, label: str, keep: list) -> None:
    """Median line, interquartile and full-range bands of y (E, T) against t (T,), positive values."""
    y = np.where(np.isfinite(y) & (y > 0), y, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (a diverged ensemble)
        lo, q1, med, q3, hi = np.nanquantile(y, [0.0, 0.25, 0.5, 0.75, 1.0], axis=0)
    ok = np.isfinite(med)
    ax.fill_between(t[ok], q1[ok], q3[ok], color=color, alpha=0.22, lw=0)
    for edge in (lo, hi):
        ax.plot(t[ok], edge[ok], color=color, lw=0.5, alpha=0.7, ls=(0, (3, 2)))
    ax.plot(t[ok], med[ok], color=color, lw=1.1, label=label)
    keep += [lo[ok], hi[ok]]


def _ensemble_panel(run: RunData, key: str, sgd_only: bool, title: str, ylabel: str) -> Figure:
    fig = new_figure()
    ax = fig.add_subplot()
    colors, keep, drawn = colors_of(run), [], []
    size = None
    for s in draw_order(run):
        if s.members is None or key not in s.members or (sgd_only and s.is_flow):
            continue
        y = np.asarray(s.members[key], dtype=np.float64)
        size = y.shape[0]
        n = min(y.shape[1], len(s.members["t"]))
        _bands(ax, np.asarray(s.members["t"][:n], dtype=np.float64), y[:, :n], colors[s.name], s.label, keep)
        drawn.append(s.name)
    time_axis(ax, run)
    lim = log_limits(keep, decades=12)
    if not drawn or lim is None:
        no_data(ax, f"no ensemble {key} recorded")
        return fig
    ax.set_yscale("log")
    ax.set_ylim(*lim)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}, {size} members: median (line),\nquartiles (band), range (dashed)")
    return fig, ax, colors, drawn


def fig_ensemble_loss(run: RunData) -> Figure:
    out = _ensemble_panel(run, "loss", False, "Loss", "loss $L$")
    if isinstance(out, Figure):
        return out
    fig, ax, colors, drawn = out
    level_lines(ax, run.critical_values, log=True)
    legend(fig, run, colors, names=drawn)
    return fig


def fig_ensemble_dist_to_flow(run: RunData) -> Figure:
    out = _ensemble_panel(
        run, "dist_to_flow", True, "Distance to the flow", r"$\|\theta_{SGD} - \theta_{flow}\|$"
    )
    if isinstance(out, Figure):
        return out
    fig, ax, colors, drawn = out
    legend(fig, run, colors, names=drawn)
    return fig


LIMIT_STYLE = {  # key: (label, marker, expected order)
    "strong": ("strong: max$_t$ E$\\|\\theta - \\theta_{flow}\\|$", "o", 0.5),
    "weak_theta": ("weak: max$_t \\|$E$\\theta - \\theta_{flow}\\|$", "s", 1.0),
    "weak_loss": ("weak: max$_t |$E$L - L_{flow}|$", "^", 1.0),
}


def _orders_axes(ax, lim: dict) -> None:
    """The largest strong and weak errors against eta (90% bootstrap bars) with their fitted slopes."""
    lrs = np.asarray(lim["lrs"], dtype=np.float64)
    for i, (key, (label, marker, _)) in enumerate(LIMIT_STYLE.items()):
        vals = np.asarray([np.nan if v is None else v for v in lim[key]["max"]], dtype=np.float64)
        ok = np.isfinite(vals) & (vals > 0)
        color = f"C{i}"
        order, ci = lim[key].get("order"), lim[key].get("ci90") or [np.nan, np.nan]
        text = f"{label}: slope {order:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if order is not None else label
        if order_undetermined(order, lim[key].get("ci90")):  # no slope drawn: the interval does not fix one
            text = f"{label}: slope undetermined at {lim['members']} members [{ci[0]:.2f}, {ci[1]:.2f}]"
            order = None
        bars = lim[key].get("max_ci90") or [None] * len(vals)
        err = np.asarray([[v - b[0], b[1] - v] if b else [0.0, 0.0] for v, b in zip(vals, bars)]).T
        ax.errorbar(lrs[ok], vals[ok], yerr=np.clip(err[:, ok], 0, None), fmt=marker, color=color, ms=4,
                    capsize=2, lw=0.8, label=text)  # fmt: skip
        fit = set(lim[key].get("lrs_used") or lim.get("fit_lrs") or [])  # an older summary: no lrs_used
        pts = [(a, v) for a, v, o in zip(lrs, vals, ok) if o and a in fit]
        if order is not None and len(pts) >= 2:
            x = np.log([p[0] for p in pts])
            c = float(np.mean(np.log([p[1] for p in pts]) - order * x))
            xs = np.exp(np.linspace(x.min() - 0.2, x.max() + 0.2, 10))
            ax.plot(xs, np.exp(c) * xs**order, color=color, lw=1.0)
    lr_axis(ax, lrs)
    bars_floor(ax, [v for key in LIMIT_STYLE for v in lim[key]["max"]])  # bars from 0 run off the bottom
    ax.set_xlabel("learning rate $\\eta$")
    ax.set_ylabel("largest error over the horizon")
    ax.set_title(
        f"SGD against the flow, {lim['members']} members, one init\n(expected: strong order 1/2, weak 1)",
        fontsize=8,
    )
    ax.legend(fontsize=5.5, loc="lower right")


def draw_error_constants(ax, run: RunData, escapes: dict, lrs=None) -> None:
    """The error constants against time, C(t) = e(t) / eta^p (p the expected order) per learning rate:
    the curves collapse where the order holds and rise where the noise is amplified (saddle escapes,
    dotted). As the summary's ``sgd_limit`` (``lrs``: its learning rates, the series that ran to their
    end; None: every series): the means over the members that did not diverge."""
    from dlnlab.ensemble_errors import error_curves, members_kept

    flow = run.flow.arrays if run.flow is not None else None
    series = [
        s for s in run.sgd
        if s.members is not None and "dist_to_flow" in s.members and (lrs is None or s.lr in lrs)
    ]  # fmt: skip
    if flow is None or not series:
        no_data(ax, "no ensemble series")
        return
    colors, keep = colors_of(run), []
    for s in series:
        e = np.shape(s.members["loss"])[0]
        curves = error_curves(s.members, flow, np.full((1, e), 1.0 / e), keep=members_kept(s.entry, e))
        t = np.asarray(s.members["t"])
        for key, ls in (("strong", "-"), ("weak_theta", "--")):
            if key in curves:
                rows, values = curves[key]
                p = escapes.get("expected_order", {}).get(key, 1.0)
                # the top panel's weak (loss) is not drawn here
                kind = "strong" if key == "strong" else "weak ($\\theta$)"
                label = f"{kind} / $\\eta^{{{p:g}}}$, $\\eta$ = {format_lr(s.lr)}"
                c = values[0] / s.lr**p
                # at t = 0 every member is at the init: no error; a debiased weak error of 0 is below what
                # the members resolve (dlnlab/ensemble_errors.py): gaps, not drops to the axis
                ok = (t[rows] > 0) & (c > 0)
                ax.plot(t[rows], np.where(ok, c, np.nan), ls, color=colors[s.name], lw=0.9, label=label)
                keep.append(c[ok])
    exits = escapes.get("t_exit") or []
    for t_exit in exits:
        ax.axvline(t_exit, color="0.5", ls=":", lw=0.8)
    ax.set_yscale("log")
    lim = log_limits(keep, decades=5)
    if lim is not None:
        ax.set_ylim(*lim)
    time_axis(ax, run)
    ax.set_ylabel("error constant  e(t) / $\\eta^p$")
    ax.set_title("the constants in time" + (" (the flow's escapes dotted)" if exits else ""), fontsize=8)
    ax.legend(fontsize=5, ncol=2)


def fig_sgd_limit(run: RunData) -> Figure:
    """ensemble.vary=sgd: the strong and weak errors against eta, with their fitted orders (90% bootstrap);
    below, the error constants against time, through the flow's saddle escapes (stacked, so that the
    figure stays readable at TensorBoard's image-card width)."""
    lim = run.summary.get("sgd_limit") or {}
    escapes = lim.get("escapes") or {}
    two = run.flow is not None
    fig = new_figure((COLUMN[0], 2 * COLUMN[1])) if two else new_figure()
    axes = fig.subplots(2, 1) if two else [fig.add_subplot()]
    _orders_axes(axes[0], lim)
    if two:
        draw_error_constants(axes[1], run, escapes, lim.get("lrs"))
    return fig


def _variance_ratio(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """Var over the members (axis 0) of a over that of b, per grid point (NaN where b's is 0)."""
    if a is None or b is None:
        return None
    n = min(a.shape[1], b.shape[1])
    va = np.var(np.asarray(a[:, :n], dtype=np.float64), axis=0, ddof=1)
    vb = np.var(np.asarray(b[:, :n], dtype=np.float64), axis=0, ddof=1)
    if va.ndim > 1:  # theta: the total variance, the covariance's trace
        va, vb = va.reshape(n, -1).sum(axis=1), vb.reshape(n, -1).sum(axis=1)
    ok = np.isfinite(va) & np.isfinite(vb) & (vb > 0)
    return np.where(ok, va / np.where(ok, vb, 1.0), np.nan)


def fig_sme_spread(run: RunData) -> Figure:
    """sgd.sme: the SGD ensemble's spread over the SME ensemble's along the trajectory, per learning rate:
    Var L(t) (solid) and the total variance of theta(t) (dashed), against 1 (the SME exact) with the band
    of a variance ratio's sampling error."""
    fig = new_figure()
    ax = fig.add_subplot()
    sme = (run.summary.get("sgd_limit") or {}).get("sme") or {}
    colors, drawn = colors_of(run), []
    for s in run.sgd:
        other = read_npz(run.run_dir / "series" / f"{lr_series_name(SME_PREFIX, s.lr)}.npz")
        if s.members is None or not other:
            continue
        t = np.asarray(s.members["t"], dtype=np.float64)
        for key, ls in (("loss", "-"), ("theta", "--")):
            r = _variance_ratio(s.members.get(key), other.get(key))
            if r is not None:
                ok = (t[: len(r)] > 0) & np.isfinite(r)
                ax.plot(t[: len(r)][ok], r[ok], ls, color=colors[s.name], lw=0.9)
        drawn.append(s.name)
    if not drawn:
        no_data(ax, "no SME ensemble recorded")
        return fig
    err = sme.get("sampling_error")
    if err:
        ax.axhspan(1 - err, 1 + err, color="0.85", zorder=0, lw=0)
    ax.axhline(1.0, color="0.3", lw=0.8, zorder=1)
    time_axis(ax, run)
    ax.set_ylabel("SGD's variance / the SME's")
    ax.set_title(
        "SGD's spread over the SME's: Var L (solid),\nVar theta (dashed); band: sampling error", fontsize=8
    )
    legend(fig, run, colors, names=drawn)
    return fig


def ensemble_figures(run: RunData) -> dict:
    """The ensemble's figures this run has data for."""
    figures = {"ensemble_loss": fig_ensemble_loss, "ensemble_dist_to_flow": fig_ensemble_dist_to_flow}
    lim = run.summary.get("sgd_limit")
    if lim:
        figures["sgd_limit"] = fig_sgd_limit
        if lim.get("sme"):
            figures["sme_spread"] = fig_sme_spread
    return figures


ENSEMBLE_FIGURES = {
    "ensemble_loss": fig_ensemble_loss,
    "ensemble_dist_to_flow": fig_ensemble_dist_to_flow,
    "sgd_limit": fig_sgd_limit,
    "sme_spread": fig_sme_spread,
}
