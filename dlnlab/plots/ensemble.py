"""Figures of an ensemble run (``ensemble.size`` > 1): each series' members as a band around their median.

The single-run figures draw member 0 of each series; these two show the whole ensemble: the loss, and
the distance of each member to its own flow. Per series: the members' median (line), interquartile
range (band) and range (dashed), at every grid point over the members that are finite there.
"""

from __future__ import annotations

import warnings

import numpy as np
from matplotlib.figure import Figure

from dlnlab.lab.rundir import RunData
from dlnlab.plots._common import colors_of, draw_order, level_lines, log_limits, no_data
from dlnlab.plots._panels import legend, time_axis
from dlnlab.plots._style import new_figure

__all__ = ["ENSEMBLE_FIGURES", "fig_ensemble_loss", "fig_ensemble_dist_to_flow"]


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


ENSEMBLE_FIGURES = {"ensemble_loss": fig_ensemble_loss, "ensemble_dist_to_flow": fig_ensemble_dist_to_flow}
