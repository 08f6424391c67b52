"""bdf_batch: the stiff flow of a batch (B, p), each member with its own steps, order and Jacobian. Every
member agrees with its own tight solve (LSODA at rtol 1e-12) and, with scipy's settings, with scipy's BDF,
whatever the rest of the batch."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import torch

import dlnlab.flow._bdf as bdf
from dlnlab import init
from dlnlab.flow import FlowInterrupted, FlowSolverError, Solver, integrate, time_grid, vector_field
from dlnlab.network import pack
from tests._helpers import FIG1, SMALL

# its tests on one xdist worker (--dist loadgroup) with tests/test_flow_radau.py: the session's tight solves
# of their members (tests/conftest.py: small_batch, figure1_batch), the references here, are made once
pytestmark = pytest.mark.xdist_group("stiff_batch")

torch.set_num_threads(1)


@pytest.fixture
def small(small_batch):
    """Gaussian inputs with noise (Sxx != I); three members at init scales 0.2, 0.5, 0.8; t <= 3."""
    return small_batch.problem, small_batch.thetas, small_batch.t


def relative_deviation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a(t) - b(t)|| / ||b(t)|| at every output time."""
    return (a - b).norm(dim=-1) / b.norm(dim=-1)


def test_each_member_is_within_ten_rtol_of_its_own_tight_solve(small_batch):
    """Against each member's tight solve (lsoda at rtol 1e-12), bdf_batch's own global error. (The
    references were scipy's Radau at the same rtol, 1e-9, 0.1 rtol from the tight solve: four times
    the CPU of the shared tight solves, measured.)"""
    b = small_batch
    # a budget of twice the evaluations it takes (932): a broken formula fails here, where it would
    # grind on tiny steps without one (docs/mutations.md)
    res = integrate(b.problem, SMALL, b.thetas, b.t, Solver("bdf_batch", max_nfe=2000))
    assert res.status == "ok" and res.theta.shape == (len(b.t), 3, b.thetas.shape[1])
    assert torch.equal(res.theta[0], b.thetas)
    for k in range(3):
        dev = relative_deviation(res.theta[:, k], b.tight[k])
        assert float(dev.max()) <= 10 * 1e-9, (k, float(dev.max()))


def test_gd_modified_flow_too(small_batch):
    """The modified flow's Jacobian -(H + (eta/2) H^2) is symmetric too (its third-derivative term left
    out, which only slows the Newton iteration): each member within 10 rtol of its own tight solve."""
    b = small_batch
    res = integrate(b.problem, SMALL, b.thetas, b.t[:21], Solver("bdf_batch"), modified_lr=0.01)
    for k in range(3):
        assert float(relative_deviation(res.theta[:, k], b.tight_modified[k]).max()) <= 10 * 1e-9, k


def test_figure1_members_away_from_saddles_are_within_ten_rtol_of_their_tight_solve(figure1_batch):
    b = figure1_batch
    res = integrate(b.problem, FIG1, b.thetas, b.t, Solver("bdf_batch", rtol=1e-7, atol=1e-9, max_nfe=2000))
    steps = res.members.n_steps
    assert steps[0] != steps[1] != steps[2]  # each member its own steps
    for k in (1, 2):
        assert float(relative_deviation(res.theta[:, k], b.tight[k]).max()) <= 10 * 1e-7, k


def test_with_scipys_newton_settings_it_is_scipys_bdf(small, monkeypatch):
    """The vectorised algorithm is scipy's BDF: with scipy's Newton tolerance (sqrt(rtol)), no early stop
    after one correction and every eigenpair in the solve, each member makes exactly scipy's evaluations
    and Jacobians, and the same states to rounding (scipy factorises I - cJ by LU, we diagonalise J)."""
    problem, thetas, t = small
    rtol = 1e-9
    monkeypatch.setattr(bdf, "NEWTON_TOL", max(10 * np.finfo(float).eps / rtol, min(0.03, rtol**0.5)))
    monkeypatch.setattr(bdf, "RATE_AGE", 0)
    monkeypatch.setattr(bdf, "NEGLECT", 0.0)
    res = integrate(problem, SMALL, thetas, t, Solver("bdf_batch", rtol=rtol, atol=1e-11))
    field = vector_field(problem, SMALL)
    for k in range(3):
        ref = scipy.integrate.solve_ivp(
            lambda tt, y: field(tt, torch.from_numpy(y)).numpy(), (0.0, float(t[-1])), thetas[k].numpy(),
            method="BDF", t_eval=t.numpy(), rtol=rtol, atol=1e-11,
            jac=lambda tt, y: field.jacobian(torch.from_numpy(y)).numpy(),
        )  # fmt: skip
        assert int(res.members.nfe[k]) == ref.nfev and int(res.members.njev[k]) == ref.njev
        assert np.abs(res.theta[:, k].numpy() - ref.y.T).max() <= 1e-12 * np.abs(ref.y).max()


