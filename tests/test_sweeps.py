"""A sweep's table and directory (docs/runs.md, "Sweeps"): a job a killed worker left, a sweep never summed
up, one directory to a sweep (a failing job through each Hydra launcher: tests/test_sweep_launchers.py)."""

from __future__ import annotations

import json
import os

import pytest

from tests._helpers import CONF, QUIET
from tests._helpers import popen_cli as _popen
from tests._helpers import run_cli as _cli

pytestmark = pytest.mark.lab  # every test here runs the lab (in-process or its CLI)

TWO_JOBS = ["-m", "experiment=tiny", "sgd.lrs=[]", "logger=none", *QUIET]


def test_a_job_whose_series_a_killed_worker_lost_is_incomplete_not_finished(tmp_path, capsys):
    """A job that ended by itself (exit code 3) with series under ``killed`` in its summary (a SIGKILLed
    series worker; tests/test_parallel.py makes one for real). Before: the sweep table called it
    finished (n_finished 2), as if only a series had failed, though resume=<its dir> finishes it."""
    from omegaconf import OmegaConf

    from dlnlab.lab import sweep as sweeps
    from dlnlab.lab.sweep_resume import _to_finish

    sweep_dir = tmp_path / "sweep"
    for num, killed in ((0, ["sgd_lr_0.02"]), (1, [])):
        job_dir = sweep_dir / f"{num}_seed={num}"
        job_dir.mkdir(parents=True)
        summary = {"status": "finished", "exit_code": 3 if killed else 0, "series": {}, "killed": killed}
        (job_dir / "summary.json").write_text(json.dumps(summary))
        sweeps.write_job_record(job_dir, num, [f"seed={num}"], 3 if killed else 0, "sgd_lr_0.02: error: ...")
    config = OmegaConf.create({"hydra": {"overrides": {"task": ["seed=0,1"]}}})
    summary = sweeps.write_sweep_summary(sweep_dir, config)
    incomplete, done = summary["jobs"]
    assert (incomplete["state"], done["state"]) == ("incomplete", "finished")
    counts = [summary[k] for k in ("n_finished", "n_incomplete", "n_failed", "exit_code")]
    assert counts == [1, 1, 1, 3]
    assert incomplete["message"] == (
        "finished, 1 series killed (sgd_lr_0.02: their worker process ended before reporting): "
        f"python scripts/train.py resume={incomplete['dir']} runs them again"
    )
    table = capsys.readouterr().out
    assert "1 finished, 1 incomplete" in table and "incomplete, exit 3: finished, 1 series killed" in table
    assert json.loads((sweep_dir / "sweep_summary.json").read_text())["n_incomplete"] == 1
    assert _to_finish(incomplete) and not _to_finish(done)


def test_the_table_names_a_killed_job_and_one_that_never_started_once_each(tmp_path, capsys):
    """A job whose process ended while it ran (no exit code, its summary says running) and one the sweep
    never started have no exit code: their lines say their state once (they read "killed, killed:")."""
    from omegaconf import OmegaConf

    from dlnlab.lab import sweep as sweeps

    sweep_dir = tmp_path / "sweep"
    job_dir = sweep_dir / "0_seed=0"
    job_dir.mkdir(parents=True)
    (job_dir / "summary.json").write_text(json.dumps({"status": "running", "series": {}}))
    sweeps.write_job_record(job_dir, 0, ["seed=0"], None, "")
    summary = sweeps.write_sweep_summary(
        sweep_dir, OmegaConf.create({"hydra": {"overrides": {"task": ["seed=0,1"]}}})
    )
    assert [j["state"] for j in summary["jobs"]] == ["killed", "not_run"]
    lines = capsys.readouterr().out.splitlines()
    assert (
        "  job 0 (seed=0): killed: its process ended while it ran (killed?): resume=<its dir> finishes it"
        in lines
    )
    assert any(line.startswith("  job 1 (seed=1): not_run: ") for line in lines), lines


