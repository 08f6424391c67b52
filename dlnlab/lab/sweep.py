"""Multiruns: one failing job is recorded and the others still run; the sweep reports which failed.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks.sweep_summary`` in ``conf/train.yaml``).
After each job it writes ``<job dir>/job.json`` (the job's overrides, exit code and message), in the
job's own process, so it works with any launcher (basic, joblib, submitit). At the end of the sweep it
writes ``<sweep dir>/sweep_summary.json``, lists every job (a job with no record is reported as lost)
and sets the sweep's exit code: the largest exit code of its jobs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dlnlab.lab.errors import ExitCode
from dlnlab.lab.rundir import write_json

__all__ = ["SweepSummary", "write_job_record", "write_sweep_summary", "LAST", "JOB"]

LAST: dict[str, Any] = {}  # this process's last sweep: {"dir": ..., "exit_code": ...}
JOB: dict[str, Any] = {}  # the job function's own record of its outcome: {"exit_code", "message"}


def _job_message(job_dir: Path, code: int) -> str:
    """The failed and interrupted series of a job's summary.json, in one line."""
    try:
        summary = json.loads((job_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return ""
    bad = [
        f"{name}: {e.get('status')}: {e.get('message', '')}"
        for name, e in summary.get("series", {}).items()
        if e.get("status") in ("solver_failed", "error", "interrupted")
    ]
    return "; ".join(bad)


def write_job_record(job_dir: Path, num: int, overrides: list[str], code: int, message: str) -> None:
    """``<job dir>/job.json``: what the sweep summary reads."""
    record = {"num": num, "overrides": overrides, "dir": str(job_dir), "exit_code": code, "message": message}
    write_json(job_dir / "job.json", record)


class SweepSummary(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        LAST["dir"] = str(config.hydra.sweep.dir)
        if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, int):
            code = int(job_return.return_value)
            message = JOB.get("message") or (_job_message(job_dir, code) if code else "")
        else:  # the task raised: JobReturn keeps the exception (return_value would re-raise it)
            exc = job_return._return_value
            code, message = int(ExitCode.FAILED), f"{type(exc).__name__}: {exc}"
        write_job_record(job_dir, int(config.hydra.job.num), list(job_return.overrides or []), code, message)
        JOB.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_sweep_summary(Path(str(config.hydra.sweep.dir)), config)


def _expected_jobs(config: DictConfig | None) -> list[list[str]] | None:
    """The job overrides the basic sweeper expands the sweep into (None when unknown)."""
    if config is None:
        return None
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        parsed = OverridesParser.create().parse_overrides(overrides)
        return BasicSweeper.split_arguments(parsed, None)[0]
    except Exception:  # noqa: BLE001 - another sweeper's syntax: only the recorded jobs are listed
        return None


def write_sweep_summary(sweep_dir: Path, config: DictConfig | None = None) -> dict:
    """``sweep_summary.json`` from the jobs' ``job.json`` files; prints the table; returns the summary."""
    jobs = {}
    for path in sorted(sweep_dir.glob("*/job.json")):
        try:
            rec = json.loads(path.read_text())
            jobs[int(rec["num"])] = rec
        except (OSError, ValueError, KeyError):
            continue
    expected = _expected_jobs(config)
    if expected is not None:
        for num, overrides in enumerate(expected):
            jobs.setdefault(
                num,
                {
                    "num": num,
                    "overrides": overrides,
                    "dir": None,
                    "exit_code": int(ExitCode.FAILED),
                    "message": "no record: the job did not finish (its process ended or was never started)",
                },
            )
    ordered = [jobs[k] for k in sorted(jobs)]
    code = max((j["exit_code"] for j in ordered), default=0)
    failed = [j for j in ordered if j["exit_code"]]
    summary = {
        "sweep_dir": str(sweep_dir),
        "n_jobs": len(ordered),
        "n_failed": len(failed),
        "exit_code": code,
        "jobs": ordered,
    }
    write_json(sweep_dir / "sweep_summary.json", summary)
    LAST.update(dir=str(sweep_dir), exit_code=code)
    lines = [f"sweep: {len(ordered)} jobs, {len(failed)} failed ({sweep_dir / 'sweep_summary.json'})"]
    for j in failed:
        lines.append(f"  job {j['num']} ({' '.join(j['overrides'])}): exit {j['exit_code']}: {j['message']}")
    print("\n".join(lines), flush=True)
    return summary
