"""One row of Figure 1 (``dlnlab.plots.figure1``): the flow of one run as three panels over a shared
time axis: the loss with the plateau levels L*_r, the singular values of A (coloured by the mode they
carry once balanced), and the mode strengths u_k^T P v_k with the aligned reference mode solution and
its escape times."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.lines import Line2D

from dlnlab.plots._common import (
    first_crossing,
    level_lines,
    log_limits,
    no_data,
    reference_modes,
    shade_plateaus,
)
from dlnlab.plots._style import mode_color
from dlnlab.rundir import RunData

__all__ = ["flow_row"]


def _sv_A_colors(run: RunData, sv_a: np.ndarray) -> list:
    """Colour index i of sv_A by data mode k = i // h when the run ends balanced (the h singular values of
    group k sit within 8% of m_k^(1/h)); grey otherwise (e.g. an unbalanced end far from the origin)."""
    h, modes = run.depth, run.modes
    last = (
        sv_a[np.flatnonzero(np.isfinite(sv_a).all(axis=1))[-1]]
        if np.isfinite(sv_a).all(axis=1).any()
        else None
    )
    out = []
    for i in range(sv_a.shape[1]):
        k = i // h if h else len(modes)
        c = "0.6"
        if last is not None and k < len(modes):
            target = modes[k] ** (1.0 / h)
            group = last[k * h : (k + 1) * h]
            if len(group) == h and np.all(np.abs(group - target) <= 0.08 * target):
                c = mode_color(k)
        out.append(c)
    return out


def flow_row(subfig, run: RunData, log_time: bool) -> dict:
    """Loss | singular values of A | mode strengths for the flow of one run."""
    axs = subfig.subplots(1, 3)
    flow = run.flow
    info = {"axes": axs}
    if flow is None or not flow.n:
        for ax in axs:
            no_data(ax, "no flow series in this run")
        return info
    t = flow.t
    t_max = float(t[-1]) if len(t) else 1.0
    sel = t > 0 if log_time else np.ones(len(t), bool)
    x0 = float(t[sel][0]) if log_time and sel.any() else 0.0
    xlabel = "time $t$ (log scale)" if log_time else "time $t$"
    axes = _TimeAxes(t=t, sel=sel, x0=x0, t_max=t_max, log_time=log_time, xlabel=xlabel)
    info["shaded"] = _loss_panel(axs[0], run, axes)
    _sv_A_panel(axs[1], run, axes)
    info.update(_mode_panel(axs[2], run, axes))
    return info


@dataclass(frozen=True)
class _TimeAxes:
    """The time axis a row's panels share: t (T,), the rows drawn (sel), the x range and its label."""

    t: np.ndarray
    sel: np.ndarray
    x0: float
    t_max: float
    log_time: bool
    xlabel: str

    def apply(self, ax) -> None:
        ax.set_xlim(self.x0, self.t_max)
        if self.log_time:
            ax.set_xscale("log")


def _loss_panel(ax, run: RunData, axes: _TimeAxes) -> bool:
    """The loss with the plateau levels; whether plateaus were shaded."""
    t, sel = axes.t, axes.sel
    loss = run.flow.get("loss")
    ok = sel & np.isfinite(loss) & (loss > 0)
    ax.plot(t[ok], loss[ok], color="k", lw=1.1, zorder=4)
    ax.set_yscale("log")
    levels = run.critical_values
    pos_levels = levels[np.isfinite(levels) & (levels > 1e-12 * np.nanmax(np.abs(levels)))]
    floor = float(pos_levels.min()) * 1e-4 if len(pos_levels) else None
    lim = log_limits([loss[ok]], decades=14)
    if lim:
        ax.set_ylim(max(lim[0], floor or 0.0), lim[1])
    axes.apply(ax)
    level_lines(ax, run.critical_values, log=True)
    shaded = shade_plateaus(ax, run)
    ax.set_xlabel(axes.xlabel)
    ax.set_ylabel("loss $L$")
    ax.set_title("loss (dashed: plateau levels $L^*_r$)", fontsize=7.5)
    _facts_box(ax, run)
    return shaded


