"""Resume (docs/runs.md), in-process: a run stopped by a real signal sent by a user callback at a chosen
grid point, resumed from real Lightning checkpoints; damaged files written into real run directories;
resumes refused. A run's own failures, signals and lock: test_run_failures.py. The CLI and sweep cases
are in test_cli.py and test_launchers.py."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from _runtime_helpers import SignalAt

from dlnlab.lab.config import ConfigError
from dlnlab.lab.runner import lock_holder, resume, run
from dlnlab.lab.runner._resume_config import ABSENT, check_config, config_changes
from tests._helpers import hparams_of, make_cfg

pytestmark = [
    pytest.mark.lab,
    pytest.mark.xdist_group("test_runs"),
]  # every test here runs the lab (in-process or its CLI); its tests on one xdist worker (--dist loadgroup): its module fixtures are lab runs, made once per worker

CONF = Path(__file__).resolve().parents[1] / "conf"
QUIET = ["log.figures=false", "log.progress=never"]
SLOW_LR = 0.0002  # 20,000 steps to t = 4: ten chunks, so that a signal stops it half way
KILLED = f"sgd_lr_{SLOW_LR!r}"
# 401 grid points; the signal at m = 270 stops the series at the end of a chunk (at most 2000 steps, 40
# points) after it: past the first block of 256 points and inside the second (see MetricsCallback)
DT = 0.01
BASE = ["experiment=tiny", "model.dims=[6,5,5,4]", f"log.dt={DT}", f"sgd.lrs=[0.04,{SLOW_LR}]", *QUIET]


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _signal_at(series: str, m: int, signum=signal.SIGTERM) -> list[str]:
    """A SignalAt callback for the next run (a resume of it in this process is not signalled again)."""
    SignalAt.fired.clear()
    return [
        "+callbacks.stop._target_=_runtime_helpers.SignalAt",
        f"+callbacks.stop.series={series}",
        f"+callbacks.stop.m={m}",
        f"+callbacks.stop.signum={int(signum)}",
    ]


def _assert_same_arrays(a_dir: Path, b_dir: Path, names) -> None:
    """Every array of every series file equal bit for bit (NaN where NaN)."""
    for name in names:
        a, b = np.load(a_dir / "series" / f"{name}.npz"), np.load(b_dir / "series" / f"{name}.npz")
        assert set(a.files) == set(b.files), name
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name} {key}")


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The base run, never interrupted."""
    out = tmp_path_factory.mktemp("whole") / "run"
    assert run(make_cfg(BASE), output_dir=out).exit_code == 0
    return out


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """The base run, stopped by SIGTERM in its slow series (exit code 143); tests copy it."""
    out = tmp_path_factory.mktemp("killed") / "run"
    result = run(make_cfg([*BASE, *_signal_at(KILLED, 270)]), output_dir=out)
    assert result.exit_code == 143
    summary = _summary(out)
    assert summary["status"] == "interrupted" and summary["series"][KILLED]["status"] == "interrupted"
    assert summary["series"]["sgd_lr_0.04"]["status"] == "ok"
    assert (out / "checkpoints" / f"{KILLED}.ckpt").is_file()
    assert lock_holder(out) is None  # released
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


def test_a_resumed_series_equals_the_unbroken_run_in_every_array_bit_for_bit(whole, killed, tmp_path, capsys):
    """Metrics included: the open block (from point 256 on) is computed again, in the same block as in
    the unbroken run, from the checkpoint's copies (a batched product's rounding depends on the batch:
    mode_strength differed by one ulp when the resumed points were computed in blocks of another size)."""
    out = _copy(killed, tmp_path)
    n = len(np.load(out / "series" / f"{KILLED}.npz")["t"])
    assert 270 < n < 401  # stopped inside its second block of 256 points
    # keys a resume may change (they change no series' number): the bits below are the unbroken run's
    _edit_summary(
        out, lambda s: (s["config"]["run"].update(workers=1), s["config"]["checkpoint"].update(every_s=5.0))
    )
    # the record of the overrides Hydra writes in a run directory: the resume, which runs without Hydra,
    # takes the HParams columns of the run's own keys from it (the same file names the run in tb.py)
    (out / ".hydra").mkdir()
    stop = [
        f"+callbacks.stop.{k}" for k in ("_target_=_runtime_helpers.SignalAt", f"series={KILLED}", "m=270")
    ]
    (out / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in [*BASE, *stop]))
    result = resume(out)
    assert result.exit_code == 0 and result["status"] == "finished"
    assert result["resumed"][-1]["series"] == {"sgd_lr_0.04": "kept", KILLED: "continued from its checkpoint"}
    printed = capsys.readouterr().out  # the console says it is a resume, and what it did with each series
    assert f"  resume    of the run stopped by SIGTERM: {KILLED} interrupted; each series kept, " in printed
    assert f"resumed: sgd_lr_0.04 kept, {KILLED} continued from its checkpoint" in printed
    _assert_same_arrays(whole, out, ["flow", "sgd_lr_0.04", KILLED])
    # TensorBoard: every grid point of the resumed series once (the open block is not logged again)
    steps = _logged_steps(out / "tensorboard" / KILLED, "loss/loss")  # x: step = round(1000 t)
    assert sorted(steps) == [round(1000 * DT * m) for m in range(401)], (len(steps), len(set(steps)))
    # its extreme line once over every step (the interrupted run drew none), and each series' HParams once
    line = _logged_steps(out / "tensorboard" / KILLED, "dist/log10_flow_max")
    assert sorted(line) == [round(1000 * DT * m) for m in range(401)], (len(line), len(set(line)))
    for name in ("sgd_lr_0.04", KILLED):
        assert len(_logged_steps(out / "tensorboard" / name, "hp/final_loss")) == 1, name
        # the kept series' row too: every row the resume logs has the run's columns (the callbacks', the
        # log switches' and sgd.lrs' excepted: docs/tensorboard.md)
        lr = float(name.removeprefix("sgd_lr_"))
        assert hparams_of(out / "tensorboard" / name) == {
            "experiment": "tiny", "model.dims": "[6,5,5,4]", "log.dt": DT, "lr": lr, "status": "ok"
        }  # fmt: skip


