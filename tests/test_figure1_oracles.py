"""Figure 1 oracles of docs/theory.md section 8 that need the flow or GD on the full net (16, 17)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dlnlab.analysis import gd_stability_threshold
from dlnlab.flow import LossLevel, Solver, integrate, time_grid
from dlnlab.init import gaussian
from dlnlab.network import pack, product, unpack
from tests._helpers import figure1_problem

DIMS = [11, 6, 6, 6, 6, 4]


@pytest.fixture(scope="module")
def problem():
    return figure1_problem()


def first_escape(problem, scale, seed=0):
    """Time at which the flow from gaussian(scale) leaves the origin's plateau (L = (L*_0 + L*_1) / 2)."""
    levels = problem.plateau_levels(4)
    theta0 = pack(gaussian(DIMS, scale, seed=seed))
    res = integrate(
        problem,
        DIMS,
        theta0,
        time_grid(400.0, dt=1.0),
        Solver("lsoda"),
        events=[LossLevel(float(levels[:2].mean()))],
    )
    assert res.status == "event"
    return res.t_event


@pytest.mark.parametrize("seed", [0, 1])
def test_small_init_escape_time_scales_like_sigma_to_the_minus_h_minus_2(problem, seed):
    # h = 5: t(sigma / 2) / t(sigma) ~ 2^(h-2) = 8 (docs/theory.md section 5, oracle 17: in [6.5, 9.5] for sigma <= 0.1)
    ratio = first_escape(problem, 0.05, seed) / first_escape(problem, 0.1, seed)
    assert 6.5 <= ratio <= 9.5, ratio


def gd(problem, theta0, lrs, steps):
    """Plain GD from theta0 at each learning rate, all stepped together (a stack of weights takes one
    gradient call: 0.4 CPU s here against 1.2 for one loop a rate); each rate's weights after its
    number of ``steps``."""
    theta = torch.stack([theta0] * len(lrs))
    rate = torch.tensor(lrs, dtype=theta.dtype)[:, None]
    out = [None] * len(lrs)
    for k in range(max(steps) + 1):
        for j, n in enumerate(steps):
            if k == n:
                out[j] = theta[j].clone()
        if k < max(steps):
            theta -= rate * problem.gradient_theta(theta, DIMS)
    return out


def test_gd_converges_below_the_stability_threshold_and_not_above(problem):
    # oracle 16: eta* = 2 / (h s_1^(2-2/h)) = 0.043528; eta = 0.04 converges, eta = 0.047 does not
    assert gd_stability_threshold(4.0, 5) == pytest.approx(0.043528, abs=1e-6)
    theta0 = pack(gaussian(DIMS, 0.1, seed=0))
    floor = float(problem.plateau_levels(4)[-1])
    below, above = (
        problem.loss_of_product(_product(theta)) for theta in gd(problem, theta0, [0.04, 0.047], [7500, 6383])
    )
    assert float(below) - floor < 1e-8
    assert float(above) - floor > 1e-2


def _product(theta):
    return product(unpack(theta, DIMS))


@pytest.mark.lab
@pytest.mark.slow  # ~4.3 s (the full net, t <= 300, GD over 7500 and 6383 steps); in the default set: the same GD
# in the core above (test_gd_converges_below_the_stability_threshold_and_not_above); the flag of a stalled series
# by hand (tests/test_files.py, finish_sgd_entry) and in a lab run on the tiny net (tests/test_budget.py, lr 1.5)
def test_the_lab_flags_the_stalled_series_unstable(tmp_path):
    from hydra import compose, initialize_config_dir

    from dlnlab.lab.runner import run

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(version_base="1.3", config_dir=conf):
        cfg = compose(
            "train",
            overrides=[
                "sgd.lrs=[0.047,0.04]",
                "log.figures=false",
                "logger=none",
                "log.progress=never",
            ],
        )
    res = run(cfg, output_dir=tmp_path / "run")
    assert res["series"]["sgd_lr_0.047"]["status"] == "unstable"
    assert res["series"]["sgd_lr_0.04"]["status"] == "ok"
    assert res["series"]["sgd_lr_0.04"]["final_loss"] < 1e-8
    assert res.exit_code == 0
