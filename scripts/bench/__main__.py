"""Benchmarks of the lab against plain torch: the SGD hot loop, the size axis, ensembles and the GPU.

Sections (each prints a markdown table; ``--out`` writes them all to one report with the machine, torch
version, threads, date and command). Everything runs single-threaded (``torch.set_num_threads(1)`` and
one BLAS thread); compared variants are measured side by side in one process, interleaved, best of
``--repeat``.

* Figure 1: the SGD hot loop, the lab's Lightning path against a plain torch loop with the same
  closed-form gradient (RegressionProblem.gradient) and in-place update A_j -= eta * G_j on the Figure 1
  net. Rows:

    plain            a bare torch loop, nothing recorded
    plain+recorder   the bare loop handing the grid snapshots to the same SeriesRecorder
    lightning        the lab's path (dlnlab.lab.runner._training.train_series) with its default logging
                     (recorder on the log grid, curvature on ~100 points, TensorBoard, theta saved),
                     the recorder in a forked worker process as dlnlab.lab.runner._driver runs it

* size: widths 4 to 512 and depths 2 to 10; gradient, SGD, flow, curvature and memory against plain
  torch, and the exponent of the gradient's time against h d^3 (``scripts/bench/size.py``).
* ensemble: B = 64 Figure 1 nets as one batch against 64 one-by-one runs, SGD and the flow
  (``scripts/bench/ensemble.py``).
* stiff_ensemble: the batched stiff flows (radau_batch, bdf_batch) of 64 Figure 1 nets at t_max 300
  against 64 one-by-one LSODA solves (at the default rtol and at 1e-12) and the batched rk45, each
  member's deviation from its own LSODA solve and its own Radau solve at rtol 1e-12
  (``scripts/bench/stiff.py``).
* gpu (``--device cuda``): widths 1024 to 4096 in float64 and float32 against the CPU and the bare
  matmuls (``scripts/bench/gpu.py``).
* wide, ensemble_run: whole lab runs (``scripts/bench/run.py``): the width-256, depth-8 net with the
  defaults, without analysis and theta, and as a plain torch loop; an ensemble of 64 against 64 runs.

    python -m scripts.bench --quick                          # about a minute and a half
    python -m scripts.bench --out docs/benchmarks/size.md    # everything (10-15 minutes on 2 cores)
    python -m scripts.bench --sections figure1 --t-max 60 --repeat 3
    python -m scripts.bench --device cuda --sections gpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dlnlab.lab.script_args import ScriptParser, integer, positive
from scripts.bench._out import check_out, ready_out

# the sections, in the report's order (scripts/bench/_sections.py holds each one's title and function;
# their names are here so that the arguments are checked before any of them is imported: 0.05 s, not 5 s)
SECTION_NAMES = ("figure1", "size", "ensemble", "stiff_ensemble", "gpu", "wide", "ensemble_run")


def parse_args(argv=None):
    ap = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a subset that runs in about a minute")
    ap.add_argument("--sections", nargs="+", choices=list(SECTION_NAMES), default=list(SECTION_NAMES))
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda adds the GPU rows")
    ap.add_argument(
        "--repeat",
        type=integer(1, 1000, "timings, the best kept"),
        default=None,
        help="best of (default 3, --quick 2)",
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="write the report here (e.g. docs/benchmarks/size.md)"
    )
    ap.add_argument(
        "--lrs",
        type=positive("learning rate"),
        nargs="+",
        default=None,
        help="Figure 1 section (default 0.01 0.005 0.0025)",
    )
    ap.add_argument("--t-max", type=positive("flow time"), default=300.0, help="Figure 1 section")
    ap.add_argument("--dt", type=positive("the log grid's step"), default=0.1, help="Figure 1 section")
    ap.add_argument("--analysis-points", type=integer(0, 1_000_000, "curvature points"), default=100,
                    help="Figure 1 section")  # fmt: skip
    ap.add_argument("--flow-horizon", type=positive("flow time"), default=None,
                    help="size section: the flows' short horizon")  # fmt: skip
    ap.add_argument("--ensemble-sample", type=integer(1, 64, "members solved one by one"), default=16,
                    help="ensemble at t_max 300: one-by-one solves of this many members, scaled to 64")  # fmt: skip
    args = ap.parse_args(argv)
    if args.dt > args.t_max:
        ap.refuse("--dt", f"{args.dt:g} is longer than --t-max {args.t_max:g}: the grid would hold one point")
    args.out = check_out(args.out)
    args.repeat = args.repeat or (2 if args.quick else 3)
    args.lrs = args.lrs or ([0.01] if args.quick else [0.01, 0.005, 0.0025])
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    ready_out(args.out)  # the report's folder, before minutes of work
    from scripts.bench._sections import run  # torch, the core and the sections, once the arguments pass

    report = run(args)
    if args.out is not None:
        args.out.write_text(report)
        print(f"report written to {args.out}", flush=True)


if __name__ == "__main__":
    main()
