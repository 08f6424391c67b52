"""The names of a run's series: ``series/<name>.npz``, ``summary.json``'s ``series.<name>``, and
``tensorboard/<name>/`` for the series that have a TensorBoard run of their own.

``flow`` is the gradient flow; every other series is ``<kind>_lr_<lr>``, ``<lr>`` Python's ``repr`` of
the float (``sgd_lr_0.01``): the (S)GD series ``sgd_lr_``, GD's modified flow ``modflow_lr_``, the
SME ensemble ``sme_lr_``, GD's central flow ``cflow_lr_``, GD's edge-of-stability series ``edge_lr_``. The lab's series kinds (``dlnlab.lab.runner._registry``) name their series
through :func:`lr_series_name`; readers parse them back with :func:`parse_series_name`, which knows
the prefixes in :data:`PREFIXES` (a new kind's prefix goes there).
"""

from __future__ import annotations

__all__ = ["FLOW", "SGD_PREFIX", "MODIFIED_PREFIX", "SME_PREFIX", "CENTRAL_PREFIX", "EDGE_PREFIX", "series_name", "lr_series_name",
           "parse_series_name", "lr_from_name", "format_lr", "series_label", "series_order_key"]  # fmt: skip

FLOW = "flow"
SGD_PREFIX = "sgd_lr_"
MODIFIED_PREFIX = "modflow_lr_"
SME_PREFIX = "sme_lr_"
CENTRAL_PREFIX = "cflow_lr_"  # GD's central flow (flow.central)
EDGE_PREFIX = "edge_lr_"  # GD at every step through its crossing of 2/eta (sgd.edge, flow.central)
PREFIXES = (SGD_PREFIX, MODIFIED_PREFIX, SME_PREFIX, CENTRAL_PREFIX, EDGE_PREFIX)


def lr_series_name(prefix: str, lr: float) -> str:
    """``<prefix><repr(lr)>``: ``lr_series_name("sgd_lr_", 0.01) == "sgd_lr_0.01"``."""
    return f"{prefix}{float(lr)!r}"


def series_name(lr: float | None) -> str:
    """``flow`` or ``sgd_lr_<repr(lr)>``."""
    return FLOW if lr is None else lr_series_name(SGD_PREFIX, lr)


def parse_series_name(name: str) -> tuple[str, float | None] | None:
    """(prefix, lr) of a series name (``("flow", None)`` for the flow); None for a name no series has."""
    if name == FLOW:
        return FLOW, None
    for prefix in PREFIXES:
        if name.startswith(prefix):
            try:
                return prefix, float(name[len(prefix) :])
            except ValueError:
                return None
    return None


def lr_from_name(name: str) -> float | None:
    """``sgd_lr_0.01`` -> 0.01; None for the flow and for any other kind of series."""
    parsed = parse_series_name(name)
    return parsed[1] if parsed is not None and parsed[0] == SGD_PREFIX else None


def format_lr(lr: float) -> str:
    """Short, exact-looking learning rate: 0.01, 0.0025, 1e-05."""
    return f"{lr:.6g}"


def series_label(lr: float | None) -> str:
    """How the figures name a flow or (S)GD series: ``gradient flow``, ``η = 0.01``."""
    return "gradient flow" if lr is None else f"η = {format_lr(lr)}"


def series_order_key(name: str, lr: float | None = None) -> tuple[bool, float, str]:
    """Where a flow or (S)GD series goes among others: the flow first, then by learning rate from the
    largest down (``lr``, else the one in its name), as :func:`dlnlab.rundir.load_run` orders a run's
    series and its figures draw them; not by name, whose strings put ``sgd_lr_1e-05`` after
    ``sgd_lr_0.5``."""
    lr = lr_from_name(name) if lr is None else lr
    return (name != FLOW, -(lr or 0.0), name)
