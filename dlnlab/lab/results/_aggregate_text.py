"""The console report and the CSV records of ``scripts/aggregate.py`` (rows from :mod:`dlnlab.lab.results._aggregate`).

The console shows every number as ``mean [5%, 95%]`` over the samples (4 significant
digits; a single sample shows its value alone) in a few narrow tables, each within
:data:`WIDTH` columns: the settings as ``#0``, ``#1``, ... with a legend that gives the overrides
every setting shares once and, per setting, only those that set it apart. The files keep every
digit, and the std too.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

__all__ = ["report", "csv_records", "WIDTH"]

WIDTH = 100
_SPREAD_FIELDS = ("mean", "std", "q5", "q95", "n")


def _g(x: float, digits: int) -> str:
    return f"{x:.{digits}g}"


def spread_text(s: dict | None) -> str:
    """``mean [q5, q95]`` (one sample: its value), ``-`` when there is none."""
    if not s:
        return "-"
    if s["n"] < 2:
        return _g(s["mean"], 4)
    lo, hi = s["q5_q95"]
    return f"{_g(s['mean'], 4)} [{_g(lo, 4)}, {_g(hi, 4)}]"


def _table(title: str, header: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return ["", title, line(header), line(["-" * w for w in widths]), *map(line, rows)]


def _wrap(text: str, indent: str = "    ") -> list[str]:
    return textwrap.wrap(text, WIDTH, subsequent_indent=indent, break_on_hyphens=False) or [""]


def _legend(settings: dict) -> list[str]:
    """The settings by number: the overrides they all share once, then what sets each apart."""
    lists = [st.overrides for st in settings.values()]
    common = [o for o in lists[0] if all(o in other for other in lists[1:])] if lists else []
    lines = _wrap(f"every setting: {' '.join(common)}") if common else []
    for i, st in enumerate(settings.values()):
        own = " ".join(o for o in st.overrides if o not in common) or "(no other override)"
        lines += _wrap(f"#{i}  {own}: {len(st.runs)} run{'s' * (len(st.runs) != 1)}, folder {st.folder}")
    return lines


def _exit_rows(rows: list[dict], tag: dict) -> list[list[str]]:
    out = []
    for r in rows:
        for e in r["plateau_exits"]:
            exited = f"{e['samples'] - e['without_exit']} of {e['samples']}"
            out.append([tag[r["setting"]], r["series"], str(e["mode"] + 1), exited, spread_text(e["t_exit"])])
    return out


def _order_rows(rows: list[dict], tag: dict) -> list[list[str]]:
    out, seen = [], set()
    for r in rows:
        if r["setting"] in seen or not r.get("orders"):
            continue
        seen.add(r["setting"])
        cells = [tag[r["setting"]]]
        for which in ("to_flow", "to_modified_flow"):
            o = r["orders"][which]
            mean = o.get("of_the_mean")
            cells += [spread_text(o.get("per_sample")), "-" if mean is None else _g(mean, 4)]
        out.append(cells)
    return out


def _order_notes(rows: list[dict], tag: dict) -> list[str]:
    """Why a setting has no order to the flow (too few learning rates with a distance), one line each."""
    notes = {tag[r["setting"]]: r["orders"]["to_flow"].get("message") for r in rows if r.get("orders")}
    return [f"no order for {t}: {why}" for t, why in notes.items() if why]


def report(rows: list[dict], settings: dict, skipped: list[str]) -> str:
    """The console text: what was aggregated, the legend of the settings, and the tables."""
    tag = {key: f"#{i}" for i, key in enumerate(settings)}
    n_runs = sum(len(st.runs) for st in settings.values())
    lines = [
        f"aggregated {n_runs} run{'s' * (n_runs != 1)} in {len(settings)} setting{'s' * (len(settings) != 1)}"
    ]
    if skipped:
        lines.append(f"skipped {len(skipped)} (runs or series; each on stderr and in aggregate.json)")
    lines += _legend(settings)
    lines += ["", "numbers: mean [5%, 95%] over the n samples (every seed and ensemble member of a setting)"]
    sgd = lambda r: r["series"].startswith("sgd_lr_")  # noqa: E731
    lines += _table(
        "final loss; largest distance to the flow (SGD series)",
        ["set", "series", "n", "final loss", "max distance to the flow"],
        [[tag[r["setting"]], r["series"], str(r["samples"]), spread_text(r["final_loss"]),
          spread_text(r["max_dist_to_flow"]) if sgd(r) else "-"] for r in rows],
    )  # fmt: skip
    if any(r.get("max_dist_to_modified_flow") for r in rows):
        lines += _table(
            "largest distance to GD's modified flow",
            ["set", "series", "n", "max distance to the modified flow"],
            [[tag[r["setting"]], r["series"], str(r["samples"]), spread_text(r["max_dist_to_modified_flow"])]
             for r in rows if r.get("max_dist_to_modified_flow")],
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
    left_out = [
        f"{tag[r['setting']]} {r['series']} {note}" for r in rows for note in r.get("curves_left_out") or []
    ]
    if left_out:
        lines += ["", "left out of the curves (the npz, loss.png), not of the numbers above:"]
        lines += [w for note in left_out for w in _wrap(note)]
    return "\n".join(lines)


def _spread_fields(prefix: str, s: dict | None) -> dict:
    if not s:
        return {f"{prefix}_{f}": None for f in _SPREAD_FIELDS}
    return {f"{prefix}_mean": s["mean"], f"{prefix}_std": s["std"], f"{prefix}_q5": s["q5_q95"][0],
            f"{prefix}_q95": s["q5_q95"][1], f"{prefix}_n": s["n"]}  # fmt: skip


def csv_records(rows: list[dict]) -> list[dict]:
    """One flat record per row, every number in full; exits as ``mode k: mean [q5, q95] (n of N)``: n
    samples left a plateau by mode k, of the N whose plateaus were analysed."""
    out = []
    for r in rows:
        rec = {k: r[k] for k in ("setting", "folder", "series", "samples", "runs")}
        for key in ("final_loss", "max_dist_to_flow", "max_dist_to_modified_flow"):
            rec.update(_spread_fields(key, r[key]))
        for which in ("to_flow", "to_modified_flow"):
            o = (r.get("orders") or {}).get(which) or {}
            rec.update(_spread_fields(f"order_{which}", o.get("per_sample")))
            rec[f"order_{which}_of_the_mean"] = o.get("of_the_mean")
        rec["plateau_exits"] = "; ".join(
            f"mode {e['mode'] + 1}: {spread_text(e['t_exit'])} ({e['samples'] - e['without_exit']} of {e['samples']})"
            for e in r["plateau_exits"]
        )
        rec["curves_left_out"] = "; ".join(r.get("curves_left_out") or [])
        out.append(rec)
    return out
