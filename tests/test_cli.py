"""The CLI in subprocesses: exit codes, one-line refusals that write nothing, signals at several
moments, two runs at once (a sweep with a failing job: tests/test_sweep_launchers.py). Runs are shared between
tests where they can."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests._helpers import QUIET, TRAIN, hparams_of
from tests._helpers import popen_cli as _popen
from tests._helpers import read_summary as _summary
from tests._helpers import run_cli as _cli
from tests._helpers import wait_for_stage as _wait_for_stage

pytestmark = pytest.mark.lab  # every test here runs the lab (in-process or its CLI)

ROOT = Path(__file__).resolve().parents[1]
# the tiny flow alone, nothing but its files
TINY_FLOW = ["experiment=tiny", "sgd.lrs=[]", "logger=none", *QUIET]


@dataclass(frozen=True)
class TwoRuns:
    """What the two runs started together left: the folder they share, the full run's stderr (its stdout
    was closed at once), and the other run's console (stdout and stderr in one pipe, in order)."""

    folder: Path
    full_stderr: str
    console: str


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> TwoRuns:
    """Two CLI runs started together, both with hydra.run.dir=${dlnlab_unique:<folder>/same}: a full one
    (the net [4, 3, 2], three learning rates, TensorBoard) whose reader of stdout goes away before the
    first line (``train.py ... | head``), and one of the flow and one SGD series of batch 50 > N = 20 drawn
    with replacement (warned), its stderr into its stdout. Each run took the first free name, same or
    same_1. (They carry the checks of three more CLI runs of their own: the directory a refused run must
    not touch, the closed stdout, the warning's place on the console; each such run cost ~4 s.)"""
    folder = tmp_path_factory.mktemp("cli")
    unique = f"hydra.run.dir=${{dlnlab_unique:{folder / 'same'}}}"
    full = ["experiment=tiny", "model.dims=[4,3,2]", "sgd.lrs=[0.05,0.02,0.01]", *QUIET, unique]
    warned = ["experiment=tiny", "sgd.lrs=[0.02]", "sgd.batch_size=50", "logger=none", *QUIET, unique]
    full_proc = _popen(full, folder)
    full_proc.stdout.close()  # gone before the first line
    warned_proc = _popen(warned, folder, stderr=subprocess.STDOUT)
    console, _ = warned_proc.communicate(timeout=300)
    assert warned_proc.returncode == 0, console[-3000:]
    full_stderr = full_proc.stderr.read()
    assert full_proc.wait(timeout=300) == 0, full_stderr[-3000:]
    return TwoRuns(folder, full_stderr, console)


@pytest.fixture(scope="module")
def cli_run(two_runs) -> Path:
    """The full one of the two runs, shared by the tests that read it or try to write into it."""
    (run,) = [d for d in two_runs.folder.iterdir() if _summary(d)["config"]["model"]["dims"] == [4, 3, 2]]
    return run


# the tests of the two runs on one xdist worker (--dist loadgroup in pyproject.toml): a module fixture
# is made on every worker that runs one of its tests, and these two runs cost ~10 s
@pytest.mark.xdist_group("two_cli_runs")
def test_cli_runs_with_overrides(cli_run):
    summary = _summary(cli_run)
    assert summary["config"]["model"]["dims"] == [4, 3, 2] and summary["exit_code"] == 0
    assert summary["stage"] == "done" and summary["interrupted"] is None and summary["not_run"] == []
    assert (cli_run / ".hydra" / "overrides.yaml").exists()
    lrs = sorted(summary["config"]["sgd"]["lrs"], reverse=True)  # a run per series, and the report's third
    order = ["flow", f"sgd_lr_{lrs[0]!r}", "report", *(f"sgd_lr_{lr!r}" for lr in lrs[1:])]
    assert sorted(p.name for p in (cli_run / "tensorboard").iterdir()) == sorted(order)
    assert not list(cli_run.rglob(".*.tmp"))  # no temporary file left behind


