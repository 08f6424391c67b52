"""The runs under some roots, grouped into settings (:mod:`dlnlab.lab.results._aggregate` aggregates them).

A *setting* is what a run ran: its resolved config (summary.json's ``config``) without the seeds
(:data:`SEED_KEYS`) and the keys that change no number (:mod:`dlnlab.lab.results._setting_config`): the
runs of one setting differ only in their seeds, and so do the members of an ensemble, so every member of
every run of a setting is one *sample*. A summary older than its ``config`` key falls back to the run's
overrides (``.hydra/overrides.yaml``) without the seeds. A setting is named by its runs' overrides where
they share them, else by its config (:func:`~dlnlab.lab.results._setting_config.name_parts`).

Runs that are missing (a job that never wrote its summary), damaged (:func:`dlnlab.rundir.run_damage`), and series that failed or hold no arrays, are skipped and listed.
Reads only the run directories' files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dlnlab.errors import ArgumentError
from dlnlab.lab.results._setting_config import (
    SEED_KEYS,
    Described,
    config_key,
    config_words,
    default_config,
    flat_config,
    given_overrides,
    name_parts,
)
from dlnlab.metrics import member_arrays, members_of
from dlnlab.rundir import load_run, read_summary_object, run_damage
from dlnlab.status import USABLE, Status

__all__ = ["Setting", "Roots", "collect", "root_dirs", "setting_folder", "run_dirs", "SEED_KEYS"]

# The name of a setting whose config is the command line's defaults (or, in older summaries without a
# config, whose runs had no overrides).
DEFAULTS = "(defaults)"


@dataclass
class Setting:
    """The samples of one setting: per series, each sample's arrays and its summary entry."""

    key: str  # what its runs ran: their config without the seeds (config_key), or their overrides
    # its name as words (key=value): its runs' overrides where they share them, else from its config
    label_parts: list[str] = field(default_factory=list)
    # its config (flat_config without the seeds); None: older summaries without one
    config: dict | None = None
    runs: list[str] = field(default_factory=list)
    samples: dict[str, list[tuple[dict, dict]]] = field(default_factory=dict)  # series -> [(arrays, entry)]
    # series -> each sample's (run directory, member), in the order of ``samples``: what pairs a sample's
    # series across the learning rates (a series missing from one run must not shift the others)
    origins: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    # series -> its members left out (diverged or failed in a series that did not): in no number
    members_left_out: dict[str, int] = field(default_factory=dict)
    order_fit: int = 3  # the runs' sgd.order_fit: the orders are fitted as each run fits its own
    # each run's overrides (without the seeds and what changes no number), None without a record
    run_overrides: list[tuple[str, ...] | None] = field(default_factory=list)

    @property
    def label(self) -> str:
        return " ".join(self.label_parts) or DEFAULTS

    @property
    def folder(self) -> str:
        return setting_folder(self.label, self.key)


def setting_folder(label: str, key: str) -> str:
    """The folder name of a setting: up to 40 characters of its label, then 10 hex digits of the SHA-256
    of its key (what its runs ran): settings are told apart by their configs, not by their names."""
    prefix = "".join(c if (c.isascii() and c.isalnum()) or c in "._=-" else "_" for c in label)[:40]
    return f"{prefix.strip('_.') or 'setting'}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _overrides(run_dir: Path) -> tuple[str, ...] | None:
    """The run's recorded overrides that may name a setting (:func:`given_overrides`: None without a
    readable record) without the seeds, sorted."""
    given = given_overrides(run_dir)
    if given is None:
        return None
    return tuple(sorted(o for o in given if o.split("=", 1)[0].lstrip("+~") not in SEED_KEYS))


def _run_key(config: dict, overrides: tuple[str, ...] | None) -> tuple[str, dict | None]:
    """(the run's setting key, its flat config): the config where summary.json has one, else the
    overrides (an older summary), marked so that neither is taken for the other."""
    if config:
        flat = flat_config(config)
        return "config " + config_key(flat), flat
    return "overrides " + " ".join(overrides or ()), None


