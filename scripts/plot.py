"""Remake the figures of a run directory from its files alone (nothing is rerun).

    python scripts/plot.py outputs/2025-01-01/12-00-00
    python scripts/plot.py RUN_DIR --no-tensorboard      # only figures/*.png

Writes RUN_DIR/figures/<name>.png (loss, sharpness, sv_P, mode_strength, dist_to_flow,
convergence_order, conservation) and, when RUN_DIR/tensorboard exists, the same images to TensorBoard
(run ``flow``, tags ``figures/<name>``). Prints the files written. Exit code 2 when RUN_DIR is not a
run directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlnlab.lab.logging import figures_logger, log_png
from dlnlab.plots import make_run_figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "run_dirs", nargs="+", type=Path, help="run directory (holds problem.npz, series/, summary.json)"
    )
    tb = ap.add_mutually_exclusive_group()
    tb.add_argument(
        "--tensorboard",
        dest="tensorboard",
        action="store_true",
        default=None,
        help="also write the images to TensorBoard (default: when RUN_DIR/tensorboard exists)",
    )
    tb.add_argument("--no-tensorboard", dest="tensorboard", action="store_false")
    ap.add_argument("--dpi", type=int, default=200, help="PNG resolution (default 200)")
    args = ap.parse_args(argv)
    code = 0
    for run_dir in args.run_dirs:
        if not (run_dir / "series").is_dir() and not (run_dir / "summary.json").exists():
            print(
                f"error: {run_dir} is not a run directory (no series/ and no summary.json)", file=sys.stderr
            )
            code = 2
            continue
        tensorboard = args.tensorboard if args.tensorboard is not None else (run_dir / "tensorboard").is_dir()
        logger = (
            figures_logger(run_dir, {"_target_": "dlnlab.lab.logging.TensorBoardLogger"})
            if tensorboard
            else None
        )
        on_png = None if logger is None else (lambda n, png, lg=logger: log_png(lg, f"figures/{n}", png))
        for path in make_run_figures(run_dir, on_png=on_png, dpi=args.dpi):
            print(path)
        if logger is not None:
            logger.finalize("success")
            print(f"images added to TensorBoard under {run_dir / 'tensorboard' / 'flow'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
