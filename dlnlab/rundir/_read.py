"""Reading a run directory (:func:`load_run`, :class:`RunData`), for the plots, the scripts and resume.

The reader is defensive: a run may be interrupted, a series may have
diverged (huge values, NaN rows, repeated times), be short or empty, and the saddle analysis may not
have filled ``plateaus``.
"""

from __future__ import annotations

import json
import math
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlnlab._members import member_arrays, members_of
from dlnlab.errors import ArgumentError, FileWarning
from dlnlab.rundir._names import lr_from_name, parse_series_name, series_label, series_order_key
from dlnlab.status import Status

__all__ = [
    "read_npz",
    "read_summary",
    "read_overrides",
    "Series",
    "RunData",
    "load_run",
    "STATUS_NOTE",
]


def read_overrides(run_dir: str | Path) -> list[str]:
    """The command-line overrides a run was started with, as Hydra recorded them
    (``<run>/.hydra/overrides.yaml``, a YAML list: values Hydra quotes, such as a path with a space,
    read back as given); [] without the file. A file that is not such a list raises ValueError naming
    it (each caller says what it does without it)."""
    import yaml  # a run's reader without Hydra's files should not pay for it

    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the run's overrides ({type(err).__name__}: {err})") from err
    if loaded is None:
        return []
    if not isinstance(loaded, list):
        raise ValueError(f"{path}: cannot read the run's overrides (not a list: {type(loaded).__name__})")
    return [str(o) for o in loaded]


def read_npz(path: str | Path) -> dict[str, np.ndarray] | None:
    """All arrays of an npz (None when it is missing). A file that is not a readable .npz archive (cut
    short, damaged, another kind of file) raises ValueError naming it; numpy's own errors did not
    (``BadZipFile: File is not a zip file``, or for other bytes a suggestion to unpickle them)."""
    path = Path(path)
    if not path.is_file():
        return None
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an .npz archive (damaged, or not a file dlnlab wrote)")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as err:  # noqa: BLE001 - a cut zip, a bad member header: all unreadable
        raise ValueError(f"{path}: not a readable .npz archive ({type(err).__name__}: {err})") from err


def read_summary(run_dir: str | Path) -> dict | None:
    """``summary.json`` of a run (None when missing or unreadable)."""
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None


# per-row arrays of a series npz (first axis = grid point)
_ROW_KEYS = (
    "grid_index",
    "t",
    "loss",
    "sv",
    "sv_A",
    "mode_strength",
    "grad_norm",
    "level_index",
    "level_gap",
    "dist_best_rank",
    "cons_drift",
    "lambda_min",
    "sharpness",
    "theta",
    "step",
    "dist_to_flow",
)

STATUS_NOTE = {status: f" ({status.value.replace('_', ' ')})" for status in Status} | {Status.OK: ""}


@dataclass(repr=False)
class Series:
    """One series of a run, the flow or (S)GD at one learning rate: its arrays (``series/<name>.npz``,
    rows cut to a common length: ``t`` (T,), ``loss`` (T,), ``theta`` (T, p), ...; docs/results.md) and its
    summary entry (summary.json's ``series.<name>``, a dict). An ensemble's series: ``arrays`` are member
    0's (what the single-run figures draw) and ``members`` holds every member's, member axis first
    (E, T, ...)."""

    name: str
    lr: float | None
    arrays: dict[str, np.ndarray]
    entry: dict = field(default_factory=dict)
    members: dict[str, np.ndarray] | None = None

    def __repr__(self) -> str:  # the dataclass's printed every array in full: pages in a notebook
        size = f", {members_of(self.members)} members" if self.members is not None else ""
        status = getattr(self.status, "value", self.status)
        return f"Series({self.name!r}, lr={self.lr}, status={status}, {self.n} points{size}, arrays: {', '.join(self.arrays)})"

    @property
    def is_flow(self) -> bool:
        return self.lr is None

    @property
    def status(self) -> Status | str:
        """The entry's status (a string this lab does not know stays as it was written)."""
        value = self.entry.get("status") or Status.OK
        return Status(value) if value in tuple(Status) else str(value)

    @property
    def failed(self) -> bool:
        """Stopped early or flagged: drawn, but marked."""
        return self.status != Status.OK or bool(self.entry.get("diverged"))

    @property
    def label(self) -> str:
        base = series_label(self.lr)
        status = Status.DIVERGED if self.entry.get("diverged") and self.status == Status.OK else self.status
        return base + STATUS_NOTE.get(status, f" ({status})")

    @property
    def n(self) -> int:
        return len(self.arrays.get("t", ()))

    def get(self, key: str) -> np.ndarray | None:
        a = self.arrays.get(key)
        if a is None or len(a) == 0:
            return None
        return np.asarray(a, dtype=np.float64)

    @property
    def t(self) -> np.ndarray:
        return np.asarray(self.arrays.get("t", np.zeros(0)), dtype=np.float64)

    @property
    def t_stop(self) -> float | None:
        v = self.entry.get("t_stop")
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
        t = self.t
        return float(t[-1]) if len(t) else None


