"""Tests of dlnlab.flow: the exact gradient flow with torchdiffeq and scipy's stiff solvers (no mocks); failures,
bad arguments and stops are in test_flow_failures.py."""

from __future__ import annotations

import math

import pytest
import torch

from dlnlab import init
from dlnlab.flow import (
    SCIPY_STIFF,
    Convergence,
    LossLevel,
    Solver,
    integrate,
    time_grid,
    vector_field,
)
from dlnlab.network import Layout, pack, product, unpack
from dlnlab.problem import RegressionProblem
from tests._helpers import small_flow_case

torch.set_num_threads(1)


def _grad_norm2(problem, dims, theta):
    return (problem.gradient_theta(theta, dims) ** 2).sum(-1)


def _loss(problem, dims, theta):
    return problem.loss(unpack(theta, dims))


@pytest.fixture(scope="module")
def small():
    """A small non-whitened, noisy problem on a depth-3 net, from a moderate gaussian init."""
    return small_flow_case()


# ----------------------------------------------------------------------------------------------
# 1. Lyapunov identity and monotone loss


def test_lyapunov_identity(small):
    problem, dims, theta0 = small
    h = 1e-3
    anchors = [0.2, 1.0, 2.5]
    pts = [0.0] + [a + j * h for a in anchors for j in (-2, -1, 0, 1, 2)]
    t_eval = torch.tensor(pts, dtype=torch.float64)
    # step_t makes the solver end a step at every requested time: no interpolation error in the stencil
    solver = Solver("dopri8", rtol=1e-12, atol=1e-14, options={"step_t": t_eval[1:]})
    res = integrate(problem, dims, theta0, t_eval, solver)
    assert res.status == "ok"
    loss = _loss(problem, dims, res.theta)
    for i, _ in enumerate(anchors):
        lm2, lm1, _, lp1, lp2 = loss[1 + 5 * i : 6 + 5 * i]
        dldt = (-lp2 + 8 * lp1 - 8 * lm1 + lm2) / (12 * h)
        expected = -_grad_norm2(problem, dims, res.theta[3 + 5 * i])
        assert float(expected) < 0
        assert float(dldt) == pytest.approx(float(expected), rel=1e-6)


def test_loss_non_increasing(small):
    problem, dims, theta0 = small
    res = integrate(problem, dims, theta0, time_grid(20.0, dt=0.01))
    loss = _loss(problem, dims, res.theta)
    assert float((loss[1:] - loss[:-1]).max()) <= 1e-12
    assert float(loss[-1]) < 0.5 * float(loss[0])


# ----------------------------------------------------------------------------------------------
# 2. Conservation laws


def _hidden_imbalances(weights):
    return [weights[j + 1].mT @ weights[j + 1] - weights[j] @ weights[j].mT for j in range(len(weights) - 1)]


def test_conservation_of_hidden_imbalances():
    dims = [3, 4, 4, 2]
    problem = RegressionProblem.teacher([2.0, 1.0], 3, 2, 10, whiten=False, seed=2)
    theta0 = pack(init.gaussian(dims, 0.6, seed=3))
    # LSODA: drift 8e-13 (dopri5's 9e-14), at a sixth of dopri5's time; the conservation is the flow's
    res = integrate(problem, dims, theta0, time_grid(20.0, dt=0.5), Solver("lsoda", rtol=1e-12, atol=1e-14))
    ws = unpack(res.theta, dims)  # batched over time: W_j (T, d_j, d_{j-1})
    for c in _hidden_imbalances(ws):
        assert float((c - c[0]).abs().max()) <= 1e-9
    boundary = ws[0].mT @ ws[0]  # block 0 of A^T A - A A^T: not conserved
    assert float((boundary - boundary[0]).abs().max()) > 1e-2


# ----------------------------------------------------------------------------------------------
# 3. Aligned balanced flow against the reference mode solution (docs/theory.md section 5)

T_HALF = {2: 1.334339, 3: 3.136267, 4: 5.217433, 5: 6.999005}


def _single_mode_problem(s=3.0):
    return RegressionProblem.teacher([s], 3, 2, 6, whiten=True, seed=0)


@pytest.mark.parametrize("h", [2, 3, 4, 5])
@pytest.mark.parametrize("method", ["lsoda", "dopri5", "cvode"])
def test_aligned_half_times(h, method):
    s = 3.0
    problem = _single_mode_problem(s)
    dims = [3] + [2] * (h - 1) + [2]
    theta0 = pack(init.aligned(dims, problem, u0=1e-3, seed=0))
    # whitened, noise-free, one mode: L = (s - u)^2 / 2, so u = s/2 exactly when L = s^2/8
    res = integrate(
        problem, dims, theta0, time_grid(10.0, dt=0.05), Solver(method, rtol=1e-10, atol=1e-12),
        events=[LossLevel(s * s / 8)],
    )  # fmt: skip
    assert res.status == "event" and res.event == "loss_level"
    assert res.t_event == pytest.approx(T_HALF[h], rel=1e-4)
    u = problem.mode_strength(product(unpack(res.theta_event, dims)))
    assert float(u[0]) == pytest.approx(s / 2, rel=1e-7)
    # the grid route agrees: mode strength crosses s/2 between the grid points bracketing t_event
    u_grid = problem.mode_strength(product(unpack(res.theta, dims)))[:, 0]
    assert float(u_grid[-1]) <= s / 2 and res.t[-1] <= res.t_event


