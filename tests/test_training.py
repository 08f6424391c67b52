"""The Lightning (S)GD path against plain torch loops: same updates, same sampling, same numbers."""

from __future__ import annotations

import tempfile

import pytest
import torch

from dlnlab.descent import EnsembleSampler, MinibatchSampler, gd
from dlnlab.errors import ArgumentError
from dlnlab.init import gaussian
from dlnlab.lab.record import SeriesRecorder
from dlnlab.lab.runner import train_series
from dlnlab.metrics import SeriesMetrics
from dlnlab.network import pack, unpack
from dlnlab.problem import RegressionProblem
from dlnlab.trajectory import Interrupted

DIMS = [4, 3, 3, 2]


@pytest.fixture(scope="module")
def problem():
    return RegressionProblem.teacher([2.0, 1.0], 4, 2, 20, seed=3)


def _lab(problem, theta0, lr, t_max, **kw):
    n_grid = int(round(t_max / 0.1)) + 1
    with tempfile.TemporaryDirectory() as tmp:
        rec = SeriesRecorder("s", SeriesMetrics(problem, DIMS, theta0, sgd=True), n_grid, tmp)
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


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement", "reshuffle"])
def test_minibatch_sgd_equals_a_plain_loop_on_the_same_indices(problem, sampling):
    theta0 = pack(gaussian(DIMS, 0.3, seed=1))
    out, thetas = _lab(problem, theta0, 0.05, 1.0, batch_size=5, sampling=sampling, seed=11)
    sampler = MinibatchSampler(problem.n_samples, 5, sampling, 11)
    theta = theta0.clone()
    for idx in sampler.draw(out.steps):
        _, g = problem.minibatch_loss_and_gradient(unpack(theta, DIMS), idx)
        theta -= 0.05 * pack(g)
    torch.testing.assert_close(thetas[-1], theta, rtol=0, atol=1e-13)


def test_reshuffling_covers_each_epoch_once():
    sampler = MinibatchSampler(20, 5, "reshuffle", seed=0)
    idx = torch.cat([sampler.draw(n) for n in (3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 1)]).reshape(-1)
    assert idx.numel() == 200
    for epoch in idx.view(10, 20):
        assert torch.equal(epoch.sort().values, torch.arange(20))
    # the sequence does not depend on how the steps are split into draws; another seed differs
    again = torch.cat([MinibatchSampler(20, 5, "reshuffle", 0).draw(40)]).reshape(-1)
    other = MinibatchSampler(20, 5, "reshuffle", 1).draw(40).reshape(-1)
    assert torch.equal(idx, again) and not torch.equal(idx, other)


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement", "reshuffle"])
def test_an_ensembles_members_draw_what_their_own_samplers_draw_across_a_saved_state(sampling, monkeypatch):
    """Member e of an EnsembleSampler gets the indices a MinibatchSampler with seed e draws, however the
    steps are split, across the blocks it takes and across a state saved part way through a block and
    loaded into a fresh sampler."""
    import dlnlab.descent as descent

    # blocks made small: 5 members draw 300 numbers, 20 a step each without replacement (3 steps a
    # block), 4 otherwise (15 steps a block)
    monkeypatch.setattr(descent, "ENSEMBLE_BLOCK_NUMBERS", 300)
    seeds = [3, 1, 4, 1, 5]
    ens = EnsembleSampler(20, 4, sampling, seeds)
    first = [ens.draw(k) for k in (1, 2, 4, 1)]  # 8 steps: the next block is part used
    again = EnsembleSampler(20, 4, sampling, seeds)
    again.load_state_dict(ens.state_dict())
    got = torch.cat([*first, again.draw(5), again.draw(1)])
    assert got.shape == (14, 5, 4) and got.is_contiguous()
    want = torch.stack([MinibatchSampler(20, 4, sampling, s).draw(14) for s in seeds], dim=1)
    assert torch.equal(got, want)
    assert torch.equal(ens.draw(6), want[8:])  # the saved one goes on as the loaded one did


def test_an_ensemble_draws_about_a_block_of_numbers_ahead_not_a_block_of_indices():
    """Without replacement a step costs N uniforms: 4 members of N = 10^4, B = 1 hold a few steps after
    their first draw, not the 2^20 / 4 steps a block of indices would be (the numbers they drew stay
    within about ENSEMBLE_BLOCK_NUMBERS)."""
    import dlnlab.descent as descent

    ens = EnsembleSampler(10_000, 1, "without_replacement", [0, 1, 2, 3])
    ens.draw(1)
    held = sum(state["buffer"].numel() for state in ens.state_dict()["members"])  # steps x B x members
    assert 0 < (held + 4) * 10_000 <= 2 * descent.ENSEMBLE_BLOCK_NUMBERS


def test_without_replacement_draws_a_fresh_uniform_subset_at_every_step():
    """B distinct indices a step, each step's subset independent of the last (unlike reshuffling, whose
    consecutive batches of an epoch are disjoint): every pair of samples in one batch equally often, and
    two consecutive batches share B^2 / N samples on average."""
    n, b, steps = 10, 4, 30_000
    sampler = MinibatchSampler(n, b, "without_replacement", seed=5)
    draws = torch.cat([sampler.draw(k) for k in (1, 9_999, 20_000)])
    assert torch.equal(draws, MinibatchSampler(n, b, "without_replacement", seed=5).draw(steps))
    assert all(len(set(row)) == b for row in draws[:2000].tolist())  # distinct within a batch
    counts = torch.bincount(draws.reshape(-1), minlength=n).double()
    assert (counts / (steps * b / n) - 1).abs().max() < 0.03
    hits = torch.zeros(steps, n).scatter_(1, draws, 1.0)
    pairs = hits.T @ hits  # how often samples i and j share a batch: b (b - 1) / (n (n - 1)) of the steps
    off = pairs[~torch.eye(n, dtype=torch.bool)] / steps
    assert (off / (b * (b - 1) / (n * (n - 1))) - 1).abs().max() < 0.08
    shared = (hits[1:] * hits[:-1]).sum(dim=1).mean()  # independent steps: E = b^2 / n = 1.6
    assert abs(float(shared) - b * b / n) < 0.05
    big = MinibatchSampler(10**6, 3, "without_replacement", seed=0)  # a refill's uniforms stay bounded
    assert big.draw(5).shape == (5, 3)


