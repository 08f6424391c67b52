"""Series in worker processes (run.workers, dlnlab/lab/runner/_parallel.py): a parallel run's files equal
a serial run's bit for bit; a real SIGTERM to the driver alone reaches every worker, leaves every file
complete, and resume finishes the run to the unbroken run's bits; the config's refusal; the threads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from dlnlab.lab.config import ConfigError, prepare
from dlnlab.lab.results import collect
from dlnlab.lab.runner import resume, run
from dlnlab.lab.runner._parallel import available_cores, blas_threads

# its tests on one xdist worker (--dist loadgroup): its module fixtures are lab runs, made once per worker
pytestmark = pytest.mark.xdist_group("test_parallel")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TRAIN = ROOT / "scripts" / "train.py"
QUIET = ["log.figures=false", "log.progress=never"]
# three learning rates and GD's modified flows: a unit is two series (modflow_lr_<lr>, then its GD)
BASE = ["experiment=tiny", "model.dims=[6,5,5,4]", "flow.modified=true", *QUIET]


def _cfg(overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="train", overrides=overrides)


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _comparable(value, top: bool = True):
    """A summary without what differs between two runs of one config: times, paths, pids, run.workers,
    and what a resume adds (its record, the recomputed flows' check against their files)."""
    if isinstance(value, dict):
        out = {
            k: _comparable(v, False)
            for k, v in value.items()
            if not (k.endswith("time_s") or k in ("process", "run_dir", "resumed", "resume_check"))
        }
        if top:
            out["config"].pop("run")
        return out
    if isinstance(value, list):
        return [_comparable(v, False) for v in value]
    return value


def _assert_same_run(a: Path, b: Path) -> None:
    """Every array of every series file bit for bit (NaN where NaN), and the summaries."""
    names = sorted(p.name for p in (a / "series").glob("*.npz"))
    assert names == sorted(p.name for p in (b / "series").glob("*.npz")) and names
    for name in names:
        with np.load(a / "series" / name) as x, np.load(b / "series" / name) as y:
            assert set(x.files) == set(y.files), name
            for key in x.files:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name} {key}")
    sa, sb = _comparable(_summary(a)), _comparable(_summary(b))
    for key in sa:
        assert sa[key] == sb[key], key
    assert list(_summary(a)["series"]) == list(_summary(b)["series"])  # the kinds' order, however run


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serial") / "run"
    result = run(_cfg([*BASE, "run.workers=1"]), output_dir=out)
    assert result.exit_code == 0 and result["process"]["workers"] == 1
    return out


def test_a_parallel_run_equals_the_serial_run_bit_for_bit(serial, tmp_path, monkeypatch):
    from dlnlab.lab.runner import _ahead

    monkeypatch.setattr(_ahead, "_lightning_imported", lambda: False)  # as in a fresh process: the flow ahead
    monkeypatch.setattr(_ahead, "MIN_FLOW_S", 0.0)  # (this flow is too short to be worth it otherwise)
    out = tmp_path / "run"
    result = run(_cfg([*BASE, "run.workers=3"]), output_dir=out)
    assert result.exit_code == 0 and result["process"]["workers"] == 3
    assert result["process"]["flow_ahead"] and not _summary(serial)["process"]["flow_ahead"]  # lsoda
    _assert_same_run(serial, out)
    # the order TensorBoard colours the runs in: tests/test_tb_colours.py, read by TensorBoard's own loaders