def _sv_A_panel(ax, run: RunData, axes: _TimeAxes) -> None:
    """The singular values of A, coloured by the mode they carry once balanced (dotted: m_k^(1/h))."""
    t, sel = axes.t, axes.sel
    sv_a = run.flow.get("sv_A")
    balanced_end = False
    if sv_a is not None and sv_a.ndim == 2:
        colors = _sv_A_colors(run, sv_a)
        for i in reversed(range(sv_a.shape[1])):
            yi = sv_a[:, i]
            ok = sel & np.isfinite(yi)
            if not np.any(yi[ok] > 1e-12):
                continue
            grey = colors[i] == "0.6"
            ax.plot(t[ok], yi[ok], color=colors[i], lw=0.6 if grey else 0.9, alpha=0.8 if grey else 1.0)
        balanced_end = any(c != "0.6" for c in colors)
        for k, m in enumerate(run.modes):
            if run.depth and balanced_end:
                ax.axhline(m ** (1.0 / run.depth), color=mode_color(k), ls=":", lw=0.7, zorder=0)
        axes.apply(ax)
        ax.set_ylim(bottom=0)
        shade_plateaus(ax, run)
    else:
        no_data(ax, "no singular values of A recorded")
    ax.set_xlabel(axes.xlabel)
    ax.set_ylabel("singular values of $A$")
    dotted = sv_a is not None and sv_a.ndim == 2 and balanced_end
    ax.set_title("singular values of $A$" + (" (dotted: $m_k^{1/h}$)" if dotted else ""), fontsize=7.5)


def _mode_panel(ax, run: RunData, axes: _TimeAxes) -> dict:
    """The mode strengths with the reference mode solution and its escape times; {has_ref, ref_half}
    when drawn."""
    t, sel, x0, t_max, log_time = axes.t, axes.sel, axes.x0, axes.t_max, axes.log_time
    info = {}
    ms = run.flow.get("mode_strength")
    if ms is not None and ms.ndim == 2:
        tt = np.geomspace(max(x0, 1e-3), t_max, 800) if log_time else np.linspace(0.0, t_max, 800)
        refs = {r["k"]: r for r in (reference_modes(run, tt) or [])}
        for k in range(ms.shape[1]):
            c = mode_color(k)
            yk = ms[:, k]
            ok = sel & np.isfinite(yk)
            ax.plot(t[ok], yk[ok], color=c, lw=1.2, zorder=4)
            s = float(run.modes[k]) if k < len(run.modes) else float("nan")
            if math.isfinite(s):
                ax.axhline(s, color=c, ls=":", lw=0.7, zorder=0)
                t_obs = first_crossing(t, yk, s / 2)
                if t_obs is not None and (not log_time or t_obs > x0):
                    ax.plot([t_obs], [s / 2], "o", color=c, ms=4, mec="white", mew=0.5, zorder=6)
            r = refs.get(k)
            if r is not None:
                ax.plot(tt, r["u"], color=c, ls=(0, (3, 1.6)), lw=0.8, alpha=0.8, zorder=3)
                if r["t_half"] is not None and r["t_half"] <= t_max and (not log_time or r["t_half"] > x0):
                    ax.plot([r["t_half"]], [s / 2], "o", mfc="white", mec=c, ms=4, mew=0.9, zorder=6)
        info["has_ref"] = bool(refs)
        info["ref_half"] = any(r["t_half"] is not None for r in refs.values())
        axes.apply(ax)
        shade_plateaus(ax, run)
    else:
        no_data(ax, "no mode strengths recorded")
    ax.set_xlabel(axes.xlabel)
    ax.set_ylabel("mode strength $u_k^\\top P\\, v_k$")
    ax.set_title("modes (dashed: aligned reference)", fontsize=7.5)
    return info


def _facts(run: RunData) -> str:
    """Plateau count (when the saddle analysis filled it) and when the loss fell below 1e-3."""
    flow = run.flow
    parts = []
    n_pl = len(run.plateaus("flow"))
    if n_pl:
        parts.append(f"{n_pl} plateau{'s' if n_pl > 1 else ''} detected")
    if flow is not None and flow.n:
        loss = flow.get("loss")
        below = np.flatnonzero(np.isfinite(loss) & (loss < 1e-3))
        if len(below):
            parts.append(f"$L < 10^{{-3}}$ from $t = {flow.t[below[0]]:.3g}$")
    return "\n".join(parts)


def _facts_box(ax, run: RunData) -> None:
    """The facts as a frameless legend placed where it hides no curve (loc="best")."""
    text = _facts(run)
    if text:
        ax.legend(
            handles=[Line2D([], [], ls="none", label=text)],
            loc="best",
            handlelength=0,
            handletextpad=0,
            fontsize=6.5,
            frameon=True,
            framealpha=0.85,
        )
