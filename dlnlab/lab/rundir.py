"""The run directory on disk: claimed atomically, every file written atomically.

* :func:`claim_directory` (the ``dlnlab_unique`` resolver of ``hydra.run.dir``) creates a new directory
  with ``os.mkdir``, which fails if it exists: two runs started in the same second get ``<time>`` and
  ``<time>_1``, never one shared directory.
* :func:`atomic_path` yields a temporary name next to the target and renames it onto the target when
  the block succeeds (``os.replace`` is atomic on POSIX), with SIGINT / SIGTERM held meanwhile: a reader
  sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dlnlab._util import jsonable
from dlnlab.lab import signals
from dlnlab.lab.errors import ConfigError

__all__ = [
    "claim_directory",
    "atomic_path",
    "save_npz",
    "write_json",
    "write_text",
    "check_run_dir",
    "HYDRA_FILES",
]

HYDRA_FILES = (".hydra", "train.log", "run.log")  # what Hydra itself writes before the job starts
_CLAIMED: dict[str, str] = {}


def claim_directory(base: str) -> str:
    """Create ``base`` (or ``base_1``, ``base_2``, ... when taken) and return its path.

    Memoised per process: Hydra may resolve ``hydra.run.dir`` more than once for one run.
    """
    base = str(base)
    if base in _CLAIMED:
        return _CLAIMED[base]
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    for i in range(100_000):
        candidate = base if i == 0 else f"{base}_{i}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        _CLAIMED[base] = candidate
        return candidate
    raise RuntimeError(f"no free run directory next to {base}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write; renamed onto ``path`` if the block succeeds, removed if not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with signals.deferred():
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """``numpy.savez`` to ``path``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    """JSON with null for NaN and infinities (never NaN tokens), atomically."""
    write_text(path, json.dumps(jsonable(obj), indent=2, allow_nan=False))


def check_run_dir(out: Path) -> None:
    """A run never writes into a non-empty directory it did not create (Hydra's own files aside)."""
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"hydra.run.dir: {out} exists and is not a directory")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in HYDRA_FILES)
        if foreign:
            raise ConfigError(
                f"hydra.run.dir: {out} is not empty (it holds {', '.join(foreign[:5])}); a run never writes "
                "into another's directory: choose a new hydra.run.dir"
            )
    out.mkdir(parents=True, exist_ok=True)
