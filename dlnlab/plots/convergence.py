"""The figures of how SGD approaches the flow: distance to the flow against time, and the convergence order."""

from __future__ import annotations

import math
import textwrap

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from dlnlab.plots._common import (
    Markers,
    bounded,
    colors_of,
    log_limits,
    no_data,
    plateau_handle,
    shade_plateaus,
)
from dlnlab.plots._panels import legend, line_kw, lr_axis, time_axis
from dlnlab.plots._style import new_figure
from dlnlab.rundir import RunData, Series
from dlnlab.status import USABLE

__all__ = ["fig_dist_to_flow", "fig_convergence_order"]


def fig_dist_to_flow(run: RunData) -> Figure:
    fig = new_figure()
    ax = fig.add_subplot()
    colors, keep, marks = colors_of(run), [], Markers()
    drawn = False
    for s in run.sgd:
        y = s.get("dist_to_flow")
        if y is None:
            continue
        t = s.t
        ok = np.isfinite(y) & (y > 0)
        ax.plot(t[ok], y[ok], **line_kw(s, colors))
        drawn = drawn or bool(ok.any())
        if bounded(s):
            keep.append(y[ok])
        marks.add(s, t, y, colors[s.name])
    time_axis(ax, run)
    if not drawn:
        no_data(ax, "no SGD series in this run" if not run.sgd else "no distance to the flow recorded")
        return fig
    lim = log_limits(keep or [np.array([1e-3, 1.0])], decades=10)
    ax.set_yscale("log")
    if lim:
        ax.set_ylim(*lim)
    extra = [plateau_handle()] if shade_plateaus(ax, run) else []
    if marks.draw(ax):
        extra.append(marks.handle())
    ax.set_ylabel("$\\|A_\\eta(t) - A_{\\mathrm{flow}}(t)\\|_F$")
    ax.set_title("Distance of each GD/SGD series to the flow")
    legend(fig, run, colors, names=[s.name for s in run.sgd], extra=extra)
    return fig


def _max_dist(s: Series) -> float | None:
    v = s.entry.get("max_dist_to_flow")
    if isinstance(v, (int, float)) and math.isfinite(v) and v > 0:
        return float(v)
    d = s.get("dist_to_flow")
    if d is None:
        return None
    d = d[np.isfinite(d)]
    return float(d.max()) if len(d) and d.max() > 0 else None


def _modified_points(ax, run: RunData, pts, colors) -> list:
    """flow.modified: each series' largest distance to GD's modified flow (open squares) and its fit."""
    mod = [(s, s.entry.get("max_dist_to_modified_flow")) for s, _ in pts]
    mod = [(s, d) for s, d in mod if isinstance(d, (int, float)) and math.isfinite(d) and d > 0]
    if not mod:
        return []
    for s, d in mod:
        ax.plot([s.lr], [d], "s", ms=5, mfc="none", mec=colors[s.name], mew=1.1, zorder=5)
    extra = [Line2D([], [], marker="s", mfc="none", mec="0.3", ls="none", label="to GD's modified flow")]
    order = run.summary.get("convergence_order_modified")
    used = (run.summary.get("convergence_order_modified_detail") or {}).get("lrs_used") or []
    fit = [(s.lr, d) for s, d in mod if any(math.isclose(s.lr, u, rel_tol=1e-9) for u in used)]
    if isinstance(order, (int, float)) and math.isfinite(order) and len(fit) >= 2:
        x = np.log([p[0] for p in fit])
        c = float(np.mean(np.log([p[1] for p in fit]) - order * x))
        xs = np.exp(np.linspace(x.min() - 0.25, x.max() + 0.25, 20))
        ax.plot(xs, np.exp(c) * xs**order, color="0.15", lw=1.0, ls="--", zorder=3)
        extra.append(Line2D([], [], color="0.15", lw=1.0, ls="--", label=f"fit: slope {order:.3f}"))
    return extra


