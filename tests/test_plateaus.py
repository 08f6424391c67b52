"""Plateaus of the loss staircase along flows and GD (a run's saddle analysis: test_plateaus_in_runs.py).

Oracles from docs/theory.md sections 5 and 7: aligned flows (plateaus at L*_r with exits at the
reference half-times), gaussian small-init flows (non-strict), the Figure 1 flow (four plateaus at 15,
7, 2.5, 0.5), far-from-origin runs (none), and GD leaving later than the flow by O(eta).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _helpers import bad_argument
from _saddle_helpers import (
    FIG1,
    PLATEAU_KEYS,
    arrays_of,
    fig1_setting,
    gd_arrays,
    net,
    series_of,
    small_problem,
)

from dlnlab import flow, init, saddles
from dlnlab.analysis import mode_half_time
from dlnlab.network import pack
from dlnlab.problem import RegressionProblem

# its tests on one xdist worker (--dist loadgroup): its module fixture (a solved flow) is made once per worker
pytestmark = pytest.mark.xdist_group("test_plateaus")

# ------------------------------------------------------------------------------------------------
# Trajectories


@pytest.fixture(scope="module")
def aligned_flow():
    """The small problem's flow from an aligned init (depth 4, u0 = 1e-3) to 1.3 times the last mode's
    half-time, dt = 0.05: (problem, dims, theta0, the modes' half-times, the series' arrays). Read by
    two tests (each integration ~0.5 s); analyze_series only reads the arrays."""
    pr = small_problem()
    h, u0 = 4, 1e-3
    dims = net(h)
    theta0 = pack(init.aligned(dims, pr, u0, seed=2))
    ref = [mode_half_time(float(m), u0, h) for m in pr.modes]
    return pr, dims, theta0, ref, series_of(pr, dims, theta0, 1.3 * ref[-1], 0.05)


def test_aligned_flow_one_plateau_per_mode_exits_match_reference(aligned_flow):
    pr, dims, _, ref, arr = aligned_flow
    plats = saddles.analyze_series(pr, dims, arr)
    levels = pr.plateau_levels(3).tolist()
    assert [p.level_index for p in plats] == [0, 1, 2]
    assert [p.modes_learnt for p in plats] == [[], [0], [0, 1]]
    assert [p.exit_mode for p in plats] == [0, 1, 2]
    for p, r, t_ref in zip(plats, range(3), ref):
        assert PLATEAU_KEYS <= set(p.to_dict())
        assert p.level == pytest.approx(levels[r], rel=1e-12)
        assert p.t_exit == pytest.approx(t_ref, rel=1e-3)
        assert p.t_start <= p.t_grad_norm_min <= p.t_end < p.t_exit
        assert p.label == "non-strict"
        assert p.is_top_set
    json.dumps([p.to_dict() for p in plats], allow_nan=False)


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_detection_is_scale_free(scale):
    """Data scaled by c: modes c m_k, times / c^(2-2/h); the same plateaus are found (no tuned constants)."""
    base = small_problem()
    pr = RegressionProblem(base.X, scale * base.Y)
    h, u0 = 4, 1e-3 * scale
    dims = net(h)
    ref = [mode_half_time(float(m), u0, h) for m in pr.modes]
    dt = 0.05 * scale ** -(2 - 2 / h)
    # LSODA: the exits as dopri5's to 5e-10 relative (both 7.7e-6 from ref) at a third of its cost
    arr = series_of(pr, dims, pack(init.aligned(dims, pr, u0, seed=2)), 1.3 * ref[-1], dt, method="lsoda")
    plats = saddles.analyze_series(pr, dims, arr)
    assert [p.level_index for p in plats] == [0, 1, 2]
    assert [p.t_exit for p in plats] == pytest.approx(ref, rel=1e-3)
    assert all(p.label == "non-strict" for p in plats)


def test_aligned_flow_with_a_skipped_mode_visits_strict_saddles():
    """Mode 0 starts on the stable branch (u0 < 0): the flow learns mode 1 first and sits at the
    non-top critical value L(P_{1}) = 7 - 2 = 5, a strict saddle."""
    pr = small_problem()
    h = 4
    dims = net(h)
    arr = series_of(pr, dims, pack(init.aligned(dims, pr, [-1e-3, 1e-3, 1e-3], seed=2)), 20.0, 0.05)
    plats = saddles.analyze_series(pr, dims, arr)
    assert [p.modes_learnt for p in plats] == [[], [1], [1, 2]]
    skip = plats[1]
    assert skip.level == pytest.approx(pr.critical_value([1]), rel=1e-12) == pytest.approx(5.0)
    assert skip.level_index is None and not skip.is_top_set
    assert skip.label == "strict"
    m = [float(v) for v in pr.modes]
    assert skip.lambda_min == pytest.approx(-(m[0] - m[1]) * m[1] ** ((h - 2) / h), rel=1e-6)
    branch0 = [b for b in skip.escape["branches"] if b["mode"] == 0][0]
    assert branch0["trajectory_branch"] == "stable"
    assert plats[0].exit_mode == 1 and plats[1].exit_mode == 2
    assert plats[2].exit_mode is None and plats[2].label == "strict"  # the run ends there


def test_gaussian_small_init_flow_plateaus_are_non_strict():
    """From gaussian(0.1) the closest points look full rank with slightly negative curvature; the
    snapped critical points are non-strict (h = 3)."""
    pr = small_problem()
    dims = net(3)
    arr = series_of(
        pr, dims, pack(init.gaussian(dims, 0.1, seed=3)), 30.0, 0.05, method="bdf", rtol=1e-8, atol=1e-10
    )
    plats = saddles.analyze_series(pr, dims, arr)
    assert len(plats) >= 2
    assert plats[0].modes_learnt == [] and plats[0].level == pytest.approx(7.0)
    levels = [p.level for p in plats]
    assert levels == sorted(levels, reverse=True)
    for p in plats:
        assert p.label == "non-strict"
        assert p.is_top_set
        ev = p.evidence
        assert ev["source"] == "trajectory"
        assert ev["three_rank_r_layers"] and ev["optimal_rank_r"]
        assert ev["snap_grad_norm"] <= 1e-8
        assert ev["closest"]["lambda_min"] < -1e-3  # slightly negative near the saddle itself
        assert ev["closest"]["ranks"] != ev["ranks"]  # the closest point looks full rank
        assert p.lambda_min >= -1e-7
    exits = [p.t_exit for p in plats if p.t_exit is not None]
    assert exits == sorted(exits)


def test_figure1_flow_has_four_non_strict_plateaus():
    """The default run's flow (docs/theory.md section 7): plateaus at 15, 7, 2.5, 0.5, left by modes 0..3 in order."""
    pr, init_seed = fig1_setting()
    theta0 = pack(init.gaussian(FIG1, 0.1, seed=init_seed))
    # LSODA, the lab's choice for this net (tests/test_choose.py): BDF's plateaus, levels and exits to
    # 1e-9 at half its cost
    arr = series_of(pr, FIG1, theta0, 300.0, 0.1, method="lsoda", rtol=1e-8, atol=1e-10)
    plats = saddles.analyze_series(pr, FIG1, arr)
    assert [p.level_index for p in plats] == [0, 1, 2, 3]
    for p, level in zip(plats, [15.0, 7.0, 2.5, 0.5]):
        assert p.level == pytest.approx(level, abs=1e-9)
        i = p.i_grad_norm_min
        assert arr["loss"][i] == pytest.approx(level, abs=1e-2)
        assert p.label == "non-strict"
        assert abs(p.lambda_min) <= 1e-7
    assert [p.exit_mode for p in plats] == [0, 1, 2, 3]
    starts = [p.t_start for p in plats]
    assert starts == sorted(starts)


