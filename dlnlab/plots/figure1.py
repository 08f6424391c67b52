"""The seed paper's Figure 1, from two run directories.

(a) the network as a layered graph drawn from its block adjacency matrix A (edges coloured by A_ij),
    beside the matrix A itself; (b) from near the origin and (c) from far from it: the loss with the
    plateau levels L*_r, the singular values of A, and the mode strengths u_k^T P v_k with the aligned
    reference mode solution and its escape times (the times its mode reaches m_k / 2); a row of (b) or
    (c) is drawn by ``_flow_row.py``.

Everything comes from the runs' files (problem.npz, series/flow.npz, summary.json).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from dlnlab.plots._common import (
    reference_rule,
)
from dlnlab.plots._flow_row import flow_row
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
        info_b = flow_row(mid, near, log_time=False)
        mid.suptitle(
            f"(b) near the origin, {init_description(near)}: modes learnt one at a time, largest first",
            x=0.01,
            ha="left",
            fontsize=8,
            fontweight="bold",
        )
        info_c = flow_row(bot, far, log_time=far_log_time)
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