@pytest.mark.xdist_group("two_cli_runs")
def test_a_run_whose_stdout_reader_went_away_finishes_its_files_and_tensorboard(two_runs, cli_run):
    """``train.py ... | head``: the reader of stdout goes away. The print of the results then raised
    BrokenPipeError: a traceback, exit code 1, and the HParams and Text never logged (the files were
    written before). Now the run finishes without its console, with its own exit code (0: the fixture)."""
    assert "Traceback" not in two_runs.full_stderr, two_runs.full_stderr[-3000:]
    assert _summary(cli_run)["status"] == "finished"
    for lr in ("0.05", "0.02", "0.01"):  # logged after the results
        assert list((cli_run / "tensorboard" / f"sgd_lr_{lr}").glob("*.hparams")), lr


@pytest.mark.xdist_group("two_cli_runs")
def test_the_cli_warns_of_a_batch_above_n_before_the_run_starts(two_runs):
    """The warning's line comes before the run's first block on the console (the text of the warning
    for each batch and sampling: tests/test_warnings.py, in-process)."""
    lines = two_runs.console.splitlines()
    first = next(
        i for i, line in enumerate(lines) if line.startswith("warning: sgd.batch_size: 50 > data.n_samples")
    )
    assert first < lines.index("dlnlab run") and "write sgd.batch_size=null" in lines[first]
    assert "run directory" in two_runs.console and "Traceback" not in two_runs.console


@pytest.mark.xdist_group("two_cli_runs")
def test_a_refused_run_leaves_an_existing_directory_untouched(cli_run):
    hydra_files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (cli_run / ".hydra").iterdir()}
    proc = _cli(["experiment=tiny", *QUIET, f"hydra.run.dir={cli_run}"], cli_run.parent)
    assert proc.returncode == 2 and proc.stderr.startswith("error: hydra.run.dir: "), proc.stderr
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (cli_run / ".hydra").iterdir()} == hydra_files


@pytest.mark.xdist_group("two_cli_runs")
def test_two_runs_started_together_get_two_directories(two_runs):
    dirs = sorted(p for p in two_runs.folder.iterdir() if p.is_dir())
    assert [d.name for d in dirs] == ["same", "same_1"]
    for d in dirs:
        assert _summary(d)["run_dir"] == str(d)
        assert len(np.load(d / "series" / "flow.npz")["t"]) == 81


def _check_interrupted(out: Path, code: int, sig: str, stage: str) -> dict:
    summary = _summary(out)
    assert summary["exit_code"] == code and summary["interrupted"] == sig and summary["stage"] == stage
    for npz in (out / "series").glob("*.npz"):
        with np.load(npz) as f:  # every file complete
            assert len(f["t"]) >= 1
    np.load(out / "problem.npz")
    assert not list(out.rglob(".*.tmp"))
    return summary


