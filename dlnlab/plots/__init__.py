"""Matplotlib figures of the lab, made from a run directory's files (never from live objects).

- :func:`make_run_figures` writes ``figures/*.png`` of one run (and the same images to TensorBoard);
  ``python scripts/plot.py <run dir>`` remakes them.
- :func:`figure1` draws the seed paper's Figure 1 from a near-origin and a far-from-origin run;
  ``python scripts/figure1.py`` runs both and writes ``figure1.png`` / ``.pdf`` (``--out`` says where).
- For figures of its own (scripts, the lab's aggregates): :func:`style` (the lab's matplotlib look, a
  context manager), :func:`new_figure` (an Agg figure of a paper column's size), :func:`lr_axis`
  (log-log axes with a tick at each learning rate), :func:`bars_floor` (a log axis kept on its points
  where error bars reach 0), the series' colours: :data:`FLOW_COLOR` and :func:`series_colors` (each
  learning rate's, TensorBoard's colour of its run) and :data:`NO_LINES_POSITION` (the run order's
  place of the run that draws no lines, the figures'), their lines as the run figures draw them
  (:data:`FLOW_KW`, :data:`SGD_KW`), the time axis' label (:data:`TIME_LABEL`,
  :data:`HEAVY_BALL_TIME_LABEL`) and :func:`legend` (one legend below the axes); the series' names are
  :func:`dlnlab.rundir.series_label`'s.

Only numpy, matplotlib (Agg canvas, no pyplot) and, for TensorBoard and the network graph, torch;
never Lightning or Hydra.
"""

from dlnlab.plots._panels import FLOW_KW, SGD_KW, bars_floor, legend, lr_axis
from dlnlab.plots._render import make_run_figures
from dlnlab.plots._style import (
    FLOW_COLOR,
    HEAVY_BALL_TIME_LABEL,
    NO_LINES_POSITION,
    TIME_LABEL,
    new_figure,
    series_colors,
    style,
)
from dlnlab.plots.figure1 import draw_network, figure1
from dlnlab.plots.run_figures import FIGURES, build_run_figures
from dlnlab.rundir import RunData, Series, load_run

__all__ = [
    "FIGURES",
    "FLOW_COLOR",
    "FLOW_KW",
    "HEAVY_BALL_TIME_LABEL",
    "NO_LINES_POSITION",
    "RunData",
    "SGD_KW",
    "TIME_LABEL",
    "Series",
    "bars_floor",
    "build_run_figures",
    "draw_network",
    "figure1",
    "legend",
    "load_run",
    "lr_axis",
    "make_run_figures",
    "new_figure",
    "series_colors",
    "style",
]
