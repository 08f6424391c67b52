"""The numbers the lab reads off a run's series, each against a hand computation, numpy/scipy or a closed
form, on synthetic arrays (no lab run): the gaps the mutation audit of the lab's numbers found
(docs/mutations.md, "The lab's numbers"; the mutation each test closes is named in its docstring)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from dlnlab.descent import time_per_step
from dlnlab.lab.config import series_grid
from dlnlab.lab.results._ensemble import _exit_spread, finish_sgd_members
from dlnlab.lab.results._limit import (
    BOOTSTRAP,
    EXPECTED_ORDER,
    LIMIT_KEYS,
    _stretches,
    _window_stats,
    add_exit_spreads,
)
from dlnlab.lab.results._summary import convergence_order, finish_sgd_entry, order_series
from dlnlab.lab.results._unstable import flag_unstable, tail_sharpness
from dlnlab.status import Status

LEVELS = np.array([2.5, 0.5, 0.0])  # plateau levels L*_r, the floor 0


def test_pairwise_orders_are_the_slopes_between_neighbouring_rates():
    """Mutations O5 (the sign of a pairwise order) and O6: each pair of neighbouring learning rates (in
    increasing order; a series without a distance left out) has the slope log(d_b / d_a) / log(b / a)."""
    lrs = [0.04, 0.01, 0.03, 0.02]  # as the series come, largest first or not
    dists = [32.0, 1.0, None, 4.0]  # d(0.02) / d(0.01) = 4: order 2; d(0.04) / d(0.02) = 8: order 3
    got = convergence_order(lrs, dists, n_fit=3)
    assert [p["lrs"] for p in got["pairwise"]] == [[0.01, 0.02], [0.02, 0.04]]
    assert [p["order"] for p in got["pairwise"]] == pytest.approx([2.0, 3.0], rel=1e-12)
    assert got["order"] == pytest.approx(
        np.polyfit(np.log([0.01, 0.02, 0.04]), np.log([1.0, 4.0, 32.0]), 1)[0]
    )


def test_the_orders_take_the_ok_and_unstable_series_and_leave_the_others():
    """Mutation O7 (unstable series left out of the orders): docs/results.md's rule, ok and unstable in,
    diverged, failed and interrupted out, and never the flow."""
    statuses = [
        Status.OK,
        Status.UNSTABLE,
        Status.DIVERGED,
        Status.ERROR,
        Status.SOLVER_FAILED,
        Status.INTERRUPTED,
    ]
    series = {f"sgd_lr_{i}": {"lr": 0.1 * (i + 1), "status": s} for i, s in enumerate(statuses)}
    series["flow"] = {"lr": None, "status": Status.OK}
    assert [e["status"] for e in order_series(series)] == [Status.OK, Status.UNSTABLE]


def test_a_diverged_heavy_ball_series_stops_at_its_steps_times_its_time_per_step():
    """Mutation F4 (t_stop = steps x lr): heavy ball's step stands for lr / (1 - beta) of flow time."""
    lr, beta, steps = 0.02, 0.9, 37
    arrays = {
        "t": np.arange(5) * 0.2,
        "step": np.arange(5) * 10,
        "loss": np.ones(5),
        "dist_to_flow": np.ones(5),
    }
    entry = {"lr": lr, "momentum": beta, "status": Status.DIVERGED, "message": "", "steps": steps}
    finish_sgd_entry(entry, arrays, time_per_step(lr, beta), LEVELS, None, 0.0)
    assert entry["step_stop"] == steps
    assert entry["t_stop"] == pytest.approx(steps * 0.02 / 0.1, rel=1e-12)


def _heavy_ball_grows(curvature: float, lr: float, beta: float, steps: int = 400) -> bool:
    """Heavy ball on f(x) = curvature x^2 / 2 from x = 1: whether |x| grew (numpy, no dlnlab)."""
    x_prev = x = 1.0
    for _ in range(steps):
        x, x_prev = x - lr * curvature * x + beta * (x - x_prev), x
    return abs(x) > 1.0


