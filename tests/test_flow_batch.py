"""Batches of initial states (B, p): every member under its own error control, equal to its own solve."""

from __future__ import annotations

import itertools

import pytest
import torch

from dlnlab import init
from dlnlab.flow import FlowSolverError, Solver, integrate, time_grid
from dlnlab.flow._batch import batch_solver, member_norm
from dlnlab.network import pack, unpack
from tests._helpers import noisy_problem

# its tests on one xdist worker (--dist loadgroup): its module fixtures (solves) are made once per worker
pytestmark = pytest.mark.xdist_group("test_flow_batch")

torch.set_num_threads(1)
DIMS = [4, 5, 5, 3]


@pytest.fixture(scope="module")
def batch():
    problem = noisy_problem()
    thetas = torch.stack([pack(init.gaussian(DIMS, sc, seed=k)) for k, sc in enumerate((0.2, 0.5, 0.8))])
    return problem, thetas, time_grid(3.0, dt=0.05)


# the tolerance test's grid: t <= 1.5 of the batch's 3, where every method's largest error (batched and
# alone) already is: the same ratios as over t <= 3 (and a batch at 100 times rtol caught by each method
# as there), at half the solves' cost
TOL_POINTS = 31


@pytest.fixture(scope="module")
def reference(batch):
    problem, thetas, t = batch
    tight = Solver("lsoda", rtol=1e-12, atol=1e-14)
    return torch.stack([integrate(problem, DIMS, th, t[:TOL_POINTS], tight).theta for th in thetas], dim=1)


def test_the_member_norm_is_the_largest_member_rms():
    err = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    assert float(member_norm(err)) == pytest.approx(1.5)  # member 1: sqrt(9 / 4); a batch RMS: sqrt(13 / 8)
    assert float(member_norm(torch.tensor([3.0, 4.0]))) == pytest.approx((12.5) ** 0.5)
    assert batch_solver(Solver("bosh3")).options["norm"] is member_norm
    assert batch_solver(Solver("lsoda")) == Solver("lsoda")


@pytest.mark.parametrize("method", ["dopri5", "dopri8", "lsoda", "cvode", "rk45", "bdf_batch", "radau_batch"])
def test_each_member_is_within_tolerance_of_its_exact_flow(batch, reference, method):
    problem, thetas, t = batch
    t = t[:TOL_POINTS]
    # a budget about 2.5 times the most any method takes here (1,613 evaluations, lsoda's batch): a broken
    # step-size control fails this test rather than hanging the suite (docs/mutations.md)
    solver = Solver(method, rtol=1e-9, atol=1e-11, max_nfe=4000)
    res = integrate(problem, DIMS, thetas, t, solver)
    assert res.status == "ok" and res.theta.shape == (len(t), 3, thetas.shape[1])
    for k in range(3):
        one = integrate(problem, DIMS, thetas[k], t, solver)
        alone = float((one.theta - reference[:, k]).abs().max())
        batched = float((res.theta[:, k] - reference[:, k]).abs().max())
        # no member is looser in the batch than alone (a batch-wide RMS would allow sqrt(B) more)
        assert batched <= max(3 * alone, 1e-8), (k, batched, alone)
        if method in ("lsoda", "cvode"):  # member by member: the very same solve
            assert torch.equal(res.theta[:, k], one.theta)


def test_a_member_that_fails_ends_the_batch_with_the_rows_every_member_reached(batch):
    """As a batch solved at once or in chunks: the rows all members reached (here the initial row
    alone, as member 2 never started), no NaN; ``members`` says how far each got."""
    problem, thetas, t = batch
    first = integrate(problem, DIMS, thetas[0], t, Solver("lsoda"))
    with pytest.raises(FlowSolverError, match="member 1") as info:
        integrate(problem, DIMS, thetas, t, Solver("lsoda", max_nfe=first.nfe + 5))
    part = info.value.result
    assert part.status == "solver_failed" and len(part.t) == 1 and torch.equal(part.theta[0], thetas)
    m = part.members
    assert m.status[:3] == ("ok", "solver_failed", "solver_failed") and len(m.status) == len(thetas)
    assert float(m.t_reached[0]) == float(t[-1]) and 0 < float(m.t_reached[1]) < float(t[-1])
    assert float(m.t_reached[2]) == float(t[0]) and m.nfe[0] == first.nfe and m.nfe[1] > 0 == m.nfe[2]
    assert m.nlu.tolist() == [-1] * len(thetas)  # not reported by scipy's solves here