def _name_settings(settings: list[Setting]) -> None:
    """Each setting's label_parts (:func:`name_parts`); settings that would share a name (the same
    overrides over different configs: another version's defaults) are named by their configs, and, where
    even those coincide, by their key's hash."""
    defaults = default_config()
    described = []
    for st in settings:
        shared = st.run_overrides[0] if len(set(st.run_overrides)) == 1 else None
        described.append(Described(shared, st.config))
    for st, parts in zip(settings, name_parts(described, defaults)):
        st.label_parts = parts
    labels = [st.label for st in settings]
    for st in settings:
        if labels.count(st.label) > 1 and st.config is not None and defaults is not None:
            st.label_parts = config_words(st.config, defaults) or st.label_parts
    labels = [st.label for st in settings]
    for st in settings:
        if labels.count(st.label) > 1:
            st.label_parts = [*st.label_parts, f"#{hashlib.sha256(st.key.encode()).hexdigest()[:6]}"]


Roots = str | os.PathLike | Iterable[str | os.PathLike]


def root_dirs(roots: Roots) -> list[Path]:
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
            raise ArgumentError(
                "roots", f"{root} is not a directory (give run directories, sweeps or folders of them)"
            )
    return out


def _files_under(roots: Roots, name: str) -> set[Path]:
    """Directories holding ``name`` under ``roots``, each once however it is reached (a relative path,
    a symbolic link: a folder of links to runs works); a directory already walked is not walked
    again, so a loop of links ends. Hidden folders (``.hydra``) are not entered."""
    found, walked = set(), set()
    for root in root_dirs(roots):
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
    roots = root_dirs(roots)
    runs = run_dirs(roots)
    skipped = [_job_note(job) for job in sorted(_files_under(roots, "job.json") - set(runs))]
    settings: dict[str, Setting] = {}
    for run_dir in runs:
        why = run_damage(run_dir)
        if why:
            skipped.append(f"{run_dir}: {why}")
            continue
        run = load_run(run_dir)
        overrides = _overrides(run_dir)
        key, flat = _run_key(run.config, overrides)
        st = settings.setdefault(key, Setting(key, config=flat))
        st.runs.append(str(run_dir))
        st.run_overrides.append(overrides)
        st.order_fit = int((run.config.get("sgd") or {}).get("order_fit") or 3)
        for name, series in run.series.items():
            _add_samples(st, run_dir, name, series)
    _name_settings(list(settings.values()))
    return settings, skipped


def _add_samples(st: Setting, run_dir: Path, name: str, series) -> None:
    entry = series.entry
    if entry.get("status", Status.OK) not in USABLE:
        st.skipped.append(f"{run_dir} {name}: {entry.get('status')}: {entry.get('message', '')}")
        return
    full = series.members if series.members is not None else series.arrays
    members = entry.get("members") if isinstance(entry.get("members"), list) else [entry]
    gone: dict[int, str] = {}  # member -> its status: a diverged member of an ok series
    for e in range(members_of(full) or 1):
        arrays = member_arrays(full, e) if members_of(full) else full
        sub = members[e] if e < len(members) and isinstance(members[e], dict) else {}
        if sub.get("status", Status.OK) not in USABLE:
            gone[e] = str(sub.get("status"))
            continue
        if "t" not in arrays or not len(arrays["t"]):
            st.skipped.append(f"{run_dir} {name}: no arrays (no times in series/{name}.npz)")
            return
        st.samples.setdefault(name, []).append((arrays, {**entry, **sub}))
        st.origins.setdefault(name, []).append((str(run_dir), e))
    if gone:  # said, and counted in the row: its numbers are over the others ("6 of 8")
        st.members_left_out[name] = st.members_left_out.get(name, 0) + len(gone)
        statuses = ", ".join(sorted(set(gone.values())))
        st.skipped.append(f"{run_dir} {name}: members {sorted(gone)} left out ({statuses})")
