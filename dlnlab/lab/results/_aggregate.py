"""Aggregate runs across seeds: a sweep's jobs, an ensemble's members, or both, setting by setting.

A *setting* is a run's overrides without the seeds (``seed``, ``data.seed``, ``init.seed``,
``sgd.seed``): the runs of one setting differ only in their seeds, and so do the members of an
ensemble, so every member of every run of a setting is one *sample*. Per setting and series:

* the curves across the samples against time: the mean, std and the 10/25/50/75/90% quantiles of the
  loss, the singular values of P, and the distances to the flow and to GD's modified flow, and ``n``
  the samples with a value at each point (``<out>/<folder>/<series>.npz``; a sample that stopped early
  counts until it stopped);
* the plateau exit times of each mode (mean, std, min, max, the 90% range ``q5_q95``, n): each
  sample's first exit by that mode, with the samples that left no plateau by it counted apart;
* the convergence order of each sample (the slope of its largest distance to the flow against the
  learning rate; a sample is one run's member, paired across the learning rates by its run and
  member, and enters only with a distance at every learning rate) with the mean and the 90% range
  across samples, and the same against the modified flows; the order of those samples' mean distance;
* one table row (``aggregate.csv``, ``aggregate.json``) and figures with bands around the flow.

The 90% range of a quantity (``q5_q95``) is the 5% and 95% quantiles of its samples (linear interpolation
between order statistics): where the middle 90% of the seeds and members fall, not a confidence
interval of the mean. The std is the samples' (ddof 1); of one sample it is unknown (None, NaN in the
curves), never 0.

Each setting's folder is :func:`setting_folder` of its key: a readable prefix and a hash of the whole
key, so settings that differ late in a long key get different folders and the same setting gets the
same folder in every call; ``aggregate.json`` and each ``setting.json`` record the key.

Runs that are missing (a job that never wrote its summary), damaged (:func:`dlnlab.rundir.run_damage`),
and series that failed or hold no arrays, are skipped and listed. Reads only the run directories'
files; writes only under ``out``, each file atomically.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlnlab.errors import ArgumentError
from dlnlab.lab.results._aggregate_figure import write_loss_figure
from dlnlab.lab.results._summary import fit_order
from dlnlab.metrics import member_arrays, members_of
from dlnlab.rundir import load_run, read_overrides, read_summary_object, run_damage, save_npz, write_json
from dlnlab.status import USABLE, Status

__all__ = ["Setting", "collect", "aggregate", "setting_folder", "run_dirs", "SEED_KEYS", "CURVES"]

SEED_KEYS = ("seed", "data.seed", "init.seed", "sgd.seed")
CURVES = ("loss", "sv", "dist_to_flow", "dist_to_modified")
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass
class Setting:
    """The samples of one setting: per series, each sample's arrays and its summary entry."""

    key: str
    overrides: list[str] = field(default_factory=list)  # the key's overrides (without the seeds)
    runs: list[str] = field(default_factory=list)
    samples: dict[str, list[tuple[dict, dict]]] = field(default_factory=dict)  # series -> [(arrays, entry)]
    # series -> each sample's (run directory, member), in the order of ``samples``: what pairs a sample's
    # series across the learning rates (a series missing from one run must not shift the others)
    origins: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    order_fit: int = 3  # the runs' sgd.order_fit: the orders are fitted as each run fits its own

    @property
    def folder(self) -> str:
        return setting_folder(self.key)


def setting_folder(key: str) -> str:
    """The folder name of a setting: up to 40 characters of its key, then 10 hex digits of its SHA-256."""
    prefix = "".join(c if (c.isascii() and c.isalnum()) or c in "._=-" else "_" for c in key)[:40]
    return f"{prefix.strip('_.') or 'setting'}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _without_seeds(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in SEED_KEYS)


def _setting_key(overrides: list[str]) -> str:
    return " ".join(_without_seeds(overrides)) or "(defaults)"


def _overrides(run_dir: Path) -> list[str]:
    try:
        return read_overrides(run_dir)
    except ValueError:  # a damaged record: the run's setting is the defaults'
        return []


Roots = str | os.PathLike | Iterable[str | os.PathLike]


def _roots(roots: Roots) -> list[Path]:
    """``roots`` as a list of directories: one path (a str or a Path) or several; one that is not a
    directory is refused (os.walk finds nothing in it, silently). A str taken as a list of roots was
    walked character by character: ``collect("/data/sweep")`` walked ``/``, the whole disk."""
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    try:
        out = [Path(r) for r in roots]
    except TypeError as err:
        raise ArgumentError("roots", f"expected a directory or a list of directories, got {roots!r}") from err
    for root in out:
        if not root.is_dir():
            raise ArgumentError("roots", f"{root} is not a directory (give run directories, sweeps or folders of them)")
    return out