def _logged_steps(log_dir: Path, tag: str) -> list[int]:
    """The steps of ``tag`` in every event file of a directory, repeats kept."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            steps += [event.step for v in event.summary.value if v.tag == tag]
    return steps


@pytest.mark.slow
def test_an_ensemble_with_theta_every_few_points_resumes_bit_for_bit(tmp_path):
    """The same with a member axis (the grid is the files' second axis) and theta kept every few grid
    points (theta_sub, cut at the open block's start by its own grid index)."""
    extra = ["ensemble.size=2", "log.theta_max_mb=0.1"]
    whole = tmp_path / "whole"
    assert run(make_cfg([*BASE, *extra]), output_dir=whole).exit_code == 0
    assert "theta_sub" in np.load(whole / "series" / f"{KILLED}.npz").files
    out = tmp_path / "killed"
    assert run(make_cfg([*BASE, *extra, *_signal_at(KILLED, 270)]), output_dir=out).exit_code == 143
    assert resume(out)["resumed"][-1]["series"][KILLED] == "continued from its checkpoint"
    _assert_same_arrays(whole, out, ["flow", "sgd_lr_0.04", KILLED])


DAMAGE = {
    "a finished series' file of random bytes": ("series/sgd_lr_0.04.npz", "random", "sgd_lr_0.04"),
    "the interrupted series' file cut in half": (f"series/{KILLED}.npz", "half", KILLED),
    "the checkpoint of random bytes": (f"checkpoints/{KILLED}.ckpt", "random", KILLED),
    "the checkpoint cut in half": (f"checkpoints/{KILLED}.ckpt", "half", KILLED),
    "the flow's file cut in half": ("series/flow.npz", "half", "flow"),
}


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(np.random.default_rng(0).bytes(len(data)) if how == "random" else data[: len(data) // 2])


DEFAULT_DAMAGE = ("the checkpoint cut in half", "the flow's file cut in half")  # the others: slow


@pytest.mark.parametrize(
    "case", [c if c in DEFAULT_DAMAGE else pytest.param(c, marks=pytest.mark.slow) for c in DAMAGE]
)
def test_a_damaged_file_makes_its_series_run_again_from_its_start(case, whole, killed, tmp_path):
    rel, how, name = DAMAGE[case]
    out = _copy(killed, tmp_path)
    _damage(out / rel, how)
    result = resume(out)
    assert result.exit_code == 0, result["series"]
    said = result["resumed"][-1]["series"][name]
    assert said.startswith("run from the start: ") and rel in said, said
    _assert_same_arrays(whole, out, ["flow", "sgd_lr_0.04", KILLED])
    # TensorBoard: the series run again from its start has each point once (its earlier events removed)
    steps = _logged_steps(out / "tensorboard" / name, "loss/loss")
    ms = np.load(out / "series" / f"{name}.npz")["grid_index"]  # an SGD series' own grid points
    assert sorted(steps) == [round(1000 * DT * m) for m in ms], (len(steps), len(set(steps)))


def test_a_checkpoint_drawn_by_the_former_without_replacement_makes_its_series_run_again(tmp_path):
    """Before sgd.sampling=reshuffle existed, without_replacement meant its epochs: a checkpoint of then
    (no sampling recorded) would go on with fresh subsets after epoch-drawn ones, so it is not continued."""
    import torch

    out, name = tmp_path / "run", "sgd_lr_0.0005"  # 4000 steps: two chunks, stopped after the first
    minibatch = ["flow.t_max=2", "sgd.batch_size=5", "sgd.sampling=without_replacement", "sgd.lrs=[0.0005]"]
    assert run(make_cfg([*BASE, *minibatch, *_signal_at(name, 50)]), output_dir=out).exit_code == 143
    today = shutil.copytree(out, tmp_path / "today")  # its own checkpoint names its sampling: continued
    assert resume(today)["resumed"][-1]["series"][name] == "continued from its checkpoint"
    path = out / "checkpoints" / f"{name}.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    assert ckpt["dlnlab"]["stepper"]["sampler"].pop("sampling") == "without_replacement"
    torch.save(ckpt, path)  # as the dlnlab of then wrote it
    said = resume(out)["resumed"][-1]["series"][name]
    assert said == (
        f"run from the start: checkpoints/{name}.ckpt was made when sgd.sampling=without_replacement "
        "meant reshuffled epochs (now sgd.sampling=reshuffle)"
    )


def _write(path: Path, text: str) -> None:
    path.write_text(text)


REFUSED = {
    "summary.json holding []": (lambda d: _write(d / "summary.json", "[]"), "is not a dlnlab run summary"),
    "summary.json holding {}": (lambda d: _write(d / "summary.json", "{}"), "is not a dlnlab run summary"),
    "summary.json cut short": (
        lambda d: _write(d / "summary.json", (d / "summary.json").read_text()[:100]),
        "summary.json is not JSON",
    ),
    "problem.npz missing": (lambda d: (d / "problem.npz").unlink(), "problem.npz is missing"),
    "problem.npz of random bytes": (
        lambda d: _damage(d / "problem.npz", "random"),
        "problem.npz is unreadable",
    ),
    "series/ not a folder": (
        lambda d: (shutil.rmtree(d / "series"), (d / "series").write_text("x")),
        "series is not a folder: the run cannot write there",
    ),
    "a config that is refused now": (
        lambda d: _edit_summary(d, lambda s: s["config"].update(bogus=1)),
        r"the config in .*/summary.json is refused: bogus: no such key",
    ),
    "flow.t_max edited in summary.json": (
        lambda d: _edit_summary(d, lambda s: s["config"]["flow"].update(t_max=2.0)),
        r"builds a grid of 201 points .* but the run recorded 401 points",
    ),
    "flow.t_max and the grid record edited": (
        lambda d: _edit_summary(
            d, lambda s: (s["config"]["flow"].update(t_max=2.0), s["grid"].update(n_grid=201, t_max=2.0))
        ),
        r"builds a grid t_m = m dt of 201 points, but series/flow.npz holds 401 points",
    ),
    "a learning rate replaced in summary.json": (
        lambda d: _edit_summary(d, lambda s: s["config"]["sgd"].update(lrs=[0.08, SLOW_LR])),
        r"has no series sgd_lr_0.04 that the run recorded",
    ),
    "a learning rate added in summary.json": (
        lambda d: _edit_summary(d, lambda s: s["config"]["sgd"].update(lrs=[0.08, 0.04, SLOW_LR])),
        r"builds series sgd_lr_0.08 that the run recorded nowhere",
    ),
    "sgd.batch_size edited in summary.json": (
        lambda d: _edit_summary(d, lambda s: s["config"]["sgd"].update(batch_size=5)),
        r"builds a config that differs from the one the run started with \(recorded in problem.npz\) in sgd.batch_size: null when "
        r"it started, 5 now; the resumed series would mix two configs, not resumed \(a resume may change only "
        r"run.workers, ",
    ),
    "flow.rtol and log.top_eigs edited, a key with its default dropped": (
        lambda d: _edit_summary(
            d,
            lambda s: (
                s["config"]["flow"].update(rtol=1e-6),
                s["config"]["log"].update(top_eigs=2),
                s["config"]["log"].pop("tb_max_points"),
            ),
        ),
        # a key summary.json lacks gets the schema's default, here the value the run started with
        r"in flow.rtol: 1e-09 when it started, 1e-06 now; log.top_eigs: 3 when it started, 2 now; the resumed",
    ),
    "the initial weights changed": (
        lambda d: _change_problem(d, "A0"),
        r"the initial weights \(A0\) its config builds now differ",
    ),
}


def _edit_summary(run_dir: Path, edit) -> None:
    summary = _summary(run_dir)
    edit(summary)
    (run_dir / "summary.json").write_text(json.dumps(summary))


def _change_problem(run_dir: Path, key: str) -> None:
    with np.load(run_dir / "problem.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays[key] = arrays[key] * 1.01
    np.savez(run_dir / "problem.npz", **arrays)


def test_problem_npz_records_the_config_and_a_resume_may_change_only_keys_that_change_no_number(
    killed, tmp_path
):
    out = _copy(killed, tmp_path)
    started = json.loads(np.load(out / "problem.npz")["config"].item())
    assert started == _summary(out)["config"]  # one config, recorded twice at the start
    edited = json.loads(json.dumps(started))
    edited["run"]["workers"], edited["log"]["progress"], edited["limits"]["memory_gb"] = 1, "always", 64.0
    assert config_changes(started, edited) == {}
    check_config(out, edited)  # not refused
    edited["sgd"]["sampling"], edited["callbacks"] = "without_replacement", {}
    assert config_changes(started, edited) == {
        "callbacks.stop._target_": ("_runtime_helpers.SignalAt", ABSENT),
        "callbacks.stop.m": (270, ABSENT),
        "callbacks.stop.series": (KILLED, ABSENT),
        "callbacks.stop.signum": (int(signal.SIGTERM), ABSENT),
        "callbacks": (ABSENT, {}),
        "sgd.sampling": ("with_replacement", "without_replacement"),
    }
    with pytest.raises(
        ConfigError, match=r"in callbacks: \(absent\) when it started, \{\} now; callbacks.stop._target_: "
    ):
        check_config(out, edited)
    with np.load(out / "problem.npz") as f:  # a run from before problem.npz recorded its config
        np.savez(out / "problem.npz", **{k: f[k] for k in f.files if k != "config"})
    check_config(out, edited)  # checked on its grid, series, data and weights only


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_resume_that_cannot_continue_the_run_is_refused_and_changes_nothing(case, killed, tmp_path):
    damage, says = REFUSED[case]
    out = _copy(killed, tmp_path)
    damage(out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(ConfigError, match=says) as info:
        resume(out)
    assert str(info.value).startswith("resume: ") and "\n" not in str(info.value)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before


def test_a_crash_during_a_resume_keeps_the_entries_of_the_series_it_had_not_redone(
    killed, tmp_path, monkeypatch
):
    """A bug in the resume's first stage (the flow's check made to raise): summary.json says crashed and
    still holds every series' entry as the interrupted run recorded it (it said ``series: {}``); a
    resume then finishes the run."""
    import dlnlab.lab.runner._flow as flow

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    out = _copy(killed, tmp_path)
    before = _summary(out)["series"]
    SignalAt.fired.add_once(
        (KILLED, 270)
    )  # the config's SignalAt does not stop the resume (another test cleared it)
    monkeypatch.setattr(flow, "check_recomputed_flow", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        resume(out)
    summary = _summary(out)
    assert summary["status"] == "crashed" and summary["error"]["stage"] == "flow"
    assert summary["series"] == before and summary["not_run"] == []
    monkeypatch.undo()
    result = resume(out)
    assert result.exit_code == 0 and result["resumed"][-1]["status"] == "crashed"
    assert result["resumed"][-1]["series"] == {"sgd_lr_0.04": "kept", KILLED: "continued from its checkpoint"}


def test_a_changed_init_file_is_refused(tmp_path):
    """The init file of a run changed before its resume: the run would go on from other weights."""
    rng = np.random.default_rng(1)
    weights = tmp_path / "w.npz"
    dims, layers = [4, 3, 3, 2], (1, 2, 3)  # experiment=tiny's net
    np.savez(weights, **{f"W_{j}": 0.1 * rng.standard_normal((dims[j], dims[j - 1])) for j in layers})
    out = tmp_path / "run"
    args = ["experiment=tiny", "init=file", f"init.path={weights}", f"sgd.lrs=[{SLOW_LR}]", *QUIET]
    assert run(make_cfg([*args, *_signal_at(KILLED, 20)]), output_dir=out).exit_code == 143
    np.savez(weights, **{f"W_{j}": 0.1 * rng.standard_normal((dims[j], dims[j - 1])) for j in layers})
    with pytest.raises(ConfigError, match=r"the initial weights \(A0\) its config builds now differ"):
        resume(out)


def test_resume_from_python_of_a_sweeps_folder_says_it_is_a_sweep_and_what_finishes_it(tmp_path):
    """``dlnlab.lab.resume(<sweep>)``: Hydra's sweep folder (multirun.yaml and the jobs' folders, no
    summary.json of its own) was refused as 'not a dlnlab run directory'; the command line finishes a
    sweep (tests/test_sweeps.py), the function one job."""
    sweep = tmp_path / "my sweep"
    (sweep / "0_seed=1").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    with pytest.raises(ConfigError) as info:
        resume(sweep)
    assert str(info.value) == (
        f"resume: {sweep} is a sweep (multirun.yaml): resume(<a job's folder>) finishes a job, "
        f"python scripts/train.py resume='{sweep}' all"
    )
