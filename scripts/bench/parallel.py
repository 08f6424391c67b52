"""Series in worker processes (``run.workers``) and where a run's time outside its series goes.

    python -m scripts.bench.parallel                      # the default run and an 8-rate sweep, 2 repeats
    python -m scripts.bench.parallel --repeat 3 --out docs/benchmarks/parallel.md
    python -m scripts.bench.parallel --sections default   # the default run alone

* default: ``python scripts/train.py`` (Figure 1: the flow and GD at three learning rates, figures,
  TensorBoard) with ``run.workers=1`` and with the default (the cores), interleaved, each in a fresh
  process, its wall time from the process's start to its end. Each run does what the command line
  does (its preflight, then the run) and is timed by phase from inside (the functions of the driver
  wrapped by timers: the imports of torch, Hydra and the lab; the preflight, which composes the config,
  checks it with ``prepare`` and imports Lightning to check the logger's class, plus the run's own
  ``prepare``; the loggers, the series, the saddle analysis, the figures, the results to the loggers);
  the rest of the process's wall time (the interpreter, Hydra's composition, the end) is "other".
* sweep: the Figure 1 net with eight learning rates (``sgd.lrs`` from 0.02 to 0.004), figures off, with
  ``run.workers=1`` and the default.

Timings on a shared machine vary from run to run: every variant is run ``--repeat`` times, interleaved,
and the median is reported with the range; the report says how many cores the process could use and the
machine's load average at the start and at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dlnlab.lab.script_args import ScriptParser, integer
from scripts.bench._out import ready_out

ROOT = Path(__file__).resolve().parents[2]
SWEEP_LRS = "[0.02,0.016,0.0125,0.01,0.008,0.0063,0.005,0.004]"
PHASES = [
    "imports",
    "preflight",
    "loggers",
    "series",
    "saddle analysis",
    "figures",
    "results to loggers",
    "other",
]


def _one(overrides: list[str], out: str) -> dict:
    """One run in this process as the command line does it (the preflight, then the run), timed by
    phase (run by the bench in a fresh process: ``--one``). The preflight imports Lightning (to check
    the logger's class) and, with a second core, starts the flow's solve first (runner/_ahead.py)."""
    start = time.perf_counter()
    times: dict[str, float] = {}

    def timed(module, name: str, phase: str) -> None:
        inner = getattr(module, name)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                times[phase] = times.get(phase, 0.0) + time.perf_counter() - t0

        setattr(module, name, wrapper)

    from hydra import compose, initialize_config_dir

    from dlnlab.lab import cli
    from dlnlab.lab.config import TrainConfig  # noqa: F401 - registers the schema

    times["imports"] = time.perf_counter() - start
    argv = [*overrides, f"hydra.run.dir={out}"]
    t0 = time.perf_counter()
    reason = cli.preflight(argv, ROOT / "conf")
    times["preflight"] = time.perf_counter() - t0
    if reason is not None:
        raise SystemExit(f"refused: {reason}")
    import dlnlab.lab.results as results  # the modules below import Lightning: imported by the preflight
    import dlnlab.lab.runner._driver as driver
    import dlnlab.lab.runner._series as series
    from dlnlab.lab.runner import SeriesContext

    timed(driver, "prepare", "preflight")  # the run's own check of its config
    timed(SeriesContext, "open_loggers", "loggers")
    timed(series, "run_series", "series")
    timed(results, "analyze_run_saddles", "saddle analysis")
    timed(results, "analyze_members", "saddle analysis")
    timed(results, "make_figures", "figures")
    timed(results, "log_run", "results to loggers")
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="train", overrides=overrides)
    result = driver.run(cfg, output_dir=out)
    times["total"] = time.perf_counter() - start
    process = result.summary.process  # a ProcessEntry: flow_ahead ABSENT (false) in a run without it
    times["workers"] = process.workers
    times["flow_ahead"] = bool(process.flow_ahead)
    times["series_walls"] = {k: e.get("wall_time_s") for k, e in result["series"].items()}
    return times


def _timed_process(overrides: list[str]) -> dict:
    """A fresh process doing one run: its phases, and its wall time from start to end."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "scripts.bench.parallel",
            "--one",
            json.dumps(overrides),
            str(Path(tmp) / "run"),
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(overrides)}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    times = json.loads(proc.stdout.strip().splitlines()[-1])
    times["other"] = wall - sum(times.get(p, 0.0) for p in PHASES[:-1])
    times["process"] = wall
    return times


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r.get(key, 0.0) for r in runs)


