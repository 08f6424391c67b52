"""Matplotlib figures of the lab, made from a run directory's files (never from live objects).

- :func:`make_run_figures` writes ``figures/*.png`` of one run (and the same images to TensorBoard);
  ``python scripts/plot.py <run dir>`` remakes them.
- :func:`figure1` draws the seed paper's Figure 1 from a near-origin and a far-from-origin run;
  ``python scripts/figure1.py`` runs both and writes ``figure1.png`` / ``.pdf`` (``--out`` says where).
- For figures of its own (scripts, the lab's aggregates): :func:`style` (the lab's matplotlib look, a
  context manager), :func:`new_figure` (an Agg figure of a paper column's size), :func:`lr_axis`
  (log-log axes with a tick at each learning rate), :func:`bars_floor` (a log axis kept on its points
  where error bars reach 0), and the series' colours: :data:`FLOW_COLOR` and
  :func:`series_colors` (each learning rate's, TensorBoard's colour of its run).

Only numpy, matplotlib (Agg canvas, no pyplot) and, for TensorBoard and the network graph, torch;
never Lightning or Hydra.
"""

from dlnlab.plots._panels import bars_floor, lr_axis
from dlnlab.plots._style import FLOW_COLOR, new_figure, series_colors, style
from dlnlab.plots.figure1 import draw_network, figure1
from dlnlab.plots.run_figures import FIGURES, build_run_figures, make_run_figures
from dlnlab.rundir import RunData, Series, load_run

__all__ = [
    "FIGURES",
    "FLOW_COLOR",
    "RunData",
    "Series",
    "bars_floor",
    "build_run_figures",
    "draw_network",
    "figure1",
    "load_run",
    "lr_axis",
    "make_run_figures",
    "new_figure",
    "series_colors",
    "style",
]
