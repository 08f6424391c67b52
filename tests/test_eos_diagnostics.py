"""dlnlab.eos: GD-side edge-of-stability diagnostics, on synthetic series with known answers and on
the gradient flow (whose GFS sharpness is constant along its own path)."""

import math

import pytest
import torch

from dlnlab import init
from dlnlab.analysis import balanced_sharpness
from dlnlab.eos import (
    GFSSharpness,
    Outcome,
    distance_comparison,
    edge_diagnostics,
    gfs_sharpness,
    oscillation_amplitude,
    oscillation_variance,
    parting_time,
    sharpness_comparison,
    top_eigenpairs,
    window_average,
)
from dlnlab.flow import integrate
from dlnlab.network import pack
from tests._helpers import bad_argument, eos_problem

F64 = torch.float64


def test_window_average_is_the_centred_trapezoid_mean_and_cancels_period_two():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(40, 3, generator=gen, dtype=F64)
    for window in (2, 8):
        avg = window_average(values, window)
        half = window // 2
        for k in range(40):
            if k < half or k >= 40 - half:
                assert bool(torch.isnan(avg[k]).all())
                continue
            w = torch.ones(window + 1, dtype=F64)
            w[0] = w[-1] = 0.5
            ref = (w[:, None] * values[k - half : k + half + 1]).sum(0) / window
            torch.testing.assert_close(avg[k], ref, rtol=1e-13, atol=1e-14)
    k = torch.arange(50, dtype=F64)
    series = 1.5 + 0.2 * k + 0.7 * (-1.0) ** k  # drift plus a period-2 oscillation
    avg = window_average(series, 8)
    torch.testing.assert_close(avg[4:-4], (1.5 + 0.2 * k)[4:-4], rtol=1e-13, atol=1e-12)
    with bad_argument("window", match="even"):
        window_average(series, 3)


def test_oscillation_amplitude_and_variance_of_a_period_two_orbit():
    gen = torch.Generator().manual_seed(1)
    p, n, a = 6, 30, 0.03
    u = torch.randn(p, generator=gen, dtype=F64)
    u /= u.norm()
    c, drift = torch.randn(p, generator=gen, dtype=F64), torch.randn(p, generator=gen, dtype=F64) * 0.01
    k = torch.arange(n, dtype=F64)[:, None]
    thetas = c + (-1.0) ** k * a * u + k * drift
    tops = u.expand(n, p) * torch.where(k > 10, -1.0, 1.0)  # an eigenvector's sign is arbitrary
    amp = oscillation_amplitude(thetas, tops)
    assert math.isnan(float(amp[0])) and math.isnan(float(amp[-1]))
    torch.testing.assert_close(amp[1:-1], torch.full((n - 2,), a, dtype=F64), rtol=1e-10, atol=0)
    var = oscillation_variance(thetas, tops, window=4)
    torch.testing.assert_close(var[4:-4], torch.full((n - 8,), a * a, dtype=F64), rtol=1e-9, atol=0)


def test_edge_diagnostics_on_synthetic_series():
    lr = 0.25  # 2/eta = 8
    t = torch.arange(100, dtype=F64) * lr
    rising = torch.linspace(5.0, 7.9, 20, dtype=F64)
    hover = 8.0 + 0.3 * (-1.0) ** torch.arange(80, dtype=F64)  # 8.3 at step 20: the edge
    hover[-10:] = 9.2  # the last 10 of 80 points leave the 10 % band
    s = torch.cat([rising, hover])
    loss = torch.full((100,), 1e-3, dtype=F64)
    d = edge_diagnostics(t, s, loss, lr)
    assert d.threshold == 8.0 and d.t_edge == float(t[20])
    assert d.hover_share == 70 / 80
    # the median over consecutive pairs: 69 pairs of 8.3 and 7.7, one of 7.7 and 9.2, 9 of 9.2
    assert d.median_ratio == pytest.approx(1.0, rel=1e-12)
    # it ends at 9.2 = 1.15 x 2/eta, out of the band (read at_edge once)
    assert d.outcome == Outcome.ABOVE_EDGE
    assert edge_diagnostics(t[:-10], s[:-10], loss[:-10], lr).outcome == Outcome.AT_EDGE
    assert edge_diagnostics(t, s, loss, lr, diverged=True).outcome == Outcome.DIVERGED
    calm = torch.full((100,), 6.0, dtype=F64)
    d = edge_diagnostics(t, calm, torch.full((100,), 1e-12, dtype=F64), lr)
    assert d.outcome == Outcome.CONVERGED and d.t_edge is None and d.hover_share is None
    assert edge_diagnostics(t, calm, loss, lr).outcome == Outcome.BELOW_EDGE
    nan_loss = loss.clone()
    nan_loss[-1] = math.nan
    assert edge_diagnostics(t, calm, nan_loss, lr).outcome == Outcome.DIVERGED


