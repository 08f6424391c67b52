"""The figures of one run directory, made from its files alone (problem.npz, series/*.npz, summary.json).

:func:`build_run_figures` draws them; ``make_run_figures(run_dir)`` (``_render.py``) writes
``figures/<name>.png`` for every name in :data:`FIGURES` and hands
each figure to ``on_figure`` (the lab sends them to the logger: TensorBoard tags ``figures/<name>`` in
the ``flow`` run). ``python scripts/plot.py <run dir>`` calls it to remake them later.
"""

from __future__ import annotations

import sys
import traceback
import warnings
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dlnlab.errors import AnalysisWarning, ArgumentError
from dlnlab.plots._common import (
    Markers,
    bounded,
    colors_of,
    draw_order,
    least_squares_svals,
    level_lines,
    lin_limits,
    log_limits,
    no_data,
    plateau_handle,
    reference_modes,
    reference_u0,
    shade_plateaus,
)
from dlnlab.plots._panels import legend, line_kw, log_panel, row_max, time_axis
from dlnlab.plots._style import COLUMN, new_figure, style
from dlnlab.plots.convergence import fig_convergence_order, fig_dist_to_flow
from dlnlab.rundir import RunData, load_run

__all__ = ["FIGURES", "build_run_figures"]


def fig_loss(run: RunData) -> Figure:
    fig, ax, colors, extra = log_panel(run, lambda s: s.get("loss"), 10, "no finite loss recorded")
    if extra is None:
        return fig
    level_lines(ax, run.critical_values, log=True)
    ax.set_ylabel("loss $L$")
    ax.set_title("Loss of the flow and of each GD/SGD series")
    legend(fig, run, colors, extra=extra)
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
            kw = line_kw(s, colors)
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
    time_axis(ax, run)
    lim = log_limits(keep)
    ax.set_yscale("log")
    if lim is not None:
        ax.set_ylim(lim[0], lim[1] * 1.6)
    if marks.draw(ax):
        extra.append(marks.handle())
    shade_plateaus(ax, run)
    ax.set_ylabel("sharpness $\\lambda_{\\max}(\\nabla^2 L)$")
    ax.set_title("Sharpness against the GD stability limit $2/\\eta$")
    legend(fig, run, colors, extra=extra)
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
        kw = line_kw(s, colors)
        for k in range(y.shape[1]):
            ok = np.isfinite(y[:, k])
            ax.plot(t[ok], y[ok, k], **kw)
        if bounded(s):
            keep.append(y)
        marks.add(s, t, row_max(np.abs(y)), colors[s.name])
    # where the curves go: the mode strengths to the data's modes m_k; sigma_i(P) to the singular values of
    # the least-squares map Syx Sxx^-1, which are the m_k only for whitened inputs
    targets, target_label = run.modes, "data modes $m_k$"
    if key == "sv" and {"X", "Y"} <= set(run.problem):
        targets, target_label = least_squares_svals(run), "$\\sigma_i$ of the least-squares map $P_{ls}$"
    lim = lin_limits(keep + [targets], zero=True)
    time_axis(ax, run)
    if lim is None:
        no_data(ax, f"no {key} recorded")
        return fig
    ax.set_ylim(*lim)
    extra = []
    for m in targets:
        ax.axhline(m, color="0.5", ls=":", lw=0.8, zorder=1)
    if len(targets):
        extra.append(Line2D([], [], color="0.5", ls=":", lw=0.8, label=target_label))
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
            # the reference solves an aligned, balanced init: for any other its escapes are not this run's
            aligned = (run.config.get("init") or {}).get("kind") == "aligned"
            label = f"aligned ref. ({desc})" if aligned else f"ref. of an aligned init ({desc})"
            extra.append(Line2D([], [], color="0.35", ls=(0, (2.5, 1.5)), lw=0.9, label=label))
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
        extra.append(marks.handle())
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    legend(fig, run, colors, extra=extra)
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
        "$u_k^\\top P\\, S_{xx}^{1/2} v_k$",
        "Mode strengths and the aligned reference solution",
        reference=True,
    )