def _files_under(roots: Roots, name: str) -> set[Path]:
    """Directories holding ``name`` under ``roots``, each once however it is reached (a relative path,
    a symbolic link: a folder of links to runs works); a directory already walked is not walked
    again, so a loop of links ends. Hidden folders (``.hydra``) are not entered."""
    found, walked = set(), set()
    for root in _roots(roots):
        for top, dirs, files in os.walk(root, followlinks=True):
            real = Path(top).resolve()
            if real in walked:
                dirs[:] = []
                continue
            walked.add(real)
            if name in files:
                found.add(real)
            dirs[:] = [d for d in dirs if not d.startswith(".")]
    return found


def run_dirs(roots: Roots) -> list[Path]:
    """The run directories (those holding summary.json) under ``roots`` (a directory or several:
    run directories, sweeps, folders holding them), sorted."""
    return sorted(_files_under(roots, "summary.json"))


def _job_note(job: Path) -> str:
    rec, why = read_summary_object(job / "job.json")
    if rec is None:
        return f"{job}: no run, and its job.json cannot be read ({why.replace('summary.json', 'job.json')})"
    return f"{job}: no run (exit {rec.get('exit_code')}: {rec.get('message')})"


def collect(roots: Roots) -> tuple[dict[str, Setting], list[str]]:
    """The settings under ``roots`` (a directory or several: run directories, sweeps, folders holding
    them) and what was skipped."""
    roots = _roots(roots)
    runs = run_dirs(roots)
    skipped = [_job_note(job) for job in sorted(_files_under(roots, "job.json") - set(runs))]
    settings: dict[str, Setting] = {}
    for run_dir in runs:
        why = run_damage(run_dir)
        if why:
            skipped.append(f"{run_dir}: {why}")
            continue
        overrides = _overrides(run_dir)
        key = _setting_key(overrides)
        st = settings.setdefault(key, Setting(key, _without_seeds(overrides)))
        st.runs.append(str(run_dir))
        run = load_run(run_dir)
        st.order_fit = int((run.config.get("sgd") or {}).get("order_fit") or 3)
        for name, series in run.series.items():
            _add_samples(st, run_dir, name, series)
    return settings, skipped


def _add_samples(st: Setting, run_dir: Path, name: str, series) -> None:
    entry = series.entry
    if entry.get("status", Status.OK) not in USABLE:
        st.skipped.append(f"{run_dir} {name}: {entry.get('status')}: {entry.get('message', '')}")
        return
    full = series.members if series.members is not None else series.arrays
    members = entry.get("members") if isinstance(entry.get("members"), list) else [entry]
    for e in range(members_of(full) or 1):
        arrays = member_arrays(full, e) if members_of(full) else full
        sub = members[e] if e < len(members) and isinstance(members[e], dict) else {}
        if sub.get("status", Status.OK) not in USABLE:
            continue
        if "t" not in arrays or not len(arrays["t"]):
            st.skipped.append(f"{run_dir} {name}: no arrays (no times in series/{name}.npz)")
            return
        st.samples.setdefault(name, []).append((arrays, {**entry, **sub}))
        st.origins.setdefault(name, []).append((str(run_dir), e))


