"""The console's convergence-order lines (the results block, dlnlab/lab/results/_console.py): the order
against the flow and against GD's modified flows, each with what it is fitted to and what it cannot say.

Each line says, where it applies: that the fitted series are unstable (the slope is then no order);
where a flow that stopped early cut the distances; for an ensemble, that the distance fitted is the
members' mean of each one's largest distance (not the strong error's largest mean distance); for one
minibatch SGD run, that each rate is one sample of the noise (``ensemble.size`` gives the strong and
weak orders with intervals); and, with no order, why the distances the table shows do not count."""

from __future__ import annotations

import math

from dlnlab._util import fmt
from dlnlab.lab.results._console_table import entry_value
from dlnlab.lab.results._records import Record
from dlnlab.lab.results._summary_record import OrderFit, Summary
from dlnlab.status import USABLE, Status

__all__ = ["order_lines"]

# the orders: their fit in the summary, their name on the console, the distance each is fitted to, and
# whether the line says where a flow that stopped early cut the distances
ORDERS = (
    ("convergence_order_detail", "convergence order", "max_dist_to_flow", True),
    ("convergence_order_modified_detail", "convergence order against GD's modified flows",
     "max_dist_to_modified_flow", False),
)  # fmt: skip


def _list(values) -> str:
    return ", ".join(fmt(float(v)) for v in values)


def order_lines(summary: Summary) -> list[str]:
    """The order lines (none without an (S)GD series, or for an order not fitted)."""
    series = summary.series
    if not any(e.lr is not None for e in series.values()):
        return []
    lines = []
    for field, what, dist_key, horizon in ORDERS:
        fit = getattr(summary, field)
        if fit is not None:
            lines.append(_order_line(fit, what, summary, dist_key, horizon))
    return lines


def _order_line(fit: OrderFit, what: str, summary: Summary, dist_key: str, horizon: bool) -> str:
    series, config = summary.series, summary.config  # the resolved config: a plain dict
    if fit.order is None:
        return f"{what}: none ({fit.message}{_not_counted(summary, dist_key)})"
    used = fit.lrs_used or []
    pairs = ", ".join(fmt(p.order) for p in fit.pairwise or [])
    members = config["ensemble"]["size"]
    distance = (
        "max distance"
        if members == 1
        else f"distance (each member's max over t, the mean of the {members} members')"
    )
    line = f"{what}: {fmt(fit.order)} (slope of log {distance} against log lr over lr {_list(used)}; pairwise {pairs})"
    line += _unstable_used(series, used)
    if horizon:
        line += _shortened(series, used, config["flow"]["t_max"])
    if members == 1 and config["sgd"]["batch_size"] is not None and horizon:
        line += (
            "; one minibatch SGD run: each distance is one sample of SGD's noise, so the slope moves from "
            "seed to seed (ensemble.size=<E> ensemble.vary=sgd gives the strong and weak orders with "
            "their intervals: docs/guide.md)"
        )
    return line


def _not_counted(summary: Summary, dist_key: str) -> str:
    """Why the distances the table shows are not fitted: a series that did not finish (interrupted,
    killed, failed, diverged: its distance covers part of the run, or its blow-up), one not run, and a
    distance that is not positive (0: the series never left the flow, as from a critical point)."""
    stopped, zero = [], []
    for name, e in summary.series.items():
        d = entry_value(e, dist_key)
        if e.lr is None or d is None:
            continue
        if e.status not in USABLE:
            stopped.append(f"{name} {fmt(d)} ({e.status})")
        elif not (math.isfinite(d) and d > 0):
            zero.append(f"{name} {fmt(d)}")
    parts = []
    if stopped:
        parts.append(f"{', '.join(stopped)}: the series did not finish, its distance covers part of the run")
    if zero:
        parts.append(f"{', '.join(zero)}: not positive, no logarithm (the series never left the flow)")
    if summary.not_run:
        parts.append(f"{', '.join(summary.not_run)} not run")
    return "; not counted: " + "; ".join(parts) if parts else ""


def _unstable_used(series: dict[str, Record], lrs: list) -> str:
    """The order is fitted to unstable series too (their distances are finite), but a series that never
    follows the flow measures no rate of convergence: name them, so a slope such as -0.53 over three
    rates above GD's stability threshold does not read as an order."""
    unstable = sorted(e.lr for e in series.values() if e.lr in lrs and e.status == Status.UNSTABLE)
    if not unstable:
        return ""
    if len(unstable) == len(lrs):
        return "; every series fitted is unstable (it does not follow the flow): the slope is no order of convergence"
    verb = "is" if len(unstable) == 1 else "are"
    return f"; the series at lr {_list(unstable)} {verb} unstable: the slope mixes in rates where it does not follow the flow"


def _shortened(series: dict[str, Record], lrs: list, t_max: float) -> str:
    """Where the flow stopped early (not ok), the fitted distances cover its horizon only: say so."""
    flow = series.get("flow")
    untils = [entry_value(e, "dist_to_flow_until") for e in series.values() if e.lr in lrs]
    untils = [u for u in untils if u is not None]
    if flow is None or flow.status == Status.OK or not untils:
        return ""
    return f"; the distances only up to t = {fmt(min(untils))}, where the flow stopped (t_max {fmt(t_max)})"
