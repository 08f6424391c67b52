"""The loggers: TensorBoard event files read back (every point, or each bucket's extremes), the logger
chosen in the config, and a user's callback adding a metric to every series."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import (
    STORE_EVERYTHING_SIZE_GUIDANCE,
    EventAccumulator,
)

from dlnlab.lab.config import ConfigError
from dlnlab.lab.runner import run
from tests._helpers import QUIET, TINY, hparams_of, make_cfg

pytestmark = pytest.mark.lab  # every test here runs the lab (in-process or its CLI)


def _log10(x):
    """log10 where x > 0, NaN elsewhere (a chart never draws log10 |x| of a negative value)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan)


# tags whose values come from columns of the series npz: TensorBoard must hold their extremes exactly
NPZ_TAGS = {
    "loss/loss": lambda a: a["loss"],
    "loss/log10": lambda a: _log10(a["loss"]),
    "saddle/log10_grad_norm": lambda a: _log10(a["grad_norm"]),
    "saddle/log10_dist_best_rank": lambda a: _log10(a["dist_best_rank"]),
    "curvature/lambda_min": lambda a: a["lambda_min"],
    "curvature/log10_sharpness": lambda a: _log10(a["sharpness"]),
    "curvature/log10_eig_2": lambda a: _log10(a["top_eigs"][:, 1]),
    "curvature/eig_2": lambda a: a["top_eigs"][:, 1],
    "dist/log10_flow": lambda a: _log10(a["dist_to_flow"]),
    "modes/strength_2": lambda a: a["mode_strength"][:, 1],
    "conservation/log10_drift": lambda a: _log10(a["cons_drift"].max(axis=1)),
}


