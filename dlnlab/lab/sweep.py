"""Multiruns: one failing job is recorded and the others still run; the sweep reports what became of each.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks.sweep_summary`` in ``conf/train.yaml``).
When a job starts and when it ends it writes ``<job dir>/job.json`` (its number, overrides, process,
exit code and message), in the job's own process, so it works with any launcher (basic, joblib,
submitit). At the end of the sweep, or when a signal ends it, the sweep's own process writes
``<sweep dir>/sweep_summary.json``: every job of the sweep with its state (finished, incomplete,
interrupted, killed, crashed, refused, not_run) and exit code, and the sweep's exit code (the largest
of its jobs', or the signal's).

A signal to the sweep's process (or to its whole process group) is handed on by :func:`hand_on`, in
the signal handler, before the launcher sees it: the sweep marks itself interrupted (``.interrupted``
in the sweep directory: a job that starts after that does not run), signals every job that works in
the sweep now (the holder of its run directory's lock, whatever launcher started it) and waits until
each has written its record; only then does the launcher stop its workers (joblib kills them): none is cut off mid-write.

``resume=`` finishes a sweep's jobs (:mod:`dlnlab.lab.sweep_resume`; ``resumed``: :func:`write_sweep_summary`).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dlnlab.lab._console import say
from dlnlab.lab._job_output import tag_job_output, untag_job_output
from dlnlab.lab.config import ConfigError, ExitCode, launcher_note, resume_shell_command
from dlnlab.lab.results import RunStatus
from dlnlab.lab.runner import hold_dir, lock_holder
from dlnlab.rundir import read_summary, write_json, write_text
from dlnlab.status import FAILED, Status

__all__ = [
    "SweepSummary", "job_state", "write_job_record", "write_sweep_summary", "hand_on", "wait_for_children",
    "interrupted_by", "OUTCOME", "Outcome", "HAND_ON_WAIT_S", "JobState", "read_sweep_summary",
    "job_message", "killed_series",
]  # fmt: skip

HAND_ON_WAIT_S = 120.0  # how long a signalled sweep waits for its running jobs to write their records
MARK = ".interrupted"


@dataclass
class Outcome:
    """What this process's last job and sweep ended with.

    Hydra's ``@hydra.main`` returns nothing (hydra/main.py: "no return value from run_hydra()", a sweep
    may run the task many times) and makes the :class:`SweepSummary` callback itself, so the job
    function (:func:`dlnlab.lab.cli.job`) and the callback leave what they found here, in this one
    record, for :func:`dlnlab.lab.cli.main` to return and for the signal handler (:func:`hand_on`),
    which has no other way to find the sweep's directory."""

    job_code: int | None = None  # the job function's exit code (this process's last job)
    job_message: str = ""  # why it failed or did not run
    sweep_dir: str | None = None  # the sweep this process runs (its own process, or a job's)
    sweep_config: DictConfig | None = None  # set in the sweep's own process only (on_multirun_start)
    sweep_code: int | None = None  # the sweep's exit code, once sweep_summary.json is written

    def job(self, code: int, message: str = "") -> None:
        self.job_code, self.job_message = code, message

    def clear(self) -> None:
        self.__init__()


OUTCOME = Outcome()


class JobState(str, Enum):
    """What became of a sweep's job (``sweep_summary.json``'s ``state``), read from its records."""

    FINISHED = "finished"  # it ended by itself; its exit code says how
    INCOMPLETE = "incomplete"  # it ended by itself, but a killed series worker lost series; resume runs them
    INTERRUPTED = "interrupted"  # a signal stopped it; resume=<its dir> finishes it
    KILLED = "killed"  # its process ended while it ran (its summary still says running)
    CRASHED = "crashed"  # the lab failed outside any series (exit code 1), or its disk was full (exit code 4)
    REFUSED = "refused"  # its config was refused before any work (exit code 2)
    NOT_RUN = "not_run"  # it never started (the sweep was stopped first)
    RUNNING = "running"  # it still holds its run directory's lock

    def __str__(self) -> str:
        return self.value


def job_message(job_dir: Path, code: int) -> str:
    """The failed and interrupted series of a job's summary.json, in one line."""
    summary = read_summary(job_dir)
    if not isinstance(summary, dict):
        return ""
    bad = [
        f"{name}: {e.get('status')}: {e.get('message', '')}"
        for name, e in (summary.get("series") or {}).items()
        if isinstance(e, dict) and e.get("status") in (*FAILED, Status.INTERRUPTED)
    ]
    return "; ".join(bad)