def test_torchode_budget_and_progress(batch):
    """As the other batched methods: out of its budget, the batch keeps the rows every member reached (it
    kept the chunk's start row alone), equal to the unbroken solve's, and ``members`` says how far each
    member got and what it took."""
    problem, thetas, t = batch
    seen = []
    res = integrate(problem, DIMS, thetas, t, Solver("dopri5"), progress=lambda a, b: seen.append(a))
    assert "torchode" in res.method and seen[-1] == pytest.approx(float(t[-1]))
    m = res.members
    assert m.status == ("ok",) * 3 and torch.equal(
        m.t_reached, torch.full((3,), float(t[-1]), dtype=torch.float64)
    )
    assert int(m.n_steps.max()) == res.n_steps and len(set(m.n_steps.tolist())) == 3  # steps of its own
    taken = m.n_steps + m.n_rejected  # the evaluations the rhs counted: 2 to start, 6 per step (one chunk)
    assert res.nfe == 2 + 6 * int(taken.max()) and torch.equal(m.nfe, 2 + 6 * taken)
    budget = res.nfe // 2
    with pytest.raises(FlowSolverError, match="budget") as info:
        integrate(problem, DIMS, thetas, t, Solver("dopri5", max_nfe=budget))
    part = info.value.result
    assert part.status == "solver_failed" and 1 < len(part.t) < len(t) and part.nfe <= budget
    assert torch.equal(part.theta, res.theta[: len(part.t)])  # the same steps until the budget stopped them
    assert f"output kept up to t = {float(part.t[-1]):.6g}" in str(info.value)
    p = part.members
    assert "solver_failed" in p.status and (p.t_reached >= float(part.t[-1])).all()
    assert float(p.t_reached.min()) == float(part.t[-1]) and (p.t_reached < float(t[-1])).any()
    assert all((s == "ok") == (float(r) == float(t[-1])) for s, r in zip(p.status, p.t_reached))
    exact = integrate(problem, DIMS, thetas, t, Solver("dopri5", max_nfe=res.nfe))  # a budget just enough
    assert exact.status == "ok" and exact.nfe == res.nfe and torch.equal(exact.theta, res.theta)


def test_rk45_takes_the_same_steps_as_scipys_rk45(batch):
    """dlnlab's rk45 is scipy's RK45 (same tableau, controller and initial step) with another memory
    layout: the same number of evaluations and the same states to rounding, alone and in a batch."""
    import numpy as np
    import scipy.integrate

    problem, thetas, t = batch
    ours = integrate(problem, DIMS, thetas[1], t, Solver("rk45", rtol=1e-8, atol=1e-10))
    nfe = [0]

    def field(tt, y):
        nfe[0] += 1
        return (-problem.gradient_theta(torch.from_numpy(y), DIMS)).numpy()

    ref = scipy.integrate.solve_ivp(
        field, (0.0, float(t[-1])), thetas[1].numpy(), method="RK45", t_eval=t.numpy(), rtol=1e-8, atol=1e-10
    )
    assert abs(ours.nfe - nfe[0]) <= 2, (ours.nfe, nfe[0])
    assert np.abs(ours.theta.numpy() - ref.y.T).max() <= 1e-9
    # in a batch each member takes its own initial step and steps: member 1 is its own solve to rounding
    # (1e-14 measured; another initial step moves it by the tolerance, docs/mutations.md)
    together = integrate(problem, DIMS, thetas, t, Solver("rk45", rtol=1e-8, atol=1e-10))
    assert float((together.theta[:, 1] - ours.theta).abs().max()) <= 1e-13


def test_rk45_takes_no_events(batch):
    from _helpers import bad_argument

    from dlnlab.flow import LossLevel

    problem, thetas, t = batch
    with bad_argument("events", "takes no events"):
        integrate(problem, DIMS, thetas[0], t, Solver("rk45"), events=[LossLevel(0.1)])