def _stats(curves: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Mean, std, quantiles and ``n`` (the samples with a value) across samples, point by point;
    a shorter sample (one that stopped early) is NaN past its end and counts where it has values, so
    the statistics past it are over fewer samples (``n`` says how many). Every curve has one shape
    per point (:func:`_stackable` picks them)."""
    if len({np.shape(c)[1:] for c in curves}) > 1:  # (T, 1) would broadcast into (T, 3) unsaid
        raise ValueError(f"curves of different shapes per point: {sorted({np.shape(c)[1:] for c in curves})}")
    x = np.full((len(curves), max(len(c) for c in curves), *np.shape(curves[0])[1:]), np.nan)
    for i, c in enumerate(curves):
        x[i, : len(c)] = np.asarray(c, dtype=np.float64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (a series past its failure)
        out = {
            "mean": np.nanmean(x, axis=0),
            "std": np.nanstd(x, axis=0, ddof=1),  # NaN where one sample has a value: unknown, not 0
            "n": (~np.isnan(x)).sum(axis=0),  # the samples each statistic is over
        }
        for q in QUANTILES:
            out[f"q{int(q * 100)}"] = np.nanquantile(x, q, axis=0)
    return out


def _stackable(
    samples: list[tuple[dict, dict]], curve: str, t_ref: np.ndarray
) -> tuple[list[np.ndarray], str]:
    """The samples' ``curve`` arrays that can be compared point by point, and a note on the others ("" when
    none is left out): a sample on another time grid than ``t_ref`` (the longest sample's; a sample that
    stopped early is on its start), or whose values at a point have another shape than most samples'
    (the first sample's among equals), would put its values at the wrong times or not fit; within one
    setting that means runs of another code or config version. A researcher must see it, so it is said."""
    have = [(np.asarray(a["t"], dtype=np.float64), np.asarray(a[curve])) for a, _ in samples if curve in a]
    on_grid = [
        c for t, c in have if len(t) <= len(t_ref) and np.allclose(t, t_ref[: len(t)], rtol=1e-12, atol=0)
    ]
    if not have:
        return [], ""
    if not on_grid:
        return [], f"{curve}: all {len(have)} samples left out (none on the longest sample's time grid)"
    shape = Counter(c.shape[1:] for c in on_grid).most_common(1)[0][0]  # ties: the first seen
    kept = [c for c in on_grid if c.shape[1:] == shape]
    why = [f"{len(have) - len(on_grid)} on another time grid"] if len(on_grid) < len(have) else []
    if len(kept) < len(on_grid):
        others = sorted({str(c.shape[1:]) for c in on_grid if c.shape[1:] != shape})
        why.append(
            f"{len(on_grid) - len(kept)} with values of shape {', '.join(others)} per point, not {shape}"
        )
    note = (
        f"{curve}: {len(have) - len(kept)} of {len(have)} samples left out ({'; '.join(why)})" if why else ""
    )
    return kept, note


def _number(x) -> float | None:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else None


def _spread(values) -> dict | None:
    """mean, std (ddof 1; None for one value), min, max, ``q5_q95`` (the samples' 5% and 95% quantiles:
    where they fall, not a confidence interval of the mean, so not called ``ci90`` as the bootstrap
    intervals of ``sgd_limit`` are) and n of the finite values; None without one."""
    v = np.asarray([x for x in map(_number, values) if x is not None], dtype=np.float64)
    if not len(v):
        return None
    lo, hi = (np.quantile(v, 0.05), np.quantile(v, 0.95)) if len(v) > 1 else (v[0], v[0])
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else None, "min": float(v.min()),
            "max": float(v.max()), "q5_q95": [float(lo), float(hi)], "n": int(len(v))}  # fmt: skip


def _orders(st: Setting, key: str) -> dict:
    """Each sample's slope of log max distance against log lr, and the slope of the samples' mean
    distance, by the run's own rule (:func:`fit_order`: over the ``sgd.order_fit`` smallest learning
    rates, none with fewer), so that a run's order and its aggregate's agree (they did not: the aggregate
    fitted every rate, also two where the run said none). A sample is one run's member, paired across
    the rates by its run and member (not by its place in the list: a series that failed or diverged in
    one run would pair the runs after it with the wrong seeds); only the samples with a positive
    distance at every fitted rate enter, the per-sample slopes and the mean alike."""
    by_lr: dict[float, dict[tuple[str, int], float | None]] = {}
    for name, samples in st.samples.items():
        if name.startswith("sgd_lr_"):
            values = [_number(s[1].get(key)) for s in samples]
            by_lr[float(name[len("sgd_lr_") :])] = dict(zip(st.origins[name], values))
    lrs = sorted(by_lr)[: st.order_fit]
    if len(lrs) < st.order_fit:
        why = f"needs at least {st.order_fit} learning rates with a distance (sgd.order_fit), got {len(lrs)}"
        return {"per_sample": None, "of_the_mean": None, "lrs": lrs, "message": why}
    common = set.intersection(*(set(by_lr[lr]) for lr in lrs))
    complete = sorted(o for o in common if all((by_lr[lr][o] or 0.0) > 0 for lr in lrs))
    slopes = [fit_order(lrs, [by_lr[lr][o] for lr in lrs], st.order_fit)[0] for o in complete]
    means = [float(np.mean([by_lr[lr][o] for o in complete])) for lr in lrs] if complete else None
    of_mean = fit_order(lrs, means, st.order_fit)[0] if means else None
    return {"per_sample": _spread(slopes), "of_the_mean": of_mean, "lrs": lrs, "message": ""}


def _exit_times(entry: dict) -> dict[int, float] | None:
    """Each mode's first plateau exit time in one sample (mode -> t_exit); None when its plateaus were
    not analysed. SGD can leave a plateau by the same mode twice (it unlearnt the mode in between):
    the sample counts once, with its first exit, the one the flow's single exit compares to."""
    plateaus = entry.get("plateaus")
    if not isinstance(plateaus, list):
        return None
    first: dict[int, float] = {}
    for p in plateaus:
        mode = p.get("exit_mode") if isinstance(p, dict) else None
        if isinstance(mode, int) and not isinstance(mode, bool) and _number(p.get("t_exit")) is not None:
            first[mode] = min(first.get(mode, math.inf), float(p["t_exit"]))
    return first


