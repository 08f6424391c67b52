"""The aggregate's figure of a setting: its series' loss across the samples (``<folder>/loss.png``),
drawn as the run figures draw a run's (dlnlab.plots' colours, lines, names and time axis)."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

from dlnlab.lab.results._aggregate_records import SeriesCurves


def write_loss_figure(folder: Path, key: str, curves_of: dict[str, SeriesCurves], heavy_ball: bool) -> None:
    """``folder/loss.png``: :func:`loss_figure`, written atomically."""
    from dlnlab.plots import style
    from dlnlab.rundir import atomic_path

    with style():
        fig = loss_figure(key, curves_of, heavy_ball)
        with atomic_path(folder / "loss.png") as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Glyph .* missing from")  # a key with emoji: drawn as boxes
            fig.savefig(tmp, dpi=150, format="png")


def loss_figure(key: str, curves_of: dict[str, SeriesCurves], heavy_ball: bool = False):
    """The loss of each series across the samples (series name -> its curves' statistics; a series
    without a loss curve is left out), as the run figures draw a run's: the median with the quartile
    band, in the run figures' colours, lines, names and time axis; the number of samples in the title
    (each series' in the legend where they differ) and the setting's key above."""
    from matplotlib.lines import Line2D

    from dlnlab.plots import (
        FLOW_COLOR,
        FLOW_KW,
        HEAVY_BALL_TIME_LABEL,
        SGD_KW,
        TIME_LABEL,
        legend,
        new_figure,
        series_colors,
    )
    from dlnlab.rundir import lr_from_name, series_label, series_order_key

    drawn = {name: c.loss for name, c in curves_of.items() if c.loss is not None}
    times = {name: curves_of[name].t for name in drawn}
    lrs = {name: lr_from_name(name) for name in drawn}  # the flow's None (only flow and SGD series load)
    by_lr = series_colors([lr for lr in lrs.values() if lr is not None])
    n = {name: int(c.n.max()) for name, c in drawn.items()}  # the samples in the loss curve
    same_n = len(set(n.values())) == 1
    legend_order = sorted(drawn, key=series_order_key)
    fig = new_figure((3.4, 3.3))
    ax = fig.add_subplot()
    handles = []
    for name in legend_order:
        c, lr = drawn[name], lrs[name]
        kw = {**(FLOW_KW if lr is None else SGD_KW), "color": FLOW_COLOR if lr is None else by_lr[lr]}
        t = times[name][: len(c.q50)]
        ax.fill_between(t, c.q25, c.q75, color=kw["color"], alpha=0.18, lw=0, zorder=1)
        ax.plot(t, c.q50, **kw)  # the flow on top: its zorder, as in the run figures
        label = series_label(lr) + ("" if same_n else f" (n = {n[name]})")
        handles.append(
            Line2D([], [], color=kw["color"], lw=kw["lw"], alpha=kw.get("alpha", 1.0), label=label)
        )
    ax.set_yscale("log")
    t_max = max((float(t[-1]) for t in times.values()), default=1.0)
    ax.set_xlim(0.0, t_max if t_max > 0 else 1.0)
    ax.set_xlabel(HEAVY_BALL_TIME_LABEL if heavy_ball else TIME_LABEL)
    ax.set_ylabel("loss $L$: median, quartile band")
    over = f"{next(iter(n.values()))} samples" if same_n and n else "the samples"
    ax.set_title(f"Loss of the flow and of each GD/SGD series\nover {over} (seeds, ensemble members)")
    setting = textwrap.wrap(f"setting: {key}", 80, break_on_hyphens=False, max_lines=2, placeholder=" ...")
    # the key is the user's text (data.path=/a/$x$.npz): shown as typed, never read as mathtext
    fig.suptitle("\n".join(setting), fontsize=5.5, color="0.35", parse_math=False)
    legend(fig, None, {}, handles=handles)
    return fig