def _fit_and_slope_one(ax, run: RunData, detail: dict, pts: list, ok_pts: list) -> list[Line2D]:
    """The fitted power law through the learning rates the order used (or why there is none) and a
    slope-1 guide through the smallest learning rate; their legend entries."""
    order = run.summary.get("convergence_order")
    used = [lr for lr in (detail.get("lrs_used") or []) if isinstance(lr, (int, float))]
    extra = []
    # every rate the order used, an unstable one included (the summary fits it: USABLE); the line drawn
    # through the ok ones alone had the right slope but neither the fit's height nor its range
    fit_pts = [(s.lr, d) for s, d in pts if any(math.isclose(s.lr, u, rel_tol=1e-9) for u in used)]
    if isinstance(order, (int, float)) and math.isfinite(order) and len(fit_pts) >= 2:
        x = np.log([p[0] for p in fit_pts])
        c = float(np.mean(np.log([p[1] for p in fit_pts]) - order * x))
        xs = np.exp(np.linspace(x.min() - 0.25, x.max() + 0.25, 20))
        ax.plot(xs, np.exp(c) * xs**order, color="0.15", lw=1.0, zorder=3)
        extra.append(Line2D([], [], color="0.15", lw=1.0, label=f"fit: slope {order:.3f}"))
    elif detail.get("message"):
        msg = textwrap.fill(f"no fit: {detail['message']}", 48)
        ax.text(0.03, 0.97, msg, transform=ax.transAxes, va="top", fontsize=6.5, color="0.3")
    if ok_pts:  # slope-1 guide through the smallest learning rate
        lr0, d0 = min(ok_pts)
        xs = np.exp(np.linspace(math.log(lr0) - 0.25, math.log(max(s.lr for s, _ in pts)) + 0.25, 20))
        ax.plot(xs, d0 * xs / lr0, color="0.55", ls=":", lw=1.0, zorder=2)
        extra.append(Line2D([], [], color="0.55", ls=":", lw=1.0, label="slope 1"))
    return extra


def _pairwise_slopes(ax, detail: dict, usable_pts: list) -> None:
    """Each pairwise slope written between its two learning rates' points (those of the summary's
    pairwise slopes: ok or unstable series)."""
    for p in detail.get("pairwise") or []:
        try:
            (a, b), o = p["lrs"], float(p["order"])
        except (KeyError, TypeError, ValueError):
            continue
        da = dict(usable_pts).get(a)
        db = dict(usable_pts).get(b)
        if da and db and math.isfinite(o):
            xm, ym = math.sqrt(a * b), math.sqrt(da * db)
            ax.annotate(
                f"{o:.2f}", (xm, ym), xytext=(4, -9), textcoords="offset points", fontsize=6, color="0.3"
            )


def fig_convergence_order(run: RunData) -> Figure:
    fig = new_figure()
    ax = fig.add_subplot()
    colors = colors_of(run)
    pts = [(s, _max_dist(s)) for s in run.sgd]
    pts = [(s, d) for s, d in pts if d is not None]
    if not pts:
        no_data(ax, "no SGD series in this run" if not run.sgd else "no distance to the flow recorded")
        return fig
    ok_pts = [(s.lr, d) for s, d in pts if not s.failed]
    for s, d in pts:
        if s.failed:
            ax.plot(
                [s.lr], [d], marker="X", ms=7, mfc=colors[s.name], mec="white", mew=0.6, ls="none", zorder=5
            )
        else:
            ax.plot([s.lr], [d], "o", ms=5.5, color=colors[s.name], mec="white", mew=0.5, zorder=5)
    lr_axis(ax, [s.lr for s, _ in pts])
    ds = [d for _, d in pts]
    if math.log10(max(ds) / min(ds)) < 2.5:  # short range: label 1, 2, 5 x 10^k plainly
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
    detail = run.summary.get("convergence_order_detail") or {}
    extra = _fit_and_slope_one(ax, run, detail, pts, ok_pts)
    _pairwise_slopes(ax, detail, [(s.lr, d) for s, d in pts if s.status in USABLE])
    extra += _modified_points(ax, run, pts, colors)
    handles = [
        Line2D(
            [],
            [],
            marker="X" if s.failed else "o",
            ms=6,
            ls="none",
            color=colors[s.name],
            mec="white",
            label=s.label,
        )
        for s, _ in pts
    ]
    legend(fig, run, colors, handles=handles, extra=extra)
    ax.set_xlabel("learning rate $\\eta$")
    ax.set_ylabel("$\\max_t \\|A_\\eta(t) - A_{\\mathrm{flow}}(t)\\|_F$")
    ax.set_title(
        "Largest distance to the flow against $\\eta$"
        + (
            "\n(circles) and to GD's modified flow (squares)"
            if run.summary.get("convergence_order_modified_detail")
            else ""
        )
    )
    if detail.get("pairwise"):
        ax.text(
            0.98,
            0.03,
            "numbers: pairwise slopes",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=6,
            color="0.4",
        )
    ax.margins(x=0.15, y=0.2)
    return fig
