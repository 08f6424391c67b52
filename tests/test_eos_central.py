"""dlnlab.eos: Sigma of the central flow and the central flow itself.

Oracles: finite differences of eigvalsh (grad S, dS/dt, the critical block's change along the
velocity), the closed form sigma^2 = 2 <-g, grad S> / ||grad S||^2, a brute-force minimisation over
Cholesky factors for several critical eigenvalues, and the gradient flow of dlnlab.integrate."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from dlnlab import init
from dlnlab.eos import CentralFlow, SigmaMethod, integrate_central, solve_sigma, top_eigenpairs
from dlnlab.flow import Solver, integrate, time_grid
from dlnlab.network import pack
from tests._helpers import bad_argument, eos_problem

F64 = torch.float64
DIMS = (4, 4, 4, 3)


def eos_net(seed: int):
    """The 4-4-4-3 net of docs/eos.md: teacher [2, 1, 0.5], whitened, Gaussian init of std 0.4."""
    problem = eos_problem(seed)
    return problem, pack(init.gaussian(DIMS, 0.4, seed=seed))


def sharpening_point():
    """The seed-5 net after t = 1 of gradient flow, where its sharpness rises (5.0 at t = 0, 8.7 in the limit)."""
    problem, theta = eos_net(5)
    return problem, integrate(problem, DIMS, theta, [0.0, 1.0]).theta[-1]


def sharpness(problem, theta) -> float:
    return float(torch.linalg.eigvalsh(problem.hessian(theta, DIMS))[-1])


def fd_gradient_of_sharpness(problem, theta, eps=1e-6) -> torch.Tensor:
    out = torch.empty_like(theta)
    for i in range(theta.numel()):
        e = torch.zeros_like(theta)
        e[i] = eps
        out[i] = (sharpness(problem, theta + e) - sharpness(problem, theta - e)) / (2 * eps)
    return out


@pytest.mark.parametrize("lookahead", [0.0, 0.1])
def test_sigma_squared_on_the_edge_is_the_closed_form_and_pins_the_sharpness(lookahead):
    problem, theta = sharpening_point()
    s = sharpness(problem, theta)
    field = CentralFlow(problem, DIMS, 2.0 / s, lookahead=lookahead)  # S exactly at 2/eta
    pt = field.point(theta)
    assert pt.n_critical == 1 and pt.method == SigmaMethod.CLOSED_FORM
    g = problem.gradient_theta(theta, DIMS)
    grad_s = fd_gradient_of_sharpness(problem, theta)
    rise = float(-g @ grad_s)
    assert rise > 0  # the flow sharpens here: the constraint is active
    assert pt.sigma_trace == pytest.approx(2 * rise / float(grad_s @ grad_s), rel=1e-6)
    eps = 1e-6
    ds_dt = (
        sharpness(problem, theta + eps * pt.velocity) - sharpness(problem, theta - eps * pt.velocity)
    ) / (2 * eps)
    assert abs(ds_dt) <= 1e-5 * rise  # dS/dt = 0, where the gradient flow has dS/dt = rise
    assert float(pt.gradient @ pt.velocity) == pytest.approx(-float(pt.velocity @ pt.velocity), rel=1e-10)
    assert pt.predicted_loss == pytest.approx(
        pt.loss + pt.sigma_trace * s / 2, rel=1e-12
    )  # L + tr(Sigma)/eta


def test_on_the_edge_where_the_flow_flattens_sigma_is_zero():
    problem, theta = eos_net(5)  # at t = 0 its sharpness falls along the flow
    s = sharpness(problem, theta)
    assert float(problem.gradient_theta(theta, DIMS) @ fd_gradient_of_sharpness(problem, theta)) > 0
    pt = CentralFlow(problem, DIMS, 2.0 / s).point(theta)
    assert pt.n_critical >= 1 and pt.sigma_trace == 0.0 and not pt.at_edge
    torch.testing.assert_close(pt.velocity, -problem.gradient_theta(theta, DIMS), rtol=0, atol=1e-14)


def converging_point():
    """The seed-5 net after t = 10 of gradient flow: near its limit (sigma^2 on the edge 6.4e-5), still sharpening."""
    problem, theta = eos_net(5)
    return problem, integrate(problem, DIMS, theta, [0.0, 10.0]).theta[-1]


def test_recorded_sigma_on_the_edge_ignores_a_state_error_within_the_tolerance():
    problem, theta = converging_point()
    s = sharpness(problem, theta)
    field = CentralFlow(problem, DIMS, 2.0 / s)  # S exactly at 2/eta; lookahead delta = 0.1 eta
    grad_s = fd_gradient_of_sharpness(problem, theta)
    closed = 2 * float(-problem.gradient_theta(theta, DIMS) @ grad_s) / float(grad_s @ grad_s)
    assert closed > 0
    rtol, atol = 1e-5, 1e-8  # a loose solve: its band is wide enough to switch this sigma^2 off
    band = float(grad_s.abs() @ (atol + rtol * theta.abs()))
    unit = grad_s / grad_s.norm()
    for side in (-1.0, 1.0):  # a state error moving S by 0.9 x the band, down then up
        off = theta + side * 0.9 * band / float(grad_s.norm()) * unit
        raw, recorded = field.point(off), field.recorded_point(off, rtol, atol)
        # sigma^2 moves by 2 dS (1/delta - R) / ||grad S||^2 (the gap, and g along grad S: R its Rayleigh
        # quotient), more than sigma^2 itself
        rayleigh = float(unit @ problem.hessian(theta, DIMS) @ unit)
        rate = 2 * (field.inv_delta - rayleigh) / float(grad_s @ grad_s)
        assert raw.sigma_trace == pytest.approx(
            max(0.0, closed + side * 0.9 * band * rate), rel=1e-2, abs=1e-12
        )
        # as at theta on the edge, to second order in the error (3e-5 here; the plain one is 1 and 1.2 off)
        assert recorded.sigma_trace == pytest.approx(closed, rel=1e-3)
        assert recorded.shift == pytest.approx(0.9 * band / float(grad_s.norm()), rel=1e-3)
        assert (recorded.sharpness, recorded.loss) == (raw.sharpness, raw.loss)  # the state's own
        torch.testing.assert_close(recorded.velocity, raw.velocity, rtol=0, atol=0)
    assert field.point(theta - 0.9 * band / float(grad_s.norm()) * unit).sigma_trace == 0.0  # switched off
    far = theta - 3 * band / float(grad_s.norm()) * unit  # outside the band: entering, left as it is
    assert field.recorded_point(far, rtol, atol).shift == 0.0
    assert field.recorded_point(far, rtol, atol).sigma_trace == field.point(far).sigma_trace
    assert field.recorded_point(theta - unit * 1e-3, 1e-9, 1e-12).X.equal(field.point(theta - unit * 1e-3).X)


def _random_instance(rng, m, p=12):
    k = rng.normal(size=(m, m, p))
    return 0.5 * (k + k.transpose(1, 0, 2)), rng.normal(size=p), rng.normal(size=m) * 0.5


def _objective(k, g, gaps, inv_delta, x):
    w = 2 * g + np.einsum("abp,ab->p", k, x)
    return w @ w + 4 * inv_delta * gaps @ np.diag(x)


def _over_factors(entries, m, k, g, gaps, inv_delta):
    """The objective at X = L L^T, L lower triangular from its entries (Burer-Monteiro: every local
    minimum over full factors is the global one of the convex problem)."""
    low = np.zeros((m, m))
    low[np.tril_indices(m)] = entries
    return _objective(k, g, gaps, inv_delta, low @ low.T)


def test_the_general_solver_gives_the_closed_form_for_one_critical_eigenvalue():
    rng = np.random.default_rng(0)
    active = set()
    for i in range(12):
        k, g, gaps = _random_instance(rng, 1)
        inv_delta = [0.0, 2.0][i % 2]
        args = (torch.from_numpy(k), torch.from_numpy(g), torch.from_numpy(gaps), inv_delta)
        closed, general = solve_sigma(*args), solve_sigma(*args, general=True)
        assert closed.method == SigmaMethod.CLOSED_FORM and general.method == SigmaMethod.POLISHED
        assert float(general.X) == pytest.approx(float(closed.X), rel=1e-12, abs=1e-300)
        active.add(float(closed.X) > 0)
    assert active == {True, False}  # both branches of max(0, .) were met


@pytest.mark.parametrize("m", [2, 3])
def test_several_critical_eigenvalues_against_a_brute_force_minimisation(m):
    rng = np.random.default_rng(m)
    for _ in range(4):
        k, g, gaps = _random_instance(rng, m)
        inv_delta = float(rng.choice([0.0, 3.0]))
        sol = solve_sigma(torch.from_numpy(k), torch.from_numpy(g), torch.from_numpy(gaps), inv_delta)
        x = sol.X.numpy()
        assert sol.residual <= 1e-9 and np.linalg.eigvalsh(x)[0] >= -1e-12 * max(1.0, np.abs(x).max())

        best = min(
            minimize(_over_factors, rng.normal(size=m * (m + 1) // 2), args=(m, k, g, gaps, inv_delta),
                     method="BFGS", options={"gtol": 1e-12}).fun
            for _ in range(6)
        )  # fmt: skip
        assert _objective(k, g, gaps, inv_delta, x) <= best + 1e-9 * abs(best)


def test_three_critical_eigenvalues_on_a_real_net_project_onto_the_tangent_cone():
    problem, theta = sharpening_point()
    top = top_eigenpairs(problem, theta, DIMS, 4)
    lam = top.values
    lr = 2.0 / float(lam[0])
    field = CentralFlow(problem, DIMS, lr, fraction=0.999 * float(lam[2]) / float(lam[0]), lookahead=0.0)
    pt = field.point(theta)
    assert pt.n_critical == 3 and pt.method == SigmaMethod.POLISHED and pt.sigma_trace > 0
    u = pt.vectors
    eps = 1e-6
    change = (u.T @ (problem.hessian(theta + eps * pt.velocity, DIMS) - problem.hessian(theta - eps * pt.velocity, DIMS))
              @ u) / (2 * eps)  # fmt: skip
    change = 0.5 * (change + change.T)
    scale = float((u.T @ problem.hessian(theta, DIMS) @ u).norm())
    assert float(torch.linalg.eigvalsh(change)[-1]) <= 1e-6 * scale  # no critical direction rises
    assert abs(float((pt.X * change).sum())) <= 1e-6 * scale * float(pt.X.norm())  # complementarity
    assert float(pt.gradient @ pt.velocity) == pytest.approx(-float(pt.velocity @ pt.velocity), rel=1e-8)
    grad_top = pt.pair_gradients[0, 0]  # only the top eigenvalue is on the edge, the others 2-5 % below it
    off = theta + 1e-9 * grad_top / float(grad_top @ grad_top)  # S 1e-9 above 2/eta
    recorded = field.recorded_point(off, 1e-9, 1e-12)
    assert recorded.n_critical == 3 and recorded.shift > 0
    torch.testing.assert_close(recorded.X, pt.X, rtol=1e-5, atol=1e-9 * float(pt.X.norm()))


def test_below_the_edge_the_central_flow_is_the_gradient_flow():
    problem, theta = eos_net(5)
    t = time_grid(3.0, dt=0.25)
    solver = Solver("rk45", rtol=1e-9, atol=1e-12)
    central = integrate_central(problem, DIMS, theta, t, lr=0.05, solver=solver)  # 2/eta = 40 >> S
    flow = integrate(problem, DIMS, theta, t, solver)
    assert central.edge_intervals == [] and float(central.sigma_trace.abs().max()) == 0.0
    torch.testing.assert_close(central.theta, flow.theta, rtol=0, atol=1e-9)
    assert float(central.sharpness.max()) < 0.95 * central.threshold


def test_the_central_flow_enters_the_edge_and_stays_at_or_below_it():
    problem, theta = eos_net(5)
    lr = 0.2374  # 2 / (0.97 x the flow limit's sharpness 8.685)
    t = time_grid(2.5, dt=0.05)
    central = integrate_central(problem, DIMS, theta, t, lr)
    flow = integrate(problem, DIMS, theta, t, Solver("rk45", rtol=1e-9, atol=1e-12))
    thr = central.threshold
    s = central.sharpness
    assert central.trajectory.status == "ok"
    assert float(s.max()) <= thr * (1 + 1e-7)  # never past the edge
    ((start, end),) = central.edge_intervals
    assert 1.0 < start < 1.6 and end == pytest.approx(2.5)
    before = central.t < start - 0.2
    torch.testing.assert_close(central.theta[before], flow.theta[before], rtol=0, atol=1e-8)
    pinned = central.t > start + 0.3
    assert float((s[pinned] - thr).abs().max()) <= 1e-7 * thr  # dS/dt = 0 on the edge
    assert float(sharpness(problem, flow.theta[-1])) > thr  # where the gradient flow goes past it
    assert bool((central.sigma_trace[pinned] > 0).all()) and bool((central.n_critical[pinned] == 1).all())
    assert bool((central.predicted_loss[pinned] > central.loss[pinned]).all())


@pytest.mark.slow
def test_recorded_sigma_where_the_central_flow_converges_on_the_edge_against_a_tight_solve():
    """experiment=eos's net and eta (docs/eos.md; the lab's data and init seeds for seed=2): its central
    flow converges onto a minimum at 2/eta, sigma^2 falling like ||grad L|| to 5e-10 at t = 40, where
    the default solve's state error moves S by ~1e-8 and the lookahead term then switches Sigma on and
    off at single step times (about 16 s here, most of it the reference solve at rtol 1e-12)."""
    problem, theta0 = eos_problem(4016313489), pack(init.gaussian(DIMS, 0.4, seed=1353459072))
    lr = 0.2163
    t = torch.arange(0, 186, dtype=F64) * lr  # GD's step times to t = 40
    central = integrate_central(problem, DIMS, theta0, t, lr)  # rtol 1e-9, atol 1e-12
    tight = integrate_central(problem, DIMS, theta0, t, lr, solver=Solver("rk45", rtol=1e-12, atol=1e-15))
    ((start, end),) = central.edge_intervals
    assert tight.edge_intervals == [(start, end)] and start < 1.0 and end == float(t[-1])
    on = central.t > start + 0.3
    raw = torch.tensor([CentralFlow(problem, DIMS, lr).point(th).sigma_trace for th in central.theta[on]])
    assert int((raw == 0).sum()) >= 3  # the state error's switching, which the recorded Sigma undoes
    rel = (central.sigma_trace[on] / tight.sigma_trace[on] - 1).abs()
    late = central.t[on] > 35.0  # sigma^2 < 2e-9: the default solve's state error is 10-30 % of grad L
    assert float(rel[~late].max()) <= 1e-2 and float(rel[late].max()) <= 0.5
    assert bool((central.predicted_loss[on].diff() < 0).all())  # falls at every step, as the tight one


def test_refusals(fig1_problem):
    problem, theta = eos_net(5)
    t = time_grid(1.0, dt=0.5)
    with bad_argument("solver", match="Jacobian"):
        integrate_central(problem, DIMS, theta, t, 0.2, solver=Solver("lsoda"))
    with bad_argument("lookahead", match="> 0"):
        integrate_central(problem, DIMS, theta, t, 0.2, lookahead=0.0)
    with bad_argument("theta0", match="one net"):
        integrate_central(problem, DIMS, theta.expand(2, -1), t, 0.2)
    with bad_argument("fraction", match=r"\(0, 1\]"):
        CentralFlow(problem, DIMS, 0.2, fraction=1.5)
    with bad_argument("lr", match="> 0"):
        CentralFlow(problem, DIMS, -0.2)
    with bad_argument("field", match="modified_lr"):
        integrate(problem, DIMS, theta, t, field=CentralFlow(problem, DIMS, 0.2), modified_lr=0.1)
