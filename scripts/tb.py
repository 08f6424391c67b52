"""TensorBoard over several runs, each named by the overrides that set it apart.

    python scripts/tb.py outputs/2026-12-06 outputs/multirun/2026-12-06/15-00-00 [--print]

finds every run directory at or below the paths and starts ``tensorboard --logdir_spec`` with each run
named by the overrides that set it apart from the others (those they all share are printed once;
``--print``: print the command instead). Then open
http://localhost:6006/#custom_scalars&_smoothingWeight=0 (docs/tensorboard.md). A run whose path holds
',' (a sweep's job with two overrides or more) is given through a symbolic link in a temporary folder,
removed when TensorBoard ends or tb.py is stopped (Ctrl+C, SIGTERM, SIGHUP: TensorBoard is stopped with
it); kept with ``--print``: the command needs it.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from dlnlab.lab.script_args import ScriptParser, existing_dir, integer


def main(argv=None) -> int:
    # the other scripts' parser: one-line refusals naming the argument, no abbreviations (--pr), and a
    # port TensorBoard can take (99999 was put into the command and the URL printed)
    parser = ScriptParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "paths", nargs="+", type=existing_dir, help="run directories, sweeps or folders of runs"
    )
    parser.add_argument("--print", action="store_true", help="print the command instead of running it")
    parser.add_argument("--port", type=integer(1, 65535, "a TCP port"), default=6006)
    args = parser.parse_args(argv)
    from dlnlab.lab.view import find_runs, logdir_spec, run_labels

    runs = find_runs(args.paths)
    if not runs:
        parser.exit(
            2,
            f"error: paths: no run directory (one with tensorboard/) in {', '.join(map(str, args.paths))}\n",
        )
    needs_links = any("," in str(r) for r in runs)
    link_dir = Path(tempfile.mkdtemp(prefix="dlnlab-tb-")) if needs_links else None
    if link_dir is not None and "," in str(link_dir):  # the links' own path would be cut at it
        link_dir.rmdir()
        parser.exit(
            2,
            f"error: TMPDIR: {link_dir.parent} holds ',', where the links to the runs whose paths hold ',' "
            "would go: set TMPDIR to a folder without one\n",
        )
    shared, labels = run_labels(runs)  # each run's overrides.yaml read once, for both
    cmd = ["tensorboard", "--logdir_spec", logdir_spec(runs, link_dir, labels), "--port", str(args.port)]
    if shared:
        print(f"every run: {' '.join(shared)}", file=sys.stderr)
    print(
        f"{len(runs)} runs; then open http://localhost:{args.port}/#custom_scalars&_smoothingWeight=0",
        file=sys.stderr,
    )
    if args.print:
        if link_dir is not None:
            print(
                f"links to the runs whose paths hold ',': {link_dir} (remove it when done)", file=sys.stderr
            )
        print(shlex.join(cmd))
        return 0
    try:  # a child, not exec: the links are removed when TensorBoard ends
        return _serve([sys.executable, "-m", "tensorboard.main", *cmd[1:]])
    finally:
        if link_dir is not None:
            shutil.rmtree(link_dir, ignore_errors=True)


def _serve(argv: list[str]) -> int:
    """TensorBoard as a child, stopped with tb.py. SIGTERM and SIGHUP (a terminal closed) ended tb.py at
    once, without its finally: the links stayed and TensorBoard ran on, orphaned, holding the port. Their
    handler exits only once the child is known: a signal taken while Popen was starting it (raised there,
    the child was left running, orphaned) is noted and acted on when Popen returns."""
    child: subprocess.Popen | None = None
    received: list[int] = []

    def stop(signum, _frame) -> None:
        received.append(signum)
        if child is not None:
            sys.exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        child = subprocess.Popen(argv)
        if received:
            sys.exit(128 + received[0])
        return child.wait()
    except KeyboardInterrupt:  # Ctrl+C reached TensorBoard too (one process group): it ends with tb.py
        return 130
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()


if __name__ == "__main__":
    sys.exit(main())