@pytest.mark.parametrize("method", ["bdf", "dopri8"])
def test_mode_event_with_a_plain_function(method):
    """A user event: a plain function of one state returning a float (not batch-aware), named by __name__."""
    s, h = 3.0, 3
    problem = _single_mode_problem(s)
    dims = [3, 2, 2, 2]
    theta0 = pack(init.aligned(dims, problem, u0=1e-3, seed=0))

    def half_mode(problem, dims, theta):
        return s / 2 - float(problem.mode_strength(product(unpack(theta, dims)))[0])

    res = integrate(
        problem, dims, theta0, time_grid(10.0, dt=0.1), Solver(method, rtol=1e-10, atol=1e-12),
        events=[half_mode],
    )  # fmt: skip
    assert res.status == "event" and res.event == "half_mode"
    assert res.t_event == pytest.approx(T_HALF[h], rel=1e-4)
    assert abs(half_mode(problem, dims, res.theta_event)) <= 1e-8


@pytest.mark.parametrize("method", ["lsoda", "rk45", "cvode"])
def test_aligned_h2_closed_form(method):
    s, u0 = 3.0, 1e-3
    problem = _single_mode_problem(s)
    dims = [3, 2, 2]
    theta0 = pack(init.aligned(dims, problem, u0=u0, seed=0))
    t_eval = torch.linspace(0, 1.5, 16, dtype=torch.float64)
    res = integrate(problem, dims, theta0, t_eval, Solver(method, rtol=1e-10, atol=1e-12))
    u = problem.mode_strength(product(unpack(res.theta, dims)))[:, 0]
    exact = s * u0 * torch.exp(2 * s * t_eval) / (s - u0 + u0 * torch.exp(2 * s * t_eval))
    assert float(u[10]) == pytest.approx(0.3557125, rel=1e-6)  # t = 1
    assert float((u - exact).abs().max()) <= 1e-7


# ----------------------------------------------------------------------------------------------
# 4. Stiff methods against dopri5


def test_stiff_methods_agree_with_dopri5():
    dims = [4, 4, 4, 3]
    problem = RegressionProblem.teacher([10.0, 3.0, 1.0], 4, 3, 8, whiten=True, seed=4)
    theta0 = pack(init.gaussian(dims, 0.3, seed=5))
    t_eval = time_grid(8.0, dt=0.1)
    ref = integrate(problem, dims, theta0, t_eval, Solver("dopri5", rtol=1e-11, atol=1e-13))
    assert float(_loss(problem, dims, ref.theta[-1])) < 1e-6  # converged through the stiff phase
    for method in SCIPY_STIFF:
        res = integrate(problem, dims, theta0, t_eval, Solver(method, rtol=1e-10, atol=1e-12))
        assert res.status == "ok" and res.n_steps > 0
        assert res.njev > 0 or method == "lsoda"  # LSODA may stay in its non-stiff (Adams) mode
        err = float((res.theta - ref.theta).norm(dim=-1).max())
        assert err <= 1e-7, (method, err)


def test_fixed_step_methods_run(small):
    problem, dims, theta0 = small
    t_eval = time_grid(2.0, dt=0.1)
    ref = integrate(problem, dims, theta0, t_eval, Solver("dopri5", rtol=1e-10, atol=1e-12))
    for method, step, tol, options in (
        ("rk4", 0.01, 1e-5, {}),
        ("explicit_adams", 0.005, 1e-4, {}),
        ("implicit_adams", 0.002, 1e-6, {}),
        ("midpoint", 0.01, 1e-2, {}),
        ("euler", 0.01, 5e-2, {}),
    ):
        res = integrate(problem, dims, theta0, t_eval, Solver(method, step_size=step, options=options))
        assert res.status == "ok" and res.n_steps >= 2.0 / step
        assert float((res.theta - ref.theta).abs().max()) <= tol, method


# ----------------------------------------------------------------------------------------------
# 5. Events


@pytest.mark.parametrize("method", ["dopri5", "lsoda", "bdf", "cvode"])
def test_loss_level_event(small, method):
    problem, dims, theta0 = small
    level = 0.5 * float(_loss(problem, dims, theta0))
    t_eval = time_grid(30.0, dt=0.1)
    res = integrate(problem, dims, theta0, t_eval, Solver(method), events=[LossLevel(level)])
    assert res.status == "event" and res.event == "loss_level"
    assert float(_loss(problem, dims, res.theta_event)) == pytest.approx(level, abs=1e-8)
    assert 0 < len(res.t) < len(t_eval)
    assert torch.equal(res.t, t_eval[: len(res.t)])
    assert res.theta.shape == (len(res.t), len(theta0))
    assert float(res.t[-1]) <= res.t_event < float(t_eval[len(res.t)])
    assert float(_loss(problem, dims, res.theta[-1])) > level


