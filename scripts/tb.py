"""TensorBoard over several runs, each named by the overrides it was started with.

    python scripts/tb.py outputs/2026-12-06 outputs/multirun/2026-12-06/15-00-00 [--print]

finds every run directory at or below the paths and starts ``tensorboard --logdir_spec`` with each run
named by its overrides (``--print``: print the command instead). Then open
http://localhost:6006/#custom_scalars&_smoothingWeight=0 (docs/tensorboard.md).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, sweeps or folders of runs")
    parser.add_argument("--print", action="store_true", help="print the command instead of running it")
    parser.add_argument("--port", type=int, default=6006)
    args = parser.parse_args(argv)
    for p in args.paths:
        if not p.is_dir():
            parser.exit(2, f"error: {p}: not a directory\n")
    from dlnlab.lab.view import find_runs, logdir_spec

    runs = find_runs(args.paths)
    if not runs:
        parser.exit(
            2,
            f"error: paths: no run directory (one with tensorboard/) in {', '.join(map(str, args.paths))}\n",
        )
    cmd = ["tensorboard", "--logdir_spec", logdir_spec(runs), "--port", str(args.port)]
    print(
        f"{len(runs)} runs; then open http://localhost:{args.port}/#custom_scalars&_smoothingWeight=0",
        file=sys.stderr,
    )
    if args.print:
        print(shlex.join(cmd))
        return 0
    os.execvp(sys.executable, [sys.executable, "-m", "tensorboard.main", *cmd[1:]])


if __name__ == "__main__":
    sys.exit(main())
