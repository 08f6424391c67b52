"""``resume=`` for a sweep: finishing the jobs a stopped sweep left, and keeping its records true.

* ``resume=<job dir>`` of a job that ran: resumed as any run (:func:`dlnlab.lab.runner.resume`);
* ``resume=<job dir>`` of a job that started but never ran (the sweep was stopped first: its directory
  holds ``job.json`` and Hydra's files, no summary): run from the start in its directory, its config
  composed from the overrides its ``job.json`` records (:func:`run_never_ran`);
* ``resume=<sweep dir>``: every job of ``sweep_summary.json`` not finished, in order, each as above; a
  job that never got a directory (a launcher stopped before it started it) is run through the train
  script itself, with its overrides and ``hydra.run.dir`` set to the directory the sweep would have
  given it (``hydra.sweep.subdir`` of this config tree: ``<num>_<its overrides>``), then recorded. A
  sweep whose process was killed before it wrote ``sweep_summary.json`` has it rebuilt first
  (:func:`rebuild_sweep_summary`: its ``job.json`` files and Hydra's ``multirun.yaml``). The resume
  holds the sweep directory's lock, which a running sweep holds: refused while the sweep runs.

After each job, its ``job.json`` says the new exit code and ``sweep_summary.json`` is written again
(:func:`record_resume`; ``resume=<sweep dir>`` prints its table once, at the end, as the sweep does):
the jobs' states and the counts are current, ``resumed_jobs`` lists the jobs
finished since, and ``interrupted`` and ``exit_code`` stay what the sweep's process ended with.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import open_dict

from dlnlab.lab._console import say
from dlnlab.lab._resume_target import job_record, not_resumable
from dlnlab.lab.config import ConfigError, ExitCode, WriteFailed
from dlnlab.lab.runner import lock_holder
from dlnlab.lab.sweep import (
    JobState,
    job_message,
    job_state,
    read_sweep_summary,
    write_job_record,
    write_sweep_summary,
)
from dlnlab.rundir import signals

__all__ = [
    "finish",
    "never_ran",
    "run_never_ran",
    "record_resume",
    "resume_sweep",
    "job_record",
    "is_sweep_dir",
]

_DONE = {JobState.FINISHED.value, JobState.REFUSED.value, JobState.RUNNING.value}  # nothing to resume


def finish(target: str | Path, conf_dir: Path, config_name: str = "train") -> int:
    """``resume=<target>``: a run directory, a sweep's job directory or a sweep directory; its exit code
    (ConfigError, WriteFailed: as :func:`dlnlab.lab.runner.resume` raises them)."""

    target = Path(os.path.abspath(target))  # every line names it as the sweep's lines name their jobs
    if is_sweep_dir(target):
        return resume_sweep(target, conf_dir, config_name)
    refusal = not_resumable(target)
    if refusal is not None:
        raise ConfigError(refusal)
    code = _run_or_resume(target, conf_dir, config_name)
    record_resume(target, code)
    return code


def _run_or_resume(job_dir: Path, conf_dir: Path, config_name: str) -> int:
    """A directory's exit code once finished: a job that never ran, run; anything else, resumed."""
    from dlnlab.lab.runner import resume

    return run_never_ran(job_dir, conf_dir, config_name) if never_ran(job_dir) else resume(job_dir).exit_code


def is_sweep_dir(target: Path) -> bool:
    """A sweep's directory: its ``sweep_summary.json``, or (a sweep whose process was killed before it
    wrote one) the ``multirun.yaml`` Hydra writes there before the first job starts."""
    has = (target / "sweep_summary.json").is_file() or (target / "multirun.yaml").is_file()
    return has and not (target / "summary.json").exists()


def never_ran(job_dir: str | Path) -> bool:
    """Whether ``job_dir`` is a sweep job's directory whose run never started (job.json, no summary)."""
    job_dir = Path(job_dir)
    return job_record(job_dir) is not None and not (job_dir / "summary.json").exists()


