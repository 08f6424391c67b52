"""The sections of ``python -m scripts.bench`` (scripts/bench/__main__.py: its command line), each a
function of the parsed arguments that returns its markdown lines, and the report's header.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time

import torch
from threadpoolctl import threadpool_limits

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


def run(args) -> str:
    """Every section asked for, one thread, each printed as it ends; the report's text."""
    torch.set_num_threads(1)
    start, parts = time.perf_counter(), []
    with threadpool_limits(limits=1):
        for name in args.sections:
            title, section = SECTIONS[name]
            _log(f"## {title}")
            lines = [f"## {title}", "", *section(args), ""]
            _log("\n".join(lines[2:]))
            parts += lines
    return "\n".join(header(args, time.perf_counter() - start) + [""] + parts)
