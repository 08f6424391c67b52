"""The edge-of-stability figure of a run (``figures/eos.png``; ``scripts/eos_lab.py`` remakes
docs/eos.png): from the files of its ``edge_lr_<lr>`` series (GD at every step through its crossing of
2/eta, and with flow.central the comparisons), its ``cflow_lr_<lr>`` series and the flow.

(a) the sharpness against t: GD at every step, its central flow and the gradient flow, and each
    learning rate's 2/eta as a dashed line;
(b) the losses: GD's, GD's window average, the central flow's predicted time-averaged loss
    L + 1/2 <Sigma, H> and the gradient flow's (without a central flow: GD's and the flow's);
(c) GD's window average's distance to the central flow over its distance to the gradient flow
    (without a central flow: a note saying so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from dlnlab.plots._style import FLOW_COLOR, series_colors, style
from dlnlab.rundir import (
    CENTRAL_PREFIX,
    EDGE_PREFIX,
    SGD_PREFIX,
    atomic_path,
    format_lr,
    lr_from_name,
    read_npz,
)

__all__ = ["eos_figure", "edge_series", "write_eos_figure"]


def edge_series(run_dir: str | Path) -> dict[float, dict]:
    """{lr: the arrays of its edge_lr_<lr> series}, largest lr first (empty without the series)."""
    out = {}
    for path in sorted((Path(run_dir) / "series").glob(f"{EDGE_PREFIX}*.npz")):
        out[float(path.stem[len(EDGE_PREFIX) :])] = read_npz(path)
    return dict(sorted(out.items(), reverse=True))


def eos_figure(run_dir: str | Path) -> Figure | None:
    """The figure of a run with edge-of-stability series (None without them)."""
    run_dir = Path(run_dir)
    edges = edge_series(run_dir)
    if not edges:
        return None
    flow_path = run_dir / "series" / "flow.npz"
    flow = read_npz(flow_path) if flow_path.exists() else {}
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    ax_s, ax_l, ax_d = fig.subplots(1, 3)
    if "sharpness" in flow:
        ok = np.isfinite(flow["sharpness"])
        ax_s.plot(flow["t"][ok], flow["sharpness"][ok], color=FLOW_COLOR, lw=1, label="gradient flow")
    colors = _lr_colors(run_dir, edges)
    for i, (lr, e) in enumerate(edges.items()):
        color, name = colors[lr], f"$\\eta$ = {format_lr(lr)}"
        if "t" in e:
            ax_s.plot(e["t"], e["top_eigs"][:, 0], ".-", color=color, lw=0.4, ms=1.5, label=f"GD, {name}")
        else:
            ax_s.plot(e["run_t"], e["run_top_eigs"][:, 0], ".", color=color, ms=1.5, label=f"GD, {name}")
        ax_s.axhline(2 / lr, color=color, ls="--", lw=0.8)
        cpath = run_dir / "series" / f"{CENTRAL_PREFIX}{lr!r}.npz"
        if cpath.exists():
            c = read_npz(cpath)
            ax_s.plot(
                c["t"], c["central_sharpness"], color=color, lw=1.4, alpha=0.6, label=f"central flow, {name}"
            )
        if "avg_loss" in e:
            _losses(ax_l, e, color, name, first=i == 0)
            ax_d.plot(e["t"], e["dist_avg_central"] / e["dist_avg_flow"], color=color, lw=1, label=name)
        else:  # sgd.edge without flow.central: GD's own loss, at every step of its window or at its points
            t, loss = (e["t"], e["loss"]) if "t" in e else (e["run_t"], e["run_loss"])
            ax_l.plot(t, loss, color=color, lw=0.6, label=f"GD, {name}")
    central = any("avg_loss" in e for e in edges.values())
    if not central and "loss" in flow:
        ok = np.isfinite(flow["loss"])
        ax_l.plot(flow["t"][ok], flow["loss"][ok], color=FLOW_COLOR, lw=0.8, ls=":", label="gradient flow")
    ax_s.set_xlabel("t")
    ax_s.set_ylabel("top Hessian eigenvalue S")
    ax_s.set_title("(a) sharpness; dashed: 2/$\\eta$", fontsize=9)
    ax_s.legend(fontsize=6)
    ax_l.set_yscale("log")
    ax_l.set_xlabel("t")
    ax_l.set_title("(b) losses (GD's average over 8 steps)" if central else "(b) losses", fontsize=9)
    ax_l.legend(fontsize=6)
    ax_d.axhline(1.0, color="k", lw=0.6)
    ax_d.set_xlabel("t")
    ax_d.set_ylabel("||avg - central|| / ||avg - flow||")
    ax_d.set_title("(c) GD's average: nearer the central flow below 1", fontsize=9)
    if ax_d.lines[1:]:
        ax_d.legend(fontsize=6)
    if not central:  # the panel needs the central flow: say so rather than leave it blank
        ax_d.text(0.5, 0.5, "no central flow in this run\n(flow.central=true draws it)", ha="center",
                  va="center", transform=ax_d.transAxes, fontsize=8)  # fmt: skip
    return fig


def _losses(ax, e: dict, color: str, name: str, first: bool) -> None:
    ax.plot(e["t"], e["loss"], color=color, lw=0.4, alpha=0.5, label=f"GD, {name}")
    ax.plot(e["t"], e["avg_loss"], color=color, lw=1.2, label=f"GD averaged, {name}")
    ax.plot(
        e["t"], e["predicted_loss"], color=color, lw=1.2, ls="--", label=f"central flow's prediction, {name}"
    )
    ax.plot(
        e["t"], e["flow_loss"], color=FLOW_COLOR, lw=0.8, ls=":", label="gradient flow" if first else None
    )


def _lr_colors(run_dir: Path, edges: dict) -> dict[float, str]:
    """Each learning rate's colour in the run's other figures and on TensorBoard: its rank among the
    run's rates (its SGD series', and an edge series' without one), never the flow's."""
    sgd = (lr_from_name(p.stem) for p in (run_dir / "series").glob(f"{SGD_PREFIX}*.npz"))
    return series_colors([*edges, *sgd])


def write_eos_figure(run_dir: str | Path, out: str | Path, dpi: int = 200) -> bytes | None:
    """Draw :func:`eos_figure` into ``out`` (a PNG, written atomically; a .pdf / .svg by its suffix);
    returns the PNG's bytes (None: the run has no edge-of-stability series)."""
    import io

    with style():
        fig = eos_figure(run_dir)
        if fig is None:
            return None
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        fig.savefig(buf, dpi=dpi, format="png")
        with atomic_path(out) as tmp:
            if out.suffix.lower() == ".png":
                Path(tmp).write_bytes(buf.getvalue())
            else:
                fig.savefig(tmp, format=out.suffix[1:].lower())
    return buf.getvalue()
