"""Remake the figures of a run directory from its files alone (nothing is rerun).

    python scripts/plot.py outputs/2025-01-01/12-00-00
    python scripts/plot.py RUN_DIR --no-tensorboard      # only figures/*.png

Writes RUN_DIR/figures/<name>.png (loss, sharpness, sv_P, mode_strength, dist_to_flow,
convergence_order, conservation) and, when RUN_DIR/tensorboard exists, the same images to TensorBoard
(run ``report``, tags ``figures/<name>``). Prints the files written. A run directory whose files are
damaged or that cannot be written is skipped with its reason on stderr; exit code 2, before any
work, on a bad argument or when no run directory is usable.
"""

from __future__ import annotations

import os
from pathlib import Path

from dlnlab.lab.script_args import ScriptParser, cannot_write_in, existing_dir, integer, run_script, say


def parse(argv: list[str] | None):
    ap = ScriptParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "run_dirs", nargs="+", type=existing_dir, help="run directories (problem.npz, series/, summary.json)"
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
    ap.add_argument(
        "--dpi", type=integer(10, 600, "dots per inch"), default=200, help="PNG resolution (default 200)"
    )
    return ap, ap.parse_args(argv)


def _unusable(run_dir: Path, tensorboard: bool) -> str | None:
    """Why the figures of ``run_dir`` cannot be remade, or None."""
    from dlnlab.rundir import run_damage

    why = run_damage(run_dir)
    if why:
        return why
    for sub in ("figures", *(["tensorboard"] if tensorboard else [])):
        if os.path.lexists(run_dir / sub) and not (run_dir / sub).is_dir():
            return f"{sub} exists and is not a directory"
    target = run_dir / "figures" if (run_dir / "figures").is_dir() else run_dir
    return cannot_write_in(target)


def main(argv: list[str] | None = None) -> int:
    ap, args = parse(argv)
    usable, given = [], {p.resolve(): p for p in reversed(args.run_dirs)}  # each directory once
    for run_dir in reversed(given.values()):
        tensorboard = args.tensorboard if args.tensorboard is not None else (run_dir / "tensorboard").is_dir()
        why = _unusable(run_dir, tensorboard)
        if why:
            say(f"skipped {run_dir}: {why}")
        else:
            usable.append((run_dir, tensorboard))
    if not usable:
        ap.refuse("run_dirs", "no usable run directory (each skipped above); nothing written")
    from dlnlab.lab.record import REPORT_RUN, figures_logger, log_png
    from dlnlab.plots import make_run_figures

    for run_dir, tensorboard in usable:
        logger = (
            figures_logger(run_dir, {"_target_": "dlnlab.lab.record.TensorBoardLogger"})
            if tensorboard
            else None
        )
        on_png = None if logger is None else (lambda n, png, lg=logger: log_png(lg, f"figures/{n}", png))
        for path in make_run_figures(run_dir, on_png=on_png, dpi=args.dpi):
            print(path)
        if logger is not None:
            logger.finalize("success")
            print(
                f"images added to TensorBoard under {run_dir / 'tensorboard' / REPORT_RUN} (its Images tab)"
            )
    if len(usable) < len(given):
        print(f"skipped {len(given) - len(usable)} of {len(given)} run directories (reasons on stderr)")
    return 0


if __name__ == "__main__":
    run_script(main)