def _wait_for_two_units(out: Path, proc, timeout: float = 120) -> None:
    """Until the summary's stage names two running (S)GD series (two units at work), or the run ended."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if _summary(out)["stage"].count("sgd_lr_") == 2:
                return
        except (OSError, ValueError, KeyError):  # the summary being replaced, or not yet written
            pass
        time.sleep(0.05)


@pytest.mark.slow  # ~20 s under load: a CLI run, its resume and the unbroken run
def test_sigterm_to_the_driver_alone_reaches_every_worker_and_resume_finishes_the_run(tmp_path):
    """A real SIGTERM to the driver's pid only (not its process group) while two units run: each worker
    gets it from the driver, saves its running series (npz complete, checkpoint), the third unit never
    starts; ``resume`` finishes the run, and its files equal the unbroken serial run's bit for bit."""
    out = tmp_path / "run"
    # lr 0.0001: 40,000 steps to t = 4 (several seconds even on a fast machine: with 0.00025 the units
    # ended before the signal there); 0.0002 and 0.04 as the other two units; GD alone at each (the
    # modified flows, a unit's first series, would take the signal)
    args = [*BASE, "flow.modified=false", "sgd.lrs=[0.04,0.0002,0.0001]"]
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), *args, "run.workers=2", f"hydra.run.dir={out}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for_two_units(out, proc)
    time.sleep(0.2)  # into their series
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    summary = _summary(out)
    assert summary["interrupted"] == "SIGTERM" and summary["status"] == "interrupted"
    stopped = [n for n, e in summary["series"].items() if e["status"] == "interrupted"]
    assert {"sgd_lr_0.0002", "sgd_lr_0.0001"} & set(stopped), summary["series"]
    assert "sgd_lr_0.04" not in summary["series"]  # the third unit never started
    for npz in (out / "series").glob("*.npz"):  # every file complete
        with np.load(npz) as f:
            for key in f.files:
                f[key]
    for name in stopped:
        if name.startswith("sgd_lr_"):
            assert (out / "checkpoints" / f"{name}.ckpt").is_file()
    assert not list(out.rglob(".*.tmp"))

    result = resume(out)
    assert result.exit_code == 0 and result["status"] == "finished"
    whole = tmp_path / "whole"
    assert run(_cfg([*args, "run.workers=1"]), output_dir=whole).exit_code == 0
    _assert_same_run(whole, out)


@pytest.mark.lab
def test_the_resume_of_a_parallel_run_says_which_series_were_interrupted_and_which_not_run(tmp_path, capsys):
    """Two units at once: SIGTERM in one worker stops both and the third never starts, so the stage
    (the last series entered) names one of three; the resume's first line names them as the stopped
    run's console did."""
    from _runtime_helpers import SignalAt

    SignalAt.fired.clear()  # fires once in this process: the resume is not signalled again
    stop = ["+callbacks.stop._target_=_runtime_helpers.SignalAt", "+callbacks.stop.series=sgd_lr_0.0002",
            "+callbacks.stop.m=2", f"+callbacks.stop.signum={int(signal.SIGTERM)}"]  # fmt: skip
    # the slowest units first: 0.0001 (30,000 steps to t = 3) is still running when 0.0002 is stopped at
    # t = 0.1 (500 steps): the margin, ~29,500 steps for the second worker to start and reach its signal,
    # is what 40,000 - 10,000 gave at t <= 4 with m = 40 (10,000 of 40,000 failed once under a loaded
    # suite: the third unit started); no TensorBoard (never read here)
    args = [
        "experiment=tiny",
        "model.dims=[6,5,5,4]",
        *QUIET,
        "logger=none",
        "flow.t_max=3",
        "sgd.lrs=[0.04,0.0002,0.0001]",
        "run.workers=2",
    ]
    out = tmp_path / "run"
    assert run(_cfg([*args, *stop]), output_dir=out).exit_code == 143
    stopped = _summary(out)
    assert stopped["stage"] == "sgd_lr_0.0001" and stopped["not_run"] == ["sgd_lr_0.04"]
    assert {n: e["status"] for n, e in stopped["series"].items()} == {
        "flow": "ok", "sgd_lr_0.0002": "interrupted", "sgd_lr_0.0001": "interrupted"
    }  # fmt: skip
    assert "(S)GD series not run: sgd_lr_0.04 (" in capsys.readouterr().out
    assert resume(out).exit_code == 0
    assert "\n  resume    of the run stopped by SIGTERM: sgd_lr_0.0002, sgd_lr_0.0001 interrupted; sgd_lr_0.04 " \
           "not run; each series kept, continued or run again (docs/runs.md)\n" in capsys.readouterr().out  # fmt: skip


