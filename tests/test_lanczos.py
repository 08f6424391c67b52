"""Lanczos and the Hessian's extremes (dlnlab.analysis): against eigvalsh on random symmetric matrices,
degenerate operators and the Figure 1 net's closed-form Hessian (dense against Lanczos)."""

import pytest
import torch

from dlnlab import init
from dlnlab.analysis import hessian_extremes, lanczos_extremes
from dlnlab.network import Layout, pack

F64 = torch.float64
FIG1 = (11, 6, 6, 6, 6, 4)


def random_symmetric(p, seed):
    m = torch.randn(p, p, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return 0.5 * (m + m.T)


@pytest.mark.parametrize("p,iters", [(60, 80), (300, 150)])
def test_lanczos_matches_eigvalsh(p, iters):
    m = random_symmetric(p, seed=p)
    ev = torch.linalg.eigvalsh(m)
    lo, hi, v_lo, v_hi = lanczos_extremes(lambda v: m @ v, p, iters=iters)
    assert lo == pytest.approx(float(ev[0]), abs=1e-8)
    assert hi == pytest.approx(float(ev[-1]), abs=1e-8)
    assert float((m @ v_lo - lo * v_lo).norm()) <= 1e-6 and float((m @ v_hi - hi * v_hi).norm()) <= 1e-6
    # warm start from the sum of the Ritz vectors converges at once to the same values
    lo2, hi2, _, _ = lanczos_extremes(lambda v: m @ v, p, v0=v_lo + v_hi, iters=20)
    assert lo2 == pytest.approx(lo, abs=1e-8) and hi2 == pytest.approx(hi, abs=1e-8)


def test_lanczos_breakdown_and_degenerate_operators():
    p = 40
    evals = torch.linspace(-2.0, 3.0, p, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(p, p, dtype=F64, generator=torch.Generator().manual_seed(1)))
    m = (q * evals) @ q.T
    # v0 an eigenvector of an interior eigenvalue: the Krylov space breaks down at once
    lo, hi, _, _ = lanczos_extremes(lambda v: m @ v, p, v0=q[:, 17].clone(), iters=p)
    assert lo == pytest.approx(-2.0, abs=1e-9) and hi == pytest.approx(3.0, abs=1e-9)
    lo, hi, v_lo, _ = lanczos_extremes(lambda v: torch.zeros_like(v), p)  # the zero operator
    assert lo == 0.0 and hi == 0.0 and v_lo.shape == (p,)
    lo, hi, _, _ = lanczos_extremes(lambda v: 2.5 * v, p)  # a multiple of the identity
    assert lo == pytest.approx(2.5, abs=1e-12) and hi == pytest.approx(2.5, abs=1e-12)


def test_lanczos_on_the_figure1_hessian(fig1_problem):
    theta = pack(init.gaussian(FIG1, 0.3, seed=3))
    ev = torch.linalg.eigvalsh(fig1_problem.hessian(theta, FIG1))
    lo, hi, v_lo, v_hi = lanczos_extremes(lambda v: fig1_problem.hvp_theta(theta, v, FIG1), theta.numel())
    assert lo == pytest.approx(float(ev[0]), abs=1e-8)
    assert hi == pytest.approx(float(ev[-1]), abs=1e-8)
    assert v_lo.shape == v_hi.shape == theta.shape


@pytest.mark.parametrize("where", ["random", "saddle", "origin"])
def test_hessian_extremes_dense_and_lanczos_agree(fig1_problem, where):
    pr = fig1_problem
    if where == "random":
        theta = pack(init.gaussian(FIG1, 0.3, seed=4))
    elif where == "saddle":  # balanced top-2 critical point: non-strict, lambda_min = 0
        theta = pack(init.aligned(FIG1, pr, [4.0, 3.0, 0.0, 0.0], seed=5))
    else:
        theta = torch.zeros(Layout(FIG1).n_weights, dtype=F64)
    lo_d, hi_d, warm_d = hessian_extremes(pr, theta, FIG1)
    assert warm_d is None
    lo_l, hi_l, warm = hessian_extremes(pr, theta, FIG1, dense_max=0)
    assert warm.shape == theta.shape
    assert lo_l == pytest.approx(lo_d, abs=1e-7) and hi_l == pytest.approx(hi_d, abs=1e-7)
    if where == "saddle":
        assert lo_d >= -1e-7
    lo_w, hi_w, _ = hessian_extremes(pr, theta, FIG1, dense_max=0, warm=warm)  # warm restart
    assert lo_w == pytest.approx(lo_d, abs=1e-7) and hi_w == pytest.approx(hi_d, abs=1e-7)