class _StderrWatch:
    """Reads a process's stderr in a thread (tqdm's bars end their updates with a carriage return, so the
    text is split on both line ends) and says when one of its updates matches a condition."""

    def __init__(self, proc) -> None:
        self.proc, self.text, self.lock = proc, [], threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for chunk in iter(lambda: os.read(self.proc.stderr.fileno(), 4096), b""):
            with self.lock:
                self.text.append(chunk.decode(errors="replace"))

    def wait_for(self, pattern: str, accept, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            with self.lock:
                updates = re.split(r"[\r\n]", "".join(self.text))
            if any((m := re.search(pattern, u)) and accept(m) for u in updates):
                return
            time.sleep(0.05)
        pytest.fail(
            f"no stderr update matched {pattern!r} (exit {self.proc.poll()}): {''.join(self.text)[-2000:]}"
        )

    def rest(self, timeout: float = 120) -> str:
        self.proc.wait(timeout=timeout)
        self.thread.join(timeout=10)
        return "".join(self.text)


@pytest.mark.slow  # ~9 s (a CLI run to its flow); in the default set: the same signal in-process (tests/test_run_failures.py), the solve ahead stopped by one (tests/test_ahead.py), the CLI's 143 (tests/test_signal_start.py)
def test_sigterm_to_the_process_group_during_the_flow(tmp_path):
    out = tmp_path / "run"
    args = ["experiment=tiny", "flow=dopri5", "flow.t_max=4000", "log.dt=1", "logger=none", "log.figures=false",
            "log.progress=always", f"hydra.run.dir={out}"]  # fmt: skip
    # The tiny net by dopri5 over t = 4000: ~15 s, solved ahead of Lightning's import (runner/_ahead.py).
    # The signal goes once the flow's progress bar shows t >= 1 (the grid points solved are handed to the
    # recorder with the interrupted solve's rows), not after a fixed time.
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    watch = _StderrWatch(proc)
    watch.wait_for(r"^\s*flow\s.*\bt = ([0-9.e+-]+) /", lambda m: float(m.group(1)) >= 1.0)
    os.killpg(proc.pid, signal.SIGTERM)
    err = watch.rest()
    assert proc.returncode == 143, err[-3000:]
    summary = _check_interrupted(out, 143, "SIGTERM", "flow")
    flow = summary["series"]["flow"]
    assert flow["status"] == "interrupted" and "interrupted at t = " in flow["message"]
    arr = np.load(out / "series" / "flow.npz")
    assert 1 < len(arr["t"]) < 4001 and arr["t"][-1] == pytest.approx(flow["t_stop"])
    assert summary["not_run"] == ["sgd_lr_0.04", "sgd_lr_0.02", "sgd_lr_0.01"]
    assert summary["process"]["flow_ahead"]


def test_an_interrupted_sweep_ends_with_the_command_that_finishes_it(tmp_path):
    """As a single run's last line gives resume=<run dir>; the sweep's gave no command (a new user's review)."""
    sweep = tmp_path / "swept dir"  # a space: the command is to be copied as it stands
    args = ["-m", "experiment=tiny", "flow.t_max=20", "sgd.lrs=[0.0002]", "seed=0,1", "logger=none", *QUIET,
            f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}"]  # fmt: skip
    proc = _popen(args, tmp_path, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (sweep / "0" / "job.json").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # job 0 started (its 100,000 steps take far longer than this test)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    finish = f"python scripts/train.py resume='{sweep}' finishes the sweep"
    assert (
        err.strip().splitlines()[-1]
        == f"interrupted (exit code 130): every file written so far is complete; {finish}"
    )
    assert (sweep / "sweep_summary.json").is_file()


@pytest.mark.slow  # ~14 s of CLI: the CLI's signal path stays in the default set (SIGTERM during the flow)
def test_sigint_during_sgd_keeps_everything_recorded(tmp_path):
    out = tmp_path / "run"
    args = [
        "experiment=tiny",
        "flow.t_max=40",
        "sgd.lrs=[0.0001]",
        "log.figures=false",
        "log.progress=always",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), *args, f"hydra.run.dir={out}"], cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    watch = _StderrWatch(proc)  # into the 400,000-step series: its bar past t = 0.2 (4 grid points)
    watch.wait_for(r"^\s*sgd_lr_0\.0001\s.*\bt = ([0-9.e+-]+) /", lambda m: float(m.group(1)) >= 0.2)
    proc.send_signal(signal.SIGINT)
    err = watch.rest()
    assert proc.returncode == 130, err[-3000:]
    summary = _check_interrupted(out, 130, "SIGINT", "sgd_lr_0.0001")
    assert summary["series"]["flow"]["status"] == "ok"
    entry = summary["series"]["sgd_lr_0.0001"]
    assert entry["status"] == "interrupted" and 0 < entry["t_stop"] < 40
    arr = np.load(out / "series" / "sgd_lr_0.0001.npz")
    assert len(arr["t"]) > 1 and arr["t"][-1] == pytest.approx(entry["t_stop"])
    assert arr["step"][-1] == entry["step_stop"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["saddle analysis", "figures"])
def test_sigterm_during_the_analysis_and_the_figures(stage, tmp_path):
    """Each stage is held open until the signal has come (tests/_runtime_helpers.py; sent once the summary
    named the stage, it came after the ~1 s figures under load: exit 0). The figures: sent once a forked
    worker is held, it lands while the run waits for the drawing."""
    if stage == "figures" and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: the figures are drawn in the run's own process, not in forked workers")
    out, ready = tmp_path / "run", tmp_path / "figure-worker-held"
    hold = {"saddle analysis": ["HoldStageEnd", "target=dlnlab.lab.results.analyze_run_saddles"],
            "figures": ["HoldFigureWorkers", f"run_dir={out}", f"ready={ready}"]}[stage]  # fmt: skip
    hold = [f"+callbacks.hold.{o}" for o in [f"_target_=_runtime_helpers.{hold[0]}", *hold[1:]]]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}  # for _runtime_helpers
    args = ["log.progress=never", *hold, f"hydra.run.dir={out}"]
    proc = _popen(args, tmp_path, start_new_session=True, env=env)
    _wait_for_stage(out, stage, proc, timeout=300)
    while stage == "figures" and not ready.exists() and proc.poll() is None:
        time.sleep(0.02)  # (a worker held 120 s without a signal draws: the run then ends 0, failing here)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    summary = _check_interrupted(out, 143, "SIGTERM", stage)
    assert all(e["status"] == "ok" for e in summary["series"].values())
    assert not list(out.glob("figures/*.png"))  # none drawn to its end


