"""The edge of stability in the lab: GD, the gradient flow and GD's central flow from one run, and
its figure (docs/eos.md).

    python scripts/eos_lab.py                       # conf/experiment/eos.yaml, into outputs/eos/<date>/<time>
    python scripts/eos_lab.py --out docs/eos.png    # the same, remaking the committed docs/eos.png
    python scripts/eos_lab.py --run /tmp/eos sgd.lrs=[0.2163,0.2]   # any key of the lab after the options
    python scripts/eos_lab.py --run /tmp/eos --replot --out /tmp/eos.png    # redraw from an earlier run

One lab run of ``experiment=eos`` (``flow.central=true``: the series flow, cflow_lr_<lr>, sgd_lr_<lr>
and edge_lr_<lr>) into ``--run`` (new or empty; default a new ``outputs/eos/<date>/<time>``), then the
figure (``dlnlab.plots.eos``) to ``--out`` (default ``eos.png`` in the run directory; an explicit
``--out`` replaces an existing file). The config is checked before the run starts: exit code 2 with
one line on a bad one; 3 when the run fails; 130 / 143 when interrupted. The run prints its
edge-of-stability block (docs/eos.md explains every number); ``--replot`` prints it again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from dlnlab.lab.script_args import (
    FIGURE_SUFFIXES,
    ScriptParser,
    checked_config,
    existing_dir,
    fresh_dir,
    output_dir,
    output_file,
    run_script,
    stamped,
)

ROOT = Path(__file__).resolve().parents[1]
BASE = ["experiment=eos", "log.progress=never", "logger=tensorboard"]


def parse(argv: list[str] | None):
    ap = ScriptParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=output_file(FIGURE_SUFFIXES), help="the figure (default: <run>/eos.png)")
    ap.add_argument("--run", help="the run directory: new or empty; with --replot, an earlier run")
    ap.add_argument("--replot", action="store_true", help="only redraw the figure from --run")
    ap.add_argument("overrides", nargs="*", help="lab keys (key=value) on top of experiment=eos")
    args = ap.parse_args(argv)
    if args.replot:
        if args.run is None:
            ap.refuse("--replot", "needs --run, the directory of an earlier run")
        if args.overrides:
            ap.refuse(args.overrides[0], "configures the run, and --replot runs nothing; leave it out")
        args.run = ap.check("--run", existing_dir, args.run)
        if not list((args.run / "series").glob("edge_lr_*.npz")):
            ap.refuse(
                "--run", f"{args.run} has no series/edge_lr_*.npz (not a run with flow.central or sgd.edge)"
            )
        return args
    args.run = ap.check("--run", output_dir, args.run) if args.run is not None else None
    cfg, why = checked_config(ROOT / "conf", [*BASE, *args.overrides], dir_option="--run")
    if cfg is None:
        ap.refuse("overrides", why)
    if not (cfg.flow.central or cfg.sgd.edge):
        ap.refuse("overrides", "flow.central=false and sgd.edge=false: the run would have nothing to draw")
    args.cfg = cfg
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # absolute, as train.py's lines name a run (Hydra's run directory): a path to copy from anywhere
    run_dir = Path(os.path.abspath(args.run or fresh_dir(stamped(Path("outputs") / "eos"))))
    if args.replot:
        summary = json.loads((run_dir / "summary.json").read_text())
    else:
        print(f"writing {run_dir}", flush=True)
        from dlnlab.lab.runner import run

        summary = run(args.cfg, output_dir=run_dir)
        if summary.exit_code in (130, 143):
            return summary.exit_code
        if summary.exit_code:
            print(f"error: the run ({run_dir}) ended with exit code {summary.exit_code}", file=sys.stderr)
            return 3
    from dlnlab.lab.results import edge_lines
    from dlnlab.plots.eos import write_eos_figure

    out = Path(os.path.abspath(args.out)) if args.out else run_dir / "eos.png"
    write_eos_figure(run_dir, out)
    if args.replot:  # a run has printed its edge-of-stability block already
        print("\n".join(edge_lines(summary)))
    print(f"wrote {out} (the run in {run_dir})")
    return 0


if __name__ == "__main__":
    run_script(main)