def _compose(overrides: list[str], conf_dir: Path, config_name: str, where: str, hydra: bool = False):
    """The config the sweep composed for a job's ``overrides`` (``hydra``: with Hydra's node)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from dlnlab.lab.config import TrainConfig  # noqa: F401 - registers the schema with Hydra

    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(Path(conf_dir).resolve())):
            return compose(config_name=config_name, overrides=overrides, return_hydra_config=hydra)
    except HydraException as err:
        raise ConfigError(
            f"resume: the overrides in {where} are refused: {str(err).splitlines()[0]} (composed with the config "
            f"tree {conf_dir} as it is now); run the job again with overrides it takes"
        ) from err


def run_never_ran(job_dir: str | Path, conf_dir: Path, config_name: str = "train") -> int:
    """Run a sweep's job that never started, from the start, in its own directory, with the overrides its
    ``job.json`` records composed from ``conf_dir``; its exit code."""
    from dlnlab.lab.runner import run

    job_dir = Path(job_dir)
    rec = job_record(job_dir)
    overrides = [str(o) for o in rec["overrides"]]
    cfg = _compose(overrides, conf_dir, config_name, f"{job_dir}/job.json")
    why = rec.get("message") or "no summary"
    say(f"resume: job {rec.get('num')} of the sweep never ran ({why}): running it from the start with the "
        f"overrides of its job.json: {' '.join(overrides)}")  # fmt: skip
    return run(cfg, output_dir=job_dir).exit_code


def record_resume(job_dir: str | Path, code: int, sweep_held: bool = False, wait_s: float = 5.0) -> None:
    """After a resume (or a first run) of a sweep's job: its ``job.json`` says the new exit code, and the
    sweep's ``sweep_summary.json`` (if the sweep wrote one) is written again under the sweep directory's
    lock (``sweep_held``: this process holds it, resume=<sweep dir>). Nothing for a run directory that is
    not a sweep's job.

    The rewrite re-reads every ``job.json``, so two at once could each write the jobs as they were
    before the other's (the last writer wins, the other's job shown as it was). Another job's rewrite
    holds the lock for a moment: waited for, up to ``wait_s``. Held longer, it is the sweep's process or
    a resume=<sweep dir>, which write the summary again from every ``job.json`` when they end: left to
    them, with a note (this job is then not listed in ``resumed_jobs``)."""
    job_dir = Path(job_dir).absolute()
    rec = job_record(job_dir)
    if rec is None:
        return
    num = int(rec.get("num", -1))
    write_job_record(job_dir, num, rec["overrides"], code, job_message(job_dir, code) if code else "")
    # the sweep's directory: the parent, or further up where an override's "/" nested the job's name
    sweep_dir = next((d for d in job_dir.parents if (d / "sweep_summary.json").is_file()), None)
    if sweep_dir is None:
        return
    if sweep_held:  # resume=<sweep dir>: its table is printed once, when every job is done
        write_sweep_summary(sweep_dir, resumed=[num], show=False)
        return
    lock = _sweep_lock(sweep_dir, wait_s)
    if lock is None:
        holder = lock_holder(sweep_dir) or {}
        print(f"note: {sweep_dir}/sweep_summary.json is not written again now: the sweep directory is held by "
              f"process {holder.get('pid', '?')} (the sweep, or a resume of it), which writes it from every "
              f"job.json when it ends; job {num}'s job.json says its new state", file=sys.stderr, flush=True)  # fmt: skip
        return
    try:
        write_sweep_summary(sweep_dir, resumed=[num])
    finally:
        lock.release()


def _sweep_lock(sweep_dir: Path, wait_s: float):
    """The sweep directory's lock, waited for up to ``wait_s`` (polled: flock has no timeout); None if
    it is still held then."""
    from dlnlab.lab.runner import RunLock

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return RunLock.acquire(sweep_dir, "resume")
        except ConfigError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


def _new_job_dir(sweep_dir: Path, num: int, overrides: list[str], conf_dir: Path, config_name: str) -> Path:
    """The directory the sweep would have given job ``num`` (``hydra.sweep.subdir``, job number set)."""
    cfg = _compose(
        overrides, conf_dir, config_name, f"{sweep_dir}/sweep_summary.json (job {num})", hydra=True
    )
    with open_dict(cfg):
        cfg.hydra.job.num = num
    return sweep_dir / str(cfg.hydra.sweep.subdir)


def _start_job(sweep_dir: Path, job: dict, conf_dir: Path, config_name: str) -> tuple[Path | None, int]:
    """A job the sweep never started: the train script runs it into its directory (Hydra writes its
    ``.hydra/`` there, as in the sweep), then its ``job.json`` is written; (its directory, exit code)."""
    num, overrides = int(job["num"]), [str(o) for o in job.get("overrides", [])]
    job_dir = _new_job_dir(sweep_dir, num, overrides, conf_dir, config_name)
    say(f"resume: job {num} of the sweep never started: running it into {job_dir}")
    script = Path(sys.argv[0]).resolve()  # the train script this command line runs (its config tree)
    quote = "'" if "'" not in str(job_dir) else '"'  # a quoted value: the name holds '=' and ','
    proc = subprocess.Popen(
        [sys.executable, str(script), *overrides, f"hydra.run.dir={quote}{job_dir}{quote}"]
    )
    while (code := _wait(proc)) is None:
        pass
    if not job_dir.is_dir():  # refused before it made its directory: nothing to record
        return None, code
    write_job_record(job_dir, num, overrides, code, "")
    return job_dir, code


def _wait(proc: subprocess.Popen) -> int | None:
    """The job's exit code, or None after a signal to this process: handed on to the job, which ends
    writing its files (subprocess.run would kill it), and waited for again."""
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signals.received() or signal.SIGINT)
        return None


def _to_finish(job: dict) -> bool:
    """Whether a job is left to finish: its state read again now (a job recorded running may have been
    killed since: its lock is free; one recorded finished by a sweep of before ``incomplete`` may list
    series a killed worker left, which resume runs again)."""
    if not job.get("dir"):
        return job.get("state") not in _DONE
    return job_state(job).value not in _DONE


_MISSING = "has no sweep_summary.json"


def _summary_damage(sweep_dir: Path) -> str | None:
    """Why the sweep's ``sweep_summary.json`` cannot say its jobs (none, not JSON, no list of jobs), or
    None. Before, a damaged one was read as a sweep of no jobs: "0 of its 0 jobs to finish", exit 0."""
    path = sweep_dir / "sweep_summary.json"
    if not path.is_file():
        return _MISSING
    try:
        summary = json.loads(path.read_text())
    except OSError as err:
        return f"has a sweep_summary.json that cannot be read ({err.strerror})"
    except ValueError:
        return "has a sweep_summary.json that is not JSON"
    if not isinstance(summary, dict) or not isinstance(summary.get("jobs"), list):
        return "has a sweep_summary.json that lists no jobs"
    return None


def rebuild_sweep_summary(sweep_dir: Path, why: str = _MISSING) -> None:
    """``sweep_summary.json`` of a sweep whose process ended before writing it (SIGKILL, the machine), or
    (``why``) one that is damaged: its jobs from their ``job.json`` files, the jobs that never started
    from the command line Hydra recorded in ``multirun.yaml`` (``hydra.overrides.task``); ConfigError
    when that file cannot be read."""
    from omegaconf import OmegaConf

    try:
        config = OmegaConf.load(sweep_dir / "multirun.yaml")
        config.hydra.overrides.task  # noqa: B018 - the sweep's command line, which lists its jobs
    except Exception as err:  # noqa: BLE001 - OSError, YAML's and OmegaConf's errors: one line
        unread = (
            f"its multirun.yaml cannot be read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
            if (sweep_dir / "multirun.yaml").exists()
            else "it has no multirun.yaml"
        )
        raise ConfigError(
            f"resume: {sweep_dir} {why}, and {unread}, so the sweep's jobs are not known: finish each job "
            "with resume=<its dir>, or run the sweep again"
        ) from None
    cause = " (its process ended before writing it: killed?)" if why == _MISSING else ""
    say(f"resume: sweep {sweep_dir} {why}{cause}: rebuilt from its jobs' job.json and its multirun.yaml")
    write_sweep_summary(sweep_dir, config, rebuilt=True, show=False)  # the table: at the resume's end


def resume_sweep(sweep_dir: Path, conf_dir: Path, config_name: str = "train") -> int:
    """Every job of the sweep not finished, in order; the largest exit code (a signal's stops here).
    Holds the sweep directory's lock: refused while the sweep (or another resume of it) runs."""
    from dlnlab.lab.runner import RunLock

    lock = RunLock.acquire(sweep_dir, "resume")
    try:
        damage = _summary_damage(sweep_dir)
        if damage is not None:
            rebuild_sweep_summary(sweep_dir, damage)
        return _finish_jobs(sweep_dir, conf_dir, config_name)
    finally:
        lock.release()


def _finish_jobs(sweep_dir: Path, conf_dir: Path, config_name: str) -> int:
    jobs = [j for j in read_sweep_summary(sweep_dir).get("jobs", []) if isinstance(j, dict)]
    todo = [j for j in jobs if _to_finish(j)]
    say(f"resume: sweep {sweep_dir}: {len(todo)} of its {len(jobs)} jobs to finish")
    codes = []
    for job in todo:
        try:
            if not job.get("dir"):
                job_dir, code = _start_job(sweep_dir, job, conf_dir, config_name)
            else:
                job_dir = Path(job["dir"])
                code = _run_or_resume(job_dir, conf_dir, config_name)
        except (ConfigError, WriteFailed) as err:  # this job's; the others go on
            print(f"error: job {job.get('num')}: {err}", file=sys.stderr, flush=True)
            codes.append(int(ExitCode.WRITE_FAILED if isinstance(err, WriteFailed) else ExitCode.CONFIG))
            continue
        codes.append(code)
        if job_dir is not None:
            record_resume(job_dir, code, sweep_held=True)  # this process holds the sweep's lock
        if code in (ExitCode.SIGINT, ExitCode.SIGTERM):
            break
    write_sweep_summary(sweep_dir, resumed=[])  # the sweep's end lines once, as the sweep prints them
    return max(codes, default=0)
