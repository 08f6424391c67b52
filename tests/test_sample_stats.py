"""The statistics across seeds and ensemble members (scripts/aggregate.py's, an ensemble entry's), each
against an independent computation: the standard library's ``statistics``, per point and by hand."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from dlnlab.lab.results._aggregate_stats import curve_stats, sample_spread
from dlnlab.lab.results._ensemble import spread


@pytest.mark.parametrize("of", [lambda v: sample_spread(v).to_dict(), spread], ids=["aggregate", "ensemble"])
def test_the_std_of_one_value_is_unknown_not_zero(of):
    """One seed (or one finite member) says nothing about the spread: the std was 0.0, which reads as
    samples that agree to every digit."""
    one = of([2.5, None, math.nan])
    assert one["n"] == 1 and one["mean"] == 2.5 and one["std"] is None
    two = of([2.5, 4.0, math.inf])
    assert two["n"] == 2 and two["std"] == pytest.approx(statistics.stdev([2.5, 4.0]), rel=1e-15)


def test_the_curves_statistics_count_each_point_s_samples_and_leave_one_sample_s_std_unknown():
    """Three samples, one stopped after 2 points and one after 4 (a member stopped early): each point's
    mean and std are over the samples that reached it (statistics.mean / stdev per point), ``n`` says
    how many, and where one is left its std is NaN (it was 0 with a single sample overall)."""
    a, b, c = [1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 6.0, 7.0, 8.0], [5.0, 1.0]
    got = curve_stats([np.array(a), np.array(b), np.array(c)])
    cols = [[s[i] for s in (a, b, c) if i < len(s)] for i in range(5)]
    assert got.n.tolist() == [3, 3, 2, 2, 1]
    np.testing.assert_allclose(got.mean, [statistics.mean(v) for v in cols], rtol=1e-15)
    np.testing.assert_allclose(got.std[:4], [statistics.stdev(v) for v in cols[:4]], rtol=1e-14)
    assert math.isnan(got.std[4])
    np.testing.assert_allclose(got.q50, [statistics.median(v) for v in cols], rtol=1e-15)
    assert np.isnan(curve_stats([np.array(a)]).std).all()


def test_the_per_sample_orders_pair_each_run_s_own_series_across_the_learning_rates():
    """Three seeds with orders 1, 1.5 and 2; seed 0's series at the largest lr diverged (skipped). The
    samples were paired by their place in each lr's list, so seed 1 at 0.1 met seed 0 at the smaller
    rates (a mean slope of 0.60 instead of 1.75). Reference: scipy's linregress of each seed's own
    points, and of the mean over the seeds that have every lr."""
    from types import SimpleNamespace

    from scipy.stats import linregress

    from dlnlab.lab.results._aggregate_collect import Setting, _add_samples
    from dlnlab.lab.results._aggregate_stats import setting_orders

    lrs, orders = [0.025, 0.05, 0.1], {"seed0": 1.0, "seed1": 1.5, "seed2": 2.0}
    dist = {run: [(3.0 + i) * lr**p for lr in lrs] for i, (run, p) in enumerate(orders.items())}
    st = Setting("k")
    for run in orders:
        for lr, d in zip(lrs, dist[run]):
            status = "diverged" if (run, lr) == ("seed0", 0.1) else "ok"
            entry = {"status": status, "lr": lr, "max_dist_to_flow": d}
            series = SimpleNamespace(entry=entry, members=None, arrays={"t": np.arange(3.0)})
            _add_samples(st, run, f"sgd_lr_{lr!r}", series)
    got = setting_orders(st, "max_dist_to_flow")
    want = [linregress(np.log(lrs), np.log(dist[run])).slope for run in ("seed1", "seed2")]
    assert got.per_sample.n == 2
    assert got.per_sample.mean == pytest.approx(np.mean(want), rel=1e-12)
    assert [got.per_sample.min, got.per_sample.max] == pytest.approx(want, rel=1e-12)
    mean = np.mean([dist["seed1"], dist["seed2"]], axis=0)
    assert got.of_the_mean == pytest.approx(linregress(np.log(lrs), np.log(mean)).slope, rel=1e-12)


def test_the_samples_5_to_95_percent_range_is_not_named_a_confidence_interval():
    """aggregate.json wrote the samples' 5% and 95% quantiles as ``ci90``, the name sgd_limit gives its
    bootstrap confidence intervals; they are where the samples fall (``q5_q95``, as the CSV's q5, q95).
    Reference: statistics.quantiles (inclusive: numpy's linear interpolation) cut at 5% and 95%."""
    values = [0.3, 2.0, 1.1, 7.5, 4.0, 4.0, 2.2]
    got = sample_spread(values)
    assert "ci90" not in got.to_dict()
    cuts = statistics.quantiles(values, n=20, method="inclusive")
    assert got.q5_q95 == pytest.approx([cuts[0], cuts[-1]], rel=1e-14)


def test_plateau_exits_count_each_sample_once_and_say_how_many_did_not_exit():
    """Sample a leaves a plateau by mode 1 twice (SGD unlearnt it in between), b once, c never (it ends
    on its plateau), d was not analysed (no plateaus): mode 1 had n = 3 (a twice, c and d unsaid).
    Reference: each sample's first exit by hand, statistics.mean over those, the rest counted apart."""
    from dlnlab.lab.results._aggregate_records import ModeExits
    from dlnlab.lab.results._aggregate_stats import mode_exits

    def plateau(mode, t_exit):  # a member's plateau: the six keys PlateauEntry requires
        return {
            "t_start": 0.0,
            "t_end": 0.5,
            "level": 2.5,
            "modes_learnt": [],
            "exit_mode": mode,
            "t_exit": t_exit,
        }

    entries = [
        {"plateaus": [plateau(0, 1.0), plateau(1, 3.0), plateau(0, 5.0)]},  # a
        {"plateaus": [plateau(0, 2.0)]},  # b
        {"plateaus": [plateau(None, None)]},  # c: the series ends on its plateau
        {},  # d: not analysed
    ]
    got = {e.mode: e for e in mode_exits([({}, e) for e in entries])}
    assert sorted(got) == [0, 1]
    assert got[0].t_exit.n == 2 and got[0].t_exit.mean == statistics.mean([1.0, 2.0])
    assert got[0].t_exit.max == 2.0  # a's second exit, 5.0, is not a sample of its own
    assert (got[0].samples, got[0].without_exit, got[0].exited) == (3, 1, 2)  # a and b left by it
    assert got[1].t_exit.n == 1 and (got[1].samples, got[1].without_exit, got[1].exited) == (3, 2, 1)
    # a series none of whose samples left by a mode the setting's other series left by: 0 of n, not nothing
    (none,) = mode_exits([({}, entries[2])], {0})
    assert none == ModeExits(mode=0, t_exit=None, samples=1, without_exit=1) and none.exited == 0
    assert none.to_dict() == {"mode": 0, "t_exit": None, "samples": 1, "without_exit": 1}


def test_an_ensemble_s_exit_spread_counts_a_member_that_left_twice_once():
    """The ensemble entry's own spread of the exit times: member 0 left by mode 1 at t = 1 and again at
    t = 5; the spread was over 3 exit times of 2 members. Reference: the members' first exits by hand."""
    from dlnlab.lab.results._ensemble import _exit_spread

    members = [
        {"plateaus": [{"exit_mode": 0, "t_exit": 1.0}, {"exit_mode": 0, "t_exit": 5.0}]},
        {"plateaus": [{"exit_mode": 0, "t_exit": 2.0}]},
    ]
    (got,) = _exit_spread(members)
    assert got["mode"] == 0 and got["t_exit"]["n"] == 2
    assert got["t_exit"]["mean"] == statistics.mean([1.0, 2.0]) and got["t_exit"]["max"] == 2.0


def test_curves_of_another_shape_or_time_grid_are_left_out_and_said(tmp_path):
    """Four samples of one setting: the first with 3 singular values per point where the others have 2,
    the last on another time grid (t twice as far apart). The first sample's shape was taken and the
    other two dropped unsaid (sv over 1 sample), and the last stacked at the wrong times. Now the
    most common shape is kept, and the row says what was left out. Reference: numpy's mean of the kept
    samples by hand."""
    from types import SimpleNamespace

    from dlnlab.lab.results._aggregate_collect import Setting, _add_samples
    from dlnlab.lab.results._aggregate_stats import series_row

    t = np.arange(4) * 0.5
    rng = np.random.default_rng(0)
    arrays = [
        {"t": t, "loss": rng.random(4), "sv": rng.random((4, 3))},
        {"t": t, "loss": rng.random(4), "sv": rng.random((4, 2))},
        {"t": t, "loss": rng.random(4), "sv": rng.random((4, 2))},
        {"t": 2 * t, "loss": rng.random(4), "sv": rng.random((4, 2))},
    ]
    st = Setting("k")
    for i, a in enumerate(arrays):
        _add_samples(st, f"run{i}", "flow", SimpleNamespace(entry={"status": "ok"}, members=None, arrays=a))
    curves, row = series_row(st, "flow", st.samples["flow"])
    np.testing.assert_allclose(curves.sv.mean, (arrays[1]["sv"] + arrays[2]["sv"]) / 2, rtol=1e-15)
    assert (curves.sv.n == 2).all() and (curves.loss.n == 3).all()
    np.testing.assert_allclose(curves.loss.mean, np.mean([a["loss"] for a in arrays[:3]], axis=0), rtol=1e-15)
    assert curves.dist_to_flow is None and set(curves.to_npz()) == {"t", *(f"{c}_{s}" for c in ("loss", "sv")
        for s in ("mean", "std", "n", "q10", "q25", "q50", "q75", "q90"))}  # fmt: skip
    assert row.curves_left_out == [
        "loss: 1 of 4 samples left out (1 on another time grid)",
        "sv: 2 of 4 samples left out (1 on another time grid; 1 with values of shape (3,) per point, not (2,))",
    ]
    assert row.samples == 4  # the numbers (final loss, exits) are still over every sample


def test_the_orders_are_fitted_by_each_runs_own_rule_over_the_order_fit_smallest_rates():
    """The aggregate fitted every learning rate (two as well), where each run fits the sgd.order_fit
    smallest and has no order with fewer (a run with lrs 0.8 diverged, 0.02, 0.01 said none; its
    aggregate 1.003). Reference: scipy's linregress over the three smallest rates."""
    from types import SimpleNamespace

    from scipy.stats import linregress

    from dlnlab.lab.results._aggregate_collect import Setting, _add_samples
    from dlnlab.lab.results._aggregate_stats import setting_orders

    lrs = [0.01, 0.02, 0.04, 0.3]  # the distance bends up at the largest: it must not enter
    dist = [0.1 * lr * (1 + 30 * lr**2) for lr in lrs]
    st = Setting("k")  # order_fit 3, the default, as the runs' summaries say
    for lr, d in zip(lrs, dist):
        entry = {"status": "ok", "lr": lr, "max_dist_to_flow": d}
        _add_samples(
            st, "run0", f"sgd_lr_{lr!r}", SimpleNamespace(entry=entry, members=None, arrays={"t": [0.0]})
        )
    got = setting_orders(st, "max_dist_to_flow")
    want = linregress(np.log(lrs[:3]), np.log(dist[:3])).slope
    assert got.lrs == lrs[:3] and got.per_sample.mean == pytest.approx(want, rel=1e-12)
    assert got.of_the_mean == pytest.approx(want, rel=1e-12) and got.message == ""
    for name in ("sgd_lr_0.04", "sgd_lr_0.3"):
        del st.samples[name], st.origins[name]
    got = setting_orders(st, "max_dist_to_flow")
    assert (got.per_sample, got.of_the_mean, got.lrs) == (None, None, [0.01, 0.02])
    assert got.message == "needs at least 3 learning rates with a distance (sgd.order_fit), got 2"


def test_the_aggregate_s_inner_steps_are_not_exported():
    """aggregate_settings (collect's settings into an Aggregate) and csv_records (the CSV's rows as dicts)
    were exported by dlnlab.lab.results, though only their own modules call them and no script, test or
    doc does: an Aggregate comes from aggregate_runs, its CSV from Aggregate.csv (csv_text)."""
    import dlnlab.lab.results as results

    for name in ("aggregate_settings", "csv_records"):
        assert name not in results.__all__ and name not in dir(results)
        with pytest.raises(AttributeError):
            getattr(results, name)
    assert {"aggregate_runs", "Aggregate", "csv_text"} <= set(results.__all__)
