"""The figures of one run directory, made from its files alone (problem.npz, series/*.npz, summary.json).

``make_run_figures(run_dir)`` writes ``figures/<name>.png`` for every name in :data:`FIGURES` and hands
each figure to ``on_figure`` (the lab sends them to the logger: TensorBoard tags ``figures/<name>`` in
the ``flow`` run). ``python scripts/plot.py <run dir>`` calls it to remake them later.
"""

from __future__ import annotations

import math
import re
import sys
import textwrap
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from dlnlab._util import warn
from dlnlab.lab.rundir import RunData, Series, atomic_path, format_lr, load_run
from dlnlab.plots._common import (
    Markers,
    bounded,
    colors_of,
    draw_order,
    level_lines,
    lin_limits,
    log_limits,
    no_data,
    plateau_handle,
    reference_modes,
    reference_u0,
    shade_plateaus,
    stop_handle,
)
from dlnlab.plots._style import COLUMN, TIME_LABEL, new_figure, style

__all__ = ["FIGURES", "make_run_figures", "build_run_figures"]

# SGD lines are wide and faded behind the thin black flow, so that "SGD converges to the flow" reads
# as the coloured bands closing in on the black line.
SGD_KW = {"lw": 1.7, "alpha": 0.75, "zorder": 2, "solid_capstyle": "butt"}
FLOW_KW = {"lw": 0.9, "zorder": 4}


def _row_max(y: np.ndarray) -> np.ndarray:
    """Max over the columns of each row; NaN for a row with any non-finite entry (or no columns)."""
    if y.ndim != 2 or y.shape[1] == 0:
        return np.full(len(y), np.nan)
    fin = np.isfinite(y).all(axis=1)
    return np.where(fin, np.where(np.isfinite(y), y, -np.inf).max(axis=1), np.nan)


def _line_kw(s: Series, colors: dict) -> dict:
    kw = dict(FLOW_KW if s.is_flow else SGD_KW)
    kw["color"] = colors[s.name]
    return kw


def _time_axis(ax, run: RunData) -> None:
    t_max = (run.summary.get("grid") or {}).get("t_max")
    if not isinstance(t_max, (int, float)):
        ts = [s.t[-1] for s in run.series.values() if s.n]
        t_max = max(ts) if ts else 1.0
    ax.set_xlim(0.0, float(t_max) if t_max > 0 else 1.0)
    ax.set_xlabel(TIME_LABEL)


