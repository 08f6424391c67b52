"""The loggers: TensorBoard event files read back (every point, or each bucket's extremes), the logger
chosen in the config, and a user's callback adding a metric to every series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import (
    STORE_EVERYTHING_SIZE_GUIDANCE,
    EventAccumulator,
)
from test_lab import TINY, make_cfg

from dlnlab.lab.errors import ConfigError
from dlnlab.lab.experiment import run

# tags whose values are columns of the series npz: TensorBoard must hold every finite point of each
NPZ_TAGS = {
    "loss": "loss",
    "time": "t",
    "saddle/grad_norm": "grad_norm",
    "saddle/level_gap": "level_gap",
    "saddle/dist_best_rank": "dist_best_rank",
    "curvature/lambda_min": "lambda_min",
    "curvature/sharpness": "sharpness",
    "sgd/dist_to_flow": "dist_to_flow",
    "sv_P/0": ("sv", 0),
    "mode_strength/1": ("mode_strength", 1),
    "conservation/drift_1": ("cons_drift", 0),
}


def _tb_scalars(run_dir: Path, name: str) -> dict[str, list]:
    acc = EventAccumulator(str(run_dir / "tensorboard" / name), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def _npz_column(arr, key):
    return arr[key] if isinstance(key, str) else arr[key[0]][:, key[1]]


@pytest.mark.parametrize("tb_max_points", [10_000, 20], ids=["every_point", "thinned"])
def test_tensorboard_holds_every_point_or_each_buckets_extremes(tb_max_points, tmp_path):
    """Read the event files back: every curvature point and the same extremes as the npz, with
    every grid point written up to log.tb_max_points, and each bucket's extremes above it."""
    out = tmp_path / "run"
    run(
        make_cfg(
            [
                "experiment=tiny",
                "log.figures=false",
                "log.progress=never",
                f"log.tb_max_points={tb_max_points}",
            ]
        ),
        output_dir=out,
    )
    names = sorted(p.name for p in (out / "tensorboard").iterdir())
    assert names == ["flow", "sgd_lr_0.01", "sgd_lr_0.02", "sgd_lr_0.04"]
    tags = {}
    for name in names:
        scalars = _tb_scalars(out, name)
        tags[name] = set(scalars)
        arr = np.load(out / "series" / f"{name}.npz")
        for tag, key in NPZ_TAGS.items():
            if tag.startswith("sgd/") and name == "flow":
                continue
            col = _npz_column(arr, key)
            finite = np.isfinite(col)
            events = scalars[tag]
            values = np.array([e.value for e in events])
            # float32 in the event files: equal to about 1e-7 relative
            np.testing.assert_allclose(
                values.max(), col[finite].max(), rtol=2e-7, atol=1e-30, err_msg=f"{name} {tag}"
            )
            np.testing.assert_allclose(
                values.min(), col[finite].min(), rtol=2e-7, atol=1e-30, err_msg=f"{name} {tag}"
            )
            steps = [e.step for e in events]
            assert steps == sorted(steps) and set(steps) <= set(arr["grid_index"][finite].tolist())
            if tb_max_points >= len(arr["t"]):
                assert len(events) == int(finite.sum()), (name, tag)  # every point (every curvature point)
            elif finite.sum() > 10:
                assert len(events) < int(finite.sum()), (name, tag)
    common = set.intersection(*tags.values())
    assert {
        "loss",
        "time",
        "sv_P/0",
        "sv_A/0",
        "mode_strength/0",
        "log10/loss",
        "saddle/modes_learnt",
    } <= common
    assert {"curvature/lambda_min", "curvature/sharpness", "conservation/drift_1", "log10/drift_1"} <= common
    assert {"run/convergence_order", "run/gd_stability_threshold"} <= tags["flow"]
    for name in names[1:]:
        assert {
            "sgd/dist_to_flow",
            "log10/dist_to_flow",
            "sgd/two_over_lr",
            "hp/final_loss",
            "hp/convergence_order",
        } <= tags[name]


def test_the_logger_is_chosen_in_the_config(tmp_path):
    res = run(make_cfg([*TINY, "logger=csv", "sgd.lrs=[0.02]"]), output_dir=tmp_path / "csv")
    import csv

    for name in ("flow", "sgd_lr_0.02"):
        rows = list(csv.DictReader((tmp_path / "csv" / "csv" / name / "metrics.csv").open()))
        losses = [float(r["loss"]) for r in rows if r.get("loss")]
        arr = np.load(tmp_path / "csv" / "series" / f"{name}.npz")
        np.testing.assert_allclose(losses, arr["loss"], rtol=1e-12)  # CSV keeps float64
    assert res.exit_code == 0 and not (tmp_path / "csv" / "tensorboard").exists()
    # any Lightning logger by its _target_ (here Lightning's own TensorBoardLogger, named by class path)
    target = "lightning.pytorch.loggers.TensorBoardLogger"
    res = run(make_cfg([*TINY, f"logger._target_={target}", "sgd.lrs=[0.02]"]), output_dir=tmp_path / "any")
    assert res.exit_code == 0
    for name in ("flow", "sgd_lr_0.02"):
        assert _tb_scalars(tmp_path / "any", name)["loss"], name
    res = run(make_cfg([*TINY, "logger=none", "sgd.lrs=[0.02]"]), output_dir=tmp_path / "none")
    assert res.exit_code == 0 and {p.name for p in (tmp_path / "none").iterdir()} == {
        "problem.npz",
        "series",
        "summary.json",
    }


def test_a_user_callback_adds_a_metric_to_every_series(tmp_path):
    out = tmp_path / "run"
    res = run(
        make_cfg([*TINY, "logger=tensorboard", "+callbacks.top._target_=_helpers.TopLayerNorm"]),
        output_dir=out,
    )
    assert res.exit_code == 0
    dims = make_cfg(TINY).model.dims
    n_last = sum(a * b for a, b in zip(dims[-2:-1], dims[-1:]))
    for name in res["series"]:
        events = _tb_scalars(out, name)["custom/top_layer_norm"]
        theta = np.load(out / "series" / f"{name}.npz")["theta"]
        assert [e.step for e in events] == list(range(len(theta)))
        np.testing.assert_allclose(
            [e.value for e in events], np.linalg.norm(theta[:, -n_last:], axis=1), rtol=1e-6
        )
    with pytest.raises(ConfigError, match=r"^callbacks.bad._target_: cannot import 'nope.Nope'"):
        run(make_cfg([*TINY, "+callbacks.bad._target_=nope.Nope"]), output_dir=tmp_path / "bad")
