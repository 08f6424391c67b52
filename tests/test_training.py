"""The Lightning (S)GD path against plain torch loops: same updates, same sampling, same numbers."""

from __future__ import annotations

import tempfile

import pytest
import torch

from dlnlab.init import gaussian
from dlnlab.lab.record import SeriesRecorder
from dlnlab.lab.training import _ChunkStream, train_series
from dlnlab.network import pack, unpack
from dlnlab.problem import RegressionProblem

DIMS = [4, 3, 3, 2]


@pytest.fixture(scope="module")
def problem():
    return RegressionProblem.teacher([2.0, 1.0], 4, 2, 20, seed=3)


def _lab(problem, theta0, lr, t_max, **kw):
    n_grid = int(round(t_max / 0.1)) + 1
    with tempfile.TemporaryDirectory() as tmp:
        rec = SeriesRecorder("s", problem, DIMS, theta0, n_grid, tmp, lr=lr, tensorboard=False)
        out = train_series(problem, DIMS, theta0, lr, 0.1, n_grid, rec, **kw)
        arrays = rec.close()
    return out, torch.as_tensor(arrays["theta"])


def test_full_batch_gd_equals_a_plain_loop_bit_for_bit(problem):
    theta0 = pack(gaussian(DIMS, 0.3, seed=1))
    out, thetas = _lab(problem, theta0, 0.02, 2.0)
    theta = theta0.clone()
    views = unpack(theta, DIMS)
    for _ in range(out.steps):
        for w, g in zip(views, problem.gradient(views)):
            w.sub_(g, alpha=0.02)  # the same update, so the same rounding
    assert out.steps == 100 and out.status == "ok"
    assert torch.equal(thetas[-1], theta)
    assert (thetas[-1] - theta0).abs().max() > 1e-2  # it moved


def test_momentum_goes_through_torch_optim_sgd(problem):
    theta0 = pack(gaussian(DIMS, 0.3, seed=1))
    out, thetas = _lab(problem, theta0, 0.02, 2.0, momentum=0.5)
    param = torch.nn.Parameter(theta0.clone())
    opt = torch.optim.SGD([param], lr=0.02, momentum=0.5)
    for _ in range(out.steps):
        param.grad = problem.gradient_theta(param.detach(), DIMS)
        opt.step()
    torch.testing.assert_close(thetas[-1], param.detach(), rtol=0, atol=1e-14)
    _, plain = _lab(problem, theta0, 0.02, 2.0)
    assert (thetas[-1] - plain[-1]).abs().max() > 1e-3  # momentum changes the trajectory


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
def test_minibatch_sgd_equals_a_plain_loop_on_the_same_indices(problem, sampling):
    theta0 = pack(gaussian(DIMS, 0.3, seed=1))
    out, thetas = _lab(problem, theta0, 0.05, 1.0, batch_size=5, sampling=sampling, seed=11)
    stream = _ChunkStream(out.steps, 7, problem.n_samples, 5, sampling, 11)
    theta = theta0.clone()
    for chunk in stream:
        for idx in chunk["index"]:
            _, g = problem.minibatch_loss_and_gradient(unpack(theta, DIMS), idx)
            theta -= 0.05 * pack(g)
    torch.testing.assert_close(thetas[-1], theta, rtol=0, atol=1e-13)


def test_sampling_without_replacement_covers_each_epoch_once():
    stream = _ChunkStream(
        n_steps=40, chunk=3, n_samples=20, batch_size=5, sampling="without_replacement", seed=0
    )
    idx = torch.cat([c["index"] for c in stream]).reshape(-1)
    assert idx.numel() == 200
    for epoch in idx.view(10, 20):
        assert torch.equal(epoch.sort().values, torch.arange(20))
    # a different seed gives different batches; the same seed the same
    again = torch.cat([c["index"] for c in _ChunkStream(40, 5, 20, 5, "without_replacement", 0)]).reshape(-1)
    other = torch.cat([c["index"] for c in _ChunkStream(40, 3, 20, 5, "without_replacement", 1)]).reshape(-1)
    assert torch.equal(idx, again) and not torch.equal(idx, other)


def test_with_replacement_draws_uniformly():
    stream = _ChunkStream(
        n_steps=4000, chunk=1000, n_samples=10, batch_size=5, sampling="with_replacement", seed=2
    )
    counts = torch.bincount(torch.cat([c["index"] for c in stream]).reshape(-1), minlength=10).double()
    assert counts.sum() == 20000
    assert (counts / 2000 - 1).abs().max() < 0.08