def test_far_from_origin_has_no_plateau():
    """(LSODA: the final losses and the empty analyses are dopri5's, at a quarter of its cost.)"""
    pr, init_seed = fig1_setting()
    theta0 = pack(init.gaussian(FIG1, 0.4, seed=init_seed))
    arr = series_of(pr, FIG1, theta0, 20.0, 0.05, method="lsoda", rtol=1e-8, atol=1e-10)
    assert float(arr["loss"][-1]) < 1e-3
    assert saddles.analyze_series(pr, FIG1, arr) == []
    small = small_problem()
    dims = net(3)
    theta0 = pack(init.gaussian(dims, 0.7, seed=3))
    arr = series_of(small, dims, theta0, 20.0, 0.05, method="lsoda", rtol=1e-8, atol=1e-10)
    assert float(arr["loss"][-1]) < 1e-3
    assert saddles.analyze_series(small, dims, arr) == []


def test_gd_leaves_plateaus_later_by_order_eta(aligned_flow):
    pr, dims, theta0, half_times, arr = aligned_flow
    t_max = 1.3 * half_times[-1]
    ref = saddles.analyze_series(pr, dims, arr, classify=False)
    assert [p.exit_mode for p in ref] == [0, 1, 2]
    delays = {}
    for lr in (0.02, 0.01, 0.005):
        own = saddles.analyze_series(pr, dims, gd_arrays(pr, dims, theta0, lr, t_max), classify=False)
        exits = saddles.exits_vs_reference(ref, own, pr, lr=lr)
        assert [e.mode for e in exits] == [0, 1, 2]
        delays[lr] = np.array([e.delay for e in exits])
        assert np.all(delays[lr] > 0)  # GD is later (1 + x < e^x)
    for big, small in ((0.02, 0.01), (0.01, 0.005)):
        ratio = delays[big] / delays[small]
        assert np.all(ratio > 1.6) and np.all(ratio < 2.4), ratio  # O(eta)


# ------------------------------------------------------------------------------------------------
# Robustness, series without theta, a core trajectory


def test_detection_finds_nothing_in_short_or_non_finite_series():
    pr = small_problem()
    q = pr.n_modes
    assert saddles.detect_plateaus([], [], np.zeros((0, q)), [], pr, 3) == []
    assert saddles.detect_plateaus([0.0, 1.0], [7.0, 7.0], np.zeros((2, q)), [0.0, 0.0], pr, 3) == []
    nan = np.full(50, np.nan)
    assert saddles.detect_plateaus(np.arange(50.0), nan, np.full((50, q), np.nan), nan, pr, 3) == []