@pytest.mark.parametrize("method", ["lsoda", "cvode", "dopri5"])
def test_event_already_true_at_start(small, method):
    problem, dims, theta0 = small
    res = integrate(problem, dims, theta0, [0.0, 1.0], Solver(method), events=[LossLevel(1e6)])
    assert res.status == "event" and res.t_event == 0.0 and len(res.t) == 1 and res.nfe == 0


@pytest.mark.parametrize("method", ["lsoda", "cvode", "rk45", "radau_batch"])
def test_a_single_output_time_is_the_initial_state(small, method):
    problem, dims, theta0 = small
    res = integrate(problem, dims, theta0, [0.0], Solver(method))
    assert res.status == "ok" and torch.equal(res.theta, theta0[None]) and res.nfe == 0


@pytest.mark.parametrize("method", ["lsoda", "dopri5"])
def test_convergence_event(method):
    # dims [4, 2, 3]: r_max = 2 < 3 data modes, so the floor is L*_2 > L_min
    dims = [4, 2, 3]
    problem = RegressionProblem.teacher([3.0, 2.0, 1.0], 4, 3, 12, whiten=True, seed=6)
    theta0 = pack(init.gaussian(dims, 0.5, seed=7))
    event = Convergence(grad_tol=1e-6, loss_tol=1e-9)
    floor = float(problem.plateau_levels(2)[-1])
    assert floor == pytest.approx(0.5, rel=1e-10)
    res = integrate(problem, dims, theta0, time_grid(200.0, dt=0.5), Solver(method), events=[event])
    assert res.status == "event" and res.event == "convergence"
    g = math.sqrt(float(_grad_norm2(problem, dims, res.theta_event)))
    gap = float(_loss(problem, dims, res.theta_event)) - floor
    assert g <= 1e-6 * (1 + 1e-4) and gap <= 1e-9 * (1 + 1e-4)
    assert max(g - 1e-6, gap - 1e-9) >= -1e-9  # located at the crossing, not long after
    assert float(res.t[-1]) <= res.t_event


def test_convergence_does_not_fire_at_a_saddle_whose_gradient_vanishes():
    """At the exact rank-1 critical point of a net with r_max = 2 the gradient is zero, but the loss is
    L*_1, above the floor L*_2: not converged; at the rank-2 one (the global minimum), converged."""
    dims = [4, 2, 3]
    problem = RegressionProblem.teacher([3.0, 2.0, 1.0], 4, 3, 12, whiten=True, seed=6)
    event = Convergence(grad_tol=1e-6, loss_tol=1e-9)
    saddle = pack(init.aligned(dims, problem, [3.0, 0.0]))
    minimum = pack(init.aligned(dims, problem, [3.0, 2.0]))
    assert math.sqrt(float(_grad_norm2(problem, dims, saddle))) < 1e-12
    assert float(_loss(problem, dims, saddle)) == pytest.approx(float(problem.plateau_levels(2)[1]))
    assert float(event(problem, dims, saddle)) > 1.0  # L*_1 - L*_2 = 2 (the second mode's s^2 / 2)
    assert float(event(problem, dims, minimum)) <= 0.0


# ----------------------------------------------------------------------------------------------
# 6. Batches


def test_batched_dopri5_equals_separate_solves(small):
    problem, dims, _ = small
    thetas = torch.stack([pack(init.gaussian(dims, sc, seed=k)) for k, sc in enumerate((0.2, 0.5, 0.8))])
    # t <= 2: the largest gap (2e-10) is reached before t = 1 and stays it to t = 5 (measured; 2.7 -> 1.6 CPU s)
    t_eval = time_grid(2.0, dt=0.1)
    solver = Solver("dopri5", rtol=1e-10, atol=1e-12)
    res = integrate(problem, dims, thetas, t_eval, solver)
    assert res.theta.shape == (len(t_eval), 3, thetas.shape[1])
    for k in range(3):
        one = integrate(problem, dims, thetas[k], t_eval, solver)
        assert float((res.theta[:, k] - one.theta).abs().max()) <= 1e-8


def test_vector_field_is_minus_gradient_and_batch_aware(small):
    problem, dims, theta0 = small
    f = vector_field(problem, Layout(tuple(dims)))
    batch = torch.stack([theta0, 2 * theta0])
    out = f(torch.tensor(0.0), batch)
    torch.testing.assert_close(out[0], -problem.gradient_theta(theta0, dims))
    torch.testing.assert_close(out[1], -problem.gradient_theta(2 * theta0, dims))