def write_job_record(job_dir: Path, num: int, overrides: list[str], code: int | None, message: str) -> None:
    """``<job dir>/job.json``: what the sweep summary reads (``exit_code`` null: the job is running)."""
    record = {
        "num": num, "overrides": overrides, "dir": str(job_dir), "exit_code": code, "message": message,
        "process": {"pid": os.getpid(), "host": socket.gethostname()},
    }  # fmt: skip
    write_json(job_dir / "job.json", record)


def interrupted_by(sweep_dir: str | Path | None) -> str | None:
    """The signal that interrupted the sweep (its ``.interrupted`` mark), or None."""
    if sweep_dir is None:
        return None
    try:
        return (Path(sweep_dir) / MARK).read_text().strip() or "SIGINT"
    except OSError:
        return None


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # the sweep's own process: where a signal's handler finds the sweep (hand_on)
        OUTCOME.sweep_dir, OUTCOME.sweep_config = str(config.hydra.sweep.dir), config
        if (note := launcher_note(config.hydra.get("launcher"))) is not None:  # joblib: loky
            print(note, file=sys.stderr, flush=True)
        # held to its end, so that resume=<sweep dir> is refused while the sweep runs (an explicit
        # hydra.sweep.dir is held already: the preflight claimed it; dlnlab_unique's is new)
        try:
            hold_dir(OUTCOME.sweep_dir, "hydra.sweep.dir")
        except ConfigError as err:  # no other sweep can hold a directory made new: say so, go on
            print(f"warning: {err}", file=sys.stderr, flush=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        OUTCOME.sweep_dir = str(config.hydra.sweep.dir)
        if OUTCOME.sweep_config is None:  # a process of the launcher's own (joblib, submitit), not the
            tag_job_output(int(config.hydra.job.num))  # sweep's: other jobs print beside it at once
        overrides = list(OmegaConf.to_container(config.hydra.overrides.task))
        write_job_record(job_dir, int(config.hydra.job.num), overrides, None, "running")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        OUTCOME.sweep_dir = str(config.hydra.sweep.dir)
        if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, int):
            code = int(job_return.return_value)
            message = OUTCOME.job_message or (job_message(job_dir, code) if code else "")
        else:  # the task raised: JobReturn keeps the exception (return_value would re-raise it)
            exc = job_return._return_value
            code, message = int(ExitCode.CRASHED), f"{type(exc).__name__}: {exc}"
        write_job_record(job_dir, int(config.hydra.job.num), list(job_return.overrides or []), code, message)
        OUTCOME.job_code, OUTCOME.job_message = None, ""
        untag_job_output()  # joblib's worker may run another job next

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_sweep_summary(Path(str(config.hydra.sweep.dir)), config)


