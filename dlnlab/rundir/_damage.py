"""Whether a run directory's files can be read, checked before a script uses them.

The scripts (aggregate, plot, figure1, limit) read run directories other processes wrote; a file
may be damaged (a disk filled up, a copy cut short, an edit by hand). :func:`run_damage` gives the
one-line reason a run directory cannot be used, or None; a script skips such a run and says so, or
refuses with exit 2 when nothing usable is left. The checks read the archives' directories and the
arrays' headers, never the arrays: a header that claims 10^12 columns is refused by its size, not
by trying to allocate it.

Damaged: ``summary.json`` that is not a JSON object, or whose ``series`` is not an object of
objects; an npz (``problem.npz``, ``series/*.npz``) that is not a zip archive of ``.npy`` arrays, is
cut short, fails its CRC, holds object arrays, or whose header claims more data than the member
holds; a series the summary calls finished (ok, unstable, diverged) without its npz. A missing
``summary.json`` is not damage when ``series/`` holds arrays (a run killed before its first summary).
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np

from dlnlab.status import FINISHED, Status

__all__ = [
    "run_damage",
    "npz_damage",
    "read_summary_object",
    "json_kind",
    "MAX_SUMMARY_BYTES",
    "MAX_NPZ_BYTES",
]

MAX_SUMMARY_BYTES = 256 * 2**20  # a 4096-member ensemble's summary is about 10 MB
MAX_NPZ_BYTES = 64 * 2**30  # uncompressed: far above what limits.memory_gb lets a run write; a zip bomb


def npz_damage(path: Path) -> str | None:
    """Why ``path`` is not a readable npz of plain arrays, or None."""
    if not path.is_file():
        return f"{path.name} is not a regular file"
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            if not members:
                return f"{path.name} holds no arrays"
            total = sum(info.file_size for info in members)
            if total > MAX_NPZ_BYTES:
                return f"{path.name} unpacks to {total / 2**30:.3g} GiB, above {MAX_NPZ_BYTES // 2**30} GiB"
            for info in members:
                if not info.filename.endswith(".npy"):
                    return f"{path.name} holds {info.filename!r}, not an .npy array"
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = {(1, 0): np.lib.format.read_array_header_1_0}.get(
                        version, np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(f)
                if dtype.hasobject:
                    return f"{path.name}: array {info.filename[:-4]!r} holds objects (needs pickle)"
                if math.prod(shape) * dtype.itemsize > info.file_size:
                    return f"{path.name}: array {info.filename[:-4]!r} claims shape {shape}, more than the file holds"
            bad = zf.testzip()  # reads every member once and checks its CRC
            if bad is not None:
                return f"{path.name}: array {bad[:-4]!r} is corrupt (CRC mismatch)"
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        return f"{path.name} is not a readable npz archive ({err})"
    except (ValueError, OSError) as err:  # a bad .npy header, an I/O error
        return f"{path.name} is not a readable npz archive ({type(err).__name__}: {err})"
    return None


def json_kind(value: object) -> str:
    """What a JSON value is, in words: ``null``, ``a list``, ``a number``, ``a string``, ``a boolean``."""
    kinds = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    return kinds.get(type(value), f"a {'list' if isinstance(value, list) else type(value).__name__}")


def read_summary_object(path: Path) -> tuple[dict | None, str | None]:
    """``summary.json`` as a dict, or None and the reason it cannot be used."""
    if not path.is_file():
        return None, "summary.json is not a regular file"
    if path.stat().st_size > MAX_SUMMARY_BYTES:
        return None, f"summary.json is larger than {MAX_SUMMARY_BYTES // 2**20} MiB"
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        return None, f"summary.json is not valid JSON ({type(err).__name__}: {str(err)[:80]})"
    if not isinstance(summary, dict):
        return None, f"summary.json holds a JSON {type(summary).__name__}, not an object"
    series = summary.get("series", {})
    if not isinstance(series, dict):
        return None, f"summary.json's series is {json_kind(series)}, not an object of series entries"
    for name, entry in series.items():
        if not isinstance(entry, dict):  # named, as a record's missing key is (Summary.from_dict)
            return None, f"summary.json's series.{name} is {json_kind(entry)}, not an object"
    return summary, None


def run_damage(run_dir: Path) -> str | None:
    """The one-line reason ``run_dir``'s files cannot be used, or None when they can."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return "not a directory"
    series_dir = run_dir / "series"
    npz = sorted(series_dir.glob("*.npz")) if series_dir.is_dir() else []
    summary = None
    if (run_dir / "summary.json").exists() or (run_dir / "summary.json").is_symlink():
        summary, why = read_summary_object(run_dir / "summary.json")
        if why:
            return why
    elif not npz:
        return "not a run directory (no summary.json and no series/*.npz)"
    for path in [*([run_dir / "problem.npz"] if (run_dir / "problem.npz").exists() else []), *npz]:
        why = npz_damage(path)
        if why:
            return why if path.name == "problem.npz" else f"series/{why}"
    have = {p.stem for p in npz}
    for name, entry in ((summary or {}).get("series") or {}).items():
        status = entry.get("status") or Status.OK
        if status in FINISHED and name not in have:
            return f"series/{name}.npz is missing (summary.json says the series is {status})"
    return None
