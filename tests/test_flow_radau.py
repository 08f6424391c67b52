"""radau_batch: the stiff flow of a batch (B, p) by Radau IIA (order 5), each member with its own steps,
Newton iteration and Jacobian. Every member within 10 rtol of its own tight solve, whatever the rest of
the batch; with scipy's settings, scipy's Radau member for member."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import torch

import dlnlab.flow._radau as radau
from dlnlab import init
from dlnlab.flow import FlowInterrupted, FlowSolverError, Solver, integrate, time_grid, vector_field
from dlnlab.network import pack
from tests._helpers import FIG1, LINEAR_DIMS, SMALL, figure1_problem, linear_flow_problem

# its tests on one xdist worker (--dist loadgroup) with tests/test_flow_bdf.py: the session's tight solves of
# their members (tests/conftest.py: small_batch, figure1_batch) are made once
pytestmark = pytest.mark.xdist_group("stiff_batch")

torch.set_num_threads(1)


@pytest.fixture
def small(small_batch):
    """Gaussian inputs with noise (Sxx != I); three members at init scales 0.2, 0.5, 0.8; t <= 3."""
    b = small_batch
    return b.problem, b.thetas, b.t, b.tight


@pytest.fixture
def figure1(figure1_batch):
    """The Figure 1 net over t <= 5; members at scales 0.1 (on the first plateau), 0.5 and 1."""
    b = figure1_batch
    return b.problem, b.thetas, b.t, b.tight


# the small net's solves at the default rtol: about twice what they take at rtol 1e-9 (1,492 evaluations),
# so that a broken step-size control fails a test rather than hanging the suite (docs/mutations.md)
SMALL_BUDGET = 3000


def relative_deviation(a: torch.Tensor, b: torch.Tensor) -> float:
    """max over the output times of ||a(t) - b(t)|| / ||b(t)||."""
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


@pytest.mark.parametrize("rtol", [1e-6, 1e-9])
def test_each_member_is_within_ten_rtol_of_its_own_tight_solve(small, rtol):
    """The asked rtol is the trajectory's accuracy (the controller's own tolerance is RADAU5's
    transformation of it: 30 rtol at 1e-9, 3 rtol at 1e-6), at every output time."""
    problem, thetas, t, tight = small
    # a budget of twice the evaluations it takes at 1e-9 (1,492): a broken error estimate or Newton
    # system fails here, where it would grind on steps of 1e-6 without one (docs/mutations.md)
    solver = Solver("radau_batch", rtol=rtol, atol=rtol / 100, max_nfe=3000)
    res = integrate(problem, SMALL, thetas, t, solver)
    assert res.status == "ok" and res.theta.shape == (len(t), 3, thetas.shape[1])
    assert torch.equal(res.theta[0], thetas)
    for k in range(3):
        assert relative_deviation(res.theta[:, k], tight[k]) <= 10 * rtol, k


@pytest.mark.parametrize("rtol", [1e-7, 1e-9])
def test_figure1_members_are_within_ten_rtol_of_their_own_tight_solve(figure1, rtol):
    problem, thetas, t, tight = figure1
    solver = Solver("radau_batch", rtol=rtol, atol=rtol / 100, max_nfe=5000)  # 2,495 at 1e-9
    res = integrate(problem, FIG1, thetas, t, solver)
    steps = res.members.n_steps
    assert steps[0] != steps[1] != steps[2]  # each member its own steps
    for k in range(3):
        assert relative_deviation(res.theta[:, k], tight[k]) <= 10 * rtol, k


def test_gd_modified_flow_too(small_batch):
    """The modified flow's Jacobian -(H + (eta/2) H^2) is symmetric too (its third-derivative term left
    out, which only slows the Newton iteration)."""
    b = small_batch
    res = integrate(
        b.problem, SMALL, b.thetas, b.t[:21], Solver("radau_batch", max_nfe=SMALL_BUDGET), modified_lr=0.01
    )
    for k in range(3):
        assert relative_deviation(res.theta[:, k], b.tight_modified[k]) <= 10 * 1e-9, k


def _scipy_settings(monkeypatch, rtol: float) -> None:
    """scipy's Radau: no tolerance transformation, its Newton tolerance, a new Jacobian after a step whose
    iteration took 3 or more corrections at a rate above 1e-3, the step kept for factors below 1.2, two
    corrections at least, every eigenpair in the solve."""
    monkeypatch.setattr(radau, "controller_tolerances", lambda r, a: (r, a))
    monkeypatch.setattr(
        radau, "newton_tolerance", lambda r, c: max(10 * np.finfo(float).eps / r, min(0.03, r**0.5))
    )
    monkeypatch.setattr(radau, "JAC_RATE", 1e-3)
    monkeypatch.setattr(radau, "HOLD", (0.0, 1.2))
    monkeypatch.setattr(radau, "EARLY", False)
    monkeypatch.setattr(radau, "NEGLECT", 0.0)


def _against_scipys_radau(problem, dims, thetas, t, rtol: float, atol: float) -> None:
    field = vector_field(problem, dims)
    refs = [
        scipy.integrate.solve_ivp(
            lambda tt, y: field(tt, torch.from_numpy(y)).numpy(),
            (0.0, float(t[-1])),
            theta.numpy(),
            method="Radau",
            t_eval=t.numpy(),
            rtol=rtol,
            atol=atol,
            jac=lambda tt, y: field.jacobian(torch.from_numpy(y)).numpy(),
        )  # fmt: skip
        for theta in thetas
    ]
    budget = 3 * max(ref.nfev for ref in refs)  # a broken step control fails here rather than hanging
    res = integrate(problem, dims, thetas, t, Solver("radau_batch", rtol=rtol, atol=atol, max_nfe=budget))
    for k, ref in enumerate(refs):
        assert abs(int(res.members.nfe[k]) - ref.nfev) <= 0.01 * ref.nfev, (int(res.members.nfe[k]), ref.nfev)
        assert abs(int(res.members.njev[k]) - ref.njev) <= 1
        assert np.abs(res.theta[:, k].numpy() - ref.y.T).max() <= 1e-12 * np.abs(ref.y).max()


def test_with_scipys_settings_it_is_scipys_radau(small, monkeypatch):
    """The vectorised algorithm is scipy's Radau: the same states to rounding and the same work to within
    a few evaluations (a 1e-15 change of theta0 moves scipy's own second step by 4e-8: the error
    estimate cancels digits, so a rare Jacobian decision can flip)."""
    problem, thetas, t, _ = small
    _scipy_settings(monkeypatch, 1e-9)
    _against_scipys_radau(problem, SMALL, thetas, t, 1e-9, 1e-11)


def test_with_scipys_settings_it_is_scipys_radau_after_rejected_steps(monkeypatch):
    """The stiff linear flow (tests/_helpers.py) rejects steps (5, 0 and 2 of its members' 201, 144 and
    162 over t <= 0.5): after a rejection the controller remembers the step proposed before it (scipy's
    h_abs_old), not the step taken; remembering the latter passed the small net's test above, and here
    moves the states off scipy's (docs/mutations.md, RA19)."""
    problem = linear_flow_problem()
    thetas = torch.randn(3, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    _scipy_settings(monkeypatch, 1e-8)
    _against_scipys_radau(problem, LINEAR_DIMS, thetas, time_grid(0.5, dt=0.1), 1e-8, 1e-10)


def test_a_member_does_not_depend_on_the_rest_of_the_batch(small):
    """Equal to rounding, not bitwise: the float32 solve's width (the eigenpairs the neediest member
    uses) and the batch's evaluations in groups move the rounding of the others."""
    problem, thetas, t, _ = small
    together = integrate(problem, SMALL, thetas, t, Solver("radau_batch", max_nfe=SMALL_BUDGET)).theta
    reversed_ = integrate(
        problem, SMALL, thetas.flip(0), t, Solver("radau_batch", max_nfe=SMALL_BUDGET)
    ).theta.flip(1)
    alone = integrate(problem, SMALL, thetas[1], t, Solver("radau_batch", max_nfe=SMALL_BUDGET)).theta
    alone_batch = integrate(
        problem, SMALL, thetas[1:2], t, Solver("radau_batch", max_nfe=SMALL_BUDGET)
    ).theta[:, 0]
    assert alone.shape == (len(t), thetas.shape[1]) and torch.equal(alone, alone_batch)
    assert relative_deviation(together[:, 1], alone) <= 1e-12
    assert relative_deviation(together.flatten(1), reversed_.flatten(1)) <= 1e-12


def test_each_member_has_its_status_and_counts(small):
    problem, thetas, t, _ = small
    res = integrate(problem, SMALL, thetas, t, Solver("radau_batch", max_nfe=SMALL_BUDGET))
    m = res.members
    assert m.status == ("ok",) * 3
    assert torch.equal(m.t_reached, torch.full((3,), float(t[-1]), dtype=torch.float64))
    for counts in (m.nfe, m.njev, m.nlu, m.n_steps, m.n_rejected):
        assert counts.shape == (3,) and counts.dtype == torch.int64
    assert int(m.n_steps.max()) == res.n_steps and int(m.njev.sum()) == res.njev
    assert torch.equal(m.nlu, m.njev)  # one eigendecomposition per Jacobian, whatever the step sizes
    assert (m.nfe > 4 * m.n_steps).all()  # three stages per Newton iteration, and f at the step's end
    assert int(m.nfe.max()) <= 3 * res.nfe  # a batched evaluation counts once, with up to 3 stages each
    assert len(set(m.nfe.tolist())) == 3


def test_a_failure_stops_the_batch_with_every_row_all_members_reached(small):
    """rk45's convention: the budget counts batched evaluations; on failure the rows every member has
    reached are kept, and each member says whether it got to the end."""
    problem, thetas, t, _ = small
    full = integrate(problem, SMALL, thetas, t, Solver("radau_batch", max_nfe=SMALL_BUDGET))
    with pytest.raises(FlowSolverError, match="budget") as info:
        integrate(problem, SMALL, thetas, t, Solver("radau_batch", max_nfe=full.nfe // 2))
    part = info.value.result
    assert part.status == "solver_failed" and 1 < len(part.t) < len(t)
    assert torch.isfinite(part.theta).all() and torch.equal(part.theta, full.theta[: len(part.t)])
    assert set(part.members.status) == {"solver_failed"} and (part.members.t_reached < float(t[-1])).all()
    assert (part.members.t_reached >= float(part.t[-1])).all()
    with pytest.raises(FlowInterrupted) as info:
        integrate(problem, SMALL, thetas, t, Solver("radau_batch", max_nfe=SMALL_BUDGET), stop=lambda: True)
    assert info.value.result.status == "interrupted"
    assert set(info.value.result.members.status) == {"interrupted"}


def test_radau_batch_refuses_events_and_unknown_options(small):
    from _helpers import bad_argument

    from dlnlab.flow import LossLevel

    problem, thetas, t, _ = small
    with bad_argument("events", "takes no events"):
        integrate(problem, SMALL, thetas[0], t, Solver("radau_batch"), events=[LossLevel(0.1)])
    with bad_argument("options", "allowed: first_step, max_step"):
        Solver("radau_batch", options={"min_step": 1e-3})
    capped = integrate(
        problem, SMALL, thetas, t[:5], Solver("radau_batch", max_nfe=SMALL_BUDGET, options={"max_step": 0.01})
    )
    assert int(capped.members.n_steps.min()) >= 20  # t = 0.2 in steps of at most 0.01


@pytest.mark.slow
def test_figure1_at_t_300_within_ten_rtol_of_its_own_tight_radau_solve():
    """Through the plateaus, where every solver's local errors are amplified at the escapes (LSODA at
    the default rtol 1e-9 ends about 500 rtol from a tight solve): four Figure 1 members at scale 0.1
    and one at 1, each against its own scipy Radau solve at rtol 1e-12 (measured: 1.4 - 2.8 rtol)."""
    problem = figure1_problem()
    thetas = torch.stack(
        [
            pack(init.gaussian(FIG1, sc, seed=s))
            for s, sc in ((1, 0.1), (2, 0.1), (3, 0.1), (4, 0.1), (5, 1.0))
        ]
    )
    t = time_grid(300.0, dt=0.1)
    res = integrate(problem, FIG1, thetas, t, Solver("radau_batch"))
    for k in range(len(thetas)):
        ref = integrate(problem, FIG1, thetas[k], t, Solver("radau", rtol=1e-12, atol=1e-14)).theta
        assert relative_deviation(res.theta[:, k], ref) <= 10 * 1e-9, k