def hand_on(signum: int) -> None:
    """In the sweep's process, on its first signal (before the launcher sees it): mark the sweep
    interrupted, signal every job working in it now, and wait (at most HAND_ON_WAIT_S) until none does.
    A job that runs in this very process (the basic launcher) is interrupted by the handler itself."""
    sweep_dir = OUTCOME.sweep_dir
    if not sweep_dir or not Path(sweep_dir).is_dir():
        return
    sweep_dir = Path(sweep_dir)
    try:
        write_text(sweep_dir / MARK, signal.Signals(signum).name)
    except OSError:
        pass
    me, host, told = os.getpid(), socket.gethostname(), set()
    deadline = time.monotonic() + HAND_ON_WAIT_S
    quiet_since = None
    while time.monotonic() < deadline:
        busy = False
        for lock in sweep_dir.rglob(".lock"):  # at any depth, as the jobs' directories (job.json)
            holder = lock_holder(lock.parent)
            if holder is None:
                continue
            pid = holder.get("pid")
            if pid == me or holder.get("host", host) != host:
                continue  # our own job (it stops when the handler raises), or one we cannot reach
            busy = True
            if isinstance(pid, int) and pid not in told:
                told.add(pid)
                try:
                    os.kill(pid, signum)
                except OSError:
                    pass
        now = time.monotonic()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since > 1.0:  # a job that was starting has had time to take its lock
            return
        time.sleep(0.1)


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux: /proc; elsewhere none are known)."""
    out = []
    for tasks in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in tasks.read_text().split()]
        except (OSError, ValueError):
            continue
    return out


def wait_for_children(timeout_s: float = 30.0) -> list[int]:
    """After a signalled sweep has stopped its launcher: wait (at most ``timeout_s``) until this
    process's child processes have ended, and return those still alive. The launchers' helpers end on
    their own once their jobs have (submitit's job controllers outlived the sweep's process by a few
    seconds here: three controllers and their tasks still alive 3 s after it exited); psutil is not a
    dependency, and /proc's children lists are all this needs."""
    deadline = time.monotonic() + timeout_s
    while (alive := [c for c in _children(os.getpid()) if not _zombie(c)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _zombie(pid: int) -> bool:
    """Ended (or a resource tracker, which multiprocessing and loky keep until this process exits)."""
    try:
        if b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return True
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True  # gone


def _expected_jobs(config: DictConfig | None) -> list[list[str]] | None:
    """The job overrides the basic sweeper expands the sweep into (None when unknown)."""
    if config is None:
        return None
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from dlnlab.lab._hydra import sweep_jobs

        overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        return sweep_jobs(OverridesParser.create().parse_overrides(overrides))
    except Exception:  # noqa: BLE001 - another sweeper's syntax: only the recorded jobs are listed
        return None


# the jobs that count as failed (n_failed), beside a finished one whose exit code is not 0
_FAILED = (JobState.INCOMPLETE, JobState.KILLED, JobState.CRASHED, JobState.REFUSED, JobState.RUNNING)


def job_state(rec: dict) -> JobState:
    """What became of a job (from its records): incomplete where its summary lists series under
    ``killed`` (it ended by itself, exit code 3, but those series have no results: resumable)."""
    job_dir = Path(rec["dir"]) if rec.get("dir") else None
    summary = read_summary(job_dir) if job_dir is not None else None
    status = summary.get("status") if isinstance(summary, dict) else None
    code = rec.get("exit_code")
    if code is None:  # it never wrote its end
        if job_dir is not None and lock_holder(job_dir) is not None:
            return JobState.RUNNING
        return JobState.KILLED if status == RunStatus.RUNNING else JobState.NOT_RUN
    if code in (ExitCode.SIGINT, ExitCode.SIGTERM):
        return JobState.INTERRUPTED if summary is not None else JobState.NOT_RUN
    if code in (ExitCode.CRASHED, ExitCode.WRITE_FAILED) or status == RunStatus.CRASHED:
        return JobState.CRASHED
    if code == ExitCode.CONFIG and summary is None:
        return JobState.REFUSED
    return JobState.INCOMPLETE if killed_series(summary) else JobState.FINISHED


def killed_series(summary) -> list[str]:
    """The series a run's summary lists under ``killed`` (their worker process ended before reporting)."""
    killed = summary.get("killed") if isinstance(summary, dict) else None
    return [str(name) for name in killed] if isinstance(killed, list) else []


def _state_message(job: dict) -> str:
    """The sweep table's message of a job that a resume can finish, or the job's own."""
    if job["state"] == JobState.KILLED:
        return "its process ended while it ran (killed?): resume=<its dir> finishes it"
    if job["state"] == JobState.INCOMPLETE:
        killed = killed_series(read_summary(Path(job["dir"])))
        return (
            f"finished, {len(killed)} series killed ({', '.join(killed)}: their worker process ended before "
            f"reporting): {resume_shell_command(job['dir'])} runs them again"
        )
    return job["message"]


def _sweep_jobs(sweep_dir: Path, config: DictConfig | None, previous: dict) -> tuple[list[dict], list | None]:
    """Every job of the sweep in order, with its state: those its ``job.json`` files record, and those the
    sweep expands into (or, in a resume, the summary written before lists) that never started; and the
    expanded list (None when unknown)."""
    jobs = {}
    # at any depth: an override's value with a "/" (a path) nests the job's directory in Hydra's name
    for path in sorted(sweep_dir.rglob("job.json")):
        try:
            rec = json.loads(path.read_text())
            jobs[int(rec["num"])] = rec
        except (OSError, ValueError, KeyError, TypeError):
            continue
    expected = _expected_jobs(config if config is not None else OUTCOME.sweep_config)
    if expected is None and previous:  # a resume: the sweep's own list of its jobs, as it ended
        expected = [
            j.get("overrides", []) for j in sorted(previous.get("jobs", []), key=lambda j: j.get("num", 0))
        ]
    for num, overrides in enumerate(expected or []):
        jobs.setdefault(
            num,
            {"num": num, "overrides": overrides, "dir": None, "exit_code": None, "message": "never started"},
        )
    ordered = [jobs[k] for k in sorted(jobs)]
    for j in ordered:
        j["state"] = job_state(j)
        j["message"] = _state_message(j)
    return ordered, expected


def write_sweep_summary(
    sweep_dir: Path,
    config: DictConfig | None = None,
    resumed: list[int] | None = None,
    rebuilt: bool = False,
    show: bool = True,
) -> dict:
    """``sweep_summary.json`` from the jobs' ``job.json`` files; prints the table (``show``: a resume
    of the sweep prints it once, at its end, as the sweep did); returns the summary.
    ``resumed``: the jobs a resume has finished since the sweep ended (the jobs it never started are
    then taken from the summary written before, and so are the jobs resumed earlier). ``rebuilt``: a
    resume writes the summary the sweep's process never wrote (killed): its exit code is null. The
    sweep's directory is written absolute, in the form Hydra gives its jobs' directories (abspath: no
    symbolic link resolved); the default ``outputs/multirun/...`` is relative."""
    sweep_dir = Path(os.path.abspath(sweep_dir))
    previous = read_sweep_summary(sweep_dir) if resumed is not None else {}
    ordered, expected = _sweep_jobs(sweep_dir, config, previous)
    signal_name = interrupted_by(sweep_dir)
    codes = [j["exit_code"] for j in ordered if j["exit_code"] is not None]
    if any(j["state"] in (JobState.KILLED, JobState.RUNNING) for j in ordered) or (
        expected is None and not ordered
    ):
        codes.append(int(ExitCode.FAILED))
    code = max(codes, default=0)
    if signal_name is not None:
        code = 128 + int(signal.Signals[signal_name])
    failed = [
        j for j in ordered if j["state"] in _FAILED or (j["state"] == JobState.FINISHED and j["exit_code"])
    ]
    count = {s.value: sum(j["state"] == s for j in ordered) for s in JobState}
    if rebuilt:  # the sweep's process never wrote its end: how it ended is not known
        code = None
    if resumed is not None:  # the sweep's process's outcome stays as it ended; the jobs are current
        signal_name, code = previous.get("interrupted", signal_name), previous.get("exit_code", code)
        rebuilt = bool(previous.get("rebuilt", False))
        resumed = sorted({*previous.get("resumed_jobs", []), *resumed})
    summary = {
        "sweep_dir": str(sweep_dir), "n_jobs": len(ordered), "n_failed": len(failed),
        **{f"n_{s}": n for s, n in count.items()}, "interrupted": signal_name, "exit_code": code,
        "resumed_jobs": resumed or [], "rebuilt": rebuilt, "jobs": ordered,
    }  # fmt: skip
    write_json(sweep_dir / "sweep_summary.json", summary)
    OUTCOME.sweep_dir, OUTCOME.sweep_code = str(sweep_dir), code
    states = ", ".join(f"{n} {s}" for s, n in count.items() if n)
    record = sweep_dir / "sweep_summary.json"
    lines = [f"sweep: {len(ordered)} jobs, {len(failed)} failed; {states} ({record})"]
    for j in ordered:
        if j in failed or j["state"] != JobState.FINISHED:
            what = f", exit {j['exit_code']}" if j["exit_code"] is not None else ""  # none: killed, not run
            lines.append(f"  job {j['num']} ({' '.join(j['overrides'])}): {j['state']}{what}: {j['message']}")
    if count[JobState.FINISHED.value]:  # where to look next (a job's own lines name its run only)
        where = shlex.quote(str(sweep_dir))  # commands to copy: a space in the path is no second argument
        lines += [f"all jobs in one TensorBoard: python scripts/tb.py {where}",
                  f"each setting over its seeds: python scripts/aggregate.py {where}"]  # fmt: skip
    if show:
        say("\n".join(lines))  # a reader gone (| head): the summary is written, the exit code kept
    return summary


def read_sweep_summary(sweep_dir: Path) -> dict:
    """``<sweep dir>/sweep_summary.json`` as written, or {} when there is none (or it is unreadable)."""
    try:
        summary = json.loads((Path(sweep_dir) / "sweep_summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}