def test_a_given_sweep_directory_is_claimed_before_hydra_writes_and_held_to_the_end(tmp_path):
    """The preflight of a sweep claims its explicit hydra.sweep.dir (made, locked, checked empty) as a
    single run's; the sweep's start (on_multirun_start: hold_dir) keeps that claim, and locks a
    directory made fresh (dlnlab_unique's); release_claims lets both go at the end. Before: a sweep
    claimed nothing, and two sweeps given one directory both wrote their jobs into it."""
    from dlnlab.lab.cli import preflight
    from dlnlab.lab.config import ConfigError
    from dlnlab.lab.runner import claim_run_dir, hold_dir, lock_holder, release_claims

    sweep = tmp_path / "new" / "sweep"
    try:
        assert preflight([*TWO_JOBS, "seed=1,2", f"hydra.sweep.dir={sweep}"], CONF, claim=True) is None
        assert sorted(p.name for p in sweep.iterdir()) == [".lock"]
        assert lock_holder(sweep)["pid"] == os.getpid()
        with pytest.raises(
            ConfigError, match=rf"^hydra.sweep.dir: {sweep} is taken by process {os.getpid()} "
        ):
            claim_run_dir(sweep, "hydra.sweep.dir")  # a second sweep's claim, even from this process
        second = preflight([*TWO_JOBS, "seed=3,4", f"hydra.sweep.dir={sweep}"], CONF, claim=True)
        assert f"hydra.sweep.dir: {sweep} " in second and "a run never writes into another's" in second
        hold_dir(sweep, "hydra.sweep.dir")  # the sweep starts: its claim holds the lock already
    finally:
        release_claims()
    assert not sweep.exists() and (tmp_path / "new").is_dir()  # nothing written: what the claim made goes
    fresh = tmp_path / "fresh"  # as dlnlab_unique makes it
    fresh.mkdir()
    hold_dir(fresh, "hydra.sweep.dir")
    assert lock_holder(fresh)["pid"] == os.getpid()
    release_claims()
    assert fresh.is_dir() and not (fresh / ".lock").exists()


@pytest.mark.slow  # ~15 s: two sweeps at once, then a resume; in the default set: the claim in-process (above)
def test_two_sweeps_started_together_in_one_given_directory_one_is_refused_having_written_nothing(tmp_path):
    """Before: both ran, their jobs side by side in the directory (0_..seed=1 and 0_..seed=2), and each
    sweep's summary listed the other's jobs (one sweep exited 3 on a job of the other's still running)."""
    sweep = tmp_path / "sweep"
    procs = [_popen([*TWO_JOBS, f"seed={a},{a + 10}", f"hydra.sweep.dir={sweep}"], tmp_path) for a in (1, 2)]
    ends = [(proc.returncode, out, err) for proc in procs for out, err in [proc.communicate(timeout=300)]]
    assert sorted(code for code, _, _ in ends) == [0, 2], ends
    (refusal,) = [err for code, _, err in ends if code == 2]
    assert refusal.startswith("error: ") and refusal.count("\n") == 1, refusal
    assert f"hydra.sweep.dir: {sweep} " in refusal
    first = 1 + [code for code, _, _ in ends].index(0)
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [j["overrides"][-1] for j in summary["jobs"]] == [f"seed={first}", f"seed={first + 10}"]
    assert len([d for d in sweep.iterdir() if d.is_dir()]) == 2 and not (sweep / ".lock").exists()
    resumed = _cli([f"resume={sweep}"], tmp_path)  # the claim is let go: the sweep's resume runs
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resume: sweep {sweep}: 0 of its 2 jobs to finish" in resumed.stdout


def _job(sweep_dir, num: int, code: int | None, status: str | None):
    from dlnlab.lab import sweep as sweeps

    job_dir = sweep_dir / f"{num}_seed={num + 1}"
    job_dir.mkdir(parents=True)
    sweeps.write_job_record(job_dir, num, ["experiment=tiny", f"seed={num + 1}"], code, "")
    if status is not None:
        (job_dir / "summary.json").write_text(json.dumps({"status": status, "series": {}, "killed": []}))