@pytest.mark.parametrize("sharpness", [25.0, 29.0, 31.0, 35.0])
def test_heavy_balls_unstable_flag_is_where_heavy_ball_on_a_quadratic_of_that_sharpness_grows(sharpness):
    """Mutation U1 (the bound 2/eta whatever the momentum): at lr 0.1 and beta 0.5 heavy ball on a quadratic
    is stable up to the curvature 2 (1 + beta) / lr = 30, not 2 / lr = 20; the flag (the loss stuck, the
    threshold out of the way) says unstable exactly where the iteration grows."""
    lr, beta, n = 0.1, 0.5, 40
    arrays = {"loss": np.full(n, 0.3), "sharpness": np.full(n, sharpness), "step": np.arange(n)}
    entry = {"lr": lr, "momentum": beta, "status": Status.OK, "message": ""}
    flag_unstable(entry, arrays, lr, LEVELS, None, 0.0)
    assert (entry["status"] == Status.UNSTABLE) == _heavy_ball_grows(sharpness, lr, beta)


def test_sharpness_next_stands_for_the_missing_phase_not_the_recorded_one():
    """Mutation U6 (sharpness_next put in the recorded phase): the series recorded every other step, all on
    the high phase (S = 12 + a little noise; its tail's median 12.1 by hand) and the step past its end is on
    the low one (8): the higher of the two phases' medians decides, 12.1, not the low phase alone."""
    steps = np.arange(0, 40, 2)  # even steps only: 20 points, the tail their last 5
    sharp = np.r_[np.full(15, 12.0), 12.0, 12.3, 12.1, 11.9, 12.2]
    arrays = {
        "step": steps,
        "sharpness": sharp,
        "sharpness_next": np.r_[np.full(len(steps) - 1, np.nan), 8.0],
    }
    assert tail_sharpness(arrays) == pytest.approx(12.1, rel=1e-12)
    arrays["sharpness_next"][-1] = 14.0  # the other phase higher: it decides
    assert tail_sharpness(arrays) == pytest.approx(14.0, rel=1e-12)


def test_the_error_constant_is_the_geometric_mean_and_its_growth_the_ratio_over_the_stretch_before():
    """Mutations L4 (the arithmetic mean of the error / eta^p) and L5 (the growth inverted): two stretches
    between escapes, the errors C_i eta_i^p with C_i 1, 2, 4 in the first and 10x that in the second."""
    lrs, n_fit = [0.04, 0.01, 0.02], 3
    rng = np.random.default_rng(0)
    windows = [(0.0, np.inf), (0.0, 5.0), (5.0, np.inf)]
    mean = {k: [[None] * 3 for _ in windows] for k in LIMIT_KEYS}
    boot = {k: [[None] * 3 for _ in windows] for k in LIMIT_KEYS}
    for k in LIMIT_KEYS:
        for w, factor in ((1, 1.0), (2, 10.0)):
            c = factor * np.array([4.0, 1.0, 2.0])
            mean[k][w] = list(c * np.asarray(lrs) ** EXPECTED_ORDER[k])
            boot[k][w] = [v * np.exp(0.01 * rng.standard_normal(BOOTSTRAP)) for v in mean[k][w]]
    got = _stretches(windows, lrs, n_fit, mean, boot, EXPECTED_ORDER)
    assert [(s["t_start"], s["t_end"], s["escapes_before"]) for s in got] == [(0.0, 5.0, 0), (5.0, None, 1)]
    for k in LIMIT_KEYS:
        assert got[0][k]["constant"] == pytest.approx(stats.gmean([1.0, 2.0, 4.0]), rel=1e-12)  # 2
        assert got[1][k]["constant"] == pytest.approx(20.0, rel=1e-12)
        assert got[0][k]["growth"] is None
        assert got[1][k]["growth"] == pytest.approx(10.0, rel=1e-12)
        assert got[1][k]["order"] == pytest.approx(
            EXPECTED_ORDER[k] + np.polyfit(np.log(lrs), np.log([4, 1, 2]), 1)[0]
        )
    # one window alone: the same constant
    alone = _window_stats(lrs, n_fit, mean["strong"][1], boot["strong"][1], 0.5)
    assert alone["constant"] == pytest.approx(2.0, rel=1e-12)