@pytest.mark.lab
def test_an_interrupted_resume_records_the_series_it_never_started_as_not_run(tmp_path, capsys):
    """The resume's records are decided before the units fork: a SIGTERM to the driver during the
    resume's first two units (sgd_lr_0.001 and 0.002, the longest) stops them before sgd_lr_0.04's unit
    starts, and its record says not run, as the console's "not run" line does (it said "run from the
    start"); the next resume runs it, and keeps or continues the two. 0.001 waits at its first point
    until the signal is sent (HoldUntilSent): on a loaded machine its 4000 steps once ended before 0.002's
    worker had taken its 25, and 0.04 started."""
    from _runtime_helpers import SignalAt

    SignalAt.fired.clear()  # each fires once in this process
    stops = [  # the run's, in the flow; the resume's, to the driver at 0.002's second point (40 steps in)
        "+callbacks.first._target_=_runtime_helpers.SignalAt", "+callbacks.first.series=flow",
        "+callbacks.first.m=20", "+callbacks.again._target_=_runtime_helpers.SignalAt",
        "+callbacks.again.series=sgd_lr_0.002", "+callbacks.again.m=1", "+callbacks.again.driver=true",
        "+callbacks.hold._target_=_runtime_helpers.HoldUntilSent", "+callbacks.hold.series=sgd_lr_0.001",
        "+callbacks.hold.m=0", "+callbacks.hold.sender=sgd_lr_0.002", "+callbacks.hold.sender_m=1",
    ]  # fmt: skip
    lrs = ["sgd.lrs=[0.04,0.002,0.001]", "flow.modified=false", "run.workers=2"]
    out = tmp_path / "run"
    assert run(_cfg([*BASE, *lrs, *stops]), output_dir=out).exit_code == 143
    assert _summary(out)["not_run"] == ["sgd_lr_0.04", "sgd_lr_0.002", "sgd_lr_0.001"]  # stopped in the flow
    capsys.readouterr()
    assert resume(out).exit_code == 143
    stopped = _summary(out)
    assert stopped["not_run"] == ["sgd_lr_0.04"]  # the two ran (to their end, or to a chunk's: interrupted)
    assert stopped["resumed"][-1]["series"] == {
        "flow": "run from the start",  # interrupted in the first run: recomputed from its start
        "sgd_lr_0.04": "not run: the resume stopped before it (planned: run from the start)",
        "sgd_lr_0.002": "run from the start",
        "sgd_lr_0.001": "run from the start",
    }
    printed = capsys.readouterr().out  # the end lines agree
    assert "sgd_lr_0.04 not run: the resume stopped before it (planned: run from the start)" in printed
    assert "(S)GD series not run: sgd_lr_0.04 (" in printed
    again = resume(out)  # the next resume decides again from the files: it runs the series
    assert again.exit_code == 0 and again["status"] == "finished"
    notes = again["resumed"][-1]["series"]
    assert notes.pop("sgd_lr_0.04") == "run from the start" and set(notes) == {"sgd_lr_0.002", "sgd_lr_0.001"}
    for name, status in ((n, stopped["series"][n]["status"]) for n in ("sgd_lr_0.002", "sgd_lr_0.001")):
        assert notes[name] == ("kept" if status == "ok" else "continued from its checkpoint"), (name, status)


def test_run_workers_is_refused_below_one():
    with pytest.raises(ConfigError, match=r"^run\.workers: .*>= 1 or null.*got 0"):
        prepare(_cfg(["experiment=tiny", "run.workers=0"]))


def test_the_blas_threads_of_the_units_fit_the_cores():
    """Two busy processes per unit (the series and its recorder): their threads never exceed the cores."""
    for cores in (1, 2, 3, 8, 16, 64):
        for workers in range(1, cores + 1):
            threads = blas_threads(workers, cores)
            assert threads >= 1 and (threads == 1 or 2 * workers * threads <= cores)
    assert available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.slow
def test_an_ensemble_with_sme_in_parallel_equals_the_serial_run_bit_for_bit(tmp_path):
    """The SME kind (an ensemble sharing its init, minibatches): the SME and SGD series per unit, their
    recorders finishing at the unit's end, the SGD limit report and the members' saddle analysis (which
    once found no members when the shared flow's arrays came first)."""
    extra = [
        "ensemble.size=3",
        "ensemble.vary=sgd",
        "sgd.batch_size=5",
        "sgd.sme=true",
        "flow.modified=false",
    ]
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(_cfg([*BASE, *extra, "run.workers=1"]), output_dir=a).exit_code == 0
    assert run(_cfg([*BASE, *extra, "run.workers=2"]), output_dir=b).exit_code == 0
    _assert_same_run(a, b)
    assert _summary(b)["series"]["flow"]["plateaus"] and _summary(b)["sgd_limit"] is not None