@dataclass(repr=False)
class RunData:
    """The files of one run directory, read once: ``problem`` (problem.npz's arrays), ``summary``
    (summary.json as a dict; typed: ``dlnlab.lab.Summary.from_dict(run.summary)``) and ``series``, the
    flow and the (S)GD series (``sgd_lr_<lr>``) by name, flow first, then the largest learning rate
    first. The run's other series (GD's modified and central flows, the SME ensembles, the edge
    series) are not read into ``series`` (the figures draw ``series``): ``other_series`` names them and
    :meth:`other` reads one as a :class:`Series` (``lr`` its learning rate)."""

    run_dir: Path
    problem: dict[str, np.ndarray]
    summary: dict
    series: dict[str, Series]
    other_series: list[str] = field(default_factory=list)

    def __repr__(self) -> str:  # the dataclass's printed problem.npz and summary.json in full
        series = ", ".join(
            f"{s.name} ({s.n} points, {getattr(s.status, 'value', s.status)})" for s in self.series.values()
        )
        other = f"; other series: {', '.join(self.other_series)}" if self.other_series else ""
        return f"RunData({str(self.run_dir)!r}, status={self.summary.get('status')}, series: {series}{other})"

    def other(self, name: str) -> Series:
        """One of ``other_series`` read as a :class:`Series` (``modflow_lr_0.01``, ``sme_lr_0.04``, ...: its
        arrays, rows cut to one length, an ensemble's ``members``, its summary entry); ArgumentError
        naming ``name`` for a name that is not one of them."""
        if name not in self.other_series:
            allowed = ", ".join(self.other_series) or "none in this run"
            raise ArgumentError("name", f"{name!r} is not one of the run's other series: {allowed}")
        entry = dict((self.summary.get("series") or {}).get(name) or {})
        lr = entry.get("lr") if entry.get("lr") is not None else (parse_series_name(name) or ("", None))[1]
        return _read_series(self.run_dir, name, lr, entry)

    @property
    def flow(self) -> Series | None:
        return self.series.get("flow")

    @property
    def sgd(self) -> list[Series]:
        """SGD series, largest learning rate first."""
        return [s for s in self.series.values() if not s.is_flow]

    @property
    def modes(self) -> np.ndarray:
        if "modes" in self.problem:
            return np.asarray(self.problem["modes"], dtype=np.float64)
        return np.asarray(self.summary.get("modes") or [], dtype=np.float64)

    @property
    def critical_values(self) -> np.ndarray:
        vals = self.summary.get("critical_values")
        if vals is None and "critical_values" in self.problem:
            vals = self.problem["critical_values"]
        return np.asarray([np.nan if v is None else v for v in (vals if vals is not None else [])], float)

    @property
    def dims(self) -> list[int]:
        if "dims" in self.problem:
            return [int(d) for d in self.problem["dims"]]
        dims = ((self.summary.get("config") or {}).get("model") or {}).get("dims")
        return [int(d) for d in dims] if dims else []

    @property
    def depth(self) -> int:
        return max(len(self.dims) - 1, 0)

    @property
    def config(self) -> dict:
        return self.summary.get("config") or {}

    def plateaus(self, name: str = "flow") -> list[dict]:
        """The plateaus of one series (summary.json), each with finite t_start < t_end; [] if none."""
        entry = (self.summary.get("series") or {}).get(name) or {}
        out = []
        for p in entry.get("plateaus") or []:
            if not isinstance(p, dict):
                continue
            a, b = p.get("t_start"), p.get("t_end")
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > a:
                out.append(p)
        return out


