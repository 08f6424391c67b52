"""The console's series table (the results block's first lines, dlnlab/lab/results/_console.py): one row
per series with its status, final loss, steps or evaluations, largest distance to the flow and wall time,
each read from the series' entry through its record (``_records``)."""

from __future__ import annotations

from dlnlab._util import fmt
from dlnlab.lab.results._ensemble import member_counts
from dlnlab.lab.results._records import EdgeSeriesEntry, MissingKeys, Record, SeriesEntry, UnknownKeys, given
from dlnlab.status import Status

__all__ = ["entry_value", "entry_parts", "entry_part", "series_table"]


def entry_value(entry: Record, name: str):
    """A key the table and the lines read from every kind's entry: its record's field, None where the
    summary leaves it out (ABSENT) or the record has no such field (a flow has no ``steps``). An open
    SeriesEntry (a kind without a record, tests/test_kinds.py's toy kind) declares only lr, status and
    message: its other keys are undeclared, kept in its ``extra``, and read from there."""
    if isinstance(entry, SeriesEntry):
        return entry.extra.get(name)
    return given(getattr(entry, name, None))


def entry_parts(entry: Record, name: str, record: type[Record]) -> list:
    """A list of records an entry holds (``plateaus``: PlateauEntry, ``plateau_exits_vs_flow``:
    PlateauExitEntry), [] where it has none. An open SeriesEntry keeps them as the JSON's dicts in its
    ``extra``: read here through ``record``, an item it cannot read left out (the summary is the run's
    own, read leniently: an unforeseen key must not stop the console)."""
    parts = []
    for part in entry_value(entry, name) or []:
        if isinstance(part, dict):
            try:
                part = record.from_dict(part)
            except (UnknownKeys, MissingKeys):
                continue
        parts.append(part)
    return parts


def entry_part(entry: Record | None, name: str, record: type[Record]) -> Record | None:
    """A record an entry holds (an edge series' ``edge``: EdgeEntry), None where there is no entry or it
    has none; an open SeriesEntry's dict read through ``record`` (None where it cannot be, as
    :func:`entry_parts` leaves such an item out)."""
    part = None if entry is None else entry_value(entry, name)
    if isinstance(part, dict):
        try:
            return record.from_dict(part)
        except (UnknownKeys, MissingKeys):
            return None
    return part


def _status_cell(entry: Record) -> str:
    """The series' status; an ensemble whose members do not all share it adds their counts
    ("diverged (7 diverged, 1 unstable)"): a series can be ok with members that diverged."""
    members = given(getattr(entry, "members", None)) or []
    if not members or all(m.status == entry.status for m in members):
        return str(entry.status)
    return f"{entry.status} ({member_counts(m.status for m in members)})"


def _dist_cell(entry: Record, flow: Record | None) -> str:
    """An (S)GD series' largest distance to the flow; with a flow that stopped early, up to when; without
    a distance, why: the flow stopped (where), or the series itself (its status) did."""
    d = entry_value(entry, "max_dist_to_flow")
    short = flow is not None and flow.status != Status.OK
    if d is not None:
        until = entry_value(entry, "dist_to_flow_until")
        return fmt(d) + (f" to t = {fmt(until)}" if short and until is not None else "")
    if flow is None:
        return "(no flow)"
    if short:
        return f"(flow {flow.status} at t = {fmt(entry_value(flow, 't_stop'))})"
    return f"(none: {entry.status})" if entry.status != Status.OK else "(under 2 points)"


def _work(entry: Record):
    """The table's steps/nfe: an (S)GD or edge series' steps, every other kind's evaluations."""
    steps = entry.lr is not None or isinstance(entry, EdgeSeriesEntry)
    return entry_value(entry, "steps" if steps else "nfe")


def series_table(series: dict[str, Record]) -> list[str]:
    rows = [("series", "status", "final loss", "steps/nfe", "max dist to flow", "wall s")]
    for name, e in series.items():
        work = _work(e)
        if name == "flow":
            dist = "(reference)"
        elif name.startswith("cflow_"):
            central = given(getattr(e, "central", None))  # a CentralFlowEntry (null: the solve failed first)
            before = central.max_dist_to_flow_before_edge if central else None
            dist = f"{fmt(before)} before the edge" if before is not None else "(never below the edge)"
        elif name.startswith("edge_"):
            dist = "(GD again, every step)"
        elif name.startswith(("modflow_", "sme_")):
            dist = "(not compared: " + ("GD's modified flow)" if name.startswith("modflow_") else "the SME)")
        else:
            dist = _dist_cell(e, series.get("flow"))
        loss, wall = entry_value(e, "final_loss"), entry_value(e, "wall_time_s")
        rows.append(
            (name, _status_cell(e), fmt(loss) if loss is not None else "(none)",
             "(none)" if work is None else str(work), dist, "(none)" if wall is None else f"{wall:.2f}")
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines
