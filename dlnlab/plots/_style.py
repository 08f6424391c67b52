"""One look for every figure: sizes for a paper column, fonts, and a colour per series.

Colours: TensorBoard's, so that a series has one colour in the figures and on the dashboard. TensorBoard
colours its runs from its palette (:data:`RUN_PALETTE`, its "tensorboardColorBlindAssist": orange, blue,
red, cyan, magenta, teal, grey) in the order of their start times (docs/tensorboard.md). Its red is
close to its orange (CIELAB distance 19.6; every other pair is 29.6 or more apart), so the lab gives red
to a run that draws no lines (:data:`NO_LINES_POSITION`: the run ``report``) and orders the runs flow,
largest learning rate, that run, the next learning rates: the flow is orange (:data:`FLOW_COLOR`), the
learning rates from the largest down blue, cyan, magenta, teal, grey (:data:`LR_COLORS`). TensorBoard
wraps its 7 colours, so its 6th learning rate would get the flow's; the figures give the 6th to 11th
rates colours of their own and then repeat the rates' colours, never the flow's or red. A modified flow
or an SME ensemble at a learning rate takes that rate's colour (dashed).
Data modes k use the Okabe-Ito palette (Figure 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "new_figure",
    "style",
    "STYLE",
    "COLUMN",
    "FLOW_COLOR",
    "RUN_PALETTE",
    "LR_COLORS",
    "NO_LINES_POSITION",
    "MODE_COLORS",
    "series_colors",
    "mode_color",
    "TIME_LABEL",
    "HEAVY_BALL_TIME_LABEL",
]

COLUMN = (3.4, 2.9)  # inches: one column of a two-column paper
RUN_PALETTE = ("#ff7043", "#0077bb", "#cc3311", "#33bbee", "#ee3377", "#009988", "#bbbbbb")
FLOW_COLOR = RUN_PALETTE[0]
# the palette's position (red) that TensorBoard gives a run drawing no lines: red is the palette's
# colour closest to the flow's orange (CIELAB 19.6 apart; the rest of the palette, pairwise, 29.6 or more)
NO_LINES_POSITION = 2
# after the palette's five: Paul Tol's muted colours less the three near the palette's (CIELAB distance
# 22.8 or more from every colour of both and from each other)
LR_COLORS = (
    *RUN_PALETTE[1:NO_LINES_POSITION],
    *RUN_PALETTE[NO_LINES_POSITION + 1 :],
    *("#332288", "#117733", "#999933", "#882255", "#aa4499", "#ddcc77"),
)
MODE_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
PLATEAU_COLOR = "0.55"
TIME_LABEL = "time $t$ (flow time; step $k$ of (S)GD at $t = k\\eta$)"
HEAVY_BALL_TIME_LABEL = "time $t$ (flow time; step $k$ at $t = k\\eta/(1-\\beta)$)"

STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 6.5,
    "legend.framealpha": 0.85,
    "legend.edgecolor": "0.8",
    "legend.handlelength": 1.8,
    "legend.borderaxespad": 0.3,
    "lines.linewidth": 1.1,
    "lines.markersize": 3,
    "axes.linewidth": 0.6,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.35,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "mathtext.fontset": "dejavusans",
    "savefig.dpi": 200,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
}


def series_colors(lrs: Sequence[float]) -> dict[float, str]:
    """The colour of each learning rate, never the flow's: for the five largest, TensorBoard's colour of
    its run (the runs are ordered from the largest learning rate down, after the flow, with the
    run ``report`` third); then :data:`LR_COLORS`' own, repeated past eleven."""
    order = sorted(set(float(x) for x in lrs), reverse=True)
    return {lr: LR_COLORS[i % len(LR_COLORS)] for i, lr in enumerate(order)}


def mode_color(k: int) -> str:
    return MODE_COLORS[k % len(MODE_COLORS)]


def style():
    """Context manager with the lab's rcParams (fonts and lines for a paper column)."""
    return matplotlib.rc_context(STYLE)


def new_figure(size: tuple[float, float] = COLUMN, **kw) -> Figure:
    """A Figure on an Agg canvas (never pyplot: no display, no global backend change)."""
    fig = Figure(figsize=size, layout="constrained", **kw)
    FigureCanvasAgg(fig)
    return fig