def _legend(fig, run: RunData, colors: dict, names: list[str] | None = None, extra=(), handles=None) -> None:
    """One legend below the axes (outside: it never hides a curve), naming every series."""
    if handles is None:
        handles = []
        for s in run.series.values():
            if names is not None and s.name not in names:
                continue
            lk = _line_kw(s, colors)
            handles.append(
                Line2D([], [], color=lk["color"], lw=lk["lw"], alpha=lk.get("alpha", 1.0), label=s.label)
            )
    handles = list(handles) + list(extra)
    if not handles:
        return
    longest = max(len(re.sub(r"\\[a-zA-Z]+|[$\\{}^_]", "", h.get_label())) for h in handles)
    width = fig.get_figwidth() - 0.1
    ncols = max(1, min(4, int(width // (0.33 + 0.047 * longest))))  # columns that fit the figure
    fig.legend(handles=handles, loc="outside lower center", ncols=min(ncols, len(handles)), frameon=False)


# ----------------------------------------------------------------------------------------------
# one function per figure: (run) -> Figure
def _log_panel(run: RunData, values, decades: int, empty: str) -> tuple[Figure, Axes, dict, list | None]:
    """One positive quantity per series (``values(series) -> (T,) or None``) on a log axis against time.

    Draws every series (diverged ones up to their stop, marked), sets the limits from the bounded
    ones and shades the flow's plateaus. Returns (fig, ax, colors, extra legend handles), or None for
    the handles when nothing finite was recorded (the axis then says ``empty``).
    """
    fig = new_figure()
    ax = fig.add_subplot()
    colors, marks, keep = colors_of(run), Markers(), []
    for s in draw_order(run):
        y = values(s)
        if y is None:
            continue
        ok = np.isfinite(y) & (y > 0)
        ax.plot(s.t[ok], y[ok], **_line_kw(s, colors))
        if bounded(s):
            keep.append(y[ok])
        marks.add(s, s.t, y, colors[s.name])
    _time_axis(ax, run)
    lim = log_limits(keep, decades=decades)
    if lim is None:
        no_data(ax, empty)
        return fig, ax, colors, None
    ax.set_yscale("log")
    ax.set_ylim(*lim)
    extra = [plateau_handle()] if shade_plateaus(ax, run) else []
    if marks.draw(ax):
        extra.append(stop_handle())
    return fig, ax, colors, extra


def fig_loss(run: RunData) -> Figure:
    fig, ax, colors, extra = _log_panel(run, lambda s: s.get("loss"), 10, "no finite loss recorded")
    if extra is None:
        return fig
    level_lines(ax, run.critical_values, log=True)
    ax.set_ylabel("loss $L$")
    ax.set_title("Loss of the flow and of each GD/SGD series")
    _legend(fig, run, colors, extra=extra)
    return fig


def fig_sharpness(run: RunData) -> Figure:
    fig = new_figure()
    ax = fig.add_subplot()
    colors, keep, marks = colors_of(run), [], Markers()
    drawn = False
    for s in draw_order(run):
        y = s.get("sharpness")
        if y is None:
            continue
        t = s.t
        ok = np.isfinite(y) & (y > 0)
        if ok.any():
            kw = _line_kw(s, colors)
            kw.update(marker="o", ms=2.2 if s.is_flow else 2.8, mew=0)
            ax.plot(t[ok], y[ok], **kw)
            drawn = True
            if bounded(s):
                keep.append(y[ok])
            marks.add(s, t[ok], y[ok], colors[s.name])
    if not drawn:
        no_data(ax, "no curvature recorded\n(log.analysis_points = 0)")
        return fig
    extra = []
    for s in run.sgd:
        ax.axhline(2.0 / s.lr, color=colors[s.name], ls=(0, (5, 2.5)), lw=1.0, zorder=1)
        keep.append(np.array([2.0 / s.lr]))
    if run.sgd:
        extra.append(Line2D([], [], color="0.35", ls=(0, (5, 2.5)), lw=1.0, label="$2/\\eta$ (same colour)"))
    thr = run.summary.get("gd_stability_threshold")
    if isinstance(thr, (int, float)) and thr > 0:
        ax.axhline(2.0 / thr, color="0.5", ls=":", lw=1.0, zorder=1)
        keep.append(np.array([2.0 / thr]))
        extra.append(
            Line2D(
                [],
                [],
                color="0.5",
                ls=":",
                lw=1.0,
                label="balanced minimum",
            )
        )
    _time_axis(ax, run)
    lim = log_limits(keep)
    ax.set_yscale("log")
    if lim is not None:
        ax.set_ylim(lim[0], lim[1] * 1.6)
    if marks.draw(ax):
        extra.append(stop_handle())
    shade_plateaus(ax, run)
    ax.set_ylabel("sharpness $\\lambda_{\\max}(\\nabla^2 L)$")
    ax.set_title("Sharpness against the GD stability limit $2/\\eta$")
    _legend(fig, run, colors, extra=extra)
    return fig


def _fig_spectrum(run: RunData, key: str, ylabel: str, title: str, reference: bool = False) -> Figure:
    fig = new_figure()
    ax = fig.add_subplot()
    colors, keep, marks = colors_of(run), [], Markers()
    for s in draw_order(run):
        y = s.get(key)
        if y is None or y.ndim != 2:
            continue
        t = s.t
        kw = _line_kw(s, colors)
        for k in range(y.shape[1]):
            ok = np.isfinite(y[:, k])
            ax.plot(t[ok], y[ok, k], **kw)
        if bounded(s):
            keep.append(y)
        marks.add(s, t, _row_max(np.abs(y)), colors[s.name])
    lim = lin_limits(keep + [run.modes], zero=True)
    _time_axis(ax, run)
    if lim is None:
        no_data(ax, f"no {key} recorded")
        return fig
    ax.set_ylim(*lim)
    extra = []
    for m in run.modes:
        ax.axhline(m, color="0.5", ls=":", lw=0.8, zorder=1)
    if len(run.modes):
        extra.append(Line2D([], [], color="0.5", ls=":", lw=0.8, label="data modes $m_k$"))
    if reference and run.flow is not None and run.flow.n:
        tt = np.linspace(0.0, ax.get_xlim()[1], 600)
        refs = reference_modes(run, tt)
        if refs:
            for r in refs:
                ax.plot(tt, r["u"], color="0.35", ls=(0, (2.5, 1.5)), lw=0.9, zorder=3)
                if r["t_half"] is not None and r["t_half"] <= tt[-1]:
                    ax.plot(
                        [r["t_half"]], [r["s"] / 2], "o", mfc="white", mec="0.2", ms=3.5, mew=0.8, zorder=5
                    )
            _, desc = reference_u0(run)
            extra.append(
                Line2D([], [], color="0.35", ls=(0, (2.5, 1.5)), lw=0.9, label=f"aligned ref. ({desc})")
            )
            if any(r["t_half"] is not None for r in refs):
                extra.append(
                    Line2D(
                        [],
                        [],
                        marker="o",
                        mfc="white",
                        mec="0.2",
                        ms=3.5,
                        ls="none",
                        label="ref. escape $t_{1/2}$",
                    )
                )
    if shade_plateaus(ax, run):
        extra.append(plateau_handle())
    if marks.draw(ax):
        extra.append(stop_handle())
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _legend(fig, run, colors, extra=extra)
    return fig


def fig_sv_P(run: RunData) -> Figure:
    return _fig_spectrum(
        run,
        "sv",
        "singular values $\\sigma_i(P)$",
        "Singular values of $P = W_h\\cdots W_1$",
    )


def fig_mode_strength(run: RunData) -> Figure:
    return _fig_spectrum(
        run,
        "mode_strength",
        "mode strength $u_k^\\top P\\, v_k$",
        "Mode strengths and the aligned reference solution",
        reference=True,
    )


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
        ax.plot(t[ok], y[ok], **_line_kw(s, colors))
        drawn = drawn or bool(ok.any())
        if bounded(s):
            keep.append(y[ok])
        marks.add(s, t, y, colors[s.name])
    _time_axis(ax, run)
    if not drawn:
        no_data(ax, "no SGD series in this run" if not run.sgd else "no distance to the flow recorded")
        return fig
    lim = log_limits(keep or [np.array([1e-3, 1.0])], decades=10)
    ax.set_yscale("log")
    if lim:
        ax.set_ylim(*lim)
    extra = [plateau_handle()] if shade_plateaus(ax, run) else []
    if marks.draw(ax):
        extra.append(stop_handle())
    ax.set_ylabel("$\\|A_\\eta(t) - A_{\\mathrm{flow}}(t)\\|_F$")
    ax.set_title("Distance of each GD/SGD series to the flow")
    _legend(fig, run, colors, names=[s.name for s in run.sgd], extra=extra)
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
    ax.set_xscale("log")
    ax.set_yscale("log")
    lr_ticks = sorted(s.lr for s, _ in pts)
    ax.xaxis.set_major_locator(FixedLocator(lr_ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_lr(v)))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(lr_ticks) > 4:
        ax.tick_params(axis="x", labelrotation=35)
    ds = [d for _, d in pts]
    if math.log10(max(ds) / min(ds)) < 2.5:  # short range: label 1, 2, 5 x 10^k plainly
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
    detail = run.summary.get("convergence_order_detail") or {}
    order = run.summary.get("convergence_order")
    used = [lr for lr in (detail.get("lrs_used") or []) if isinstance(lr, (int, float))]
    extra = []
    fit_pts = [(lr, d) for lr, d in ok_pts if any(math.isclose(lr, u, rel_tol=1e-9) for u in used)]
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
    for p in detail.get("pairwise") or []:
        try:
            (a, b), o = p["lrs"], float(p["order"])
        except (KeyError, TypeError, ValueError):
            continue
        da = dict(ok_pts).get(a)
        db = dict(ok_pts).get(b)
        if da and db and math.isfinite(o):
            xm, ym = math.sqrt(a * b), math.sqrt(da * db)
            ax.annotate(
                f"{o:.2f}", (xm, ym), xytext=(4, -9), textcoords="offset points", fontsize=6, color="0.3"
            )
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
    _legend(fig, run, colors, handles=handles, extra=extra)
    ax.set_xlabel("learning rate $\\eta$")
    ax.set_ylabel("$\\max_t \\|A_\\eta(t) - A_{\\mathrm{flow}}(t)\\|_F$")
    ax.set_title("Largest distance to the flow against $\\eta$")
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


def fig_conservation(run: RunData) -> Figure:
    def drift(s):
        y = s.get("cons_drift")
        return None if y is None or y.ndim != 2 or y.shape[1] == 0 else _row_max(y)

    fig, ax, colors, extra = _log_panel(
        run, drift, 11, "no conservation-law drift recorded (h = 1 or no data)"
    )
    if extra is None:
        return fig
    ax.set_ylabel("$\\max_j \\|C_j(t) - C_j(0)\\|_F$")
    ax.set_title("Drift of the conservation laws $C_j$")
    _legend(fig, run, colors, extra=extra)
    return fig


FIGURES: dict[str, Callable[[RunData], Figure]] = {
    "loss": fig_loss,
    "sharpness": fig_sharpness,
    "sv_P": fig_sv_P,
    "mode_strength": fig_mode_strength,
    "dist_to_flow": fig_dist_to_flow,
    "convergence_order": fig_convergence_order,
    "conservation": fig_conservation,
}


def _error_figure(name: str, err: BaseException) -> Figure:
    fig = new_figure(COLUMN)
    ax = fig.add_subplot()
    no_data(ax, f"figure '{name}' failed:\n{type(err).__name__}: {str(err)[:200]}")
    return fig


def build_run_figures(run: RunData | str | Path, strict: bool = False) -> dict[str, Figure]:
    """{name: Figure} for every figure of :data:`FIGURES`.

    A figure that fails is replaced by a placeholder that names the error (a warning goes to stderr)
    unless ``strict``, which re-raises.
    """
    if not isinstance(run, RunData):
        run = load_run(run)
    out = {}
    with style():
        for name, fn in FIGURES.items():
            try:
                out[name] = fn(run)
            except Exception as err:
                if strict:
                    raise
                warn(f"figure {name} failed: {type(err).__name__}: {err}")
                traceback.print_exc(file=sys.stderr)
                out[name] = _error_figure(name, err)
    return out


def make_run_figures(
    run_dir: str | Path,
    on_figure: Callable[[str, Any], None] | None = None,
    strict: bool = False,
    dpi: int = 200,
) -> list[Path]:
    """Write ``figures/<name>.png`` for a run directory from its files alone; returns the paths.

    ``on_figure(name, figure)`` is called with each figure before it is closed (the lab sends them to
    the logger). Never raises on diverged, short or NaN series; ``strict`` re-raises a failing figure
    (for tests).
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    figs = build_run_figures(run, strict=strict)
    out_dir = run_dir / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with style():
        for name, fig in figs.items():
            path = out_dir / f"{name}.png"
            with atomic_path(path) as tmp:  # a reader never sees half a PNG
                fig.savefig(tmp, dpi=dpi, format="png")
            paths.append(path)
            if on_figure is not None:
                try:
                    on_figure(name, fig)
                except Exception as err:
                    if strict:
                        raise
                    warn(f"figure {name} to the logger failed: {type(err).__name__}: {err}")
    return paths
