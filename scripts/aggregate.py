"""Aggregate a sweep or an ensemble across seeds, setting by setting (``dlnlab.lab.aggregate_runs``).

    python scripts/train.py -m hydra/launcher=joblib seed=0,1,2,3 sgd.batch_size=5,10   # a sweep ...
    python scripts/aggregate.py outputs/multirun/<date>/<time>          # ... per setting, across seeds
    python scripts/aggregate.py outputs/<date>/<time>                   # an ensemble run (its members)
    python scripts/aggregate.py <dirs> --out <folder> --csv table.csv

Prints, per setting and series, the final loss and the largest distance to the flow, per setting the
convergence orders, and the plateau exit times, each as mean [5%, 95%] over the samples (seeds,
members); writes ``aggregate.json``, ``aggregate.csv`` and, per setting, the curves' statistics (npz),
``setting.json`` and a figure into a new directory (default ``<first root>/aggregate``, or
``aggregate_1``, ... when taken). Lists what it skipped (a job with no run, a damaged run, a failed
series) on stderr. Exit code 2, before any work, on a bad argument; 2 when no usable run is found; 4,
with nothing written, when the disk refuses a file (full, a quota, a file size limit, read-only).
"""

from __future__ import annotations

import contextlib
import os
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
    from dlnlab.lab.results import NothingToAggregate, aggregate_runs
    from dlnlab.rundir import out_of_room, write_text

    try:
        agg = aggregate_runs(args.roots)
    except NothingToAggregate as err:
        for line in err.skipped:
            say(f"skipped {line}")
        say(f"error: {err}; nothing written")
        return 2
    for line in agg.skipped:
        say(f"skipped {line}")
    out = args.out or fresh_dir(_default_out(args.roots[0]))
    try:
        agg.write(out)
    except BaseException as err:
        if args.out is None:
            with contextlib.suppress(OSError):  # the empty default directory this call made
                out.rmdir()
        if not out_of_room(err):
            raise
        say(
            f"error: cannot write into {out}: {err.strerror} ({Path(err.filename or '').name}); nothing written"
        )
        return 4
    if args.csv:
        write_text(args.csv, agg.csv())
    print(agg.report())
    # absolute, as train.py's lines name a run (Hydra's run directory): paths to copy from anywhere
    csv = f" and {os.path.abspath(args.csv)}" if args.csv else ""
    print(f"\nwrote {os.path.abspath(out)}{csv}")
    return 0


if __name__ == "__main__":
    run_script(main)