def _setting_exit_modes(st: Setting) -> set[int]:
    """The modes any sample of any series of the setting left a plateau by."""
    return {k for samples in st.samples.values() for _, e in samples for k in (_exit_times(e) or {})}


def _exits(samples: list[tuple[dict, dict]], modes: set[int] = frozenset()) -> list[dict]:
    """Per mode (those of ``modes``, the setting's, and those the samples left by): the spread of the
    samples' first exits by it (None without one), ``samples`` the samples whose plateaus were analysed
    and ``without_exit`` those of them that left no plateau by that mode (they ended on a plateau, or
    learnt the mode without one): the exit times are of the others only. A series none of whose samples
    left by a mode another series left by shows 0 of n, not nothing."""
    per_sample = [x for x in (_exit_times(e) for _, e in samples) if x is not None]
    if not per_sample:
        return []
    modes = sorted(set(modes) | {k for x in per_sample for k in x})
    out = []
    for k in modes:
        times = [x[k] for x in per_sample if k in x]
        out.append({"mode": k, "t_exit": _spread(times), "samples": len(per_sample),
                    "without_exit": len(per_sample) - len(times)})  # fmt: skip
    return out


def _series_row(
    st: Setting, name: str, samples: list[tuple[dict, dict]], folder: Path, exit_modes: set[int] = frozenset()
) -> tuple[dict, dict]:
    """The curves' statistics (written to ``folder/<name>.npz``) and the table row of one series."""
    longest = max((a for a, _ in samples), key=lambda a: len(a["t"]))
    curves = {"t": np.asarray(longest["t"], dtype=np.float64)}
    left_out = []
    for c in CURVES:
        kept, note = _stackable(samples, c, curves["t"])
        left_out += [note] if note else []
        if kept:
            for stat, v in _stats(kept).items():
                curves[f"{c}_{stat}"] = v
    save_npz(folder / f"{name}.npz", **curves)
    entries = [e for _, e in samples]
    sgd = name.startswith("sgd_lr_")
    row = {
        "setting": st.key, "folder": st.folder, "series": name, "samples": len(samples), "runs": len(st.runs),
        "final_loss": _spread([e.get("final_loss") for e in entries]),
        "max_dist_to_flow": _spread([e.get("max_dist_to_flow") for e in entries]) if sgd else None,
        "max_dist_to_modified_flow": _spread([e.get("max_dist_to_modified_flow") for e in entries]) if sgd else None,
        "plateau_exits": _exits(samples, exit_modes),
        "curves_left_out": left_out,  # samples in the numbers above but not in the curves' npz
    }  # fmt: skip
    return curves, row


def aggregate(settings: dict[str, Setting], out: Path) -> list[dict]:
    """Write the curves, the table and the figures of every setting under ``out``; returns the rows."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for key, st in settings.items():
        if not st.samples:
            continue
        folder = out / st.folder
        folder.mkdir(exist_ok=True)
        orders = {
            "to_flow": _orders(st, "max_dist_to_flow"),
            "to_modified_flow": _orders(st, "max_dist_to_modified_flow"),
        }
        curves_of, exit_modes = {}, _setting_exit_modes(st)
        for name, samples in sorted(st.samples.items()):
            curves_of[name], row = _series_row(st, name, samples, folder, exit_modes)
            row["orders"] = orders if name.startswith("sgd_lr_") else None
            rows.append(row)
        write_json(folder / "setting.json", {"setting": key, "folder": st.folder, "runs": st.runs,
                                             "skipped": st.skipped, "orders": orders})  # fmt: skip
        heavy_ball = any(e.get("momentum") for samples in st.samples.values() for _, e in samples)
        write_loss_figure(folder, key, curves_of, heavy_ball)
    return rows
