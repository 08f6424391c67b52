"""The batched solvers against a flow solved in closed form (tests/_helpers.py: ``linear_flow_problem``):
a one-layer net on data with Sxx = diag(100, 3, 0.1), whose gradient flow dW/dt = -(W - P_ls) Sxx is
linear and stiff, W(t) = P_ls + (W0 - P_ls) exp(-Sxx t). Each solve runs under an evaluation budget of
about three times what it needs: a broken error estimate, tableau or Newton system then fails here in
a fraction of a second, where the accuracy tests against tight solves (no budget) grind on steps of
1e-6 for minutes (docs/mutations.md, "The solvers and the edge of stability")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlnlab.flow import FlowSolverError, Solver, integrate, time_grid
from dlnlab.flow._radau_linalg import MU_COMPLEX, MU_REAL, EigenbasisSolve
from tests._helpers import LINEAR_DIMS, linear_flow_exact, linear_flow_problem

torch.set_num_threads(1)


def _members() -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return torch.randn(3, LINEAR_DIMS[0] * LINEAR_DIMS[1], generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("method, budget", [("radau_batch", 1200), ("bdf_batch", 1000), ("rk45", 2500)])
def test_each_member_follows_the_linear_flows_exponential(method, budget):
    """Within 10 rtol of the closed form at every output time (measured: radau_batch 3, bdf_batch 6,
    rk45 1 rtol), in 382, 294 and 752 batched evaluations."""
    problem, thetas = linear_flow_problem(), _members()
    assert torch.allclose(problem.Sxx, torch.diag(torch.tensor([100.0, 3.0, 0.1], dtype=torch.float64)))
    t, rtol = time_grid(2.0, dt=0.1), 1e-8
    res = integrate(problem, LINEAR_DIMS, thetas, t, Solver(method, rtol=rtol, atol=1e-10, max_nfe=budget))
    exact = linear_flow_exact(problem, thetas, t)
    assert res.status == "ok"
    assert float(((res.theta - exact).norm(dim=-1) / exact.norm(dim=-1)).max()) <= 10 * rtol


@pytest.mark.parametrize("method", ["radau_batch", "bdf_batch", "dopri5"])
def test_a_member_that_finished_before_the_batch_failed_is_ok(method):
    """A member started at the minimum (f = 0: its steps grow tenfold each) reaches t_end long before
    the other; out of budget, the batch fails, and ``members`` says the first got there: ok, t_end."""
    problem = linear_flow_problem()
    thetas = torch.stack([problem.P_ls.reshape(-1), _members()[0]])
    t = time_grid(2.0, dt=0.1)
    full = integrate(problem, LINEAR_DIMS, thetas, t, Solver(method, rtol=1e-8, atol=1e-10, max_nfe=3000))
    with pytest.raises(FlowSolverError, match="budget") as info:
        integrate(
            problem, LINEAR_DIMS, thetas, t, Solver(method, rtol=1e-8, atol=1e-10, max_nfe=full.nfe // 2)
        )
    m = info.value.result.members
    assert m.status == ("ok", "solver_failed")
    assert float(m.t_reached[0]) == float(t[-1]) > float(m.t_reached[1])


def _symmetric_jacobian(p: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """J = Q diag(lam) Q^T with |lam| from 1e3 to 1e-3 (a few positive: a saddle's), and lam, qt as the
    batched solvers keep them (by decreasing |lam|, eigenvectors as rows, float32)."""
    rng = np.random.default_rng(seed)
    lam = -np.logspace(3, -3, p) * np.where(np.arange(p) % 5 == 2, -1.0, 1.0)
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    return q @ np.diag(lam) @ q.T, lam, q.T.astype(np.float32)


@pytest.mark.parametrize("neglect", [0.0, 0.01])
def test_radaus_eigenbasis_solve_is_the_dense_solve_of_both_systems(neglect):
    """(mu / h I - J) x = r for the real mu and the complex one, at step sizes 1e-3 .. 10, against numpy's
    dense (complex) solve: to float32's rounding with every eigenpair, within twice the neglected fraction
    (|c lam| <= neglect, c = h / mu) without the others."""
    p, hs = 12, np.array([1e-3, 0.1, 1.0, 10.0])
    jac, lam, qt = zip(*(_symmetric_jacobian(p, seed) for seed in range(len(hs))))
    lam = np.stack(lam)
    solve = EigenbasisSolve(lam, np.abs(lam), np.stack(qt), hs, neglect)
    r = np.random.default_rng(9).standard_normal((3, len(hs), p))
    x, x_real = solve.both(r), solve.real(r[0])
    bound = 1e-5 if neglect == 0 else 2 * neglect
    for b, h in enumerate(hs):
        exact_real = np.linalg.solve(MU_REAL / h * np.eye(p) - jac[b], r[0, b])
        exact_complex = np.linalg.solve(MU_COMPLEX / h * np.eye(p) - jac[b], r[1, b] + 1j * r[2, b])
        for got in (x[0, b], x_real[b]):
            assert np.linalg.norm(got - exact_real) <= bound * np.linalg.norm(exact_real), (h, neglect)
        got = x[1, b] + 1j * x[2, b]
        assert np.linalg.norm(got - exact_complex) <= bound * np.linalg.norm(exact_complex), (h, neglect)
