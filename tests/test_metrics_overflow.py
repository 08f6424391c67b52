"""A diverged member whose weights are still finite but whose product P overflows: its metrics are NaN
at that point and the series' other members and points are recorded as usual. Before, svdvals met the
inf and the whole series was recorded as an error with a traceback (an ensemble at lr 0.5 on the tiny
net: every member's arrays lost)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlnlab.init import gaussian
from dlnlab.metrics import SeriesMetrics
from dlnlab.network import pack, product, unpack
from tests._helpers import make_cfg, read_summary

DIMS = [4, 3, 3, 2]


def test_a_finite_theta_whose_product_overflows_gets_nan_metrics_and_the_rest_is_unchanged():
    from dlnlab.problem import RegressionProblem

    problem = RegressionProblem.teacher([2.0, 1.0], 4, 2, 20)
    ok = pack(gaussian(DIMS, 0.5, seed=1))
    huge = pack([w * 1e110 for w in gaussian(DIMS, 0.5, seed=2)])  # each entry finite, P about 1e330
    assert torch.isfinite(huge).all() and not torch.isfinite(product(unpack(huge, DIMS))).all()
    thetas = torch.stack([torch.stack([ok, ok]), torch.stack([ok, huge])])  # (K = 2 points, E = 2 members)
    metrics = SeriesMetrics(problem, DIMS, torch.stack([ok, ok]), analysis_every=1)
    out = metrics.compute([0, 1], torch.tensor([0.0, 0.1], dtype=torch.float64), thetas, [None, None])
    for key in ("sv", "mode_strength", "dist_best_rank", "lambda_min", "sharpness"):
        assert np.isnan(out[key][1, 1]).all(), key
    alone = torch.linalg.svdvals(product(unpack(ok, DIMS))).numpy()
    for i, e in ((0, 0), (0, 1), (1, 0)):
        np.testing.assert_array_equal(out["sv"][i, e], alone)  # the same svdvals of the same matrix
        assert np.isfinite(out["lambda_min"][i, e]) and np.isfinite(out["sharpness"][i, e])


@pytest.mark.lab
def test_an_ensemble_whose_members_overflow_records_every_series(tmp_path):
    from dlnlab.lab.runner import run

    cfg = make_cfg(["experiment=tiny", "ensemble.size=8", "init.scale=0.7", "flow.t_max=20",
                    "sgd.lrs=[0.5,0.25]", "logger=none", "log.figures=false", "log.progress=never"])  # fmt: skip
    run(cfg, output_dir=tmp_path)
    summary = read_summary(tmp_path)["series"]
    overflowed = 0
    for name in ("sgd_lr_0.5", "sgd_lr_0.25"):
        assert summary[name]["status"] != "error", summary[name].get("message", "")
        arrays = np.load(tmp_path / "series" / f"{name}.npz")
        theta = torch.as_tensor(arrays["theta"])
        overflow = torch.isfinite(theta).all(-1) & ~torch.isfinite(product(unpack(theta, DIMS))).all((-2, -1))
        assert np.isnan(arrays["sv"][overflow.numpy()]).all()
        assert np.isfinite(arrays["sv"][(~overflow & torch.isfinite(theta).all(-1)).numpy()]).all()
        overflowed += int(overflow.sum())
    assert overflowed, "the run meant to make P overflow at a finite theta did not"