@pytest.mark.parametrize("n", [80, 81])
def test_the_median_on_the_edge_does_not_depend_on_the_count_of_points(n):
    """S alternating 8 +- 0.3 about 2/eta = 8: the points' own median is 8.3 or 7.7 as n is odd or even
    (torch's is the lower middle value); over consecutive pairs it is 8, the oscillation's centre."""
    lr, k = 0.25, torch.arange(n, dtype=F64)
    s = 8.0 + 0.3 * (-1.0) ** k
    d = edge_diagnostics(k * lr, s, torch.full((n,), 1e-3, dtype=F64), lr)
    assert d.t_edge == 0.0 and d.median_ratio == pytest.approx(1.0, rel=1e-12)


def test_parting_time_and_distance_ratio():
    t = torch.arange(10, dtype=F64)
    a = torch.tensor([1.0, 1.1, 0.9, 3.0, 1.0, 1.2, 2.5, 3.0, 5.0, 9.0], dtype=F64)
    b = torch.ones(10, dtype=F64)
    assert parting_time(t, a, b, factor=2.0) == 6.0  # leaves the band for good at t = 6 (not at 3)
    assert parting_time(t, b, b) is None
    avg = torch.zeros(3, 2, dtype=F64)
    cmp = distance_comparison(t[:3], avg, torch.ones(3, 2, dtype=F64), 2 * torch.ones(3, 2, dtype=F64))
    torch.testing.assert_close(cmp.ratio, torch.full((3,), 0.5, dtype=F64))
    with bad_argument("averaged", match="agree"):
        distance_comparison(t, avg, avg, avg)


def test_sharpness_comparison_and_gfs_sharpness():
    dims = (4, 4, 4, 3)
    problem = eos_problem()
    balanced_min = pack(init.aligned(dims, problem, [2.0, 1.0, 0.5], seed=1))
    theta0 = pack(init.gaussian(dims, 0.4, seed=5))
    path = integrate(problem, dims, theta0, [0.0, 0.5, 1.5, 60.0]).theta
    cmp = sharpness_comparison(problem, dims, balanced_min, path[-1], lr=0.25)
    assert cmp.balanced == pytest.approx(balanced_sharpness(2.0, 3)) == pytest.approx(3 * 2.0 ** (4 / 3))
    assert cmp.gd_final == pytest.approx(cmp.balanced, rel=1e-9) and cmp.threshold == 8.0
    assert cmp.flow_limit == pytest.approx(top_eigenpairs(problem, path[-1], dims).sharpness)
    assert cmp.flow_limit > cmp.balanced  # the flow's limit is unbalanced, so sharper
    gfs = gfs_sharpness(problem, dims, torch.tensor([0.0, 0.5, 1.5]), path[:3])
    assert bool(gfs.converged.all()) and gfs.non_increasing()
    # one gradient flow, one limit: started anywhere on its own path it ends where it ends
    torch.testing.assert_close(gfs.sharpness, torch.full((3,), cmp.flow_limit, dtype=F64), rtol=1e-6, atol=0)
    at_min = gfs_sharpness(problem, dims, torch.zeros(1, dtype=F64), balanced_min[None])
    assert float(at_min.sharpness[0]) == pytest.approx(cmp.balanced, rel=1e-9)
    # a flow stopped by t_max before it converged is not a limit: flagged and left out of the monotonicity
    early = gfs_sharpness(problem, dims, torch.tensor([0.0, 0.5]), path[:2], t_max=0.01)
    assert not bool(early.converged.any())
    flags = torch.tensor([True, False, True])
    assert GFSSharpness(torch.arange(3.0), torch.tensor([5.0, 9.0, 4.0], dtype=F64), flags).non_increasing()
    assert not GFSSharpness(
        torch.arange(3.0), torch.tensor([4.0, 1.0, 5.0], dtype=F64), flags
    ).non_increasing()


