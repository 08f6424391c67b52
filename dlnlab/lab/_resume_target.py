"""What ``resume=<dir>`` finds in a directory that is no run's, job's or sweep's, and the one-line
refusal that says what it looked for and what to do (:func:`not_resumable`); a sweep job's record
(:func:`job_record`). Split from ``sweep_resume.py``, which finishes what these let through."""

from __future__ import annotations

import json
from pathlib import Path

from dlnlab.lab.config import resume_shell_command

__all__ = ["not_resumable", "job_record"]


# what resume=<dir> looks for in the directory, and what each file says it is
_LOOKED_FOR = (
    "summary.json (a run), job.json (a sweep's job) or sweep_summary.json or multirun.yaml (a sweep)"
)
_MARKS = ("summary.json", "job.json", "sweep_summary.json", "multirun.yaml")


def not_resumable(target: Path) -> str | None:
    """The one-line refusal of a ``resume=`` target that is no run's, job's or sweep's directory (what
    it looked for, and what to do), or None. Before, every such directory was "not a dlnlab run
    directory", also a sweep's that its process left before Hydra wrote multirun.yaml there."""
    if not target.is_dir():
        return f"resume: {target} is not a directory: give the directory of the run or of the sweep to finish"
    if (
        (target / "job.json").exists()
        and job_record(target) is None
        and not (target / "summary.json").exists()
    ):
        return (
            f"resume: {target} holds no summary.json, and its job.json is no sweep job's record (unreadable, or "
            "no list of overrides), so what ran there is not known: nothing to finish; run the job again"
        )
    if any((target / mark).exists() for mark in _MARKS):
        return None  # a run's or a job's: the run's own checks say what is wrong with it, if anything
    try:
        entries = [p for p in target.iterdir() if p.name != ".lock"]  # the lock: a claim, nothing written
    except OSError as err:
        return (
            f"resume: {target} cannot be read ({err.strerror}): give the directory of the run or of the sweep"
        )
    if not entries or _hydra_start_only(entries):
        return _stopped_before_it_began(target, entries)
    below = _run_dirs_below(target)
    if below:
        which = (
            f"{len(below)} directories below it do (the last by name: {below[-1]}): give one of them, "
            "resume=<that dir>"
            if len(below) > 1
            else f"one directory below it does: {resume_shell_command(below[0])}"
        )
        return (
            f"resume: {target} is not the directory of a run or a sweep: it holds none of {_LOOKED_FOR}, but "
            + which
        )
    return (
        f"resume: {target} is not the directory of a run or a sweep: it holds none of {_LOOKED_FOR}; give "
        "the directory a run wrote (hydra.run.dir, by default outputs/<date>/<time>) or a sweep "
        "(hydra.sweep.dir, by default outputs/multirun/<date>/<time>)"
    )


def _hydra_start_only(entries: list[Path]) -> bool:
    """Only what Hydra writes as a run starts (``.hydra/``, ``<job name>.log``): a run stopped (SIGTERM,
    Ctrl+C) after that and before its summary.json."""
    names = {p.name for p in entries}
    return ".hydra" in names and all(n == ".hydra" or n.endswith(".log") for n in names)


def _stopped_before_it_began(target: Path, entries: list[Path]) -> str:
    """The refusal of a directory that a run or a sweep claimed and left before its work began. A run or
    a sweep is given only a new or empty directory, and the claim's ``.lock`` or Hydra's files make this
    one neither: before, the line said it "may be given again", and the run given it was refused."""
    if entries:
        what = (
            f"resume: {target} holds only what Hydra writes as a run starts ({', '.join(sorted(p.name for p in entries))}), "
            "no summary.json, which a run writes as it starts: it stopped before its work began"
        )
        again = "start it again (its overrides: .hydra/overrides.yaml) with a new hydra.run.dir"
    else:
        what = (
            f"resume: {target} is empty: none of {_LOOKED_FOR} is there, so no run or sweep wrote in it (one "
            "stopped before it began leaves its directory so)"
        )
        again = "start the run or the sweep again"
        if (target / ".lock").exists():
            again += " with a new directory (this one holds the .lock of its claim; removed, it may be given again)"
        else:
            again += " (this directory may be given again)"
    return f"{what}: nothing to finish; {again}"


def _run_dirs_below(target: Path) -> list[Path]:
    """The directories one or two levels below ``target`` (outputs/ -> <date>/<time>) that hold a run's,
    a job's or a sweep's file (a sweep's jobs not listed beside it), in name order."""

    def subdirs(d: Path) -> list[Path]:
        try:
            return sorted(p for p in d.iterdir() if p.is_dir())
        except OSError:  # unreadable: nothing to suggest there
            return []

    def marked(d: Path) -> bool:
        return any((d / mark).is_file() for mark in _MARKS)

    found = []
    for child in subdirs(target):
        found += [child] if marked(child) else [d for d in subdirs(child) if marked(d)]
    return found


def job_record(job_dir: Path) -> dict | None:
    """``<job dir>/job.json`` with its overrides, or None (no sweep job's directory)."""
    try:
        rec = json.loads((Path(job_dir) / "job.json").read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("overrides"), list) else None