def test_with_replacement_draws_uniformly_and_independently_of_the_split():
    sampler = MinibatchSampler(10, 5, "with_replacement", seed=2)
    draws = torch.cat([sampler.draw(n) for n in (1000, 999, 1, 2000)])
    counts = torch.bincount(draws.reshape(-1), minlength=10).double()
    assert counts.sum() == 20000
    assert (counts / 2000 - 1).abs().max() < 0.08
    assert torch.equal(draws, MinibatchSampler(10, 5, "with_replacement", seed=2).draw(4000))


def test_a_batch_of_n_drawn_with_replacement_is_noisy_sgd_not_full_batch_gd():
    """B = N i.i.d. indices repeat some samples (in most steps: 1 - N! / N^N) and so leave out others:
    SGD, not GD (docs/guide.md); without replacement or reshuffled, B = N is every sample, full batch."""
    sampler = MinibatchSampler(5, 5, "with_replacement", seed=1)
    assert not sampler.full_batch
    repeats = [len(set(row)) < 5 for row in sampler.draw(100).tolist()]
    assert 80 <= sum(repeats) < 100  # 1 - 5! / 5^5 = 96 % of the steps
    for sampling in ("without_replacement", "reshuffle"):
        assert (
            MinibatchSampler(5, 5, sampling).full_batch and MinibatchSampler(5, 5, sampling).draw(3) is None
        )


def test_gd_records_step_zero_every_kth_step_and_the_last_by_default(problem):
    """About 1000 points by default: 0, k, 2k, ... (k = ceil(steps / 1000)) and the last step, at
    t = step x lr; the first row is theta0 itself."""
    theta0 = pack(gaussian(DIMS, 0.3, seed=1))
    res = gd(problem, DIMS, theta0, 0.01, 2500)
    assert int(res.steps[0]) == 0 and torch.equal(res.theta[0], theta0) and int(res.steps[-1]) == 2500
    assert set(torch.diff(res.steps)[:-1].tolist()) == {3} and len(res.steps) == 835
    torch.testing.assert_close(res.t, res.steps.double() * 0.01, rtol=0, atol=0)


def test_a_sampler_resumed_from_its_state_draws_what_it_would_have():
    a = MinibatchSampler(20, 5, "without_replacement", seed=4)
    a.draw(7)
    state = a.state_dict()
    rest = a.draw(50)
    b = MinibatchSampler(20, 5, "without_replacement", seed=99)
    b.load_state_dict(state)
    assert torch.equal(b.draw(50), rest)


def test_a_sampler_refuses_the_state_of_another_sampling():
    """A buffer drawn by one scheme would go on as another's minibatches: the state names its scheme."""
    state = MinibatchSampler(20, 5, "reshuffle", seed=4).state_dict()
    assert state["sampling"] == "reshuffle"
    with pytest.raises(
        ArgumentError, match="the state was drawn reshuffle, this sampler draws without_replacement"
    ):
        MinibatchSampler(20, 5, "without_replacement", seed=4).load_state_dict(state)
    del state["sampling"]  # a state saved before the scheme was recorded loads as before
    MinibatchSampler(20, 5, "without_replacement", seed=4).load_state_dict(state)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"momentum": 0.5},
        {"batch_size": 5, "seed": 3},
        {"batch_size": 5, "sampling": "without_replacement"},
        {"batch_size": 5, "sampling": "reshuffle"},
    ],
    ids=["gd", "heavy_ball", "sgd", "sgd_without_replacement", "sgd_reshuffle"],
)
def test_the_core_gd_equals_the_lightning_series_bit_for_bit(problem, kw):
    """The Lightning module wraps the core stepper: the same ops in the same order, whatever the chunks."""
    theta0 = pack(gaussian(DIMS, 0.3, seed=1))
    out, thetas = _lab(problem, theta0, 0.02, 2.0, chunk=7, **kw)
    traj = gd(problem, DIMS, theta0, 0.02, out.steps, record_steps=range(0, out.steps + 1, 5), **kw)
    assert traj.status == "ok" and traj.n_steps == out.steps and traj.steps[-1] == out.steps
    assert torch.equal(traj.theta[-1], thetas[-1])
    tau = 0.02 / (1 - kw.get("momentum", 0.0))
    torch.testing.assert_close(traj.t, traj.steps.double() * tau, rtol=0, atol=0)


def test_core_gd_reports_divergence_and_interruption(problem):
    theta0 = pack(gaussian(DIMS, 0.5, seed=1))
    bad = gd(problem, DIMS, theta0, 5.0, 200, record_steps=range(201))
    assert bad.status == "diverged" and ("non-finite" in bad.message or "||theta||" in bad.message)
    assert len(bad.t) < 201
    calls = []

    def stop(t, t_end):
        calls.append(t)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        gd(problem, DIMS, theta0, 0.01, 100, record_steps=range(0, 101, 10), progress=stop)
    part = info.value.result
    assert part.status == "interrupted" and part.steps.tolist() == [0, 10, 20]
