"""device=cuda: the flow (torchdiffeq) and the SGD steps on a GPU, equal to the CPU's to rounding.

Skipped without a CUDA device (a GPU's float64 kernels round differently: tolerances, not bit equality).
"""

from __future__ import annotations

import pytest
import torch

from dlnlab.descent import gd
from dlnlab.flow import Solver, integrate, time_grid
from dlnlab.init import gaussian
from dlnlab.lab.cli import preflight
from dlnlab.network import pack
from dlnlab.problem import RegressionProblem
from tests._helpers import CONF, TINY, make_cfg

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")
DIMS = [4, 3, 3, 2]


@pytest.fixture(scope="module")
def setting():
    problem = RegressionProblem.teacher([2.0, 1.0], 4, 2, 20, seed=3)
    return problem, pack(gaussian(DIMS, 0.3, seed=1))


@pytest.mark.skipif(CUDA, reason="a CUDA device is here")
def test_device_cuda_is_refused_without_a_gpu():
    assert "torch sees no CUDA device" in preflight([*TINY, "device=cuda"], CONF)


@needs_cuda
def test_gd_on_the_gpu_equals_the_cpu(setting):
    problem, theta0 = setting
    kw = dict(batch_size=5, momentum=0.5, seed=2, record_steps=range(0, 501, 50))
    cpu = gd(problem, DIMS, theta0, 0.02, 500, **kw)
    gpu = gd(problem.to("cuda"), DIMS, theta0, 0.02, 500, **kw)
    assert gpu.theta.is_cuda and torch.equal(gpu.steps, cpu.steps)
    torch.testing.assert_close(gpu.theta.cpu(), cpu.theta, rtol=1e-12, atol=1e-14)


@needs_cuda
def test_the_flow_on_the_gpu_equals_the_cpu(setting):
    problem, theta0 = setting
    t = time_grid(4.0, dt=0.05)
    solver = Solver("dopri5", rtol=1e-10, atol=1e-12)
    cpu = integrate(problem, DIMS, theta0, t, solver)
    gpu = integrate(problem.to("cuda"), DIMS, theta0, t, solver)
    torch.testing.assert_close(gpu.theta.cpu(), cpu.theta, rtol=1e-8, atol=1e-10)


@needs_cuda
def test_an_ensemble_on_the_gpu_equals_the_cpu():
    """Figure 1 nets as one batch (per-member GD and dopri5 steps) on the GPU: each member as on the CPU."""
    from scripts.bench.gpu import ensemble_row

    row = ensemble_row(members=64, steps=200)
    assert row["flow_cpu_status"] == row["flow_dev_status"] == "ok"
    assert row["gd_rel_dev"] < 1e-10 and row["flow_rel_dev"] < 1e-7


@needs_cuda
def test_a_wide_net_on_the_gpu_equals_the_cpu():
    """Width 1024 (depth 4): the closed-form gradient on the GPU against the CPU's, float64."""
    from scripts.bench.common import teacher_setting

    problem, dims, theta0 = teacher_setting(1024, 4)
    from dlnlab.network import unpack

    cpu = problem.gradient(unpack(theta0, dims))
    gpu = problem.to("cuda").gradient(unpack(theta0.to("cuda"), dims))
    for g_cpu, g_gpu in zip(cpu, gpu):
        torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=1e-10, atol=1e-12)


@needs_cuda
@pytest.mark.lab
def test_the_lab_runs_on_the_gpu(tmp_path):
    from dlnlab.lab.runner import run

    cpu = run(make_cfg([*TINY, "flow=dopri5"]), output_dir=tmp_path / "cpu")
    gpu = run(make_cfg([*TINY, "flow=dopri5", "device=cuda"]), output_dir=tmp_path / "gpu")
    assert gpu.exit_code == 0 and gpu["config"]["device"] == "cuda"
    for name, e in cpu["series"].items():
        assert gpu["series"][name]["status"] == e["status"]
        assert gpu["series"][name]["final_loss"] == pytest.approx(e["final_loss"], rel=1e-8)