def test_bad_series_raise_naming_what_is_wrong():
    pr = small_problem()
    dims = net(3)
    q = pr.n_modes
    with bad_argument("arrays", match="missing t, loss, mode_strength, grad_norm"):
        saddles.analyze_series(pr, dims, {})
    with bad_argument("arrays", match="missing loss, mode_strength, grad_norm"):
        saddles.analyze_series(pr, dims, {"t": np.arange(3.0)})
    with bad_argument("mode_strength", match="expected 2 axis"):
        saddles.detect_plateaus(np.arange(3.0), np.ones(3), np.ones(3), np.ones(3), pr, 3)
    with bad_argument("loss", match="not an array of numbers"):
        saddles.detect_plateaus(np.arange(3.0), ["a", "b", "c"], np.ones((3, q)), np.ones(3), pr, 3)
    with bad_argument("t", match="disagree on the number of points"):
        saddles.detect_plateaus(np.arange(4.0), np.ones(3), np.ones((3, q)), np.ones(3), pr, 3)
    arr = series_of(pr, dims, pack(init.gaussian(dims, 0.1, seed=3)), 6.0, 0.05)
    with bad_argument("arrays", match="theta: expected"):
        saddles.analyze_series(pr, dims, {**arr, "theta": arr["theta"][:, :-1]})


def test_a_series_that_diverges_after_a_plateau_counts_up_to_its_finite_prefix():
    pr = small_problem()
    dims = net(3)
    arr = series_of(pr, dims, pack(init.gaussian(dims, 0.1, seed=3)), 6.0, 0.05)
    good = saddles.analyze_series(pr, dims, arr)
    bad = {k: v.copy() for k, v in arr.items()}
    for k in ("loss", "grad_norm", "mode_strength", "theta"):
        bad[k][40:] = np.inf if k == "loss" else np.nan
    plats = saddles.analyze_series(pr, dims, bad)
    assert len(good) == 3 and len(plats) == 1
    assert plats[0].t_end == good[0].t_end and plats[0].label == good[0].label == "non-strict"


def test_without_theta_classifies_the_constructed_critical_point():
    pr = small_problem()
    dims = net(3)
    arr = series_of(pr, dims, pack(init.gaussian(dims, 0.1, seed=3)), 6.0, 0.05)
    del arr["theta"]
    plats = saddles.analyze_series(pr, dims, arr)
    assert len(plats) == 3
    for p in plats:
        assert p.evidence["source"] == "constructed" and p.t_closest is None
        assert p.label == "non-strict" and p.evidence["three_rank_r_layers"]


def test_a_core_trajectory_goes_to_plateaus_in_one_call():
    """dlnlab.analyze_trajectory: a flow from the core, straight to its classified plateaus; the same
    plateaus as the recorder's arrays give, and exits at the reference mode solution's half-times."""
    import dlnlab

    pr = small_problem()
    h, u0 = 3, 1e-3
    dims = net(h)
    theta0 = pack(init.aligned(dims, pr, u0, seed=2))
    t_max = 1.3 * mode_half_time(float(pr.modes[-1]), u0, h)
    traj = flow.integrate(
        pr, dims, theta0, flow.time_grid(t_max, dt=0.05), flow.Solver("lsoda", rtol=1e-10, atol=1e-12)
    )
    plats = dlnlab.analyze_trajectory(pr, dims, traj)
    modes = [p.exit_mode for p in plats]  # mode 2's plateau is shorter than the detector's minimum here
    assert modes[0] == 0 and modes == sorted(modes) and all(p.label == "non-strict" for p in plats)
    for p in plats:
        half = mode_half_time(float(pr.modes[p.exit_mode]), u0, h)
        assert p.t_exit == pytest.approx(half, rel=2e-3)
    again = saddles.analyze_series(pr, dims, arrays_of(pr, dims, traj.t, traj.theta))
    assert [p.to_dict() for p in again] == [p.to_dict() for p in plats]


def test_the_stretches_of_one_learnt_set_are_those_a_row_by_row_scan_finds():
    """_constant_set_stretches (numpy's comparison of neighbouring rows) against the plain scan that
    makes a set of every row: random learnt-set histories, monotone and not, 0 to 300 rows, 1 to 4 modes."""
    from dlnlab.saddles.plateaus import _constant_set_stretches

    def scan(learnt):
        keys = [frozenset(np.flatnonzero(row).tolist()) for row in learnt]
        out, i0 = [], 0
        for i in range(1, len(keys) + 1):
            if i == len(keys) or keys[i] != keys[i0]:
                out.append((i0, i, keys[i0]))
                i0 = i
        return out

    rng = np.random.default_rng(0)
    for rows in (0, 1, 2, 7, 300):
        for q in (1, 2, 4):
            for learnt in (
                np.sort(rng.random((rows, q)) < 0.5, axis=0),  # modes learnt one after another
                rng.random((rows, q)) < 0.8,  # flickering
                np.zeros((rows, q), dtype=bool),
            ):
                assert _constant_set_stretches(learnt) == scan(learnt)