def test_a_jobs_resume_rewrites_the_sweep_summary_under_the_sweep_lock(tmp_path, capsys):
    """record_resume (the end of resume=<job dir>) rewrites sweep_summary.json holding the sweep
    directory's lock: a moment's holder (another job's rewrite) is waited for, the summary written once
    it lets go; a holder that stays (the sweep, or resume=<sweep dir>, which write it again when they
    end) is left to it, the summary untouched and a note said. Before, the rewrite ignored the lock: two
    could interleave, the last writer's stale view of the other's job winning."""
    import threading

    from omegaconf import OmegaConf

    from dlnlab.lab import sweep as sweeps
    from dlnlab.lab.runner import RunLock
    from dlnlab.lab.sweep_resume import job_record, record_resume

    sweep_dir = tmp_path / "sweep"
    for num in (0, 1):
        _job(sweep_dir, num, 143, "interrupted")
    sweeps.write_sweep_summary(sweep_dir, OmegaConf.create({"hydra": {"overrides": {"task": ["seed=1,2"]}}}))
    path = sweep_dir / "sweep_summary.json"
    before = path.read_bytes()
    job0, job1 = sorted(p for p in sweep_dir.iterdir() if p.is_dir())

    held = RunLock.acquire(sweep_dir, "hydra.sweep.dir")  # the sweep's process, still running
    try:
        record_resume(job0, 0, wait_s=0.3)
        assert path.read_bytes() == before  # left to the holder
        assert "is not written again now" in capsys.readouterr().err
        assert job_record(job0)["exit_code"] == 0  # the job's own record is current
        at_release = []

        def release_soon() -> None:
            import time

            time.sleep(0.5)
            at_release.append(path.read_bytes())
            held.release()

        releaser = threading.Thread(target=release_soon)
        releaser.start()
        record_resume(job1, 0, wait_s=30)  # another job's rewrite holds it a moment: waited for
        releaser.join()
    finally:
        held.release()
    assert at_release == [before]  # nothing written while the lock was held
    summary = json.loads(path.read_text())
    assert summary["resumed_jobs"] == [1] and summary["exit_code"] == 143
    assert [j["exit_code"] for j in summary["jobs"]] == [0, 0]  # both jobs' job.json read again
    assert not (sweep_dir / ".lock").exists()  # released


def test_a_sweep_whose_process_was_killed_before_its_summary_is_resumed_from_its_records(tmp_path, capsys):
    """No sweep_summary.json (the sweep's process SIGKILLed while job 0 ran; job 2 never started): the
    resume rebuilds it from the jobs' job.json and the command line in Hydra's multirun.yaml, its exit
    code null (the sweep's process never wrote its end), and finishes the jobs. Before: refused as "not a
    dlnlab run directory", with no hint. Refused while the sweep runs (it holds the directory's lock), and
    in one line when multirun.yaml cannot be read."""
    from omegaconf import OmegaConf

    from dlnlab.lab import sweep as sweeps
    from dlnlab.lab.cli import parse_args, resume_command
    from dlnlab.lab.config import ConfigError
    from dlnlab.lab.runner import RunLock
    from dlnlab.lab.sweep_resume import _to_finish, is_sweep_dir, rebuild_sweep_summary, resume_sweep

    sweep_dir = tmp_path / "sweep"
    _job(sweep_dir, 0, None, "running")  # killed with the sweep: its lock is free
    _job(sweep_dir, 1, 0, "finished")  # (joblib's second worker finished it)
    assert not is_sweep_dir(sweep_dir)  # job directories alone do not say which jobs the sweep had
    OmegaConf.save(
        {"hydra": {"overrides": {"task": ["experiment=tiny", "seed=1,2,3"]}}}, sweep_dir / "multirun.yaml"
    )
    assert is_sweep_dir(sweep_dir) and not is_sweep_dir(sweep_dir / "0_seed=1")
    running = RunLock.acquire(sweep_dir, "hydra.sweep.dir")  # the sweep's own process, still at work
    try:
        with pytest.raises(ConfigError, match=rf"^resume: {sweep_dir} is in use by process {os.getpid()} "):
            resume_sweep(sweep_dir, CONF)
    finally:
        running.release()
    assert not (sweep_dir / "sweep_summary.json").exists()
    rebuild_sweep_summary(sweep_dir)
    assert (
        "has no sweep_summary.json (its process ended before writing it: killed?)" in capsys.readouterr().out
    )
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert [(j["num"], j["state"], j["overrides"][-1]) for j in summary["jobs"]] == [
        (0, "killed", "seed=1"), (1, "finished", "seed=2"), (2, "not_run", "seed=3"),
    ]  # fmt: skip
    assert (summary["rebuilt"], summary["exit_code"], summary["interrupted"]) == (True, None, None)
    assert [_to_finish(j) for j in summary["jobs"]] == [True, False, True]
    again = sweeps.write_sweep_summary(sweep_dir, resumed=[0])  # after a job's resume: still rebuilt
    assert (again["rebuilt"], again["exit_code"], again["resumed_jobs"]) == (True, None, [0])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "multirun.yaml").write_text("hydra: [\n")
    assert resume_command(parse_args([f"resume={bad}"]), CONF) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: resume: {bad} has no sweep_summary.json, and its multirun.yaml cannot be read ("
    )
    assert err.count("\n") == 1 and "finish each job with resume=<its dir>" in err
    assert sorted(p.name for p in bad.iterdir()) == ["multirun.yaml"]  # nothing written, the lock let go


