"""A run's failures, signals and lock (docs/runs.md), in-process: a user callback or logger that raises or
cannot be made, a bug outside any series, signals whose exception Python dropped or that come during
one long C call, the lock held while a run runs. Resume and damaged files: test_runs.py."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from _runtime_helpers import Peek

from dlnlab.lab.config import ConfigError
from dlnlab.lab.runner import lock_holder, resume, run
from tests._helpers import make_cfg

pytestmark = pytest.mark.lab  # every test here runs the lab in-process (no module fixture: no xdist group)

QUIET = ["log.figures=false", "log.progress=never"]


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_a_run_says_it_is_running_holds_its_lock_and_refuses_a_resume_meanwhile(tmp_path):
    out = tmp_path / "run"
    Peek.seen.clear()
    peek = [
        "+callbacks.peek._target_=_runtime_helpers.Peek",
        f"+callbacks.peek.run_dir={out}",
        "+callbacks.peek.probe=_runtime_helpers.resume_now",
    ]
    result = run(make_cfg(["experiment=tiny", "sgd.lrs=[0.04]", *QUIET, *peek]), output_dir=out)
    assert result.exit_code == 0
    (seen,) = Peek.seen
    during = seen["summary"]
    assert during["status"] == "running" and during["exit_code"] is None and during["stage"] == "flow"
    assert during["process"]["pid"] == os.getpid()
    assert seen["probe_error"].startswith(f"ConfigError: resume: {out} is in use by process {os.getpid()} ")
    after = _summary(out)
    assert after["status"] == "finished" and after["exit_code"] == 0 and lock_holder(out) is None


def test_a_user_callback_that_raises_is_recorded_where_it_raised_and_ends_nothing_else(tmp_path):
    """Before: the flow's recorder worker was never closed, and the run never exited."""
    out = tmp_path / "run"
    raising = ["+callbacks.boom._target_=_runtime_helpers.RaiseAt", "+callbacks.boom.m=3"]
    result = run(make_cfg(["experiment=tiny", *QUIET, *raising]), output_dir=out)
    assert result.exit_code == 3 and result["status"] == "finished"
    for name, entry in result["series"].items():
        assert entry["status"] == "error", name
        assert entry["message"].startswith("callback RaiseAt raised at grid point m = 3 (t = "), entry[
            "message"
        ]
        assert entry["message"].endswith(f"ValueError: boom at {name} m = 3")
    assert len(np.load(out / "series" / "flow.npz")["t"]) == 81  # the flow's own record is complete
    assert multiprocessing.active_children() == []


def test_a_callback_that_cannot_be_made_is_refused_before_the_run(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(
        ConfigError, match=r"^callbacks\.x: _runtime_helpers\.Unmakeable cannot be made: RuntimeError: no"
    ):
        run(
            make_cfg(["experiment=tiny", *QUIET, "+callbacks.x._target_=_runtime_helpers.Unmakeable"]),
            output_dir=out,
        )
    assert not out.exists()


def test_a_logger_that_cannot_be_made_fails_its_series_only(tmp_path):
    out = tmp_path / "run"
    logger = ["logger=csv", "logger._target_=_runtime_helpers.FailsForSlowSeries"]
    result = run(make_cfg(["experiment=tiny", "sgd.lrs=[0.04,0.02]", *QUIET, *logger]), output_dir=out)
    assert result.exit_code == 3
    statuses = {name: e["status"] for name, e in result["series"].items()}
    assert statuses == {"flow": "ok", "sgd_lr_0.04": "error", "sgd_lr_0.02": "ok"}
    assert result["series"]["sgd_lr_0.04"]["message"] == "logger: OSError: no space left for sgd_lr_0.04"
    assert len(np.load(out / "series" / "sgd_lr_0.04.npz")["t"]) == 81  # recorded, only not logged
    logs = out / "failingfor"  # the logger class name, lower case, less "logger"
    assert (logs / "sgd_lr_0.02").is_dir() and not (logs / "sgd_lr_0.04").exists()


def test_an_unexpected_error_is_recorded_as_a_crash(tmp_path, monkeypatch):
    """A bug outside any series (here: the saddle analysis' stage made to raise): summary.json says
    crashed, what and where, exit code 1; no worker is left."""
    import dlnlab.lab.runner._driver as experiment

    def broken(state, ctx):
        state.enter("saddle analysis")
        raise RuntimeError("a bug")

    monkeypatch.setattr(experiment, "_analyse", broken)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="a bug"):
        run(make_cfg(["experiment=tiny", "sgd.lrs=[0.04]", *QUIET]), output_dir=out)
    summary = _summary(out)
    assert summary["status"] == "crashed" and summary["exit_code"] == 1
    assert summary["error"]["type"] == "RuntimeError" and summary["error"]["stage"] == "saddle analysis"
    assert "a bug" in summary["error"]["traceback"]
    assert multiprocessing.active_children() == [] and lock_holder(out) is None
    monkeypatch.undo()
    result = resume(out)  # a crashed run can be finished
    assert result.exit_code == 0 and result["resumed"][-1]["status"] == "crashed"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped exception
