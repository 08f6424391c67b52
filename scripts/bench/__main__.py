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
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from dlnlab.lab.script_args import ScriptParser, integer, positive
from scripts.bench._out import ready_out
from scripts.bench.ensemble import ensemble_section
from scripts.bench.figure1 import figure1_section
from scripts.bench.gpu import gpu_section
from scripts.bench.run import ensemble_run_section, wide_section
from scripts.bench.size import (
    CHEAP_REPEAT,
    FULL_SIZES,
    MIN_HD3,
    QUICK_SIZES,
    flow_horizon,
    reset_peak,
    size_report,
    size_table,
)
from scripts.bench.stiff import stiff_section


def size_section(args) -> list[str]:
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    horizon = args.flow_horizon or (lambda p: flow_horizon(p, args.quick))
    rows = size_table(sizes, args.repeat, horizon, 0.25 if args.quick else 0.75, log=_log)
    return [
        "Nets [w] * (h + 1), whitened teacher [4, 3, 2, 1] (d_x = d_y = w, N = max(110, w)), gaussian init "
        f"1 / sqrt(w), float64, best of {args.repeat} (gradient and SGD: of {max(args.repeat, CHEAP_REPEAT)}). Gradient: `problem.gradient(net.weights)` on the "
        "adjacency module against the closed form on a plain list of contiguous matrices; views held: "
        "the module's block views made once (as the core stepper holds them); flow rhs: "
        "`problem.gradient_theta` (unpack, gradient, pack). SGD: `GDStepper.advance` against a bare loop. "
        "Curvature: one warm-started `hessian_extremes` point, and its share of a default run (the points "
        "`choose_analysis` keeps on 2 series, against the measured flow over t_max 300 and 30,000 GD steps).",
        "",
        *size_report(rows, min_hd3=1e6 if args.quick else MIN_HD3),
        "",
        f"Peak memory: {reset_peak()}.",
    ]


SECTIONS = {
    "figure1": ("SGD hot loop on the Figure 1 net: Lightning path vs a plain torch loop", figure1_section),
    "size": ("Cost against size", size_section),
    "ensemble": ("Ensembles: B = 64 Figure 1 nets in one batch", lambda a: ensemble_section(
        a.repeat, full_horizon=not a.quick, sample=a.ensemble_sample, log=_log)),
    "stiff_ensemble": ("Batched stiff flows: B = 64 Figure 1 nets at t_max 300", lambda a: stiff_section(
        64, 300.0 if not a.quick else 30.0, a.repeat, a.ensemble_sample, 2 if a.quick else 4, log=_log)),
    "gpu": ("GPU", lambda a: gpu_section(a.repeat, log=_log) if a.device == "cuda" else [
        "GPU rows skipped: run with --device cuda."]),
    "wide": ("A wide net end to end: width 256, depth 8", lambda a: wide_section(log=_log)),
    "ensemble_run": ("Ensembles end to end: the lab's run of B = 64 against 64 runs",
                     lambda a: ensemble_run_section(log=_log)),
}  # fmt: skip


def _log(msg: str) -> None:
    print(msg, flush=True)


def header(args, wall_s: float) -> list[str]:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        "# Benchmarks: the lab against plain torch",
        "",
        f"Written by `{' '.join(['python', '-m', 'scripts.bench', *sys.argv[1:]])}` on "
        f"{datetime.datetime.now().isoformat(timespec='minutes')} (do not edit by hand). Machine: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared; load average {load} "
        f"at the end), Python {platform.python_version()}, torch {torch.__version__}; torch threads "
        f"{torch.get_num_threads()}, BLAS threads 1 (threadpoolctl). Total {wall_s:.0f} s.",
    ]


def parse_args(argv=None):
    ap = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a subset that runs in about a minute")
    ap.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
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
    args.out = ready_out(args.out)
    args.repeat = args.repeat or (2 if args.quick else 3)
    args.lrs = args.lrs or ([0.01] if args.quick else [0.01, 0.005, 0.0025])
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    start, parts = time.perf_counter(), []
    with threadpool_limits(limits=1):
        for name in args.sections:
            title, section = SECTIONS[name]
            _log(f"## {title}")
            lines = [f"## {title}", "", *section(args), ""]
            _log("\n".join(lines[2:]))
            parts += lines
    report = "\n".join(header(args, time.perf_counter() - start) + [""] + parts)
    if args.out is not None:
        args.out.write_text(report)
        _log(f"report written to {args.out}")


if __name__ == "__main__":
    main()