@pytest.mark.parametrize("method", ["rk45", "lsoda", "dopri5", "cvode", "bdf_batch", "radau_batch"])
def test_on_output_gives_every_row_once_in_order_while_solving(batch, method):
    """on_output: the rows, concatenated, are the trajectory; rk45, cvode and the batched stiff solvers hand them out as they go
    (more than one call), so a consumer works while the solve goes on; solve_ivp and torchdiffeq at the
    end."""
    problem, thetas, _ = batch
    t = time_grid(1.0, dt=0.1)
    calls = []
    res = integrate(
        problem,
        DIMS,
        thetas[0],
        t,
        Solver(method, max_nfe=4000),  # a broken step control fails, not hangs
        on_output=lambda i, rows: calls.append((i, rows.clone())),
    )
    assert [i for i, _ in calls] == list(itertools.accumulate([0] + [len(r) for _, r in calls[:-1]]))
    torch.testing.assert_close(torch.cat([r for _, r in calls]), res.theta, rtol=0, atol=0)
    assert (
        len(calls) > 2 if method in ("rk45", "cvode", "bdf_batch", "radau_batch") else len(calls) == 2
    )  # row 0, then the rest
    # a batch solved member by member reports at the end, once; a failure reports what it kept
    calls.clear()
    res = integrate(
        problem, DIMS, thetas, t, Solver("lsoda"), on_output=lambda i, rows: calls.append((i, rows))
    )
    assert len(calls) == 1 and torch.equal(calls[0][1], res.theta)
    calls.clear()
    with pytest.raises(FlowSolverError) as err:
        integrate(
            problem,
            DIMS,
            thetas[0],
            t,
            Solver("rk45", max_nfe=30),
            on_output=lambda i, r: calls.append((i, r)),
        )
    kept = err.value.result.theta
    assert 1 <= len(kept) < len(t) and torch.equal(torch.cat([r for _, r in calls]), kept)


def test_on_output_is_refused_with_events(batch):
    from dlnlab.errors import ArgumentError

    problem, thetas, _ = batch
    with pytest.raises(ArgumentError, match="on_output"):
        integrate(problem, DIMS, thetas[0], [0.0, 1.0], Solver("dopri5"), events=[lambda p, d, th: 1.0],
                  on_output=lambda i, r: None)  # fmt: skip


def test_a_stack_of_the_wrong_width_is_refused_at_the_boundary_and_the_fields_gradient_is_the_checked_one():
    """The stack's gradient (numpy, by slices of theta) cut a wider stack silently and failed inside numpy
    on a narrower one: gradient_theta refuses both, and an ``out`` of another shape, in one line naming
    the shapes; integrate refuses such a theta0 once, where the solve starts; a field refuses dims that
    do not fit the data when it is made. What the fields evaluate unchecked (field_gradient) is the
    checked gradient to the bit, and each member's own gradient (one theta: unpack's views, not the
    stack's numpy slices) to rounding."""
    from _helpers import bad_argument

    from dlnlab.flow import GradientFlow, vector_field

    dims = [4, 5, 5, 3]  # p = 60
    problem = noisy_problem()
    thetas = torch.stack([pack(init.gaussian(dims, 0.4, seed=k)) for k in range(3)])
    for wrong in (torch.cat([thetas, thetas[:, :1]], dim=1), thetas[:, :59]):
        w = wrong.shape[1]
        with bad_argument("theta", rf"^theta \(3, {w}\): dims \[4, 5, 5, 3\] need a stack \(B, 60\)$"):
            problem.gradient_theta(wrong, dims)
        with bad_argument("theta0", rf"theta0 has {w} entries in its last dimension \(shape \(3, {w}\)\)"):
            integrate(problem, dims, wrong, time_grid(1.0, n=3), "rk45")
    with bad_argument(
        "theta", r"^theta \(3, 60\) into out \(3, 61\): .*\(B, 60\), and out of the shape of theta$"
    ):
        problem.gradient_theta(thetas, dims, out=torch.empty(3, 61, dtype=torch.float64))
    for wrong in (thetas[0, :59], torch.cat([thetas[0], thetas[0, :1]])):  # one theta: flat_blocks' views
        with bad_argument("theta", rf"^theta \({wrong.numel()},\): dims \[4, 5, 5, 3\] need \(60,\)$"):
            problem.gradient_theta(wrong, dims)
    with bad_argument("theta", r"^theta \(60,\) into out \(61,\): dims \[4, 5, 5, 3\] need \(60,\), and out"):
        problem.gradient_theta(thetas[0], dims, out=torch.empty(61, dtype=torch.float64))
    with bad_argument("dims", r"dims \[5, 5, 3\] do not fit the data \(d_x = 4, d_y = 3\)"):
        GradientFlow(problem, [5, 5, 3])
    checked = problem.gradient_theta(thetas, dims, out=torch.empty_like(thetas), scale=-1.0)
    field = vector_field(problem, dims)
    assert torch.equal(field.into(thetas, torch.full_like(thetas, float("nan"))), checked)
    assert torch.equal(field(0.0, thetas), checked)
    for k in range(3):
        alone = pack(problem.gradient(unpack(thetas[k], dims)))
        torch.testing.assert_close(checked[k], -alone, rtol=1e-13, atol=1e-15)
