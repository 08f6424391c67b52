"""Aggregate a sweep or an ensemble across seeds, setting by setting (``dlnlab.lab.results._aggregate``).

    python scripts/train.py -m hydra/launcher=joblib seed=0,1,2,3 sgd.batch_size=5,10   # a sweep ...
    python scripts/aggregate.py outputs/multirun/<date>/<time>          # ... per setting, across seeds
    python scripts/aggregate.py outputs/<date>/<time>                   # an ensemble run (its members)
    python scripts/aggregate.py <dirs> --out <folder> --csv table.csv

Prints, per setting and series, the final loss and the largest distance to the flow, per setting the
convergence orders, and the plateau exit times, each as mean [5%, 95%] over the samples (seeds,
members); writes ``aggregate.json``, ``aggregate.csv`` and, per setting, the curves' statistics (npz),
``setting.json`` and a figure into a new directory (default ``<first root>/aggregate``, or
``aggregate_1``, ... when taken). Lists what it skipped (a job with no run, a damaged run, a failed
series) on stderr. Exit code 2, before any work, on a bad argument; 2 when no usable run is found.
"""

from __future__ import annotations

from pathlib import Path

from dlnlab.lab.script_args import (
    ScriptParser,
    cannot_write_in,
    existing_dir,
    fresh_dir,
    output_dir,
    output_file,
    run_script,
    say,
)


def parse(argv: list[str] | None):
    ap = ScriptParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "roots", nargs="+", type=existing_dir, help="run directories, sweeps, or folders holding them"
    )
    ap.add_argument(
        "--out", type=output_dir, help="a new or empty directory (default: <first root>/aggregate)"
    )
    ap.add_argument("--csv", type=output_file([".csv"]), help="also write the table as CSV here (replaced)")
    args = ap.parse_args(argv)
    if args.out is None and (why := cannot_write_in(args.roots[0])):
        ap.refuse("--out", f"not given, and {why} (the default goes there); give --out <new directory>")
    return args


def _default_out(root: Path) -> Path:
    return root / "aggregate"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from dlnlab.lab.results import aggregate, collect, csv_records, report
    from dlnlab.rundir import write_json, write_text

    settings, skipped = collect(args.roots)
    for st in settings.values():
        skipped += st.skipped
    for line in skipped:
        say(f"skipped {line}")
    if not any(st.samples for st in settings.values()):
        roots = ", ".join(map(str, args.roots))
        what = "no usable series" if settings else "no usable run directory (summary.json)"
        say(f"error: roots: {what} under {roots}; nothing written")
        return 2
    out = args.out or fresh_dir(_default_out(args.roots[0]))
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(settings, out)
    listing = [
        {"setting": st.key, "folder": st.folder, "runs": st.runs} for st in settings.values() if st.samples
    ]
    write_json(out / "aggregate.json", {"rows": rows, "settings": listing, "skipped": skipped})
    records = csv_records(rows)
    text = _csv(records)
    for path in [out / "aggregate.csv", *([args.csv] if args.csv else [])]:
        write_text(path, text)
    print(report(rows, {k: st for k, st in settings.items() if st.samples}, skipped))
    print(f"\nwrote {out}{f' and {args.csv}' if args.csv else ''}")
    return 0


def _csv(records: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


if __name__ == "__main__":
    run_script(main)