def test_the_exit_spread_ratio_is_sgds_std_over_smes_with_the_normal_sampling_error():
    """Mutation L10 (the std ratio inverted): per mode the SGD ensemble's std of the exit times over the
    SME's (numpy, ddof 1), and the sampling error sqrt(1 / (2 (n1 - 1)) + 1 / (2 (n2 - 1)))."""
    rng = np.random.default_rng(1)
    sgd_t, sme_t = 3.0 + 0.4 * rng.standard_normal(9), 3.1 + 0.1 * rng.standard_normal(6)

    def members(times):
        return [{"plateaus": [{"exit_mode": 0, "t_exit": float(t)}]} for t in times]

    lr = 0.05
    series = {f"sgd_lr_{lr}": {"ensemble": {"plateau_exits": _exit_spread(members(sgd_t))}},
              f"sme_lr_{lr}": {"ensemble": {"plateau_exits": _exit_spread(members(sme_t))}}}  # fmt: skip
    state = SimpleNamespace(limit={"sme": {}}, plan=SimpleNamespace(lrs=[lr]), series=series)
    add_exit_spreads(state)
    (row,) = state.limit["sme"]["exit_spread"][repr(lr)]
    assert row["std_ratio"] == pytest.approx(np.std(sgd_t, ddof=1) / np.std(sme_t, ddof=1), rel=1e-12)
    assert row["sampling_error"] == pytest.approx(math.sqrt(1 / 16 + 1 / 10), rel=1e-12)
    assert (row["n_sgd"], row["n_sme"]) == (9, 6)


def test_an_ensembles_distance_is_known_until_the_member_whose_flow_stopped_first():
    """Mutation E6 (the longest member's time): two ok members, one with its distance known to t = 7.0
    (its flow stopped there), the other to the end, 14.0: the mean of their maxima covers 7.0 only."""
    t = np.arange(41) * 0.35
    loss = np.vstack([1e-20 * np.ones(41)] * 2)
    dist = np.vstack([np.sin(np.pi * t / 14.0) ** 2] * 2)
    dist[0, 21:] = np.nan  # member 0's flow known up to t[20] = 7.0
    arrays = {
        "t": t,
        "step": np.arange(41),
        "loss": loss,
        "dist_to_flow": dist,
        "sharpness": np.ones((2, 41)),
    }
    entry = {"lr": 0.35, "momentum": 0.0, "status": Status.OK, "message": "", "steps": 40}
    seeds = [{"init": e, "sgd": e} for e in range(2)]
    finish_sgd_members(entry, arrays, 0.35, LEVELS, None, [0.0, 0.0], {}, seeds)
    assert [m["dist_to_flow_until"] for m in entry["members"]] == pytest.approx([7.0, 14.0])
    assert entry["dist_to_flow_until"] == pytest.approx(7.0)


def test_the_order_of_the_mean_is_over_the_samples_with_a_distance_at_every_fitted_rate():
    """Mutations A4 (a sample with a distance at any fitted rate enters) and A5 (the median distance for the
    mean): three seeds with every distance, orders 1, 1.5, 3 (their mean distance is not their median), and
    a fourth whose series at 0.05 has no distance (its flow failed): left out. Reference: scipy's
    linregress of the three seeds' mean distances."""
    from dlnlab.lab.results._aggregate_collect import Setting, _add_samples
    from dlnlab.lab.results._aggregate_stats import setting_orders

    lrs, orders = [0.025, 0.05, 0.1], {"seed0": 1.0, "seed1": 1.5, "seed2": 3.0, "seed3": 1.0}
    dist = {run: [(3.0 + i) * lr**p for lr in lrs] for i, (run, p) in enumerate(orders.items())}
    dist["seed3"][1] = None
    st = Setting("k")
    for run in orders:
        for lr, d in zip(lrs, dist[run]):
            entry = {"status": "ok", "lr": lr, "max_dist_to_flow": d}
            _add_samples(
                st, run, f"sgd_lr_{lr!r}", SimpleNamespace(entry=entry, members=None, arrays={"t": [0.0]})
            )
    got = setting_orders(st, "max_dist_to_flow")
    complete = ("seed0", "seed1", "seed2")
    assert got.per_sample.n == 3
    slopes = [stats.linregress(np.log(lrs), np.log(dist[run])).slope for run in complete]
    assert got.per_sample.mean == pytest.approx(np.mean(slopes), rel=1e-12)
    mean = np.mean([dist[run] for run in complete], axis=0)
    assert got.of_the_mean == pytest.approx(stats.linregress(np.log(lrs), np.log(mean)).slope, rel=1e-12)


