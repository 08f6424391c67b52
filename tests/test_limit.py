"""Minibatch SGD as a stochastic flow: strong and weak orders from an ensemble that shares its init."""

from __future__ import annotations

import numpy as np
import pytest
from test_lab import TINY, make_cfg

from dlnlab.lab.experiment import run

LRS = [0.04, 0.02, 0.01, 0.005]
ARGS = [
    *TINY, "ensemble.size=1000", "ensemble.vary=sgd", "sgd.batch_size=4", "flow.t_max=2",
    f"sgd.lrs=[{','.join(map(str, LRS))}]", "sgd.order_fit=4", "init.scale=0.5", "log.analysis_points=0",
]  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1])
def test_strong_order_one_half_and_weak_order_one(tmp_path, seed):
    """Batch 4 of 20 on the tiny net, t <= 2, 1000 members (docs/theory.md, section 9)."""
    res = run(make_cfg([*ARGS, f"seed={seed}"]), output_dir=tmp_path / "run")
    assert res.exit_code == 0
    lim = res["sgd_limit"]
    assert lim["members"] == 1000 and lim["lrs"] == sorted(LRS, reverse=True)
    assert 0.45 <= lim["strong"]["order"] <= 0.65, lim["strong"]
    assert 0.85 <= lim["weak_theta"]["order"] <= 1.3, lim["weak_theta"]
    assert 0.85 <= lim["weak_loss"]["order"] <= 1.6, lim["weak_loss"]
    for key in ("strong", "weak_theta", "weak_loss"):
        lo, hi = lim[key]["ci90"]
        assert lo <= lim[key]["order"] <= hi and hi - lo < 0.5
    # the numbers, from the series files alone
    flow = np.load(tmp_path / "run" / "series" / "flow.npz")
    for lr, strong, weak, weak_loss in zip(
        lim["lrs"], lim["strong"]["max"], lim["weak_theta"]["max"], lim["weak_loss"]["max"]
    ):
        arr = np.load(tmp_path / "run" / "series" / f"sgd_lr_{lr!r}.npz")
        assert np.allclose(arr["theta"][:, 0], arr["theta"][0, 0])  # one init for every member
        assert strong == pytest.approx(arr["dist_to_flow"].mean(axis=0).max(), rel=1e-12)
        mean = arr["theta"].mean(axis=0)
        assert weak == pytest.approx(np.linalg.norm(mean - flow["theta"], axis=-1).max(), rel=1e-9)
        assert weak_loss == pytest.approx(np.abs(arr["loss"].mean(axis=0) - flow["loss"]).max(), rel=1e-9)
        assert weak < strong  # the mean of the members is much closer to the flow than any one member


def test_the_orders_go_to_tensorboard_and_a_figure(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import (
        STORE_EVERYTHING_SIZE_GUIDANCE,
        EventAccumulator,
    )

    args = [a for a in ARGS if not a.startswith("ensemble.size")]
    res = run(
        make_cfg([*args, "ensemble.size=50", "log.figures=true", "logger=tensorboard"]),
        output_dir=tmp_path / "r",
    )
    assert (tmp_path / "r" / "figures" / "sgd_limit.png").is_file()
    acc = EventAccumulator(
        str(tmp_path / "r" / "tensorboard" / "flow"), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE
    )
    acc.Reload()
    got = acc.Scalars("run/strong_order")[0].value
    assert got == pytest.approx(res["sgd_limit"]["strong"]["order"], rel=1e-6)
    acc = EventAccumulator(
        str(tmp_path / "r" / "tensorboard" / "sgd_lr_0.01"), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE
    )
    acc.Reload()
    curve = [e.value for e in acc.Scalars("limit/strong")]
    arr = np.load(tmp_path / "r" / "series" / "sgd_lr_0.01.npz")
    np.testing.assert_allclose(curve, arr["dist_to_flow"].mean(axis=0), rtol=1e-6)


def test_the_sme_ensemble_spreads_like_the_sgd_ensemble(tmp_path):
    """sgd.sme: the SME's ensemble per learning rate, recorded like SGD's; the spread ratios near 1."""
    args = [a for a in ARGS if not a.startswith(("ensemble.size", "sgd.lrs", "sgd.order_fit"))]
    res = run(
        make_cfg([*args, "ensemble.size=400", "sgd.lrs=[0.02,0.01]", "sgd.sme=true"]),
        output_dir=tmp_path / "r",
    )
    assert res.exit_code == 0
    spread = res["sgd_limit"]["sme"]
    tol = 3 * spread["sampling_error"]  # 2 / sqrt(E - 1) for a variance ratio
    for lr in ("0.02", "0.01"):
        for key in ("var_loss", "var_theta"):
            assert abs(spread["spread_ratio"][lr][key]["median"] - 1) <= tol, (lr, key, spread)
        arr = np.load(tmp_path / "r" / "series" / f"sme_lr_{lr}.npz")
        assert arr["loss"].shape[0] == 400 and res["series"][f"sme_lr_{lr}"]["ensemble"]["size"] == 400
        assert np.allclose(arr["theta"][:, 0], arr["theta"][0, 0])  # from the shared init