def test_a_signal_whose_exception_python_dropped_still_stops_the_run_at_the_next_stage(tmp_path):
    """The handler's KeyboardInterrupt is lost when it fires inside a weakref callback (Python prints
    and ignores it); the flag it set stops the run at the next stage boundary."""
    import gc
    import weakref

    from dlnlab.rundir import signals

    class Thing:
        pass

    def signalled(_ref) -> None:  # the handler runs (and raises) in here, at a bytecode boundary
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):
            pass

    out = tmp_path / "run"
    signals.install()
    try:
        thing = Thing()
        ref = weakref.ref(thing, signalled)
        del thing
        gc.collect()
        assert ref() is None and signals.received() == signal.SIGTERM  # noted, its exception dropped
        result = run(make_cfg(["experiment=tiny", "sgd.lrs=[0.04]", *QUIET]), output_dir=out)
    finally:
        signals.uninstall()
        signals.reset()
    assert result.exit_code == 143 and result["status"] == "interrupted"
    assert result["stage"] == "starting" and result["series"] == {} and result["not_run"] == ["sgd_lr_0.04"]


def test_two_signals_that_come_during_one_long_c_call_count_in_the_order_they_came():
    """SIGTERM, then SIGINT 0.1 s later, while Python runs one C call (no handler can run): Python calls
    the handlers in signal-number order, SIGINT first; the run takes the first to arrive (wakeup pipe)."""
    import subprocess

    from dlnlab.rundir import signals

    signals.install()
    try:
        sender = subprocess.Popen(
            ["sh", "-c", f"sleep 0.3; kill -TERM {os.getpid()}; sleep 0.1; kill -INT {os.getpid()}"]
        )
        with pytest.raises(KeyboardInterrupt) as info:
            sum(range(10**8))  # a second or more in C, holding the interpreter
            sender.wait()  # (should the sum be quicker: the signals then come one by one)
            for _ in range(1000):
                pass
        assert str(info.value) == "SIGTERM" and signals.exit_code() == 143
    finally:
        sender.wait()
        signals.uninstall()
        signals.reset()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_in_a_series_last_chunk_lets_it_end_ok_and_stops_the_run_before_the_next(signum, tmp_path):
    """The tiny series' 100 steps are one chunk, so a signal at any of its grid points finds every step
    run by the time the lab looks: the series was recorded 'interrupted' with steps 100 of 100 and
    t_stop = t_max, and a checkpoint for a resume to continue from its very end (SIGTERM comes through
    Lightning's own handler, SIGINT through the lab's). It is ok, whole, without a checkpoint; the run
    still stops there (exit 128 + signum), and a resume runs only the series that did not start."""
    from _runtime_helpers import SignalAt

    SignalAt.fired.clear()
    out = tmp_path / "run"
    stop = ["+callbacks.stop._target_=_runtime_helpers.SignalAt", "+callbacks.stop.series=sgd_lr_0.04",
            "+callbacks.stop.m=40", f"+callbacks.stop.signum={int(signum)}"]  # fmt: skip
    cfg = make_cfg(["experiment=tiny", "logger=none", "run.workers=1", "sgd.lrs=[0.04,0.02]", *QUIET, *stop])
    assert run(cfg, output_dir=out).exit_code == 128 + signum
    summary = _summary(out)
    entry = summary["series"]["sgd_lr_0.04"]
    assert (entry["status"], entry["steps"], entry["t_stop"]) == ("ok", 100, 4.0), entry
    assert summary["status"] == "interrupted" and summary["not_run"] == ["sgd_lr_0.02"]
    assert not (out / "checkpoints" / "sgd_lr_0.04.ckpt").exists()
    resumed = resume(out)
    assert resumed.exit_code == 0
    assert resumed["resumed"][-1]["series"] == {"sgd_lr_0.04": "kept", "sgd_lr_0.02": "run from the start"}


def test_a_sigterm_during_the_flow_keeps_the_rows_it_reached_and_runs_nothing_after(tmp_path):
    """The in-process sibling of the CLI's SIGTERM to the process group during the flow (slow,
    tests/test_cli.py): sent by a thread once summary.json says the flow is running (rk45 over t = 4000,
    which hands its rows over as it solves), it stops the solve; the flow's file holds the rows reached,
    its entry says where, no (S)GD series starts, every file is complete."""
    import threading
    import time

    out = tmp_path / "run"
    args = ["experiment=tiny", "flow.method=rk45", "flow.t_max=4000", "log.dt=1", "logger=none", *QUIET]

    def signal_in_the_flow() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if _summary(out)["stage"] == "flow":
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        time.sleep(0.5)  # some of its 4001 grid points solved
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=signal_in_the_flow, daemon=True)
    sender.start()
    result = run(make_cfg(args), output_dir=out)
    sender.join()
    assert result.exit_code == 143
    summary = _summary(out)
    assert (summary["interrupted"], summary["stage"], summary["exit_code"]) == ("SIGTERM", "flow", 143)
    flow = summary["series"]["flow"]
    assert flow["status"] == "interrupted" and "interrupted at t = " in flow["message"]
    with np.load(out / "series" / "flow.npz") as arr:
        assert 1 < len(arr["t"]) < 4001 and arr["t"][-1] == pytest.approx(flow["t_stop"])
    assert summary["not_run"] == ["sgd_lr_0.04", "sgd_lr_0.02", "sgd_lr_0.01"]
    assert not list(out.rglob(".*.tmp"))
