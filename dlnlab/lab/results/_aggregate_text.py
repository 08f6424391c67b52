"""The console report and the CSV of ``scripts/aggregate.py`` (typed rows: :mod:`dlnlab.lab.results._aggregate_records`).

The console shows every number as ``mean [5%, 95%]`` over the samples (4 significant
digits; a single sample shows its value alone) in a few narrow tables, each within
:data:`WIDTH` columns: the settings as ``#0``, ``#1``, ... with a legend that gives the overrides
every setting shares once and, per setting, only those that set it apart. The files keep every
digit, and the std too.
"""

from __future__ import annotations

import csv
import io
import textwrap
from collections.abc import Sequence

from dlnlab.lab.results._aggregate_records import AggregateRow, SampleSpread, SettingAggregate

__all__ = ["report", "csv_text", "CSV_COLUMNS", "WIDTH"]

WIDTH = 100
_SPREAD_FIELDS = ("mean", "std", "q5", "q95", "n")
_SPREADS = ("final_loss", "max_dist_to_flow", "max_dist_to_modified_flow")
_ORDERS = ("to_flow", "to_modified_flow")
CSV_COLUMNS = [
    *("setting", "folder", "series", "samples", "samples_left_out", "runs"),
    *(f"{key}_{f}" for key in _SPREADS for f in _SPREAD_FIELDS),
    *(c for which in _ORDERS for c in [*(f"order_{which}_{f}" for f in _SPREAD_FIELDS), f"order_{which}_of_the_mean"]),
    *("plateau_exits", "curves_left_out"),
]  # fmt: skip


def _g(x: float, digits: int) -> str:
    return f"{x:.{digits}g}"


def spread_text(s: SampleSpread | None, of: int | None = None) -> str:
    """``mean [q5, q95]`` (one sample: its value), ``-`` when there is none; with ``of`` (the row's
    samples) and fewer values than that, ``(n of N)`` after it: what the number is over."""
    if not s:
        return "-"
    over = f" ({s.n} of {of})" if of is not None and s.n < of else ""
    if s.n < 2:
        return _g(s.mean, 4) + over
    lo, hi = s.q5_q95
    return f"{_g(s.mean, 4)} [{_g(lo, 4)}, {_g(hi, 4)}]{over}"