def test_a_member_does_not_depend_on_the_rest_of_the_batch(small):
    """Equal to rounding, not bitwise: the float32 solve's width (the eigenpairs the neediest member
    uses) depends on the batch and moves the rounding of the others."""
    problem, thetas, t = small
    together = integrate(problem, SMALL, thetas, t, Solver("bdf_batch")).theta
    reversed_ = integrate(problem, SMALL, thetas.flip(0), t, Solver("bdf_batch")).theta.flip(1)
    alone = integrate(problem, SMALL, thetas[1], t, Solver("bdf_batch")).theta
    alone_batch = integrate(problem, SMALL, thetas[1:2], t, Solver("bdf_batch")).theta[:, 0]
    assert alone.shape == (len(t), thetas.shape[1]) and torch.equal(alone, alone_batch)
    assert float(relative_deviation(together[:, 1], alone).max()) <= 1e-12
    assert float(relative_deviation(together, reversed_).max()) <= 1e-12


def test_each_member_has_its_status_and_counts(small):
    problem, thetas, t = small
    res = integrate(problem, SMALL, thetas, t, Solver("bdf_batch"))
    m = res.members
    assert m.status == ("ok",) * 3 and torch.equal(
        m.t_reached, torch.full((3,), float(t[-1]), dtype=torch.float64)
    )
    for counts in (m.nfe, m.njev, m.nlu, m.n_steps, m.n_rejected):
        assert counts.shape == (3,) and counts.dtype == torch.int64
    assert int(m.n_steps.max()) == res.n_steps and int(m.njev.sum()) == res.njev
    assert torch.equal(m.nlu, m.njev)  # one eigendecomposition per Jacobian, whatever the step sizes
    assert (m.nfe > m.n_steps).all() and int(m.nfe.max()) <= res.nfe  # a batched evaluation counts once
    assert len(set(m.nfe.tolist())) == 3
    assert integrate(problem, SMALL, thetas[0], t, Solver("lsoda")).members is None


def test_a_failure_stops_the_batch_with_every_row_all_members_reached(small):
    """rk45's convention: the budget counts batched evaluations; on failure the rows every member has
    reached are kept, and each member says whether it got to the end."""
    problem, thetas, t = small
    full = integrate(problem, SMALL, thetas, t, Solver("bdf_batch"))
    with pytest.raises(FlowSolverError, match="budget") as info:
        integrate(problem, SMALL, thetas, t, Solver("bdf_batch", max_nfe=full.nfe // 2))
    part = info.value.result
    assert part.status == "solver_failed" and 1 < len(part.t) < len(t)
    assert torch.isfinite(part.theta).all() and torch.equal(part.theta, full.theta[: len(part.t)])
    assert set(part.members.status) == {"solver_failed"} and (part.members.t_reached < float(t[-1])).all()
    assert (part.members.t_reached >= float(part.t[-1])).all()
    with pytest.raises(FlowInterrupted) as info:
        integrate(problem, SMALL, thetas, t, Solver("bdf_batch"), stop=lambda: True)
    assert info.value.result.status == "interrupted" and set(info.value.result.members.status) == {
        "interrupted"
    }


def test_bdf_batch_refuses_events_and_unknown_options(small):
    from _helpers import bad_argument

    from dlnlab.flow import LossLevel

    problem, thetas, t = small
    with bad_argument("events", "takes no events"):
        integrate(problem, SMALL, thetas[0], t, Solver("bdf_batch"), events=[LossLevel(0.1)])
    with bad_argument("options", "allowed: first_step, max_step"):
        Solver("bdf_batch", options={"min_step": 1e-3})
    # at rtol 1e-4 a member takes 20 steps to t = 0.5 uncapped, so the cap is what makes 50 (at the
    # default 1e-9 it took 87 without: a bound that could not fail, docs/mutations.md)
    loose = {"rtol": 1e-4, "atol": 1e-7}
    free = integrate(problem, SMALL, thetas, t[:11], Solver("bdf_batch", **loose))
    capped = integrate(
        problem, SMALL, thetas, t[:11], Solver("bdf_batch", **loose, options={"max_step": 0.01})
    )
    assert int(free.members.n_steps.min()) < 50 <= int(capped.members.n_steps.min())  # steps <= 0.01


@pytest.mark.slow
def test_figure1_at_t_300_against_its_own_lsoda_and_radau(figure1_batch):
    """The plateaus amplify every solver's error at the escapes (LSODA at rtol 1e-9: about 500 rtol from
    a tight solve), so there the check is tolerance proportionality: 1000 x tighter, at least 100 x
    closer to the member's own Radau solve. Away from saddles, within 20 rtol at every output time over
    the 300 time units (measured: 12.5 rtol; within 10 rtol over t <= 5, the test above)."""
    problem, base = figure1_batch.problem, figure1_batch.thetas
    thetas = torch.cat([base, pack(init.gaussian(FIG1, 0.1, seed=9))[None]])
    t = time_grid(300.0, dt=0.1)
    res = {
        r: integrate(problem, FIG1, thetas, t, Solver("bdf_batch", rtol=r, atol=r / 100))
        for r in (1e-6, 1e-9)
    }
    for k in range(len(thetas)):
        radau = {
            r: integrate(problem, FIG1, thetas[k], t, Solver("radau", rtol=r, atol=r / 100)).theta
            for r in res
        }
        dev = {r: float(relative_deviation(res[r].theta[:, k], radau[r]).max()) for r in res}
        lsoda = integrate(problem, FIG1, thetas[k], t, Solver("lsoda")).theta
        assert float(relative_deviation(res[1e-9].theta[:, k], lsoda).max()) <= 1e-5, k
        if k in (1, 2):
            assert dev[1e-9] <= 20 * 1e-9, (k, dev)
        else:
            assert dev[1e-9] <= dev[1e-6] / 100, (k, dev)
