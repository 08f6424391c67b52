"""Reproduce the seed paper's Figure 1: (a) the network as a graph, (b) near and (c) far from the origin.

    python scripts/figure1.py                         # run both experiments, write docs/figure1.png + .pdf
    python scripts/figure1.py --flow-only             # the same without the SGD series (faster)
    python scripts/figure1.py --near RUN --far RUN    # redraw from two existing run directories
    python scripts/figure1.py -o seed=3               # extra Hydra overrides for both runs

The runs are ``experiment=figure1_near`` (W_j ~ N(0, 0.1^2), t_max 300) and ``experiment=figure1_far``
(W_j ~ N(0, 0.5^2), t_max 30), each a normal run directory (series, summary.json, TensorBoard, its own
figures/) under ``--out-dir`` (default ``outputs/figure1/<date>_<time>/{near,far}``). The figure uses
only their gradient flows; ``--flow-only`` passes ``sgd.lrs=[]``. Exit code 2 on a bad configuration,
3 when a run failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = {"near": "figure1_near", "far": "figure1_far"}


def run_experiment(name: str, out: Path, overrides: list[str]) -> Path:
    """Compose ``experiment=<name>`` (plus overrides) with Hydra and run it into ``out``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dlnlab.lab.experiment import run

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="train", overrides=[f"experiment={name}", *overrides])
    print(f"== {name} -> {out}", flush=True)
    res = run(cfg, output_dir=out)
    if res.exit_code:
        raise SystemExit(f"error: run {name} ended with exit code {res.exit_code} (see {out}/summary.json)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--near", type=Path, help="existing near-origin run directory (skip running it)")
    ap.add_argument("--far", type=Path, help="existing far-from-origin run directory (skip running it)")
    ap.add_argument(
        "--out-dir", type=Path, help="parent directory of the two runs (default outputs/figure1/<stamp>)"
    )
    ap.add_argument(
        "--png", type=Path, default=ROOT / "docs" / "figure1.png", help="default docs/figure1.png"
    )
    ap.add_argument(
        "--pdf", type=Path, default=ROOT / "docs" / "figure1.pdf", help="default docs/figure1.pdf"
    )
    ap.add_argument("--dpi", type=int, default=200)
    ap.add_argument("--flow-only", action="store_true", help="run without SGD series (sgd.lrs=[])")
    ap.add_argument("--linear-far", action="store_true", help="linear time axis in (c) (default: log)")
    ap.add_argument("-o", "--override", action="append", default=[], help="Hydra override for both runs")
    args = ap.parse_args(argv)

    overrides = list(args.override) + (["sgd.lrs=[]"] if args.flow_only else [])
    out_dir = args.out_dir or ROOT / "outputs" / "figure1" / time.strftime("%Y-%m-%d_%H-%M-%S")
    dirs = {"near": args.near, "far": args.far}
    try:
        for key, exp in EXPERIMENTS.items():
            if dirs[key] is None:
                dirs[key] = run_experiment(exp, out_dir / key, overrides)
    except SystemExit as err:
        print(err, file=sys.stderr)
        return 3
    except Exception as err:
        from dlnlab.lab.errors import ConfigError

        if isinstance(err, ConfigError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise

    from dlnlab.plots import figure1

    figure1(
        dirs["near"], dirs["far"], png=args.png, pdf=args.pdf, dpi=args.dpi, far_log_time=not args.linear_far
    )
    for p in (args.png, args.pdf):
        if p is not None:
            print(f"wrote {p} ({p.stat().st_size / 1024:.0f} KiB)")
    print(f"runs: near {dirs['near']}, far {dirs['far']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
