"""dlnlab.flow when things go wrong or are asked to stop: a failed solve keeps the partial trajectory, bad
arguments are refused before any work, a stop ends the solve with every point so far; and the result's
bookkeeping (fields, statistics, progress)."""

from __future__ import annotations

import pytest
import torch
from _helpers import bad_argument

from dlnlab import init
from dlnlab.flow import (
    CHUNK_POINTS,
    DEFAULT_METHOD,
    METHODS,
    SCIPY_STIFF,
    FlowInterrupted,
    FlowSolverError,
    LossLevel,
    Solver,
    integrate,
    time_grid,
)
from dlnlab.network import pack
from dlnlab.problem import RegressionProblem
from tests._helpers import small_flow_case

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small():
    """A small non-whitened, noisy problem on a depth-3 net, from a moderate gaussian init."""
    return small_flow_case()


# ----------------------------------------------------------------------------------------------
# 1. Failures keep the partial trajectory


@pytest.mark.parametrize("method", ["dopri5", "lsoda", "bdf", "rk4", "cvode", "rk45"])
def test_budget_failure_keeps_partial_result(small, method):
    problem, dims, theta0 = small
    t_eval = time_grid(10.0, dt=0.01)  # 1001 points: several torchdiffeq chunks
    assert len(t_eval) > 2 * CHUNK_POINTS
    kw = {"step_size": 0.01} if method == "rk4" else {}
    full = integrate(problem, dims, theta0, t_eval, Solver(method, **kw))
    with pytest.raises(FlowSolverError) as info:
        integrate(problem, dims, theta0, t_eval, Solver(method, max_nfe=full.nfe // 2, **kw))
    err = info.value
    part = err.result
    assert part.status == "solver_failed"
    assert f"{err.t_fail:.6g}" in str(err) and "budget" in str(err)
    assert float(t_eval[0]) < err.t_fail < float(t_eval[-1])
    n = len(part.t)
    assert 1 < n < len(t_eval)
    assert torch.equal(part.t, t_eval[:n]) and part.theta.shape[0] == n
    assert float(part.t[-1]) <= err.t_fail
    torch.testing.assert_close(part.theta, full.theta[:n], rtol=0, atol=1e-12)


def test_tiny_budget_keeps_initial_point(small):
    problem, dims, theta0 = small
    for method in ("dopri5", "bdf"):
        with pytest.raises(FlowSolverError, match="failed at t = ") as info:
            integrate(problem, dims, theta0, time_grid(5.0, dt=0.1), Solver(method, max_nfe=3))
        part = info.value.result
        assert len(part.t) >= 1 and float(part.t[0]) == 0.0
        torch.testing.assert_close(part.theta[0], theta0)


def test_blow_up_is_a_solver_failure():
    # a huge init makes the explicit Euler step unstable: non-finite states
    dims = [2, 2, 2]
    problem = RegressionProblem.teacher([1.0], 2, 2, 4, whiten=True, seed=0)
    theta0 = pack(init.gaussian(dims, 30.0, seed=0))
    with pytest.raises(FlowSolverError, match="non-finite") as info:
        integrate(problem, dims, theta0, time_grid(1.0, dt=0.01), Solver("euler", step_size=0.01))
    assert info.value.result.status == "solver_failed"
    assert torch.isfinite(info.value.result.theta).all()


# ----------------------------------------------------------------------------------------------
# 2. Bad arguments


def test_solver_validation():
    with bad_argument("method", r"unknown method 'dopri6'; allowed: dopri5, dopri8"):
        Solver("dopri6")
    with bad_argument("rtol", r"must be finite and > 0, got -1"):
        Solver(rtol=-1)
    with bad_argument("atol", r"must be finite and > 0"):
        Solver(atol=0.0)
    with bad_argument("step_size", r"required for the fixed-step method rk4"):
        Solver("rk4")
    with bad_argument("step_size", r"must be finite and > 0"):
        Solver("rk4", step_size=-0.1)
    with bad_argument("step_size", r"only the fixed-step methods"):
        Solver("dopri5", step_size=0.1)
    with bad_argument("max_nfe", r"must be a positive integer"):
        Solver(max_nfe=0)
    with bad_argument("options", r"unknown option\(s\) 'stepsize'"):
        Solver("dopri5", options={"stepsize": 0.1})
    with bad_argument("rtol", r"must be >= .* for scipy method bdf"):
        Solver("bdf", rtol=1e-16)
    assert Solver().method == DEFAULT_METHOD and DEFAULT_METHOD in METHODS
    assert Solver(max_nfe=1e6).max_nfe == 1_000_000


def test_solver_from_mapping(small):
    problem, dims, theta0 = small
    res = integrate(problem, dims, theta0, [0.0, 0.5], {"method": "rk4", "step_size": 0.05})
    assert res.method == "rk4" and res.status == "ok" and res.n_steps == 10
    with bad_argument("method", "unknown method 'rk5'"):
        integrate(problem, dims, theta0, [0.0, 0.5], {"method": "rk5"})


def test_integrate_validation(small):
    problem, dims, theta0 = small
    with bad_argument("t_eval", "strictly increasing"):
        integrate(problem, dims, theta0, [0.0, 1.0, 1.0])
    with bad_argument("t_eval", "must be finite"):
        integrate(problem, dims, theta0, [0.0, float("nan")])
    with bad_argument("theta0", r"theta0 has 64 entries, dims \[4, 5, 5, 3\] need p = 60"):
        integrate(problem, dims, torch.zeros(64, dtype=torch.float64), [0.0, 1.0])
    with bad_argument("theta0", "theta0 must be finite"):
        integrate(problem, dims, torch.full_like(theta0, float("inf")), [0.0, 1.0])
    with bad_argument("dims", "do not fit the data"):
        integrate(problem, [5, 5, 3], torch.zeros(40, dtype=torch.float64), [0.0, 1.0])
    batch = torch.stack([theta0, theta0])
    with bad_argument("events", "events are not supported for a batch"):
        integrate(problem, dims, batch, [0.0, 1.0], Solver("dopri5"), events=[LossLevel(0.1)])


def test_time_grid():
    g = time_grid(1.0, dt=0.1)
    assert g.dtype == torch.float64 and len(g) == 11 and float(g[-1]) == pytest.approx(1.0)
    assert len(time_grid(300.0, dt=0.1)) == 3001
    assert len(time_grid(1.05, dt=0.1)) == 11
    lg = time_grid(100.0, n=5, kind="log", t_min=0.01)
    assert lg.tolist() == pytest.approx([0.0, 0.01, 0.1, 1.0, 10.0, 100.0])
    assert time_grid(2.0, n=5).tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    with bad_argument("t_max", "must be finite and > 0"):
        time_grid(0.0, dt=0.1)
    with bad_argument("dt", "must be finite and > 0"):
        time_grid(1.0, dt=-0.1)
    with bad_argument("t_min", "must be finite and > 0"):
        time_grid(1.0, n=3, kind="log", t_min=0.0)
    with bad_argument("n", "n: must be an integer >= 2 for kind='log', got 1"):
        time_grid(10.0, n=1, kind="log", t_min=20.0)  # it gave [0, 20]: t_max missing, t_min past it
    with bad_argument("t_min", "t_min: must be < t_max"):
        time_grid(10.0, n=2, kind="log", t_min=20.0)
    with bad_argument("dt", "exactly one of dt or n"):
        time_grid(1.0)
    with bad_argument("kind", "unknown kind 'cubic'; allowed: uniform, log"):
        time_grid(1.0, dt=0.1, kind="cubic")


# ----------------------------------------------------------------------------------------------
# Result bookkeeping


def test_result_fields_and_progress(small):
    problem, dims, theta0 = small
    calls = []
    t_eval = time_grid(10.0, dt=0.01)
    for method in ("dopri5", "lsoda"):
        calls.clear()
        res = integrate(
            problem, dims, theta0, t_eval, Solver(method), progress=lambda a, b: calls.append((a, b))
        )
        assert res.status == "ok" and res.event is None and res.t_event is None
        assert res.method == method and res.nfe > 0 and res.wall_time_s > 0
        assert torch.equal(res.t, t_eval) and res.theta.dtype == torch.float64
        assert (res.njev > 0) == (method in SCIPY_STIFF)
        assert 1 <= len(calls) <= 110
        assert calls[-1] == (pytest.approx(10.0), 10.0)
        assert all(b == 10.0 for _, b in calls) and [a for a, _ in calls] == sorted(a for a, _ in calls)
    assert torch.get_num_threads() >= 1


@pytest.mark.parametrize("method", ["lsoda", "dopri5", "cvode", "rk45"])
def test_stop_ends_the_solve_with_every_point_so_far(small, method):
    """stop() (the lab's signals) and Ctrl+C end a solve as FlowInterrupted with its outputs kept."""
    problem, dims, theta0 = small
    t_eval = torch.linspace(0.0, 6.0, 601, dtype=torch.float64)
    calls, after = (
        [],
        {"lsoda": 60, "dopri5": 20, "cvode": 60, "rk45": 60}[method],
    )  # steps, chunks, points and every 50 nfe

    def stop():
        calls.append(1)
        return len(calls) > after

    with pytest.raises(FlowInterrupted) as info:
        integrate(problem, dims, theta0, t_eval, Solver(method), stop=stop)
    part = info.value.result
    assert part.status == "interrupted" and 1 < len(part.t) < len(t_eval)
    full = integrate(problem, dims, theta0, t_eval, Solver(method))
    torch.testing.assert_close(part.theta, full.theta[: len(part.t)], rtol=0, atol=0)