def _table(title: str, header: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return ["", title, line(header), line(["-" * w for w in widths]), *map(line, rows)]


def _wrap(text: str, indent: str = "    ") -> list[str]:
    return textwrap.wrap(text, WIDTH, subsequent_indent=indent, break_on_hyphens=False) or [""]


def _legend(settings: list[SettingAggregate]) -> list[str]:
    """The settings by number: the words of their names they all share once, then what sets each apart."""
    lists = [st.label_parts for st in settings]
    common = [o for o in lists[0] if all(o in other for other in lists[1:])] if lists else []
    lines = _wrap(f"every setting: {' '.join(common)}") if common else []
    for i, st in enumerate(settings):
        own = " ".join(o for o in st.label_parts if o not in common) or (
            "(nothing else)" if st.label_parts else st.label
        )
        lines += _wrap(f"#{i}  {own}: {len(st.runs)} run{'s' * (len(st.runs) != 1)}, folder {st.folder}")
    return lines


def _exit_rows(rows: list[AggregateRow], tag: dict[str, str]) -> list[list[str]]:
    out = []
    for r in rows:
        for e in r.plateau_exits:
            exited = f"{e.exited} of {e.samples}"
            out.append([tag[r.setting], r.series, str(e.mode + 1), exited, spread_text(e.t_exit)])
    return out


def _order_rows(rows: list[AggregateRow], tag: dict[str, str]) -> list[list[str]]:
    out, seen = [], set()
    for r in rows:
        if r.setting in seen or not r.orders:
            continue
        seen.add(r.setting)
        cells = [tag[r.setting]]
        for o in (r.orders.to_flow, r.orders.to_modified_flow):
            mean = o.of_the_mean
            cells += [spread_text(o.per_sample), "-" if mean is None else _g(mean, 4)]
        out.append(cells)
    return out


def _order_notes(rows: list[AggregateRow], tag: dict[str, str]) -> list[str]:
    """Why a setting has no order to the flow (too few learning rates with a distance), one line each."""
    notes = {tag[r.setting]: r.orders.to_flow.message for r in rows if r.orders}
    return [f"no order for {t}: {why}" for t, why in notes.items() if why]


def report(rows: list[AggregateRow], settings: list[SettingAggregate], skipped: list[str]) -> str:
    """The console text: what was aggregated, the legend of the settings, and the tables."""
    tag = {st.label: f"#{i}" for i, st in enumerate(settings)}
    n_runs = sum(len(st.runs) for st in settings)
    lines = [
        f"aggregated {n_runs} run{'s' * (n_runs != 1)} in {len(settings)} setting{'s' * (len(settings) != 1)}"
    ]
    if skipped:
        lines.append(
            f"skipped {len(skipped)} (runs, series or members; each on stderr and in aggregate.json)"
        )
    lines += _legend(settings)
    lines += [
        "",
        "numbers: mean [5%, 95%] over the n samples (every seed and ensemble member of a setting); a\n"
        "number over fewer says so, (6 of 8): the others diverged, or their value is not finite",
    ]
    lines += _table(
        "final loss; largest distance to the flow (SGD series)",
        ["set", "series", "n", "final loss", "max distance to the flow"],
        [[tag[r.setting], r.series, str(r.all_samples), spread_text(r.final_loss, r.all_samples),
          spread_text(r.max_dist_to_flow, r.all_samples) if r.is_sgd else "-"] for r in rows],
    )  # fmt: skip
    if any(r.max_dist_to_modified_flow for r in rows):
        lines += _table(
            "largest distance to GD's modified flow",
            ["set", "series", "n", "max distance to the modified flow"],
            [[tag[r.setting], r.series, str(r.all_samples),
              spread_text(r.max_dist_to_modified_flow, r.all_samples)]
             for r in rows if r.max_dist_to_modified_flow],
        )  # fmt: skip
    orders = _order_rows(rows, tag)
    if orders:
        lines += _table(
            "convergence order: slope of log max distance against log lr, per sample and of the mean, over\n"
            "the sgd.order_fit smallest learning rates, as each run fits its own",
            ["set", "to the flow", "of the mean", "to the modified flow", "of the mean"],
            orders,
        )
        lines += _order_notes(rows, tag)
    exits = _exit_rows(rows, tag)
    if exits:
        lines += _table(
            "plateau exit times (modes numbered from 1, the largest m_1 first): each sample's first exit by\n"
            "the mode; n: the samples that left a plateau by it, of those whose plateaus were analysed",
            ["set", "series", "mode", "n", "exit time t"],
            exits,
        )
    left_out = [f"{tag[r.setting]} {r.series} {note}" for r in rows for note in r.curves_left_out]
    if left_out:
        lines += ["", "left out of the curves (the npz, loss.png), not of the numbers above:"]
        lines += [w for note in left_out for w in _wrap(note)]
    return "\n".join(lines)


def _spread_fields(prefix: str, s: SampleSpread | None) -> dict[str, float | int | None]:
    if not s:
        return {f"{prefix}_{f}": None for f in _SPREAD_FIELDS}
    return {f"{prefix}_mean": s.mean, f"{prefix}_std": s.std, f"{prefix}_q5": s.q5_q95[0],
            f"{prefix}_q95": s.q5_q95[1], f"{prefix}_n": s.n}  # fmt: skip


def _csv_records(rows: list[AggregateRow]) -> list[dict[str, str | float | int | None]]:
    """One flat record per row (the CSV's columns), every number in full; exits as ``mode k: mean [q5,
    q95] (n of N)``: n samples left a plateau by mode k, of the N whose plateaus were analysed."""
    out = []
    for r in rows:
        rec = {
            "setting": r.setting,
            "folder": r.folder,
            "series": r.series,
            "samples": r.samples,
            "samples_left_out": r.samples_left_out,
            "runs": r.runs,
        }
        for key in _SPREADS:
            rec.update(_spread_fields(key, getattr(r, key)))
        for which in _ORDERS:
            o = getattr(r.orders, which) if r.orders else None
            rec.update(_spread_fields(f"order_{which}", o.per_sample if o else None))
            rec[f"order_{which}_of_the_mean"] = o.of_the_mean if o else None
        rec["plateau_exits"] = "; ".join(
            f"mode {e.mode + 1}: {spread_text(e.t_exit)} ({e.exited} of {e.samples})" for e in r.plateau_exits
        )
        rec["curves_left_out"] = "; ".join(r.curves_left_out)
        out.append(rec)
    return out


def csv_text(rows: list[AggregateRow]) -> str:
    """``aggregate.csv``: a header and one line per row (:func:`_csv_records`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)  # a record with another key is a ValueError
    writer.writeheader()
    writer.writerows(_csv_records(rows))
    return buf.getvalue()
