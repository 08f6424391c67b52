"""Reproduce the seed paper's Figure 1: (a) the network as a graph, (b) near and (c) far from the origin.

    python scripts/figure1.py                         # run both experiments into outputs/figure1/<date>/<time>
    python scripts/figure1.py --out docs/figure1.png  # the same, remaking the committed docs/figure1.png + .pdf
    python scripts/figure1.py --flow-only             # the same without the SGD series (faster)
    python scripts/figure1.py --near RUN --far RUN    # redraw from two existing run directories
    python scripts/figure1.py -o seed=3               # extra Hydra overrides for both runs

The runs are ``experiment=figure1_near`` (W_j ~ N(0, 0.1^2), t_max 300) and ``experiment=figure1_far``
(W_j ~ N(0, 0.5^2), t_max 30), each a normal run directory (series, summary.json, TensorBoard, its own
figures/) under ``--runs`` (default: a new ``outputs/figure1/<date>/<time>``, the console says which).
The figure (PNG, and a PDF beside it unless ``--no-pdf``) goes to ``--out`` (default
``figure1.png`` in that directory); only an explicit ``--out`` replaces an existing file. The figure
uses only the runs' gradient flows; ``--flow-only`` passes ``sgd.lrs=[]``. Exit code 2, before any
run starts, on a bad argument or configuration; 3 when a run failed; 130 / 143 when interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dlnlab.lab.script_args import (
    ScriptParser,
    cannot_create,
    checked_config,
    existing_dir,
    fresh_dir,
    integer,
    output_dir,
    output_file,
    run_script,
    stamped,
)

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = {"near": "figure1_near", "far": "figure1_far"}


def parse(argv: list[str] | None):
    ap = ScriptParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--near", type=existing_dir, help="existing near-origin run directory (skip running it)")
    ap.add_argument(
        "--far", type=existing_dir, help="existing far-from-origin run directory (skip running it)"
    )
    ap.add_argument("--runs", type=output_dir, help="new or empty parent of the two runs "
                    "(default: a new outputs/figure1/<date>/<time>)")  # fmt: skip
    ap.add_argument("--out", type=output_file([".png"]), help="the PNG to write, replaced if it exists, "
                    "with the PDF beside it (default: <runs>/figure1.png)")  # fmt: skip
    ap.add_argument("--no-pdf", action="store_true", help="write only the PNG")
    ap.add_argument("--dpi", type=integer(10, 600, "dots per inch"), default=200)
    ap.add_argument("--flow-only", action="store_true", help="run without SGD series (sgd.lrs=[])")
    ap.add_argument("--linear-far", action="store_true", help="linear time axis in (c) (default: log)")
    ap.add_argument("-o", "--override", action="append", default=[], help="Hydra override for both runs")
    args = ap.parse_args(argv)
    to_run = [key for key in EXPERIMENTS if getattr(args, key) is None]
    if not to_run and (args.override or args.flow_only):
        ap.refuse("-o" if args.override else "--flow-only", "applies to the runs, and --near and --far "
                  "name both: nothing runs; leave it out or drop --near / --far")  # fmt: skip
    if args.out is not None and not args.no_pdf:
        ap.check("--out", output_file([".pdf"]), str(args.out.with_suffix(".pdf")))  # the PDF beside it
    if args.runs is None and (to_run or args.out is None):
        why = cannot_create(stamped(Path("outputs") / "figure1"))
        if why:
            ap.refuse("--runs", f"not given, and the default {why}; give --runs <new directory>")
    return ap, args, to_run


def _check_given(ap: ScriptParser, args) -> None:
    """--near / --far: run directories whose files can be read and that hold a gradient flow."""
    from dlnlab.rundir import run_damage

    for key in EXPERIMENTS:
        path = getattr(args, key)
        if path is None:
            continue
        why = run_damage(path) or (None if (path / "series" / "flow.npz").is_file() else "no series/flow.npz")
        if why:
            ap.refuse(f"--{key}", f"{path}: {why}; give a run directory of experiment={EXPERIMENTS[key]}")


def _configs(ap: ScriptParser, to_run: list[str], overrides: list[str]) -> dict:
    """Compose and check every run's config (the lab's own checks) before the first run starts."""
    cfgs = {}
    for key in to_run:
        cfgs[key], why = checked_config(ROOT / "conf", [f"experiment={EXPERIMENTS[key]}", *overrides])
        if why:
            ap.refuse("-o", f"{why} (experiment={EXPERIMENTS[key]})")
    return cfgs


def main(argv: list[str] | None = None) -> int:
    ap, args, to_run = parse(argv)
    _check_given(ap, args)
    cfgs = _configs(ap, to_run, [*args.override, *(["sgd.lrs=[]"] if args.flow_only else [])])
    from dlnlab.lab.runner import run
    from dlnlab.plots import figure1

    runs = args.runs or (fresh_dir(stamped(Path("outputs") / "figure1")) if to_run or not args.out else None)
    if runs is not None:
        runs.mkdir(parents=True, exist_ok=True)
        print(f"writing under {runs}", flush=True)
    dirs = {"near": args.near, "far": args.far}
    for key in to_run:
        out = runs / key
        print(f"== {EXPERIMENTS[key]} -> {out}", flush=True)
        res = run(cfgs[key], output_dir=out)
        if res.exit_code in (130, 143):
            return res.exit_code
        if res.exit_code:
            print(
                f"error: run {EXPERIMENTS[key]} ended with exit code {res.exit_code} (see {out}/summary.json)",
                file=sys.stderr,
            )
            return 3
        dirs[key] = out
    png = args.out or runs / "figure1.png"
    pdf = None if args.no_pdf else png.with_suffix(".pdf")
    figure1(dirs["near"], dirs["far"], png=png, pdf=pdf, dpi=args.dpi, far_log_time=not args.linear_far)
    for p in (png, pdf):
        if p is not None:
            print(f"wrote {p} ({p.stat().st_size / 1024:.0f} KiB)")
    print(f"runs: near {dirs['near']}, far {dirs['far']}")
    return 0


if __name__ == "__main__":
    run_script(main)
