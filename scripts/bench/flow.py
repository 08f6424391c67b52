"""Benchmark of the gradient-flow integrators of dlnlab.flow; chooses (and checks) the default solver.

Stiff benchmark: Figure-1 net dims [11,6,6,6,6,4], teacher singular values [10,6,3,1], whitened, N = 110,
data seed 0, gaussian init scale 0.1 (seed 0), t_max = 300, output grid dt = 0.1. Every solve is compared
with a tight reference (radau rtol 1e-12 / atol 1e-14, cross-checked with lsoda and bdf at the same
tolerance, and with dopri8 under --dopri8-check). The same is done for the Figure-1 setting
s = [4,3,2,1] to check the default's accuracy.

Prints the tables and writes them to docs/benchmarks/flow.md (--out). Wall times are the minimum over
--repeats runs (one run for the explicit solvers), one torch and one BLAS thread.

    python -m scripts.bench.flow                      # full benchmark (~3-4 min on 2 cores)
    python -m scripts.bench.flow --no-explicit        # skip dopri5 (~30 s)
    python -m scripts.bench.flow --dopri8-check       # also cross-check the reference with dopri8 (~2 min)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dlnlab.lab.script_args import ScriptParser, integer, positive
from scripts.bench._out import DOCS, check_out, ready_out


def parse(argv=None) -> argparse.Namespace:
    """The arguments, checked (a bad one: one line, exit 2); the report's folder made."""
    ap = ScriptParser(description=__doc__.split("\n")[0])
    ap.add_argument("--t-max", type=positive("flow time"), default=300.0)
    ap.add_argument("--dt", type=positive("the output grid's step"), default=0.1)
    ap.add_argument("--repeats", type=integer(1, 1000, "timings, the best kept"), default=3,
                    help="runs per scipy configuration (min wall time)")  # fmt: skip
    ap.add_argument("--tols", type=positive("relative tolerance", below=1), nargs="+",
                    default=[1e-6, 1e-7, 1e-8, 1e-9, 1e-10],
                    help="rtol values for the scipy methods (atol = rtol / 100)")  # fmt: skip
    ap.add_argument("--with-explicit", dest="explicit", action="store_true", default=True,
                    help="include dopri5 at rtol 1e-8 (about 30 s; the default)")  # fmt: skip
    ap.add_argument("--no-explicit", dest="explicit", action="store_false", help="skip dopri5")
    ap.add_argument("--dopri8-check", action="store_true", help="cross-check the references with dopri8")
    ap.add_argument("--out", type=Path, default=DOCS / "flow.md")
    args = ap.parse_args(argv)
    if args.dt > args.t_max:
        ap.refuse("--dt", f"{args.dt:g} is longer than --t-max {args.t_max:g}: the grid would hold one point")
    args.out = check_out(args.out)
    return args


def main(argv=None) -> None:
    args = parse(argv)
    ready_out(args.out)  # the report's folder, before minutes of work
    # the body (torch, torchdiffeq, scipy, the core) after the arguments: a refusal takes 0.05 s, not 2 s
    from scripts.bench._flow import log, report

    text = report(args)
    print()
    print(text)
    args.out.write_text(text)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
