"""Signals, failures and resume through the CLI and Hydra's launchers, in subprocesses (docs/runs.md): what
the process exits with, what it leaves on disk, and that no process of the run or sweep is left."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlnlab.lab.runner import lock_holder
from tests._helpers import QUIET, TRAIN
from tests._helpers import read_summary as _summary
from tests._helpers import run_cli as _cli
from tests._helpers import wait_for_stage as _wait_for_stage

pytestmark = pytest.mark.lab  # every test here runs the lab (in-process or its CLI)

TESTS = Path(__file__).resolve().parent
LONG_SGD = ["experiment=tiny", "flow.t_max=20", "sgd.lrs=[0.0002]", "logger=none", *QUIET]  # 100k steps


def _start(args, cwd, **env):
    """The CLI in a session of its own (its process group is every process of the run)."""
    return subprocess.Popen(
        [sys.executable, str(TRAIN), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "PYTHONPATH": str(TESTS), **env},
    )  # fmt: skip


def _group_gone(pgid: int, within_s: float = 30.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow  # ~6 s of CLI; tests/test_runs.py covers the same in-process
def test_a_raising_callback_ends_the_cli_run_with_exit_3_and_leaves_no_process(tmp_path):
    """Before: the run never exited (its flow's recorder worker waited for a close that never came)."""
    out = tmp_path / "run"
    raising = ["+callbacks.boom._target_=_runtime_helpers.RaiseAt", "+callbacks.boom.m=3"]
    proc = _start(["experiment=tiny", "logger=none", *QUIET, *raising, f"hydra.run.dir={out}"], tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-3000:]
    assert "warning: flow: callback RaiseAt raised at grid point m = 3" in err and "Traceback" not in err
    assert _group_gone(proc.pid, within_s=5)
    summary = _summary(out)
    assert summary["status"] == "finished" and summary["exit_code"] == 3


@pytest.mark.slow  # ~6 s of CLI; in the default set: a signal at each stage in-process (test_runs.py), the CLI's SIGTERM (test_cli.py)
def test_signals_while_it_shuts_down_change_nothing(tmp_path):
    """SIGTERM, then SIGINT every 50 ms until the process ends: it exits 143 (before: 130 or killed by the
    second signal during the interpreter's exit)."""
    out = tmp_path / "run"
    proc = _start([*LONG_SGD, f"hydra.run.dir={out}"], tmp_path)
    _wait_for_stage(out, "sgd_lr_0.0002", proc)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGTERM)
    while proc.poll() is None:
        time.sleep(0.05)
        try:
            os.kill(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            break
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    summary = _summary(out)
    assert summary["status"] == "interrupted" and summary["interrupted"] == "SIGTERM"
    assert _group_gone(proc.pid, within_s=5)


@pytest.mark.slow  # ~15 s of two CLI runs
def test_a_killed_run_says_running_frees_its_lock_and_resumes(tmp_path):
    """SIGKILL to the run's process: its workers write what they hold and end, the lock is free, the
    summary still says running (with the dead pid), and resume finishes the run."""
    out = tmp_path / "run"
    proc = _start([*LONG_SGD, f"hydra.run.dir={out}"], tmp_path)
    _wait_for_stage(out, "sgd_lr_0.0002", proc)
    time.sleep(1.0)
    proc.kill()
    proc.communicate(timeout=30)
    assert _group_gone(proc.pid), "a worker outlived its killed run"
    assert lock_holder(out) is None
    summary = _summary(out)
    assert summary["status"] == "running" and summary["exit_code"] is None
    assert summary["process"]["pid"] == proc.pid
    resumed = _cli([f"resume={out}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = _summary(out)
    assert summary["status"] == "finished" and summary["resumed"][0]["status"] == "running"


def test_a_resume_of_a_damaged_directory_is_one_line_exit_2(tmp_path, capsys):
    """The command line's resume= in-process (a CLI start cost ~4 s; a resume= refusal's exit code and one
    line from the command line itself: tests/test_sweep_console.py)."""
    from dlnlab.lab.cli import parse_args, resume_command

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("[]")
    assert resume_command(parse_args([f"resume={tmp_path / 'run'}"]), TRAIN.parents[1] / "conf") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("error: resume: ") and "not a dlnlab run summary" in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["summary.json"]  # nothing written


@pytest.mark.slow
def test_two_resumes_at_once_the_second_is_refused(tmp_path):
    out = tmp_path / "run"
    proc = _start([*LONG_SGD, f"hydra.run.dir={out}"], tmp_path)
    _wait_for_stage(out, "sgd_lr_0.0002", proc)
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    first = _start([f"resume={out}"], tmp_path)
    deadline = time.monotonic() + 60
    while lock_holder(out) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    # held still while the second starts (a CLI start took long enough on a loaded machine for the first
    # to finish its series: "finished; nothing to resume"); a stopped process still holds the lock
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = _cli([f"resume={out}"], tmp_path)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert f"is in use by process {first.pid} " in second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]


def _sweep(launcher, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *launcher, "experiment=tiny", "flow.t_max=400", "sgd.lrs=[0.0002]", "seed=0,1,2",
            "logger=none", *QUIET, f"hydra.sweep.dir={sweep}"]  # fmt: skip
    return sweep, _start(args, tmp_path)


def _wait_for_jobs_in_sgd(sweep: Path, proc, n: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        stages = []
        for path in sweep.glob("*/summary.json"):
            try:
                stages.append(json.loads(path.read_text())["stage"])
            except (OSError, ValueError, KeyError):
                pass
        if sum(s == "sgd_lr_0.0002" for s in stages) >= n:
            return
        time.sleep(0.2)
    pytest.fail(f"the sweep's jobs never reached their SGD series (exit {proc.poll()})")


def _check_interrupted_sweep(sweep: Path, proc, code: int, states: dict) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert _group_gone(proc.pid), "a process of the sweep is still alive"
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["interrupted"] == signal.Signals(code - 128).name and summary["exit_code"] == code
    assert {s: summary[f"n_{s}"] for s in states} == states, summary
    for job in summary["jobs"]:
        if job["state"] == "interrupted":
            run = _summary(Path(job["dir"]))
            assert run["status"] == "interrupted" and run["exit_code"] == code


@pytest.mark.slow
@pytest.mark.parametrize("to_group", [True, False], ids=["SIGTERM to the group", "SIGINT to the process"])
def test_a_signalled_joblib_sweep_ends_every_process_and_says_what_became_of_each_job(to_group, tmp_path):
    """Before: SIGTERM to the group left jobs cut off (their summaries said exit code 0) and no sweep summary."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install -e '.[launchers]'")
    sweep, proc = _sweep(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp_path)
    _wait_for_jobs_in_sgd(sweep, proc, 2)
    if to_group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        os.kill(proc.pid, signal.SIGINT)
    code = 143 if to_group else 130
    _check_interrupted_sweep(sweep, proc, code, {"interrupted": 2, "not_run": 1, "finished": 0})


@pytest.mark.slow
def test_sigint_to_a_submitit_local_sweep_ends_its_jobs_too(tmp_path):
    """Before: the sweep's process exited at once, its jobs ran on to the end, no sweep summary."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[launchers]'")
    sweep, proc = _sweep(["hydra/launcher=submitit_local"], tmp_path)
    _wait_for_jobs_in_sgd(sweep, proc, 3)
    os.kill(proc.pid, signal.SIGINT)
    _check_interrupted_sweep(sweep, proc, 130, {"interrupted": 3, "not_run": 0, "finished": 0})


@pytest.mark.slow
def test_a_raising_callback_in_a_joblib_sweep_fails_its_jobs_and_the_sweep_ends(tmp_path):
    """Before: the sweep hung after writing its summary (each job's flow recorder worker was left)."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install -e '.[launchers]'")
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "experiment=tiny", "seed=0,1",
            "+callbacks.boom._target_=_runtime_helpers.RaiseAt", "logger=none", *QUIET, f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = _start(args, tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err[-3000:]
    assert _group_gone(proc.pid)
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["n_finished"] == 2 and summary["n_failed"] == 2 and summary["exit_code"] == 3
    assert all("callback RaiseAt raised at grid point m = 3" in j["message"] for j in summary["jobs"])


def _start_with_file_limit(args, cwd, max_bytes: int):
    """The CLI with RLIMIT_FSIZE: a write past ``max_bytes`` in any file fails with EFBIG (Python ignores
    SIGXFSZ), as a full disk fails it with ENOSPC, without a file system of that size to mount."""

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return subprocess.Popen(
        [sys.executable, str(TRAIN), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=limit, env={**os.environ, "PYTHONPATH": str(TESTS)},
    )  # fmt: skip


# the tiny run's summary.json outgrows 6000 bytes once its series are recorded; problem.npz takes 4238
FILE_LIMIT = ["experiment=tiny", "logger=none", *QUIET]


def _run_out_of_room(out: Path, cwd: Path) -> str:
    proc = _start_with_file_limit([*FILE_LIMIT, f"hydra.run.dir={out}"], cwd, 6000)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 4, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last == (
        f"error: cannot write {out / 'summary.json'}: File too large; the run stopped there, every file written "
        f"before is complete: make room on that disk (or lift the limit), then finish the run with "
        f"python scripts/train.py resume={out}"
    ), err[-3000:]
    assert "recorder worker of flow failed: [Errno 27] File too large: " in err  # each on one line
    assert not list(out.rglob(".*.tmp"))  # no temporary file left behind
    assert _summary(out)["status"] == "running" and lock_holder(out) is None  # the last summary written
    return err


@pytest.mark.slow  # ~15 s: the run out of room (exit 4, one line, no traceback), then its resume; in the
# default set: the same stop in-process (test_lab.py's full-disk figures case, exit 4, crashed, resumable)
# and its exit code recorded (test_a_crash_for_want_of_room_is_recorded_with_exit_code_4, below)
def test_a_run_stopped_by_a_full_disk_exits_4_with_one_line_and_is_finished_by_resume(tmp_path):
    """Before: a traceback from write_summary (OSError: [Errno 28] No space left on device), exit 1."""
    out = tmp_path / "run"
    _run_out_of_room(out, tmp_path)
    resumed = _cli([f"resume={out}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = _summary(out)
    assert summary["status"] == "finished" and summary["resumed"][0]["status"] == "running"
    assert {e["status"] for e in summary["series"].values()} == {"ok"}
    assert (out / "series" / "flow.npz").is_file()


def test_a_crash_for_want_of_room_is_recorded_with_exit_code_4():
    """The summary's exit code, when the crashed summary can still be written: 4, not a bug's 1."""
    from types import SimpleNamespace

    from dlnlab.lab.results import RunState

    for err, code in ((OSError(errno.ENOSPC, "No space left on device"), 4), (RuntimeError("a bug"), 1)):
        state = RunState(SimpleNamespace(), Path("."))
        state.crashed(err)
        assert state.exit_code() == code


def test_a_sweep_resume_reads_each_jobs_state_again_and_finishes_what_a_killed_worker_left(tmp_path):
    """Recorded "running" with its lock free (killed since) and "finished" with series under ``killed``
    (exit code 3: a SIGKILLed series worker) are left to finish; finished, refused and running are not."""
    from dlnlab.lab.runner._lock import RunLock
    from dlnlab.lab.sweep_resume import _to_finish

    def job(name: str, state: str, code: int | None, summary: dict | None) -> dict:
        d = tmp_path / name
        d.mkdir()
        if summary is not None:
            (d / "summary.json").write_text(json.dumps({"series": {}, **summary}))
        return {"num": 0, "dir": str(d), "state": state, "exit_code": code}

    assert _to_finish(job("gone", "running", None, {"status": "running"}))  # its lock free: killed
    assert _to_finish(job("killed", "finished", 3, {"status": "finished", "killed": ["sgd_lr_0.02"]}))
    assert not _to_finish(job("done", "finished", 0, {"status": "finished", "killed": []}))
    assert not _to_finish(job("refused", "refused", 2, None))
    live = job("live", "running", None, {"status": "running"})
    lock = RunLock.acquire(live["dir"], "resume")  # its lock held: still running
    try:
        assert not _to_finish(live)
    finally:
        lock.release()
    assert _to_finish({"num": 1, "state": "not_run", "exit_code": None})  # never got a directory


def test_a_job_whose_directory_an_override_with_a_slash_nested_is_in_the_sweep_summary(tmp_path):
    """Hydra names a job's directory after its overrides: a path's "/" nests it (0_flag=/tmp/x ->
    0_flag= / tmp / x). It was listed not_run (never started) although it had run."""
    from omegaconf import OmegaConf

    from dlnlab.lab import sweep as sweeps

    sweep_dir = tmp_path / "sweep"
    nested = sweep_dir / "0_+callbacks.stop.flag=" / "tmp" / "x"
    nested.mkdir(parents=True)
    sweeps.write_job_record(nested, 0, ["+callbacks.stop.flag=/tmp/x"], 0, "")
    config = OmegaConf.create({"hydra": {"overrides": {"task": ["+callbacks.stop.flag=/tmp/x"]}}})
    (job,) = sweeps.write_sweep_summary(sweep_dir, config)["jobs"]
    assert job["dir"] == str(nested) and job["exit_code"] == 0 and job["state"] != "not_run"


def test_a_sweep_job_that_never_ran_is_run_by_resume_and_the_sweep_summary_follows(tmp_path, capsys):
    """A sweep stopped by SIGINT before its job 1 ran (job.json, no summary) and before jobs 0 and 2
    started at all, recorded by the sweep's own writers. Before: resume=<job 1's dir> was refused ("not a
    dlnlab run directory") and sweep_summary.json kept saying interrupted for jobs resumed since.
    The command line's resume= in-process (its CLI start cost ~4 s; the CLI's resume= path in a subprocess:
    the damaged directory's refusal above and the slow tests)."""
    from omegaconf import OmegaConf

    from dlnlab.lab import sweep as sweeps
    from dlnlab.lab.cli import parse_args, resume_command
    from tests._helpers import CONF

    base = ["experiment=tiny", "sgd.lrs=[]", "logger=none", *QUIET]
    sweep_dir, job_dir = tmp_path / "sweep", tmp_path / "sweep" / "1_seed=2"
    job_dir.mkdir(parents=True)
    (sweep_dir / ".interrupted").write_text("SIGINT")
    sweeps.write_job_record(job_dir, 1, [*base, "seed=2"], 130, "not run: the sweep was interrupted (SIGINT)")
    config = OmegaConf.create({"hydra": {"overrides": {"task": [*base, "seed=1,2,3"]}}})
    before = sweeps.write_sweep_summary(sweep_dir, config)
    assert (before["n_not_run"], before["exit_code"]) == (3, 130)
    assert resume_command(parse_args([f"resume={job_dir}"]), CONF) == 0
    out = capsys.readouterr().out
    assert "resume: job 1 of the sweep never ran (not run: the sweep was interrupted (SIGINT))" in out
    run = _summary(job_dir)
    assert run["status"] == "finished" and run["seeds"]["seed"] == 2
    assert json.loads((job_dir / "job.json").read_text())["exit_code"] == 0
    after = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert [(j["num"], j["state"], j["overrides"][-1]) for j in after["jobs"]] == [
        (0, "not_run", "seed=1"), (1, "finished", "seed=2"), (2, "not_run", "seed=3"),
    ]  # fmt: skip
    assert (after["n_finished"], after["n_not_run"], after["resumed_jobs"]) == (1, 2, [1])
    assert (after["interrupted"], after["exit_code"]) == ("SIGINT", 130)  # the sweep's process, as it ended


@pytest.mark.slow  # ~15 s: three CLI starts (the resume, and the train script for the job with no directory)
def test_resume_of_a_sweep_dir_finishes_every_job_not_finished(tmp_path):
    """Job 0 finished, job 1 never ran (job.json only), job 2 never started (no directory, as joblib leaves
    queued jobs): resume=<sweep dir> runs 1 in its directory and 2 into the directory the sweep would
    have given it, through the train script (Hydra's .hydra/ there, for aggregate.py)."""
    from omegaconf import OmegaConf

    from dlnlab.lab import sweep as sweeps

    base = ["experiment=tiny", "sgd.lrs=[]", "logger=none", *QUIET]
    sweep_dir = tmp_path / "sweep"
    for num, code in ((0, 0), (1, 130)):
        job_dir = sweep_dir / f"{num}_job"
        job_dir.mkdir(parents=True)
        sweeps.write_job_record(job_dir, num, [*base, f"seed={num + 1}"], code, "")
    (sweep_dir / "0_job" / "summary.json").write_text(json.dumps({"status": "finished", "stage": "done"}))
    (sweep_dir / ".interrupted").write_text("SIGTERM")
    sweeps.write_sweep_summary(
        sweep_dir, OmegaConf.create({"hydra": {"overrides": {"task": [*base, "seed=1,2,3"]}}})
    )
    proc = _cli([f"resume={sweep_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resume: sweep {sweep_dir}: 2 of its 3 jobs to finish" in proc.stdout
    after = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert [j["state"] for j in after["jobs"]] == ["finished"] * 3 and after["resumed_jobs"] == [1, 2]
    (new,) = [Path(j["dir"]) for j in after["jobs"] if j["num"] == 2]
    assert new.parent == sweep_dir and new.name.startswith("2_") and "seed=3" in new.name
    assert (
        _summary(new)["seeds"]["seed"] == 3 and "- seed=3" in (new / ".hydra" / "overrides.yaml").read_text()
    )
    assert (after["interrupted"], after["exit_code"]) == ("SIGTERM", 143)
