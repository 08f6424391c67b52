"""Panels shared by the run figures: line styles per series, the time axis, legends, log panels."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dlnlab.plots._common import (
    Markers,
    bounded,
    colors_of,
    draw_order,
    log_limits,
    no_data,
    plateau_handle,
    shade_plateaus,
)
from dlnlab.plots._style import HEAVY_BALL_TIME_LABEL, TIME_LABEL, new_figure
from dlnlab.rundir import RunData, Series, format_lr

__all__ = [
    "SGD_KW", "FLOW_KW", "row_max", "line_kw", "time_axis", "lr_axis", "bars_floor", "legend", "log_panel",
]  # fmt: skip

# SGD lines are wide and faded behind the thin orange flow (FLOW_COLOR, its TensorBoard run's colour), so
# that "SGD converges to the flow" reads as the coloured bands closing in on the orange line.
SGD_KW = {"lw": 1.7, "alpha": 0.75, "zorder": 2, "solid_capstyle": "butt"}
FLOW_KW = {"lw": 0.9, "zorder": 4}


def row_max(y: np.ndarray) -> np.ndarray:
    """Max over the columns of each row; NaN for a row with any non-finite entry (or no columns)."""
    if y.ndim != 2 or y.shape[1] == 0:
        return np.full(len(y), np.nan)
    fin = np.isfinite(y).all(axis=1)
    return np.where(fin, np.where(np.isfinite(y), y, -np.inf).max(axis=1), np.nan)


def line_kw(s: Series, colors: dict) -> dict:
    kw = dict(FLOW_KW if s.is_flow else SGD_KW)
    kw["color"] = colors[s.name]
    return kw


def time_axis(ax, run: RunData) -> None:
    t_max = (run.summary.get("grid") or {}).get("t_max")
    if not isinstance(t_max, (int, float)):
        ts = [s.t[-1] for s in run.series.values() if s.n]
        t_max = max(ts) if ts else 1.0
    ax.set_xlim(0.0, float(t_max) if t_max > 0 else 1.0)
    # heavy ball: a step stands for eta / (1 - beta) of flow time
    heavy_ball = bool((run.config.get("sgd") or {}).get("momentum"))
    ax.set_xlabel(HEAVY_BALL_TIME_LABEL if heavy_ball else TIME_LABEL)


def lr_axis(ax, lrs) -> None:
    """Log-log axes with a tick at each learning rate (and no minor ticks), labelled as the series
    names write them; rotated beyond four."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ticks = sorted(set(float(lr) for lr in lrs))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_lr(v)))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(ticks) > 4:
        ax.tick_params(axis="x", labelrotation=35)


def bars_floor(ax, points, decades: float = 1.0) -> None:
    """Keep a log y axis on its points where error bars reach far below them: the bottom goes no lower
    than ``decades`` below the lowest positive point. A debiased error floored at 0 (the weak errors
    at a few members) has bootstrap intervals from 0 or from a rounding residue of it, and matplotlib's
    autoscale takes such a residue as data: a review's panel ran down to 1e-16, its points squashed into
    the top decades. A bar so cut runs off the bottom edge with its cap out of sight, so it never reads
    as a lower bound it does not have."""
    v = np.asarray([p for p in points if p is not None], dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v):
        return
    lo, hi = ax.get_ylim()
    floor = float(v.min()) * 10.0**-decades
    if lo < floor:
        ax.set_ylim(floor, hi)


def legend(fig, run: RunData, colors: dict, names: list[str] | None = None, extra=(), handles=None) -> None:
    """One legend below the axes (outside: it never hides a curve), naming every series."""
    if handles is None:
        handles = []
        for s in run.series.values():
            if names is not None and s.name not in names:
                continue
            lk = line_kw(s, colors)
            handles.append(
                Line2D([], [], color=lk["color"], lw=lk["lw"], alpha=lk.get("alpha", 1.0), label=s.label)
            )
    handles = list(handles) + list(extra)
    if not handles:
        return
    # the most columns (up to 4) whose legend, measured as drawn, fits the figure's width: a column is
    # as wide as its own longest entry, so one long entry widens one column only (the mode strengths'
    # nine entries took a row each, half the figure, when every column was counted as the longest)
    renderer, room = fig.canvas.get_renderer(), fig.bbox.width - 0.1 * fig.dpi
    for ncols in range(min(4, len(handles)), 0, -1):
        drawn = fig.legend(handles=handles, loc="outside lower center", ncols=ncols, frameon=False)
        if ncols == 1 or drawn.get_window_extent(renderer).width <= room:
            return
        drawn.remove()


# ----------------------------------------------------------------------------------------------
# one function per figure: (run) -> Figure
def log_panel(run: RunData, values, decades: int, empty: str) -> tuple[Figure, Axes, dict, list | None]:
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
        ax.plot(s.t[ok], y[ok], **line_kw(s, colors))
        if bounded(s):
            keep.append(y[ok])
        marks.add(s, s.t, y, colors[s.name])
    time_axis(ax, run)
    lim = log_limits(keep, decades=decades)
    if lim is None:
        no_data(ax, empty)
        return fig, ax, colors, None
    ax.set_yscale("log")
    ax.set_ylim(*lim)
    extra = [plateau_handle()] if shade_plateaus(ax, run) else []
    if marks.draw(ax):
        extra.append(marks.handle())
    return fig, ax, colors, extra
