"""The lab's one path from a series' points to its files and its logger.

A series hands its grid points (theta at the exact times) to a :class:`SeriesRecorder` (``_recorder``),
in a forked worker process where fork exists (:func:`open_recorder`), which computes their metrics
(:class:`dlnlab.metrics.SeriesMetrics`), logs them through the series' Lightning logger and writes
``series/<name>.npz`` atomically. What a series logs, at which step, and the TensorBoard layout are
``_tags`` (:class:`TagPlan`, :class:`RunCharts`); the loggers themselves (dlnlab's
:class:`TensorBoardLogger`, any Lightning logger a config names) are ``_logging``; the order TensorBoard
colours the runs in, and the report's run (the figures, the summary's texts), ``_runs``.

Names are imported on first use (``dlnlab._lazy``).
"""

from dlnlab._lazy import lazy_exports

_EXPORTS = {
    "._recorder": ["SeriesRecorder", "open_recorder", "end_workers", "block_points", "forget_inherited"],
    "._tags": [
        "TagPlan",
        "RunCharts",
        "ENSEMBLE_STATS",
        "step_scale",
        "tensorboard_layout",
        "Thinner",
        "log10_positive",
    ],
    "._logging": [
        "TensorBoardLogger",
        "make_logger",
        "is_tensorboard",
        "fresh_copy",
        "own_file",
        "writes_concurrently",
        "log_hparams",
        "log_layout",
        "log_png",
        "log_text",
    ],
    "._runs": [
        "REPORT_RUN",
        "ORDER_FILE",
        "tensorboard_order",
        "order_runs",
        "figures_logger",
        "text_logger",
    ],
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