def fig_conservation(run: RunData) -> Figure:
    def drift(s):
        y = s.get("cons_drift")
        return None if y is None or y.ndim != 2 or y.shape[1] == 0 else row_max(y)

    fig, ax, colors, extra = log_panel(
        run, drift, 11, "no conservation-law drift recorded (h = 1 or no data)"
    )
    if extra is None:
        return fig
    ax.set_ylabel("$\\max_j \\|C_j(t) - C_j(0)\\|_F$")
    ax.set_title("Drift of the conservation laws $C_j$")
    legend(fig, run, colors, extra=extra)
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


def figures_of(run: RunData) -> dict[str, Callable]:
    """The figures of what this run computed (no frame that only says "no data")."""
    figures = dict(FIGURES)
    if not any(
        s.get("sharpness") is not None and np.isfinite(s.get("sharpness")).any() for s in run.series.values()
    ):
        figures.pop("sharpness")  # log.analysis_points = 0
    if any(s.members is not None for s in run.series.values()):
        from dlnlab.plots.ensemble import ensemble_figures

        figures |= ensemble_figures(run)
    return figures


def _ensemble_note(name: str, size: int) -> str:
    """What a single-run figure of an ensemble shows: member 0's curves, but in convergence_order the
    points and the fit of the summary's entries, which for an ensemble hold the members' mean distance."""
    return f"the mean of {size} members" if name == "convergence_order" else f"member 0 of {size}"


def _known_names(names: str | Collection[str] | None) -> list[str] | None:
    """``names`` as a list, each a figure of the lab: a name mistyped gave an empty result, silently,
    and a str was matched as a substring (``"loss"`` drew ``ensemble_loss`` too)."""
    from dlnlab.plots.ensemble import ENSEMBLE_FIGURES

    if names is None:
        return None
    names = [names] if isinstance(names, str) else list(names)
    known = [*FIGURES, *ENSEMBLE_FIGURES]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ArgumentError(
            "names", f"no figure {', '.join(map(repr, unknown))}; the figures: {', '.join(known)}"
        )
    return names


def build_run_figures(
    run: RunData | str | Path, strict: bool = False, names: str | Collection[str] | None = None
) -> dict[str, Figure]:
    """{name: Figure} for every figure of :data:`FIGURES` (and, for an ensemble, of
    :data:`dlnlab.plots.ensemble.ENSEMBLE_FIGURES`; the single-run figures then draw member 0), or only
    those in ``names``.

    ``names``: a figure's name or several, each one of those two tables (refused otherwise, naming
    ``names``); one this run has no data for (``sharpness`` without ``log.analysis_points``, the
    ensemble's figures of a single run) is left out of the result.

    A figure that fails is replaced by a placeholder that names the error (a warning goes to stderr)
    unless ``strict``, which re-raises.
    """
    names = _known_names(names)
    if not isinstance(run, RunData):
        run = load_run(run)
    out = {}
    figures = {k: v for k, v in figures_of(run).items() if names is None or k in names}
    sizes = [int(np.shape(s.members["loss"])[0]) for s in run.series.values() if s.members is not None]
    with style():
        for name, fn in figures.items():
            try:
                out[name] = fn(run)
                if sizes and name in FIGURES:  # a single-run figure of an ensemble: whose curves, on a line
                    for ax in out[name].axes:  # of its own (appended, a column-wide title ran off the figure)
                        if ax.get_title():
                            ax.set_title(f"{ax.get_title()}\n({_ensemble_note(name, max(sizes))})")
            except Exception as err:
                if strict:
                    raise
                warnings.warn(
                    f"figure {name} failed: {type(err).__name__}: {err}", AnalysisWarning, stacklevel=2
                )
                traceback.print_exc(file=sys.stderr)
                out[name] = _error_figure(name, err)
    return out
