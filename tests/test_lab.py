"""The lab (issue 3): config composition, run(cfg) in-process, the CLI in a subprocess, TensorBoard read-back."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from tensorboard.backend.event_processing.event_accumulator import (
    STORE_EVERYTHING_SIZE_GUIDANCE,
    EventAccumulator,
)

from dlnlab.lab.config import ConfigError, validate
from dlnlab.lab.experiment import run

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

SERIES_KEYS = {
    "t",
    "loss",
    "sv",
    "sv_A",
    "mode_strength",
    "grad_norm",
    "level_gap",
    "lambda_min",
    "sharpness",
    "cons_drift",
    "theta",
}
SUMMARY_SERIES_KEYS = {
    "lr",
    "status",
    "diverged",
    "t_stop",
    "step_stop",
    "message",
    "final_loss",
    "wall_time_s",
    "max_dist_to_flow",
    "plateaus",
}


def _no_nan(token):
    pytest.fail(f"summary.json holds {token}: JSON must hold null, never NaN")


def make_cfg(overrides: list[str] | None = None):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="train", overrides=list(overrides or []))


TINY = [
    "experiment=tiny",
    "log.tensorboard=false",
    "log.figures=false",
    "log.progress=never",
]


@pytest.mark.parametrize(
    "group",
    sorted(p.name for p in CONF.iterdir() if p.is_dir()),
)
def test_every_config_option_composes_and_validates(group, tmp_path):
    options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert options, group
    for opt in options:
        extra = []
        if (group, opt) == ("data", "file"):
            extra = [f"data.path={tmp_path / 'd.npz'}"]
            np.savez(
                tmp_path / "d.npz",
                X=np.random.default_rng(0).normal(size=(11, 30)),
                Y=np.random.default_rng(1).normal(size=(4, 30)),
            )
        if (group, opt) == ("model", "tiny"):
            extra = ["data.singular_values=[2,1]"]
        cfg = make_cfg([f"{group}={opt}", *extra])
        rc = validate(cfg)
        assert rc.dims[0] >= 1 and rc.flow.t_max > 0


def test_default_is_figure1_setting():
    rc = validate(make_cfg())
    assert rc.dims == (11, 6, 6, 6, 6, 4)
    assert rc.data.singular_values == (4, 3, 2, 1) and rc.data.whiten and rc.data.noise == 0
    assert rc.init.kind == "gaussian" and rc.init.scale == 0.1
    assert len(rc.sgd.lrs) >= 3 and max(rc.sgd.lrs) < 0.0435 / 4
    assert rc.flow.t_max >= 300


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["model.dims=[5]"], "model.dims"),
        (["model.dims=[4,0,2]"], "model.dims"),
        (["data.singular_values=[3,2,1]"], "data.singular_values"),
        (["sgd.lrs=[0.01,-0.1]"], "sgd.lrs"),
        (["sgd.lrs=[0.0]"], "sgd.lrs"),
        (["data.n_samples=3"], "data.n_samples"),
        (["flow.method=rk45"], "flow.method"),
        (["flow.method=rk4"], "flow.step_size"),
        (["init.kind=xavier"], "init.kind"),
        (["log.dt=0"], "log.dt"),
        (["log.dt=-1"], "log.dt"),
        (["flow.t_max=0"], "flow.t_max"),
        (["sgd.sampling=sometimes"], "sgd.sampling"),
        (["data.kind=file", "data.path=/nonexistent.npz"], "data.path"),
        (["init=aligned", "init.u0=[0.001]"], "init.u0"),
        (["init=balanced", "init.u0=[0.001,-0.5]"], "init.u0"),
        (["data.whiten=notabool"], "data.whiten"),
        (["sgd.order_fit=2"], "sgd.order_fit"),
        (["flow.step_size=0.1"], "flow.step_size"),
    ],
)
def test_bad_values_rejected_naming_the_key(overrides, key, tmp_path):
    cfg = make_cfg(["experiment=tiny", *overrides] if "model.dims" not in overrides[0] else overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run(cfg, output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_bad_data_file_is_a_config_error_before_anything_is_written(tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 20))
    y = np.random.default_rng(1).normal(size=(2, 20))
    y[0, 3] = np.nan
    np.savez(tmp_path / "nan.npz", X=x, Y=y)
    np.savez(tmp_path / "shape.npz", X=x, Y=y[:1])
    for name, key in (("nan", "finite"), ("shape", "model.dims")):
        cfg = make_cfg([*TINY, "data=file", f"data.path={tmp_path / (name + '.npz')}"])
        with pytest.raises(ConfigError, match=key):
            run(cfg, output_dir=tmp_path / name)
        assert not (tmp_path / name).exists()


def test_learning_rate_above_the_gd_threshold_is_flagged_unstable(tmp_path):
    # h = 3, m_1 = 2: no global minimum is stable for eta > 2 / (3 * 2^(4/3)) = 0.265; from a small
    # init GD at eta = 0.6 never leaves the origin's plateau while the flow learns both modes.
    cfg = make_cfg([*TINY, "flow.t_max=20", "sgd.lrs=[0.6,0.02,0.01]", "init.scale=0.3"])
    res = run(cfg, output_dir=tmp_path / "run")
    bad = res["series"]["sgd_lr_0.6"]
    assert bad["status"] in ("unstable", "diverged"), bad
    if bad["status"] == "unstable":
        assert "2/eta" in bad["message"] or "threshold" in bad["message"]
    assert res["series"]["sgd_lr_0.02"]["status"] == "ok"
    assert res.exit_code == 0


def test_bad_values_name_allowed_values():
    with pytest.raises(ConfigError, match="allowed: .*dopri5.*bdf"):
        validate(make_cfg(["flow.method=rk45"]))
    with pytest.raises(ConfigError, match="allowed: gaussian, orthogonal, balanced, aligned"):
        validate(make_cfg(["init.kind=xavier"]))


def test_run_writes_the_contract(tmp_path):
    out = tmp_path / "run"
    res = run(make_cfg(["experiment=tiny", "log.figures=false", "log.progress=never"]), output_dir=out)
    assert res.exit_code == 0
    prob = np.load(out / "problem.npz")
    assert {"dims", "X", "Y", "A0", "modes"} <= set(prob.files)
    dims = prob["dims"]
    n = int(dims.sum())
    assert prob["A0"].shape == (n, n)
    summary = json.loads((out / "summary.json").read_text(), parse_constant=_no_nan)
    for key in ("critical_values", "convergence_order", "seeds", "versions", "series"):
        assert key in summary
    assert set(summary["series"]) == {"flow", "sgd_lr_0.04", "sgd_lr_0.02", "sgd_lr_0.01"}
    assert summary["series"]["flow"]["lr"] is None and summary["series"]["flow"]["nfe"] > 0
    for name, entry in summary["series"].items():
        assert SUMMARY_SERIES_KEYS <= set(entry), name
        assert entry["status"] == "ok"
        arr = np.load(out / "series" / f"{name}.npz")
        keys = SERIES_KEYS | ({"step", "dist_to_flow"} if name != "flow" else set())
        assert keys <= set(arr.files), (name, keys - set(arr.files))
        t = arr["t"]
        assert len(t) == summary["grid"]["n_grid"]
        assert arr["theta"].shape == (len(t), int(sum(dims[i] * dims[i + 1] for i in range(len(dims) - 1))))
        if name != "flow":
            lr = entry["lr"]
            np.testing.assert_allclose(t, arr["step"] * lr, rtol=0, atol=1e-12)
            assert entry["steps"] == math.ceil(summary["grid"]["t_max"] / lr - 1e-9)
    # The convergence order of full-batch GD is about 1.
    assert 0.8 < summary["convergence_order"] < 1.2


def test_tensorboard_event_files_hold_every_tag_in_every_series(tmp_path):
    out = tmp_path / "run"
    run(make_cfg(["experiment=tiny", "log.figures=false", "log.progress=never"]), output_dir=out)
    tags = {}
    for d in sorted((out / "tensorboard").iterdir()):
        acc = EventAccumulator(str(d), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE)
        acc.Reload()
        tags[d.name] = set(acc.Tags()["scalars"])
        loss = acc.Scalars("loss")
        arr = np.load(out / "series" / f"{d.name}.npz")
        assert [e.step for e in loss] == list(range(len(arr["t"])))
        np.testing.assert_allclose([e.value for e in loss], arr["loss"], rtol=1e-6)
    common = set.intersection(*tags.values())
    for tag in (
        "loss",
        "time",
        "sv_P/0",
        "sv_A/0",
        "mode_strength/0",
        "saddle/grad_norm",
        "saddle/level_gap",
    ):
        assert tag in common
    assert {"curvature/lambda_min", "curvature/sharpness", "conservation/drift_1"} <= common
    for name, t in tags.items():
        assert t - common <= {"sgd/dist_to_flow", "sgd/step", "sgd/two_over_lr"}, name
        if name != "flow":
            assert {"sgd/dist_to_flow", "sgd/two_over_lr", "hp/final_loss"} <= t


def _gd_run(tmp_path, lrs, extra=()):
    cfg = make_cfg(
        [
            *TINY,
            "init.scale=0.5",
            "flow.t_max=2.0",
            "flow.rtol=1e-10",
            "flow.atol=1e-12",
            "log.dt=0.04",
            f"sgd.lrs=[{','.join(map(str, lrs))}]",
            *extra,
        ]
    )
    return run(cfg, output_dir=tmp_path / "run")


def test_gd_distance_to_flow_halves_when_lr_halves(tmp_path):
    lrs = [0.01, 0.005, 0.0025]
    res = _gd_run(tmp_path, lrs)
    d = [res["series"][f"sgd_lr_{lr!r}"]["max_dist_to_flow"] for lr in lrs]
    assert d[0] > 1e-4
    for a, b in zip(d[:-1], d[1:]):
        assert 1.7 <= a / b <= 2.3, d


def test_minibatch_sgd_approaches_the_flow(tmp_path):
    lrs = [0.04, 0.01, 0.0025]
    res = _gd_run(tmp_path, lrs, ["sgd.batch_size=4", "sgd.sampling=with_replacement"])
    d = [res["series"][f"sgd_lr_{lr!r}"]["max_dist_to_flow"] for lr in lrs]
    assert d[0] > d[1] > d[2], d
    # with replacement the error shrinks like eta^(1/2): a factor 4 in eta gives about 2
    assert 1.3 < d[0] / d[1] < 3.5 and 1.3 < d[1] / d[2] < 3.5, d


def test_diverging_series_is_marked_and_the_others_finish(tmp_path):
    cfg = make_cfg([*TINY, "init.scale=0.5", "flow.t_max=20", "sgd.lrs=[0.8,0.02,0.01]"])
    res = run(cfg, output_dir=tmp_path / "run")
    assert res.exit_code == 0
    bad = res["series"]["sgd_lr_0.8"]
    assert bad["status"] == "diverged" and bad["diverged"] is True
    assert bad["step_stop"] is not None and bad["t_stop"] < 20.0 and bad["message"]
    for lr in (0.02, 0.01):
        assert res["series"][f"sgd_lr_{lr!r}"]["status"] == "ok"
    assert (tmp_path / "run" / "series" / "sgd_lr_0.8.npz").exists()
    json.loads((tmp_path / "run" / "summary.json").read_text(), parse_constant=_no_nan)


def test_run_refuses_a_foreign_nonempty_directory(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        run(make_cfg(TINY), output_dir=tmp_path / "run")
    assert (tmp_path / "run" / "precious.txt").read_text() == "keep me"


def test_same_config_same_numbers(tmp_path):
    a = run(make_cfg([*TINY, "sgd.batch_size=5"]), output_dir=tmp_path / "a")
    b = run(make_cfg([*TINY, "sgd.batch_size=5"]), output_dir=tmp_path / "b")
    for name in a["series"]:
        np.testing.assert_array_equal(
            np.load(tmp_path / "a" / "series" / f"{name}.npz")["theta"],
            np.load(tmp_path / "b" / "series" / f"{name}.npz")["theta"],
        )
    assert a["seeds"] == b["seeds"]


def _cli(args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_runs_with_overrides(tmp_path):
    out = tmp_path / "cli"
    proc = _cli(
        [
            "experiment=tiny",
            "model.dims=[4,3,2]",
            "sgd.lrs=[0.05,0.02,0.01]",
            "log.figures=false",
            f"hydra.run.dir={out}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run directory" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["model"]["dims"] == [4, 3, 2]
    assert (out / ".hydra" / "overrides.yaml").exists()
    assert len(list((out / "tensorboard").iterdir())) == 4


def test_cli_bad_value_exits_2_with_message(tmp_path):
    proc = _cli(["experiment=tiny", "sgd.lrs=[-0.1]", f"hydra.run.dir={tmp_path / 'x'}"], tmp_path)
    assert proc.returncode == 2
    assert "sgd.lrs" in proc.stderr and "must be > 0" in proc.stderr


def test_flow_solver_failure_is_recorded_and_the_sgd_series_still_run(tmp_path):
    out = tmp_path / "run"
    res = run(make_cfg([*TINY, "flow.method=dopri5", "flow.max_nfe=60"]), output_dir=out)
    flow = res["series"]["flow"]
    assert flow["status"] == "solver_failed" and "t =" in flow["message"]
    assert res.exit_code == 3
    arr = np.load(out / "series" / "flow.npz")
    assert 0 < len(arr["t"]) < res["grid"]["n_grid"]  # what was integrated before the failure is kept
    for lr in (0.04, 0.02, 0.01):
        entry = res["series"][f"sgd_lr_{lr!r}"]
        assert entry["status"] == "ok"
        d = np.load(out / "series" / f"sgd_lr_{lr!r}.npz")["dist_to_flow"]
        assert np.isfinite(d[0]) and np.isnan(d[-1])  # no flow to compare with after the failure
    assert json.loads((out / "summary.json").read_text())["exit_code"] == 3


def test_bad_config_is_rejected_before_lightning_is_imported(tmp_path):
    code = (
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        f"with initialize_config_dir(version_base='1.3', config_dir={str(CONF)!r}):\n"
        "    cfg = compose(config_name='train', overrides=['sgd.lrs=[0.01,0]'])\n"
        "from dlnlab.lab.experiment import run\n"
        "from dlnlab.lab.config import ConfigError\n"
        "try:\n"
        f"    run(cfg, output_dir={str(tmp_path / 'r')!r})\n"
        "except ConfigError as err:\n"
        "    print('rejected:', err)\n"
        "assert 'lightning' not in sys.modules, 'lightning was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rejected: sgd.lrs" in proc.stdout


def test_cli_sweep_then_aggregate(tmp_path):
    sweep = tmp_path / "sweep"
    proc = _cli(
        [
            "-m",
            "experiment=tiny",
            "sgd.batch_size=5,10",
            "log.figures=false",
            "log.tensorboard=false",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.rglob("summary.json"))
    assert len(runs) == 2
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "aggregate.py"),
            str(sweep),
            "--csv",
            str(tmp_path / "t.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = (tmp_path / "t.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 2 * 4  # header + (flow + 3 lrs) per run
    assert "sgd.batch_size=5" in out.stdout and "sgd.batch_size=10" in out.stdout
    empty = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "aggregate.py"), str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )
    assert empty.returncode == 2


def test_ctrl_c_keeps_everything_recorded_and_exits_130(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    args = [
        "experiment=tiny",
        "flow.t_max=400",
        "sgd.lrs=[0.0001]",
        "log.figures=false",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "series" / "flow.npz").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # into the 4M-step SGD series
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout[-3000:]
    summary = json.loads((out / "summary.json").read_text(), parse_constant=_no_nan)
    assert summary["exit_code"] == 130
    assert summary["series"]["flow"]["status"] == "ok"
    entry = summary["series"]["sgd_lr_0.0001"]
    assert entry["status"] == "interrupted" and 0 < entry["t_stop"] < 400
    arr = np.load(out / "series" / "sgd_lr_0.0001.npz")
    assert len(arr["t"]) > 1 and arr["t"][-1] == pytest.approx(entry["t_stop"])
