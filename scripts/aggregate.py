"""Aggregate a sweep or an ensemble across seeds, setting by setting (``dlnlab.lab.aggregate``).

    python scripts/train.py -m hydra/launcher=joblib seed=0,1,2,3 sgd.batch_size=5,10   # a sweep ...
    python scripts/aggregate.py outputs/multirun/<date>/<time>          # ... per setting, across seeds
    python scripts/aggregate.py outputs/<date>/<time>                   # an ensemble run (its members)
    python scripts/aggregate.py <dirs> --out <folder> --csv table.csv

Prints one row per (setting, series): the samples (seeds, members), final loss and largest distance to
the flow (mean +- std), the plateau exit times, the convergence orders across samples (mean and 90%
interval); writes ``<out>/aggregate.json``, ``aggregate.csv`` and per setting the curves' statistics
(npz) and a figure. Lists what it skipped (a job with no run, a failed series) on stderr. Exit code 2
when no run directory is found.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from dlnlab.lab.aggregate import aggregate, collect


def _fmt(s) -> str:
    return "-" if not s else f"{s['mean']:.4g} +- {s['std']:.2g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="+", type=Path, help="run directories, sweeps, or folders holding them")
    ap.add_argument("--out", type=Path, help="where to write (default: <first root>/aggregate)")
    ap.add_argument("--csv", type=Path, help="also write the table as CSV here")
    args = ap.parse_args(argv)
    settings, skipped = collect(args.roots)
    for st in settings.values():
        skipped += st.skipped
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if not settings:
        print(f"no run directory (summary.json) under {', '.join(map(str, args.roots))}", file=sys.stderr)
        return 2
    out = args.out or (args.roots[0] / "aggregate")
    rows = aggregate(settings, out)
    (out / "aggregate.json").write_text(json.dumps({"rows": rows, "skipped": skipped}, indent=2))
    flat = [{"setting": r["setting"], "series": r["series"], "samples": r["samples"], "runs": r["runs"],
             "final_loss": _fmt(r["final_loss"]), "max_dist_to_flow": _fmt(r["max_dist_to_flow"]),
             "order_to_flow": _fmt(((r["orders"] or {}).get("to_flow") or {}).get("per_sample")),
             "order_of_the_mean": ((r["orders"] or {}).get("to_flow") or {}).get("of_the_mean"),
             "exits": "; ".join(f"mode {e['mode']} {_fmt(e['t_exit'])}" for e in r["plateau_exits"])}
            for r in rows]  # fmt: skip
    for path in [out / "aggregate.csv", *([args.csv] if args.csv else [])]:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(flat[0]))
            writer.writeheader()
            writer.writerows(flat)
    names = {key: f"#{i}" for i, key in enumerate(settings)}  # the console: settings by number
    for key, tag in names.items():
        print(f"setting {tag}: {key} ({len(settings[key].runs)} runs)")
    cols = list(flat[0])
    shown = [{**r, "setting": names[r["setting"]]} for r in flat]
    table = [cols] + [[str(r[c]) if r[c] is not None else "-" for c in cols] for r in shown]
    widths = [max(len(t[i]) for t in table) for i in range(len(cols))]
    for i, t in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(t, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
