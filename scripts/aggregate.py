"""Collect the summaries of many runs (e.g. a Hydra sweep) into one table.

    python scripts/train.py -m sgd.batch_size=5,10,20          # a sweep under outputs/multirun/...
    python scripts/aggregate.py outputs/multirun/<date>/<time>  # one row per (run, series)
    python scripts/aggregate.py outputs/ --csv runs.csv

Reads only each run directory's summary.json (and .hydra/overrides.yaml when present); prints a
table and optionally writes CSV; a sweep job with a job.json but no summary.json (refused or lost) is
listed as skipped on stderr. Exit code 2 when no run directory is found.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

COLUMNS = (
    "run",
    "overrides",
    "series",
    "lr",
    "status",
    "final_loss",
    "max_dist_to_flow",
    "n_plateaus",
    "steps_or_nfe",
    "wall_time_s",
    "convergence_order",
)


def _overrides(run_dir: Path) -> str:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return ""
    items = [line.strip()[2:] for line in path.read_text().splitlines() if line.strip().startswith("- ")]
    return " ".join(items)


def rows_of(run_dir: Path) -> list[dict]:
    """One row per series of the run in ``run_dir``."""
    summary = json.loads((run_dir / "summary.json").read_text())
    out = []
    for name, entry in summary.get("series", {}).items():
        work = entry.get("nfe") if entry.get("lr") is None else entry.get("steps")
        out.append(
            {
                "run": str(run_dir),
                "overrides": _overrides(run_dir),
                "series": name,
                "lr": entry.get("lr"),
                "status": entry.get("status"),
                "final_loss": entry.get("final_loss"),
                "max_dist_to_flow": entry.get("max_dist_to_flow") if entry.get("lr") is not None else None,
                "n_plateaus": len(entry.get("plateaus") or []),
                "steps_or_nfe": work,
                "wall_time_s": entry.get("wall_time_s"),
                "convergence_order": summary.get("convergence_order"),
            }
        )
    return out


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="+", type=Path, help="run directories or folders holding them")
    ap.add_argument("--csv", type=Path, help="also write the table as CSV")
    args = ap.parse_args(argv)
    runs = sorted({p.parent for root in args.roots for p in root.rglob("summary.json")})
    for job in sorted({p.parent for root in args.roots for p in root.rglob("job.json")} - set(runs)):
        rec = json.loads((job / "job.json").read_text())  # a sweep job that never started its run
        print(f"skipped {job}: exit {rec.get('exit_code')}: {rec.get('message')}", file=sys.stderr)
    if not runs:
        print(f"no run directory (summary.json) under {', '.join(map(str, args.roots))}", file=sys.stderr)
        return 2
    rows = [row for run in runs for row in rows_of(run)]
    table = [list(COLUMNS)] + [[_fmt(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    for i, line in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