@pytest.mark.slow  # ~25 s: a sweep killed in its job 0, then its resume (which starts job 1 through the script)
def test_a_sigkilled_sweep_is_finished_by_resume_of_its_directory(tmp_path):
    """SIGKILL to the sweep's process (a callback in its job 0's SGD series, run in the sweep's process
    by the basic launcher): no sweep_summary.json; resume=<sweep dir> finishes job 0 and runs job 1."""
    sweep, flag = tmp_path / "sweep", tmp_path / "flag"
    kill = ["run.workers=1", "+callbacks.stop._target_=_runtime_helpers.SignalOnce", "+callbacks.stop.m=3",
            "+callbacks.stop.series=sgd_lr_0.04", "+callbacks.stop.signum=9", f"+callbacks.stop.flag={flag}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(CONF.parent / "tests")}  # for _runtime_helpers
    proc = _cli(
        ["-m", "experiment=tiny", "logger=none", *QUIET, *kill, "seed=1,2", f"hydra.sweep.dir={sweep}"],
        tmp_path,
        env=env,
    )
    assert proc.returncode == -9 and not (sweep / "sweep_summary.json").exists(), proc.stderr[-3000:]
    resumed = _cli([f"resume={sweep}"], tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resume: sweep {sweep} has no sweep_summary.json" in resumed.stdout
    assert f"resume: sweep {sweep}: 2 of its 2 jobs to finish" in resumed.stdout
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [j["state"] for j in summary["jobs"]] == ["finished"] * 2 and summary["resumed_jobs"] == [0, 1]
    assert (summary["rebuilt"], summary["exit_code"]) == (True, None) and not (sweep / ".lock").exists()


def test_a_jobs_directory_is_one_folder_whatever_paths_its_overrides_hold(tmp_path):
    """A file's path in a job's overrides made nested folders (0_data.path=/ holding tmp/... holding the
    run), which <sweep>/*/summary.json did not find: data.path and init.path are left out of the name.
    The directory is the one Hydra names from conf/train.yaml (what a resume gives a job that never ran)."""
    from dlnlab.lab.sweep_resume import _new_job_dir

    overrides = ["data=file", "data.path=/abs/my data/x.npz", "init=file", "++init.path=/w/w0.npz",
                 "model.dims=[6,5,4]", "seed=3"]  # fmt: skip
    job_dir = _new_job_dir(tmp_path, 1, overrides, CONF, "train")
    assert job_dir.parent == tmp_path and "/" not in job_dir.name
    assert job_dir.name == "1_data=file,init=file,model.dims=[6,5,4],seed=3"
