"""The report's path (``--out``) made ready before any work: a benchmark of minutes must not end in a
traceback with its report unwritten (``--out`` into a folder that did not exist did, after the whole run).
No heavy import: scripts/bench/parallel.py times a run's imports in the same process."""

from __future__ import annotations

import sys
from pathlib import Path

from dlnlab.lab.script_args import cannot_create

DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"  # the committed reports' folder


def check_out(path: Path | None) -> Path | None:
    """``path`` if a report can be written there, nothing made (the arguments' check: a documented
    command is parsed in the tests without writing); a directory or a folder that cannot be made: one
    line, exit 2."""
    if path is None:
        return None
    if path.is_dir():
        print(f"error: --out: {path} is a directory; give the report's file path", file=sys.stderr)
        sys.exit(2)
    why = cannot_create(path.parent) if not path.parent.is_dir() else None
    if why:
        print(f"error: --out: {why}", file=sys.stderr)
        sys.exit(2)
    return path


def ready_out(path: Path | None) -> Path | None:
    """``path`` with its folder made; a directory or a folder that cannot be made: one line, exit 2."""
    if check_out(path) is None:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"error: --out: cannot make the folder {path.parent} ({err.strerror})", file=sys.stderr)
        sys.exit(2)
    return path