def _load_npz(path: Path, depth: int = 0) -> dict[str, np.ndarray]:
    """load_run's: a damaged file is a warning (at the caller of load_run, ``depth`` calls further out)
    and no arrays, so that it does not stop the other series or figures."""
    try:
        return read_npz(path) or {}
    except ValueError as err:
        warnings.warn(f"cannot read {err}", FileWarning, stacklevel=3 + depth)
        return {}


def _cut_rows(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cut the per-row arrays to the length of ``t`` (a series interrupted mid-write may disagree)."""
    if "t" not in arrays:
        return {}
    n = len(arrays["t"])
    for k in _ROW_KEYS:
        if k in arrays and arrays[k].ndim >= 1:
            n = min(n, len(arrays[k]))
    out = {}
    for k, v in arrays.items():
        out[k] = v[:n] if (k in _ROW_KEYS and v.ndim >= 1) else v
    return out


def _read_series(run_dir: Path, name: str, lr: float | None, entry: dict) -> Series:
    """``series/<name>.npz`` (rows cut to one length; an ensemble's member 0, and every member) and its entry."""
    path = run_dir / "series" / f"{name}.npz"
    arrays = _load_npz(path, depth=1) if path.exists() else {}
    ensemble = arrays if members_of(arrays) else None
    arrays = _cut_rows(member_arrays(arrays, 0) if ensemble else arrays)
    return Series(name, None if lr is None else float(lr), arrays, entry, ensemble)


def _below(folder: Path) -> str:
    """Where the runs are when ``folder`` holds them (a sweep's jobs, a folder of runs): their names."""
    runs = sorted(p.parent.name for p in folder.glob("*/summary.json"))
    if not runs:
        return ""
    shown = ", ".join(runs[:3]) + (f", ... ({len(runs)} in all)" if len(runs) > 3 else "")
    return f"; it holds run directories, load each: {shown}"


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory (problem.npz, summary.json, and the files and entries of the flow and the
    (S)GD series; the other series' names in ``other_series``); missing or damaged files give empty
    parts, with a :class:`~dlnlab.errors.FileWarning` for a damaged one. ``run_dir``: a str or a Path.
    Raises FileNotFoundError for a directory that is no run's (a sweep's names its jobs' directories)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"not a run directory: {run_dir}")
    summary: dict = {}
    if (run_dir / "summary.json").exists():
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except (OSError, ValueError) as err:
            warnings.warn(f"cannot read {run_dir / 'summary.json'}: {err}", FileWarning, stacklevel=2)
    problem = _load_npz(run_dir / "problem.npz") if (run_dir / "problem.npz").exists() else {}
    entries = summary.get("series") or {}
    names = {p.stem for p in (run_dir / "series").glob("*.npz")} if (run_dir / "series").is_dir() else set()
    if not names and not entries:
        raise FileNotFoundError(
            f"{run_dir} has neither series/*.npz nor summary.json: not a run directory{_below(run_dir)}"
        )
    series: dict[str, Series] = {}
    other = []
    for name in names | set(entries):
        entry = dict(entries.get(name) or {})
        lr = entry.get("lr") if "lr" in entry else lr_from_name(name)
        if name != "flow" and lr is None:
            lr = lr_from_name(name)
        if name != "flow" and lr is None:
            other.append(name)  # a modified or central flow, an SME ensemble, an edge series: not (S)GD
            continue
        series[name] = _read_series(run_dir, name, None if name == "flow" else lr, entry)
    order = sorted(series.values(), key=lambda s: series_order_key(s.name, s.lr))
    return RunData(run_dir, problem, summary, {s.name: s for s in order}, sorted(other))