def test_the_balanced_sharpness_of_data_not_whitened_is_computed():
    """h m_1^(2-2/h) holds for whitened data only (tests/test_analysis.py checks the computed value)."""
    from dlnlab.analysis import balanced_minimum_sharpness
    from dlnlab.problem import RegressionProblem

    dims = (4, 4, 4, 3)
    problem = RegressionProblem.teacher([2.0, 1.0, 0.5], d_x=4, d_y=3, n_samples=20, whiten=False, seed=5)
    theta = pack(init.gaussian(dims, 0.4, seed=5))
    cmp = sharpness_comparison(problem, dims, theta, theta, lr=0.25)
    assert cmp.balanced == pytest.approx(balanced_minimum_sharpness(problem, dims), rel=1e-12)
    assert abs(cmp.balanced / balanced_sharpness(float(problem.modes[0]), 3) - 1) > 0.05


def test_edge_report_glues_the_pieces_at_gds_step_times():
    from dlnlab.eos import edge_report

    dims = (4, 4, 4, 3)
    problem = eos_problem()
    theta0 = pack(init.gaussian(dims, 0.4, seed=5))
    lr = 0.2374
    rep = edge_report(problem, dims, theta0, lr, 16, window=4, gfs_points=2, restart_after=None)
    assert rep.t.shape == (17,) and rep.gd.theta.shape == (17, theta0.numel()) and rep.restarted is None
    torch.testing.assert_close(rep.t, torch.arange(17, dtype=F64) * lr)
    torch.testing.assert_close(rep.central.t, rep.t)
    avg = window_average(rep.gd.theta, 4)
    torch.testing.assert_close(
        rep.distances.to_central, (avg - rep.central.theta).norm(dim=-1), equal_nan=True
    )
    torch.testing.assert_close(rep.distances.to_flow, (avg - rep.flow.theta).norm(dim=-1), equal_nan=True)
    assert rep.diagnostics.t_edge is not None and 1.0 < rep.diagnostics.t_edge < 1.6  # GD reaches 2/eta
    assert rep.sharpness.gd_final == pytest.approx(float(rep.gd_spectrum.sharpness[-1]))
    assert rep.sharpness.flow_limit == pytest.approx(8.685, abs=1e-3) and bool(rep.gfs.converged.all())
    assert float(rep.central.sharpness.max()) <= rep.threshold * (1 + 1e-7)


# GD's last sharpnesses / (2/eta) on three runs of experiment=eos (t_max = 40): lr 0.2163 hovers
# (0.982, 1.013), lr 0.27 and 0.32 (2/eta below the balanced minimum's S = 7.56) end in a period-2 cycle
# whose phases lie far outside the band (0.765, 1.257 and 0.719, 1.823). The outcome was read from the
# last point alone: at_edge or below_edge by the parity of the step count, and at_edge for any S above
# 0.9 x 2/eta (1.823 x 2/eta read "at_edge, as expected at this lr").
@pytest.mark.parametrize(
    "phases, outcome",
    [((0.982, 1.013), Outcome.AT_EDGE), ((0.765, 1.257), Outcome.ABOVE_EDGE), ((0.719, 1.823), Outcome.ABOVE_EDGE),
     ((0.5, 0.6), Outcome.BELOW_EDGE), ((0.85, 0.95), Outcome.AT_EDGE)],
)  # fmt: skip
@pytest.mark.parametrize("n", [40, 41])
def test_the_outcome_reads_both_phases_of_the_last_steps_whatever_their_parity(phases, outcome, n):
    lr, k = 0.25, torch.arange(n, dtype=F64)
    s = 8.0 * torch.where(k % 2 == 0, phases[0], phases[1])
    d = edge_diagnostics(k * lr, s, torch.full((n,), 1e-3, dtype=F64), lr)
    assert d.outcome == outcome
    assert d.final_sharpness == float(s[-1]) and d.previous_sharpness == float(s[-2])