@pytest.mark.parametrize("dt, tau", [(0.05, 0.03), (0.1, 0.07), (0.1, 0.3), (0.01, 0.0025), (0.1, 0.1 / 0.9)])
def test_each_grid_point_records_the_step_nearest_its_time(dt, tau):
    """Mutations R1 and R2 (k_m = floor(t_m / tau), m = floor(k tau / dt)): below the grid's spacing a grid
    point records the step whose time is nearest to it; above it each step is recorded once, at the grid
    point nearest to its time. Reference: the nearest by brute force over every step and point."""
    n_grid = 41
    ms, ks = series_grid(n_grid, dt, tau)
    grid = np.arange(n_grid) * dt
    if tau <= dt:
        steps = np.arange(int(grid[-1] / tau) + 3)
        want = [int(steps[np.argmin(np.abs(steps * tau - t))]) for t in grid]
        assert ms == list(range(n_grid)) and ks == want
    else:
        assert ks == list(range(ks[-1] + 1)) and abs(ks[-1] * tau - grid[-1]) <= tau / 2
        assert ms == [int(np.argmin(np.abs(grid - k * tau))) for k in ks]


def test_heavy_balls_flow_is_read_at_k_eta_over_one_minus_beta_on_the_grid_point_of_step_k():
    """Mutations R5 (heavy ball's flow times k eta, its momentum ignored) and R4 (a solve's next row): a
    "flow" whose state is its own time, read where the run reads it for each grid point of a heavy-ball
    series (beta 0.5: a step stands for 2 eta of flow time, by hand), gives the time of the step the grid
    point records, the step nearest to it."""
    from dlnlab.lab.runner._times import SeriesTimes, at_series_grid

    dt, beta = 0.1, 0.5
    cfg = SimpleNamespace(
        flow=SimpleNamespace(t_max=2.0), log=SimpleNamespace(dt=dt), sgd=SimpleNamespace(momentum=beta)
    )
    times = SeriesTimes.of(SimpleNamespace(cfg=cfg, lrs=[0.03, 0.01]))
    n_grid = len(times.grid)
    grid = np.arange(n_grid) * dt
    for lr, tau in ((0.03, 0.06), (0.01, 0.02)):
        lr_times = times.by_lr[lr]
        steps = np.arange(int(2.0 / tau) + 3)
        want_steps = [int(steps[np.argmin(np.abs(steps * tau - t))]) for t in grid]
        assert lr_times.steps == want_steps
        read = at_series_grid(times.all_t[:, None], times.all_t, lr_times, n_grid)[:, 0].numpy()
        assert read == pytest.approx(np.asarray(want_steps) * tau, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("momentum, batch_size", [(0.0, None), (0.9, None), (0.0, 8)])
def test_the_next_steps_sharpness_is_asked_of_plain_full_batch_gd_only(momentum, batch_size):
    """Mutation R7 (``next_step`` for heavy ball too): the other phase of GD's zigzag is one plain GD step
    past the last point, which is not heavy ball's next point (it has a velocity) nor SGD's (a minibatch).
    The series' last grid point: lr 0.3 on dt 0.05 to t = 4 ends at step 13, t = 3.9, grid point 78."""
    from dlnlab.lab.runner._sgd import _metric_options

    sgd = SimpleNamespace(momentum=momentum, batch_size=batch_size)
    plan = SimpleNamespace(cfg=SimpleNamespace(sgd=sgd, log=SimpleNamespace(dt=0.05)))
    ctx = SimpleNamespace(plan=plan, metric_kw={"analysis_points": 5}, n_grid=81)
    tau = time_per_step(0.3, momentum)
    options = _metric_options(ctx, 0.3, tau)
    assert options["analysis_points"] == 5
    if momentum == 0.0:
        assert options["last_m"] == 78
    assert options.get("next_step") == (0.3 if momentum == 0.0 and batch_size is None else None)


def test_an_exit_without_a_plateau_is_where_the_modes_strength_crosses_half_its_mode():
    """Mutation X1 (the crossing of m_k): a series that left no plateau by mode 1 exits where its strength
    u_1(t) = m_1 (1 - exp(-t)) crosses m_1 / 2, at t = ln 2 (closed form; the crossing is interpolated on a
    grid of 1e-3); its delay is against the flow's exit, 0.5, and divided by eta."""
    from dlnlab.saddles import exits_vs_reference

    problem = SimpleNamespace(modes=torch.tensor([3.0, 1.5]))
    t = np.arange(0.0, 3.0, 1e-3)
    strength = np.stack([np.full_like(t, 3.0), 1.5 * (1 - np.exp(-t))], axis=1)
    flow = [SimpleNamespace(exit_mode=1, t_exit=0.5)]
    (got,) = exits_vs_reference(flow, [], problem, {"t": t, "mode_strength": strength}, lr=0.01)
    assert got.t_exit == pytest.approx(math.log(2), abs=1e-6)
    assert got.delay == pytest.approx(math.log(2) - 0.5, abs=1e-6)
    assert got.delay_over_lr == pytest.approx((math.log(2) - 0.5) / 0.01, abs=1e-4)


def _choice_cfg(dims, members, lrs=(0.01,)):
    """What the flow's and the analysis's choices read of a config."""
    return SimpleNamespace(
        model=SimpleNamespace(dims=dims), ensemble=SimpleNamespace(size=members, vary=SimpleNamespace(name="init")),
        flow=SimpleNamespace(method=SimpleNamespace(name="auto"), t_max=10.0, central=False, chunk_members=None),
        sgd=SimpleNamespace(lrs=list(lrs), edge=False, momentum=0.0), device="cpu",
        log=SimpleNamespace(analysis_points=10, hessian_dense_max=2000, top_eigs=1),
    )  # fmt: skip


def test_the_batched_stiff_solvers_are_candidates_while_the_members_float32_matrices_fit():
    """Mutation C2 (8 bytes an entry): bdf_batch and radau_batch keep a float32 p x p matrix per member; they
    are among auto's candidates exactly while E p^2 of them fit in BDF_BATCH_MAX_BYTES (numpy's itemsize)."""
    from dlnlab.lab.config import _choose as choose
    from dlnlab.network import Layout

    dims = [6, 6, 6]
    p = Layout(tuple(dims)).n_weights
    per_member = np.dtype(np.float32).itemsize * p * p
    fit = choose.BDF_BATCH_MAX_BYTES // per_member  # the most members whose matrices fit
    for members in (fit, fit + 1):
        est = choose.choose_flow(_choice_cfg(dims, int(members)), lam_max=5.0).estimates_s
        assert ("radau_batch" in est and "bdf_batch" in est) == (
            members * per_member <= choose.BDF_BATCH_MAX_BYTES
        )


def test_every_series_saddles_are_classified_only_when_all_of_them_fit_in_half_the_analysis_budget():
    """Mutation C6 (all series when one fits): the saddles take at most half of the analysis budget, a third
    of the rest of the run (a quarter of the whole): all series' when 1 + len(lrs) of them fit, else the
    flow's, else none; by hand from one series' classification cost."""
    from dlnlab.lab.config import _choose as choose
    from dlnlab.network import Layout

    cfg = _choice_cfg([4, 4, 4], 1, lrs=(0.01, 0.02, 0.04))
    layout = Layout((4, 4, 4))
    per_series = (min(layout.r_max, 2) + 1) * choose.saddle_seconds(layout, 2000)
    for series_fitting, want in ((4.5, "all"), (3.5, "flow"), (2.0, "flow"), (0.9, "none")):
        run_seconds = series_fitting * per_series * 6  # budget / 2 = run_seconds / 6
        assert choose.choose_analysis(cfg, run_seconds, n_modes=2).saddles == want
