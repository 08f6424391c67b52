"""The seed paper's Figure 1, from two run directories.

(a) the network as a layered graph drawn from its block adjacency matrix A (edges coloured by A_ij),
    beside the matrix A itself; (b) from near the origin and (c) from far from it: the loss with the
    plateau levels L*_r, the singular values of A, and the mode strengths u_k^T P v_k with the aligned
    reference mode solution and its escape times (the times its mode reaches m_k / 2).

Everything comes from the runs' files (problem.npz, series/flow.npz, summary.json).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from dlnlab.plots._common import (
    first_crossing,
    level_lines,
    log_limits,
    no_data,
    reference_modes,
    reference_rule,
    shade_plateaus,
)
from dlnlab.plots._style import PLATEAU_COLOR, mode_color, new_figure, style
from dlnlab.rundir import RunData, atomic_path, load_run

__all__ = ["figure1", "draw_network", "draw_adjacency", "final_adjacency", "init_description"]

EDGE_CMAP = "RdBu_r"


def final_adjacency(run: RunData) -> tuple[np.ndarray, str]:
    """A at the end of the flow (from its saved theta), else the initial A0; and a label."""
    import torch

    from dlnlab.metrics import theta_rows
    from dlnlab.network import adjacency_from_weights, unpack

    flow = run.flow
    rows, th = theta_rows(flow.arrays) if flow is not None else (None, None)
    if th is not None and run.dims:
        ok = np.flatnonzero(np.isfinite(th).all(axis=1))
        if len(ok):
            i = int(ok[-1])
            ws = unpack(torch.as_tensor(th[i]), run.dims)
            return adjacency_from_weights(ws).numpy(), f"trained, $t = {flow.t[rows[i]]:g}$"
    if "A0" in run.problem:
        return np.asarray(run.problem["A0"], dtype=np.float64), "initial, $t = 0$"
    raise ValueError(f"{run.run_dir}: neither the flow's theta nor A0 is available")


def draw_network(ax, dims: list[int], a: np.ndarray, norm=None, cmap=EDGE_CMAP, node_size: float = 16.0):
    """The network as a layered graph: nodes by layer (input left), edge (source -> target) coloured
    by A[target, source] and drawn wider and more opaque the larger |A_ij|. Returns the LineCollection."""
    import torch

    from dlnlab.network import DeepLinearNetwork, weights_from_adjacency

    net = DeepLinearNetwork.from_weights(weights_from_adjacency(torch.as_tensor(a), dims))
    graph = net.to_graph()
    pos = {}
    for node, layer, i in graph["nodes"]:
        pos[node] = (float(layer), (dims[layer] - 1) / 2.0 - i)
    edges = sorted(graph["edges"], key=lambda e: abs(e[2]))  # strong edges on top
    w = np.array([e[2] for e in edges])
    if norm is None:
        vmax = float(np.abs(w).max()) if len(w) else 1.0
        norm = Normalize(-vmax, vmax)
    vmax = max(abs(norm.vmin), abs(norm.vmax), 1e-300)
    mag = np.clip(np.abs(w) / vmax, 0.0, 1.0)
    segs = [[pos[s], pos[t]] for s, t, _ in edges]
    colors = colormaps[cmap](norm(w)) if len(w) else np.zeros((0, 4))
    if len(w):
        colors[:, 3] = 0.25 + 0.75 * mag
    lc = LineCollection(segs, colors=colors, linewidths=0.25 + 1.6 * mag, zorder=1, capstyle="round")
    ax.add_collection(lc)
    xy = np.array(list(pos.values()))
    ax.scatter(xy[:, 0], xy[:, 1], s=node_size, c="white", edgecolors="0.1", linewidths=0.7, zorder=3)
    h = len(dims) - 1
    top = max(dims) / 2.0
    for j, d in enumerate(dims):
        name = "input $x$" if j == 0 else ("output $y$" if j == h else f"$h_{j}$")
        ax.text(j, -top - 0.35, f"{name}\n$d_{j} = {d}$", ha="center", va="top", fontsize=6.5)
        if j:
            ax.text(j - 0.5, top + 0.1, f"$W_{j}$", ha="center", va="bottom", fontsize=7, color="0.25")
    ax.set_xlim(-0.45, h + 0.45)
    ax.set_ylim(-top - 1.9, top + 0.75)
    ax.set_axis_off()
    return lc


def draw_adjacency(ax, dims: list[int], a: np.ndarray, norm, cmap=EDGE_CMAP):
    """A as a matrix (row = target, column = source) with the layer blocks outlined."""
    im = ax.imshow(np.where(a == 0, np.nan, a), cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_facecolor("white")
    off = np.concatenate([[0], np.cumsum(dims)])
    for o in off[1:-1]:
        ax.axhline(o - 0.5, color="0.6", lw=0.4)
        ax.axvline(o - 0.5, color="0.6", lw=0.4)
    centres = (off[:-1] + off[1:]) / 2.0 - 0.5
    ax.set_xticks(centres, [str(j) for j in range(len(dims))])
    ax.set_yticks(centres, [str(j) for j in range(len(dims))])
    ax.tick_params(length=0, labelsize=6.5)
    ax.set_xlabel("source layer", fontsize=7, labelpad=1)
    ax.set_ylabel("target layer", fontsize=7, labelpad=1)
    ax.grid(False)
    return im


def init_description(run: RunData) -> str:
    ini = run.config.get("init") or {}
    kind = ini.get("kind")
    if kind == "gaussian" and ini.get("scale") is not None:
        return f"$W_j$ i.i.d. $\\mathcal{{N}}(0, {float(ini['scale']):g}^2)$"
    if kind in ("orthogonal",) and ini.get("scale") is not None:
        return f"orthogonal $W_j$, scale {float(ini['scale']):g}"
    if kind in ("aligned", "balanced") and ini.get("u0") is not None:
        return f"{kind} init, $u_0 = {ini['u0']}$"
    return str(kind or "")


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


def _row(subfig, run: RunData, log_time: bool) -> dict:
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


def _network_row(top, near: RunData) -> None:
    """(a) the network as a graph and its adjacency matrix at the end of the near run, one colour scale."""
    a, when = final_adjacency(near)
    vmax = float(np.quantile(np.abs(a[a != 0]), 0.99)) if np.any(a != 0) else 1.0
    norm = Normalize(-vmax, vmax)
    ax_g, ax_a = top.subplots(1, 2, width_ratios=[2.3, 1.0])
    draw_network(ax_g, near.dims, a, norm=norm)
    im = draw_adjacency(ax_a, near.dims, a, norm)
    ax_a.set_title(f"adjacency matrix $A$ ({when})", fontsize=7.5)
    cb = top.colorbar(im, ax=[ax_g, ax_a], shrink=0.75, aspect=22, pad=0.01, extend="both")
    cb.set_label("$A_{ij}$ (edge weight)", fontsize=7)
    cb.ax.tick_params(labelsize=6.5)
    dims = near.dims
    hidden = sorted(set(dims[1:-1]))
    top.suptitle(
        f"(a) the network as a graph, from its adjacency matrix $A$: $h = {len(dims) - 1}$, "
        f"$d_x = {dims[0]}$, hidden width{'s' if len(hidden) > 1 else ''} {', '.join(map(str, hidden))}, "
        f"$d_y = {dims[-1]}$",
        x=0.01,
        ha="left",
        fontsize=8,
        fontweight="bold",
    )


def _mode_legend(bot, near: RunData, far: RunData, info_b: dict, info_c: dict) -> None:
    """One legend for the mode panels of both runs, below everything."""
    q = max(len(near.modes), len(far.modes))
    handles = [
        Line2D([], [], color=mode_color(k), lw=1.2, label=f"mode {k + 1}: $m_{k + 1} = {m:g}$")
        for k, m in enumerate((near.modes if len(near.modes) >= len(far.modes) else far.modes)[:q])
    ]
    rules = {reference_rule(near), reference_rule(far)}
    rule = rules.pop() if len(rules) == 1 else "$u_0$ per run"
    handles.append(
        Line2D([], [], color="0.3", ls=(0, (3, 1.6)), lw=0.8, label=f"aligned reference $u_k(t)$, {rule}")
    )
    handles.append(
        Line2D([], [], marker="o", color="0.3", ms=4, mec="white", ls="none", label="flow: $u_k = m_k/2$")
    )
    if info_b.get("ref_half") or info_c.get("ref_half"):
        handles.append(
            Line2D([], [], marker="o", mfc="white", mec="0.3", ms=4, ls="none", label="reference escape time")
        )
    if info_b.get("shaded") or info_c.get("shaded"):
        handles.append(Patch(facecolor=PLATEAU_COLOR, alpha=0.2, lw=0, label="plateaus detected in the run"))
    bot.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=6.5, frameon=False)


def figure1(
    near_dir: str | Path,
    far_dir: str | Path,
    png: str | Path | None = None,
    pdf: str | Path | None = None,
    dpi: int = 200,
    far_log_time: bool = True,
) -> Figure:
    """The combined Figure 1 (a) + (b) + (c) from a near-origin and a far-from-origin run directory.

    Writes ``png`` and ``pdf`` when given; returns the Figure.
    """
    near, far = load_run(near_dir), load_run(far_dir)
    with style():
        fig = new_figure((7.2, 7.9))
        top, mid, bot = fig.subfigures(3, 1, height_ratios=[1.12, 1.0, 1.0], hspace=0.02)

        _network_row(top, near)

        # (b), (c): the two runs
        info_b = _row(mid, near, log_time=False)
        mid.suptitle(
            f"(b) near the origin, {init_description(near)}: modes learnt one at a time, largest first",
            x=0.01,
            ha="left",
            fontsize=8,
            fontweight="bold",
        )
        info_c = _row(bot, far, log_time=far_log_time)
        bot.suptitle(
            f"(c) far from the origin, {init_description(far)}: all modes learnt together, faster",
            x=0.01,
            ha="left",
            fontsize=8,
            fontweight="bold",
        )

        _mode_legend(bot, near, far, info_b, info_c)
        for path in (png, pdf):
            if path is not None:
                with atomic_path(path) as tmp:
                    fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    return fig
