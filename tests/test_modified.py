"""GD's modified flow dtheta/dt = -(I + (eta/2) H) grad L: against autograd, and GD's O(eta^2) to it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dlnlab import init
from dlnlab.descent import gd
from dlnlab.flow import Solver, integrate, time_grid, vector_field
from dlnlab.network import pack, unpack
from dlnlab.problem import RegressionProblem
from tests._helpers import noisy_problem

DIMS = [4, 5, 5, 3]


@pytest.fixture(scope="module")
def small():
    problem = noisy_problem()
    return problem, pack(init.gaussian(DIMS, 0.5, seed=0))


def test_the_modified_field_is_minus_the_gradient_of_the_modified_loss(small):
    """-(g + eta/2 H g) = -grad(L + eta/4 ||grad L||^2), the right side by autograd twice."""
    problem, theta = small
    eta = 0.03
    x = theta.clone().requires_grad_(True)
    loss = problem.loss(unpack(x, DIMS))
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    (want,) = torch.autograd.grad(loss + eta / 4 * (g * g).sum(), x)
    got = vector_field(problem, DIMS, modified_lr=eta)(None, theta)
    torch.testing.assert_close(got, -want, rtol=1e-12, atol=1e-13)
    plain = vector_field(problem, DIMS)(None, theta)
    torch.testing.assert_close(plain, -g.detach(), rtol=1e-12, atol=1e-13)


def test_its_jacobian_and_products_agree(small):
    problem, theta = small
    field = vector_field(problem, DIMS, modified_lr=0.05)
    v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(field.jacobian(theta) @ v, field.jvp(theta, v), rtol=1e-11, atol=1e-12)
    out = torch.empty_like(theta)
    assert torch.equal(field.into(theta, out), field(None, theta))


@pytest.fixture(scope="module")
def modified_reference(small):
    """The modified flow (lr 0.02) over t <= 2 by dopri8 at rtol 1e-12, once for every method below."""
    problem, theta = small
    t = time_grid(2.0, dt=0.1)
    return integrate(problem, DIMS, theta, t, Solver("dopri8", rtol=1e-12, atol=1e-14), modified_lr=0.02)


@pytest.mark.xdist_group("modified_reference")  # the three on one worker: its reference solved once
@pytest.mark.parametrize("method", ["lsoda", "rk45", "cvode"])
def test_every_stiff_and_explicit_path_integrates_it(small, modified_reference, method):
    problem, theta = small
    ref = modified_reference
    res = integrate(problem, DIMS, theta, ref.t, Solver(method, rtol=1e-10, atol=1e-12), modified_lr=0.02)
    assert float((res.theta - ref.theta).abs().max()) <= 1e-7


def test_gd_follows_the_modified_flow_to_second_order(small):
    """Over t <= 2 (no saddle escape) the distance of GD to the modified flow falls like eta^2, to the
    plain flow like eta (docs/theory.md, section 9)."""
    problem, theta = small
    t_end, lrs = 2.0, [0.02, 0.01, 0.005, 0.0025]
    dist_plain, dist_mod = [], []
    solver = Solver("lsoda", rtol=1e-12, atol=1e-14)
    for lr in lrs:
        steps = round(t_end / lr)
        run = gd(problem, DIMS, theta, lr, steps, record_steps=range(0, steps + 1, steps // 20))
        flow = integrate(problem, DIMS, theta, run.t, solver)
        mod = integrate(problem, DIMS, theta, run.t, solver, modified_lr=lr)
        dist_plain.append(float((run.theta - flow.theta).norm(dim=1).max()))
        dist_mod.append(float((run.theta - mod.theta).norm(dim=1).max()))
    order = lambda d: float(np.polyfit(np.log(lrs), np.log(d), 1)[0])  # noqa: E731
    assert 1.8 <= order(dist_mod) <= 2.2, dist_mod
    assert 0.85 <= order(dist_plain) <= 1.15, dist_plain
    assert all(m < p / 3 for m, p in zip(dist_mod, dist_plain))
    assert math.isfinite(sum(dist_mod))


@pytest.mark.lab
@pytest.mark.xdist_group("sme_ensemble_run")  # with the session run's other users (tests/test_records.py)
def test_the_lab_records_the_modified_flows_and_both_orders(modified_run):
    res, run_dir = modified_run  # tests/conftest.py: MODIFIED_RUN
    assert res.exit_code == 0
    assert 0.85 <= res["convergence_order"] <= 1.15
    assert 1.8 <= res["convergence_order_modified"] <= 2.2
    for lr in (0.02, 0.01, 0.005):
        mod = res["series"][f"modflow_lr_{lr!r}"]
        assert mod["status"] == "ok" and mod["modified_lr"] == lr and mod["lr"] is None
        sgd = res["series"][f"sgd_lr_{lr!r}"]
        arr = np.load(run_dir / "series" / f"sgd_lr_{lr!r}.npz")
        assert sgd["max_dist_to_modified_flow"] == pytest.approx(float(np.nanmax(arr["dist_to_modified"])))
        assert sgd["max_dist_to_modified_flow"] < sgd["max_dist_to_flow"] / 3
        # the recorded modified flow is the core's, integrated alone
        flow = np.load(run_dir / "series" / f"modflow_lr_{lr!r}.npz")
        problem = RegressionProblem.from_data(*(np.load(run_dir / "problem.npz")[k] for k in "XY"))
        theta0 = torch.as_tensor(flow["theta"][0])
        alone = integrate(
            problem, [4, 3, 3, 2], theta0, torch.as_tensor(flow["t"]), Solver("lsoda"), modified_lr=lr
        )
        assert np.abs(alone.theta.numpy() - flow["theta"]).max() <= 1e-7
    # TensorBoard: no run of its own (one colour per learning rate); its GD series' run holds the distance
    assert not (run_dir / "tensorboard" / "modflow_lr_0.01").exists()
    from tensorboard.backend.event_processing.event_accumulator import (
        STORE_EVERYTHING_SIZE_GUIDANCE,
        EventAccumulator,
    )

    acc = EventAccumulator(
        str(run_dir / "tensorboard" / "sgd_lr_0.01"), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE
    )
    acc.Reload()
    assert {"dist/log10_modified", "dist/log10_modified_max", "hp/convergence_order_modified"} <= set(
        acc.Tags()["scalars"]
    )