@pytest.mark.slow  # ~37 s (4 CLI runs); in the default set: resume bit for bit in-process after a real SIGTERM (test_runs.py, test_ensemble.py), the CLI's resume= checks (test_runs_cli.py)
def test_a_run_killed_mid_series_resumes_to_the_same_numbers_bit_for_bit(tmp_path):
    """SIGTERM during a minibatch heavy-ball series, then resume=<run dir>: every series equals the
    uninterrupted run's bit for bit (same machine: the same ops in the same order), the finished
    series are kept, the interrupted one continues from its checkpoint. The signal comes from a
    callback at grid point 40 of 81 (10,000 steps: a fixed point, however fast the machine), once:
    the resume, in a process of its own, is not signalled again."""
    from dlnlab.lab.runner import run
    from tests._helpers import make_cfg

    args = [
        "experiment=tiny",
        "flow.t_max=4",
        "sgd.lrs=[0.01,0.0002]",
        "sgd.batch_size=5",
        "sgd.momentum=0.5",
        "run.workers=1",  # the serial order: sgd_lr_0.01 has ended when the signal comes (the parallel case: test_parallel.py)
        *QUIET,
    ]
    whole = run(make_cfg(args), output_dir=tmp_path / "whole")
    out = tmp_path / "killed"
    stop = [
        "+callbacks.stop._target_=_runtime_helpers.SignalOnce",
        "+callbacks.stop.series=sgd_lr_0.0002",
        "+callbacks.stop.m=40",
        f"+callbacks.stop.flag={tmp_path / 'signalled'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}  # for _runtime_helpers
    proc = _cli([*args, *stop, f"hydra.run.dir={out}"], tmp_path, env=env)
    assert proc.returncode == 143, proc.stderr[-3000:]
    killed = _summary(out)
    assert killed["series"]["sgd_lr_0.0002"]["status"] == "interrupted"
    assert 0 < killed["series"]["sgd_lr_0.0002"]["t_stop"] < 4
    assert (out / "checkpoints" / "sgd_lr_0.0002.ckpt").is_file()
    refused = _cli([f"resume={out}", "sgd.lrs=[0.1]"], tmp_path, env=env)
    assert refused.returncode == 2 and "give resume=<run dir> alone" in refused.stderr
    resumed = _cli([f"resume={out}"], tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = _summary(out)
    assert summary["stage"] == "done" and summary["interrupted"] is None and summary["exit_code"] == 0
    assert summary["resumed"][0]["series"] == {
        "sgd_lr_0.01": "kept",
        "sgd_lr_0.0002": "continued from its checkpoint",
    }
    assert summary["series"]["flow"]["resume_check"]["max_abs_diff"] <= 1e-8
    # HParams: the columns of the keys the run was given (its .hydra/overrides.yaml), not of the resume's
    # command line (no resume column); sgd.batch_size and sgd.momentum are the rows' own columns
    for name, lr in (("sgd_lr_0.01", 0.01), ("sgd_lr_0.0002", 0.0002)):
        assert hparams_of(out / "tensorboard" / name) == {
            "experiment": "tiny", "flow.t_max": 4.0, "batch_size": 5, "momentum": 0.5, "lr": lr, "status": "ok"
        }  # fmt: skip
    assert not (out / "checkpoints" / "sgd_lr_0.0002.ckpt").exists()
    for name in whole["series"]:
        a, b = np.load(tmp_path / "whole" / "series" / f"{name}.npz"), np.load(out / "series" / f"{name}.npz")
        assert set(a.files) == set(b.files)
        for key in ("theta", "loss", "t", "step", "dist_to_flow", "sharpness"):
            if key in a.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name} {key}")
        assert summary["series"][name]["status"] == whole["series"][name]["status"]
    again = _cli([f"resume={out}"], tmp_path, env=env)
    assert again.returncode == 2 and "nothing to resume" in again.stderr


@pytest.mark.slow  # ~7 s (two CLI runs); in the default set: the claim itself, in-process (below)
def test_two_runs_started_together_in_one_given_directory_one_is_refused_having_written_nothing(tmp_path):
    """The same explicit hydra.run.dir twice at once: exactly one runs; the other is refused (exit 2, one
    line) before Hydra writes its .hydra/ there. Before: both passed the check, both Hydras wrote .hydra/,
    and the refused run's overrides (seed=2) lay beside the other's results (seed=1)."""
    out = tmp_path / "same"
    procs = [_popen([*TINY_FLOW, f"seed={seed}", f"hydra.run.dir={out}"], tmp_path) for seed in (1, 2)]
    ends = [(proc.returncode, err) for proc in procs for _, err in [proc.communicate(timeout=300)]]
    assert sorted(code for code, _ in ends) == [0, 2], ends
    (refusal,) = [err for code, err in ends if code == 2]
    assert refusal.startswith("error: hydra.run.dir: ") and refusal.count("\n") == 1, refusal
    seed = _summary(out)["seeds"]["seed"]
    assert f"- seed={seed}\n" in (out / ".hydra" / "overrides.yaml").read_text()
    assert seed == [1, 2][[code for code, _ in ends].index(0)]
    assert not (out / ".lock").exists()


def test_a_claimed_run_directory_is_refused_to_a_second_claim_and_let_go_when_no_run_took_it(tmp_path):
    """claim_run_dir locks before it checks the directory empty; release_claims removes what it made."""
    from dlnlab.lab.config import ConfigError
    from dlnlab.lab.runner import claim_run_dir, release_claims

    out = tmp_path / "new" / "run"
    claim_run_dir(out, "hydra.run.dir")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    with pytest.raises(ConfigError, match=rf"^hydra.run.dir: {out} is taken by process {os.getpid()} "):
        claim_run_dir(out, "hydra.run.dir")  # a second lock of the file, even in this process
    release_claims()
    assert not out.exists() and (tmp_path / "new").is_dir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "summary.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"is not empty \(it holds summary.json\)"):
        claim_run_dir(tmp_path / "full", "hydra.run.dir")
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["summary.json"]
    release_claims()