@pytest.mark.slow  # ~15 s: a CLI run and its resume
def test_a_killed_driver_ends_its_workers_and_resume_finishes_the_run(tmp_path):
    """SIGKILL to the driver while two units run: each worker gets SIGTERM from the kernel (its parent's
    death), saves its series and ends; no process of the run is left; resume finishes the run."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), *BASE, "sgd.lrs=[0.0002,0.0001]", "run.workers=2", f"hydra.run.dir={out}"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    _wait_for_two_units(out, proc)
    time.sleep(1.0)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("a worker outlived its killed driver")
    for npz in (out / "series").glob("*.npz"):
        with np.load(npz) as f:
            assert len(f["t"]) >= 1
    result = resume(out)
    assert result.exit_code == 0 and result["status"] == "finished"


def test_a_worker_killed_is_its_series_error_the_other_rates_go_on_and_resume_runs_it_again(tmp_path):
    """SIGKILL to one worker (a user callback in its series): its series are recorded as errors and
    listed under ``killed`` (exit code 3), the other learning rates finish; ``resume`` runs the killed
    series again from their start (no checkpoint: a SIGKILL writes none) and keeps the others."""
    from _runtime_helpers import SignalAt

    SignalAt.fired.clear()
    kill = ["+callbacks.stop._target_=_runtime_helpers.SignalAt", "+callbacks.stop.series=sgd_lr_0.02",
            "+callbacks.stop.m=10", f"+callbacks.stop.signum={int(signal.SIGKILL)}"]  # fmt: skip
    out = tmp_path / "run"
    result = run(_cfg([*BASE, "flow.modified=false", "run.workers=2", *kill]), output_dir=out)
    assert result.exit_code == 3 and result["status"] == "finished"
    lost = result["series"]["sgd_lr_0.02"]
    assert lost["status"] == "error" and "worker process ended with exit code -9" in lost["message"]
    assert all(result["series"][n]["status"] == "ok" for n in ("flow", "sgd_lr_0.04", "sgd_lr_0.01"))
    assert _summary(out)["killed"] == ["sgd_lr_0.02"]
    settings, _ = collect([out])  # aggregate.py: the lost series is skipped, the others are samples
    (setting,) = settings.values()
    assert sorted(setting.samples) == ["flow", "sgd_lr_0.01", "sgd_lr_0.04"]
    assert [line.split(": ")[0] for line in setting.skipped] == [f"{out.resolve()} sgd_lr_0.02"]
    again = resume(out)  # SignalAt fires once: the resumed series runs to its end
    assert again.exit_code == 0 and again["status"] == "finished" and _summary(out)["killed"] == []
    assert again["resumed"][-1]["series"] == {
        "sgd_lr_0.04": "kept", "sgd_lr_0.02": "run from the start", "sgd_lr_0.01": "kept"
    }  # fmt: skip
    assert again["series"]["sgd_lr_0.02"]["status"] == "ok"
    with np.load(out / "series" / "sgd_lr_0.02.npz") as f:
        assert len(f["t"]) == again["grid"]["n_grid"]


def test_a_resume_after_a_killed_worker_logs_each_limit_curve_once(tmp_path):
    """An SGD ensemble around one flow logs each series' strong and weak errors (limit/...) at the end of
    the run, also when a worker was killed; the resume logs them again for every series, so the earlier
    run's go (they were logged twice for the series the resume kept)."""
    from _runtime_helpers import SignalAt
    from test_runs import _logged_steps

    SignalAt.fired.clear()
    kill = ["+callbacks.stop._target_=_runtime_helpers.SignalAt", "+callbacks.stop.series=sgd_lr_0.02",
            "+callbacks.stop.m=10", f"+callbacks.stop.signum={int(signal.SIGKILL)}"]  # fmt: skip
    out = tmp_path / "run"
    ensemble = [
        "experiment=tiny",
        *QUIET,
        "flow.t_max=2",
        "ensemble.size=3",
        "ensemble.vary=sgd",
        "run.workers=2",
    ]
    assert run(_cfg([*ensemble, *kill]), output_dir=out).exit_code == 3
    tags = ("limit/log10_strong", "limit/log10_weak_theta", "limit/log10_weak_loss")
    before = {tag: _logged_steps(out / "tensorboard" / "sgd_lr_0.04", tag) for tag in tags}
    assert all(before.values()) and _summary(out)["killed"] == ["sgd_lr_0.02"]
    assert resume(out).exit_code == 0
    for name in ("sgd_lr_0.04", "sgd_lr_0.02", "sgd_lr_0.01"):
        for tag in tags:
            steps = _logged_steps(out / "tensorboard" / name, tag)
            assert steps and len(steps) == len(set(steps)), (name, tag, len(steps), len(set(steps)))
            if name == "sgd_lr_0.04":  # kept: the same curve as before
                assert sorted(steps) == sorted(before[tag]), tag