def _span(runs: list[dict], key: str) -> str:
    values = [r.get(key, 0.0) for r in runs]
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _compare(label: str, overrides: list[str], repeat: int, log) -> list[str]:
    runs: dict[str, list[dict]] = {"run.workers=1": [], "default": []}
    for i in range(repeat):  # interleaved: a change in the machine's load hits both alike
        for variant, extra in (("run.workers=1", ["run.workers=1"]), ("default", [])):
            log(f"{label}: {variant}, repeat {i + 1} / {repeat} ...")
            runs[variant].append(_timed_process([*overrides, *extra]))
    serial, parallel = runs["run.workers=1"], runs["default"]
    workers = parallel[0]["workers"]
    lines = [
        f"`python scripts/train.py {' '.join(overrides)}`; median (range) of {repeat} runs, seconds of wall time.",
        "",
        f"| phase | run.workers=1 | default ({workers} workers) |",
        "|---|---|---|",
    ]
    for phase in PHASES:
        lines.append(f"| {phase} | {_span(serial, phase)} | {_span(parallel, phase)} |")
    lines.append(f"| **the process** | {_span(serial, 'process')} | {_span(parallel, 'process')} |")
    for name, runs_ in (("run.workers=1", serial), ("default", parallel)):
        outside = [1 - r["series"] / r["process"] for r in runs_]
        lines.append(f"| outside the series, {name} | {100 * statistics.median(outside):.0f} % | |")
    ahead = sum(r.get("flow_ahead", False) for r in parallel)
    lines.append(
        f"| the flow solved ahead of Lightning's import (default) | | {ahead} of {len(parallel)} runs |"
    )
    speedup = _median(serial, "process") / _median(parallel, "process")
    series_speedup = _median(serial, "series") / _median(parallel, "series")
    lines += [
        "",
        f"Speedup of the default over run.workers=1: {speedup:.2f}x the whole process, {series_speedup:.2f}x its series.",
    ]
    walls = {
        k: statistics.median(r["series_walls"][k] or 0.0 for r in serial) for k in serial[0]["series_walls"]
    }
    lines.append(
        "Series' own wall times (run.workers=1, median): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in walls.items())
    )
    return lines


def main(argv=None) -> int:
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=integer(1, 1000, "timings, the best kept"), default=2)
    parser.add_argument("--sections", nargs="+", default=["default", "sweep"], choices=["default", "sweep"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", nargs=2, metavar=("OVERRIDES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = ready_out(args.out)
    if args.one:
        print(json.dumps(_one([*json.loads(args.one[0])], args.one[1])), flush=True)
        gc.freeze()  # the end of scripts/train.py's process, measured as it is (see there)
        return 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    cores = len(os.sched_getaffinity(0))
    lines = [
        "# Series in worker processes and the time outside the series",
        "",
        f"`python -m scripts.bench.parallel {' '.join(argv or sys.argv[1:])}` on {cores} cores "
        f"({os.cpu_count()} in the machine); load average at the start {os.getloadavg()[0]:.1f}; "
        f"{time.strftime('%Y-%m-%d %H:%M')}.",
        "",
    ]
    quiet = ["log.progress=never"]
    if "default" in args.sections:
        lines += ["## The default run", "", *_compare("default", quiet, args.repeat, log), ""]
    if "sweep" in args.sections:
        sweep = [*quiet, f"sgd.lrs={SWEEP_LRS}", "log.figures=false"]
        lines += ["## A sweep of eight learning rates", "", *_compare("sweep", sweep, args.repeat, log), ""]
    lines.append(f"Load average at the end: {os.getloadavg()[0]:.1f}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