def _tb_scalars(run_dir: Path, name: str) -> dict[str, list]:
    acc = EventAccumulator(str(run_dir / "tensorboard" / name), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def _layout(run_dir: Path) -> dict[str, list[str]]:
    """The Custom Scalars layout of a run: chart title -> its tag patterns."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    acc = EventAccumulator(
        str(run_dir / "tensorboard" / "flow"), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE
    )
    acc.Reload()
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {}
    for category in layout.category:
        for chart in category.chart:
            kind = chart.WhichOneof("content")
            if kind == "multiline":
                charts[chart.title] = list(chart.multiline.tag)
            else:
                charts[chart.title] = [x for e in chart.margin.series for x in (e.value, e.lower, e.upper)]
    return charts


@pytest.mark.parametrize(
    "tb_max_points",
    [
        pytest.param(None, marks=pytest.mark.xdist_group("tiny_run")),
        20,
    ],  # with the session's tiny run's users
    ids=["every_point", "thinned"],
)
def test_tensorboard_reads_right_at_its_defaults(tb_max_points, tmp_path, request):
    """Read the event files back: x is the flow time (step = round(1000 t)); every curve's extremes equal
    the npz's, with every grid point up to log.tb_max_points and at most that many per tag above it (so
    TensorBoard's 1000-point sampling keeps them all); the extremes a reader reads are constant lines
    (so "ignore outliers" cannot cut them); charts exist only for what was logged; single numbers are
    HParams columns, never charts."""
    import re

    if tb_max_points is None:  # the session's tiny run: its default 1000 points are more than its 81
        out = request.getfixturevalue("tiny_run")
        tb_max_points = json.loads((out / "summary.json").read_text())["config"]["log"]["tb_max_points"]
        assert tb_max_points >= len(np.load(out / "series" / "flow.npz")["t"])
    else:
        out = tmp_path / "run"
        run(make_cfg(["experiment=tiny", *QUIET, f"log.tb_max_points={tb_max_points}"]), output_dir=out)
    names = sorted(p.name for p in (out / "tensorboard").iterdir() if p.name != "report")  # no scalars
    assert names == ["flow", "sgd_lr_0.01", "sgd_lr_0.02", "sgd_lr_0.04"]
    logged = set()
    summary = json.loads((out / "summary.json").read_text())
    for name in names:
        scalars = _tb_scalars(out, name)
        logged |= set(scalars)
        arr = np.load(out / "series" / f"{name}.npz")
        steps_of_grid = {int(m): round(1000 * t) for m, t in zip(arr["grid_index"], 0.05 * arr["grid_index"])}
        for tag, column in NPZ_TAGS.items():
            if tag.startswith("dist/") and name == "flow":
                assert tag not in scalars
                continue
            col = column(arr)
            finite = np.isfinite(col)
            events = scalars[tag]
            values = np.array([e.value for e in events])
            # float32 in the event files: equal to about 1e-7 relative
            np.testing.assert_allclose(
                values.max(), col[finite].max(), rtol=2e-7, atol=1e-12, err_msg=f"{name} {tag}"
            )
            np.testing.assert_allclose(
                values.min(), col[finite].min(), rtol=2e-7, atol=1e-12, err_msg=f"{name} {tag}"
            )
            steps = [e.step for e in events]
            assert steps == sorted(steps) and set(steps) <= set(steps_of_grid.values()), (name, tag)
            if tb_max_points >= len(arr["t"]):
                assert len(events) == int(finite.sum()), (name, tag)  # every point (every curvature point)
            else:
                assert len(events) <= tb_max_points, (name, tag)
        if (
            name != "flow"
        ):  # the largest distance as a line over the whole horizon, the number the order is fitted to
            line = {e.value for e in scalars["dist/log10_flow_max"]}
            np.testing.assert_allclose(
                10 ** min(line), summary["series"][name]["max_dist_to_flow"], rtol=1e-6
            )
            assert len(line) == 1 and len(scalars["dist/log10_flow_max"]) >= len(scalars["dist/log10_flow"])
            assert {e.value for e in scalars["hp/max_dist_to_flow"]} and "hp/convergence_order" in scalars
            # a run from Python has no command line: the row's hyperparameters are the rate and the status
            assert hparams_of(out / "tensorboard" / name) == {"lr": float(name[7:]), "status": "ok"}
            two_over_lr = {e.value for e in scalars["curvature/log10_two_over_lr"]}
            assert len(two_over_lr) == 1 and two_over_lr.pop() == pytest.approx(np.log10(2 / float(name[7:])))
        else:
            levels = [scalars[f"loss/level_{r}"][0].value for r in range(len(summary["critical_values"]))]
            np.testing.assert_allclose(levels, summary["critical_values"], rtol=1e-6, atol=1e-30)
            modes = [{e.value for e in scalars[f"modes/m_{k + 1}"]} for k in range(len(summary["modes"]))]
            assert all(len(m) == 1 for m in modes)  # constant lines at the strengths' targets
            np.testing.assert_allclose([m.pop() for m in modes], summary["modes"], rtol=1e-6)
        for tag, events in scalars.items():  # a chart of one point is a dot: only HParams' metric columns
            assert len(events) > 1 or tag.startswith("hp/"), (name, tag)
    charts = _layout(out)
    for title, patterns in charts.items():  # a chart only for what the run logged
        assert any(re.fullmatch(p.strip("^$"), tag) for p in patterns for tag in logged), title
    assert not any("modified" in t or "strong" in t or "spread" in t for t in charts)


def test_a_negative_eigenvalue_is_charted_signed_never_as_log10_of_its_size(tmp_path):
    """The 1-1-1 net at a tiny init sits by the strict saddle at 0, where the Hessian's eigenvalues are
    about +2 and -2: the 2nd is charted as it is (curvature/eig_2 < 0) and has no log10 point, where
    log10 |lambda_2| would draw 0.3, a curvature of +2."""
    out = tmp_path / "run"
    args = ["model.dims=[1,1,1]", "data.singular_values=[2.0]", "init.scale=0.01", "flow.t_max=1",
            "sgd.lrs=[]", "log.top_eigs=2"]  # fmt: skip
    assert run(make_cfg(["experiment=tiny", *QUIET, *args]), output_dir=out).exit_code == 0
    eig = np.load(out / "series" / "flow.npz")["top_eigs"]
    eig = eig[np.isfinite(eig[:, 0])]
    assert (eig[:, 0] > 1.9).all() and (eig[:, 1] < -1.9).all()
    scalars = _tb_scalars(out, "flow")
    signed = np.array([e.value for e in scalars["curvature/eig_2"]])
    np.testing.assert_allclose(signed, eig[:, 1], rtol=2e-7)  # float32 in the event files
    assert "curvature/log10_eig_2" not in scalars
    sharp = np.array([e.value for e in scalars["curvature/log10_sharpness"]])
    np.testing.assert_allclose(sharp, np.log10(eig[:, 0]), rtol=2e-7)
    for kind, pick in (("min", np.min), ("max", np.max)):  # the range as lines: outlier scaling keeps it
        line = {e.value for e in scalars[f"curvature/eig_2_{kind}"]}
        assert line == {np.float32(pick(eig[:, 1]))}, kind
    charts = _layout(out)
    title = "the next top Hessian eigenvalues lambda_2, ..., signed (< 0: not in the log10 chart), and their ranges as lines"
    assert charts[title] == [
        "^curvature/eig_[0-9]+$",
        "^curvature/eig_[0-9]+_min$",
        "^curvature/eig_[0-9]+_max$",
    ]


def test_the_logger_is_chosen_in_the_config(tmp_path):
    res = run(make_cfg([*TINY, "logger=csv", "sgd.lrs=[0.02]"]), output_dir=tmp_path / "csv")
    import csv

    for name in ("flow", "sgd_lr_0.02"):
        rows = list(csv.DictReader((tmp_path / "csv" / "csv" / name / "metrics.csv").open()))
        losses = [float(r["loss/loss"]) for r in rows if r.get("loss/loss")]
        arr = np.load(tmp_path / "csv" / "series" / f"{name}.npz")
        np.testing.assert_allclose(losses, arr["loss"], rtol=1e-12)  # CSV keeps float64
    assert res.exit_code == 0 and not (tmp_path / "csv" / "tensorboard").exists()
    # any Lightning logger by its _target_ (here Lightning's own TensorBoardLogger, named by class path)
    target = "lightning.pytorch.loggers.TensorBoardLogger"
    res = run(make_cfg([*TINY, f"logger._target_={target}", "sgd.lrs=[0.02]"]), output_dir=tmp_path / "any")
    assert res.exit_code == 0
    for name in ("flow", "sgd_lr_0.02"):
        assert _tb_scalars(tmp_path / "any", name)["loss/loss"], name
    res = run(make_cfg([*TINY, "logger=none", "sgd.lrs=[0.02]"]), output_dir=tmp_path / "none")
    assert res.exit_code == 0 and {p.name for p in (tmp_path / "none").iterdir()} == {
        "problem.npz",
        "series",
        "summary.json",
    }


def test_a_user_callback_adds_a_metric_to_every_series(tmp_path):
    out = tmp_path / "run"
    res = run(
        make_cfg([*TINY, "logger=tensorboard", "+callbacks.top._target_=dlnlab.lab.callbacks.TopLayerNorm"]),
        output_dir=out,
    )
    assert res.exit_code == 0
    dims = make_cfg(TINY).model.dims
    n_last = sum(a * b for a, b in zip(dims[-2:-1], dims[-1:]))
    for name in res["series"]:
        events = _tb_scalars(out, name)["custom/top_layer_norm"]
        arrays = np.load(out / "series" / f"{name}.npz")
        theta = arrays["theta"]
        assert [e.step for e in events] == [round(1000 * 0.05 * m) for m in arrays["grid_index"]]  # x: 1000 t
        np.testing.assert_allclose(
            [e.value for e in events], np.linalg.norm(theta[:, -n_last:], axis=1), rtol=1e-6
        )
    with pytest.raises(ConfigError, match=r"^callbacks.bad._target_: cannot import 'nope.Nope'"):
        run(make_cfg([*TINY, "+callbacks.bad._target_=nope.Nope"]), output_dir=tmp_path / "bad")


@pytest.mark.slow  # ~7 s of CLI; in the default set: a user's callback adding a metric to every series, in-process (above)
def test_a_metric_of_ones_own_runs_as_the_docs_say(tmp_path):
    """docs/guide.md: a GridPointCallback in ./mymetrics.py, run with PYTHONPATH=. through the CLI."""
    import os
    import subprocess
    import sys

    (tmp_path / "mymetrics.py").write_text(
        "from dlnlab.lab.callbacks import GridPointCallback\n\n"
        "class MyMetric(GridPointCallback):\n"
        "    def on_grid_point(self, point, logger):\n"
        "        logger.log_metrics({'custom/t': point.t}, step=point.log_step)\n"
    )
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "scripts" / "train.py"), "experiment=tiny", "flow.t_max=0.5", "sgd.lrs=[0.05]",
           "log.figures=false", "logger=csv", "+callbacks.mine._target_=mymetrics.MyMetric", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": "."}, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    import csv

    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "sgd_lr_0.05" / "metrics.csv").open()))
    assert [float(r["custom/t"]) for r in rows if r.get("custom/t")] == pytest.approx(
        [0.05 * k for k in range(11)]
    )
