"""The size-dependent defaults (dlnlab/lab/config/_choose.py): the flow's method, the curvature budget and theta
on a sub-grid, each recorded in the summary and each checked against the run it replaces."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlnlab.lab.config import _choose as choose
from dlnlab.lab.config import prepare, typed_config
from dlnlab.lab.runner import run
from dlnlab.metrics import theta_rows
from dlnlab.network import Layout
from tests._helpers import TINY, make_cfg


def test_auto_takes_lsoda_on_the_figure1_net_cvode_on_a_wide_one_rk45_on_a_short_horizon():
    # what was measured (docs/benchmarks/flow.md): Figure 1, lsoda 0.57 s, cvode 1.2 s, dopri5 8 s;
    # width 64, depth 5, t = 100: cvode 1.5 s, dopri5 12.6 s, lsoda (a 20480^2 Jacobian) minutes
    plan = prepare(make_cfg(["sgd.lrs=[]"]))
    assert plan.flow_choice.asked == "auto" and plan.flow_choice.method == "lsoda"
    est = plan.flow_choice.estimates_s
    assert est["lsoda"] < est["cvode"] < est["rk45"], est
    assert plan.solver.method == "lsoda" and "cheapest by the cost model" in plan.flow_choice.why
    wide = [
        "model.dims=[64,64,64,64,64,64]",
        "data.singular_values=[4,3,2,1]",
        "flow.t_max=100",
        "sgd.lrs=[]",
    ]
    big = prepare(make_cfg(wide))
    assert big.flow_choice.method == "cvode" and "lsoda" not in big.flow_choice.estimates_s
    assert big.flow_choice.estimates_s["rk45"] > 2 * big.flow_choice.estimates_s["cvode"]
    short = prepare(make_cfg([*wide[:2], "flow.t_max=3", "sgd.lrs=[]"]))  # not stiff yet: explicit wins
    assert short.flow_choice.method == "rk45", short.flow_choice
    ensemble = prepare(make_cfg(["ensemble.size=64", "flow.t_max=20", "sgd.lrs=[]"])).flow_choice
    assert ensemble.method == "rk45", ensemble  # one batch with per-member steps
    assert "bdf_batch" not in plan.flow_choice.estimates_s  # a single run: lsoda, not a batch of one
    named = prepare(make_cfg(["flow=dopri5", "sgd.lrs=[]"]))
    assert named.flow_choice.method == "dopri5" and named.flow_choice.why == "chosen in the config"


def test_auto_takes_radau_batch_for_an_ensemble_on_the_stiff_horizon_and_never_bdf_batch():
    # measured (docs/performance.md, Figure 1 nets, CPU seconds): 64 nets at t_max 300, radau_batch 7.0 s
    # (within 3 rtol of each member's tight solve) against rk45 7.6 s (27 rtol), bdf_batch 4.8 s (5,500
    # rtol; 9.7 s at rtol 1e-12, still 19 rtol off) and 64 lsoda solves 33 s (600 rtol); 8 nets at t_max
    # 300, radau_batch 1.9 s against rk45 4.4 s and 8 lsoda solves 4.2 s; t_max 100, rk45 3.1 s against 5.2 s
    far = prepare(make_cfg(["ensemble.size=64", "flow.t_max=300", "sgd.lrs=[]"])).flow_choice
    assert far.method == "radau_batch" and "within 10 rtol" in far.why, far
    est = far.estimates_s
    assert est["radau_batch"] < est["rk45"] < est["bdf_batch"] < est["lsoda"], est
    few = prepare(make_cfg(["ensemble.size=8", "flow.t_max=300", "sgd.lrs=[]"])).flow_choice
    assert few.method == "radau_batch" and few.estimates_s["lsoda"] > 3 * few.estimates_s["radau_batch"], few
    mid = prepare(make_cfg(["ensemble.size=64", "flow.t_max=100", "sgd.lrs=[]"])).flow_choice
    assert mid.method == "rk45", mid
    wide = ["model.dims=[64,64,64,64,64,64]", "data.singular_values=[4,3,2,1]", "flow.t_max=100"]
    wide_est = prepare(make_cfg([*wide, "ensemble.size=4", "sgd.lrs=[]"])).flow_choice.estimates_s
    assert "bdf_batch" not in wide_est and "radau_batch" not in wide_est
    fig1, batched = Layout((11, 6, 6, 6, 6, 4)), ("lsoda", "cvode", "rk45", "bdf_batch", "radau_batch")
    for members in (2, 8, 64, 512):  # at equal accuracy bdf_batch is never the cheapest (lambda_max 46)
        for t_max in (5, 20, 100, 300, 3000):
            est = {
                m: choose.method_seconds(m, fig1, 46.0, t_max, members) * choose.accuracy_factor(m)
                for m in batched
            }
            assert min(est, key=est.get) != "bdf_batch", (members, t_max, est)


def test_a_short_ensemble_of_a_tiny_net_is_batched_with_rk45_not_solved_member_by_member():
    # at equal rtol lsoda member by member and the batched rk45 cost about the same here; at equal
    # accuracy (lsoda's error per rtol measured 600 through Figure 1's plateaus) the batch wins
    choice = prepare(make_cfg([*TINY, "flow.t_max=2.0", "ensemble.size=3", "sgd.lrs=[]"])).flow_choice
    assert choice.method == "rk45", choice
    raw = {m: s / choose.accuracy_factor(m) for m, s in choice.estimates_s.items()}
    assert (
        raw["lsoda"] < 1.2 * raw["rk45"] and choice.estimates_s["lsoda"] > 2 * choice.estimates_s["rk45"]
    ), raw


def test_the_accuracy_factor_prices_a_method_at_the_accuracy_asked():
    # a method within the goal costs what it costs; one 600 rtol off pays for the tighter rtol it needs
    assert choose.accuracy_factor("radau_batch") == 1.0
    assert choose.accuracy_factor("lsoda") == (600.0 / choose.ACCURACY_GOAL) ** 0.21
    assert choose.accuracy_factor("bdf_batch") > choose.accuracy_factor("rk45") > 1.0


def test_the_choice_is_the_same_on_every_machine():
    # a cost model of the shapes, not a timing: the same config always runs the same method
    a, b = (prepare(make_cfg(["sgd.lrs=[]"])).flow_choice for _ in range(2))
    assert a == b


def test_the_explicit_estimate_follows_the_stiffness():
    # dopri5's steps are bounded by its stability on the stiffest mode: cost grows like lambda_max t_max
    assert choose.explicit_nfe(100.0, 300.0) == 2 * choose.explicit_nfe(50.0, 300.0)
    assert choose.explicit_nfe(1e-3, 1.0) == choose.EXPLICIT_MIN_NFE


def test_the_stiffness_is_the_initial_weights_where_they_are_sharper_than_the_balanced_minimum():
    """lam_max, which sizes the explicit solvers' steps and the flow's choice: the balanced minimum's
    sharpness h m_1^(2-2/h) for the tiny net's default init, the Hessian's largest |eigenvalue| at theta0
    (eigvalsh of the dense Hessian here) for an init on the stable branch far out (u0 = -3, -2: 27.4
    against 7.56), where the norm bound says it may be sharper."""
    plain = prepare(make_cfg([*TINY]))
    assert plain.lam_max == pytest.approx(plain.balanced_sharpness, rel=1e-12)
    far = prepare(make_cfg([*TINY, "init=aligned", "init.u0=[-3.0,-2.0]"]))
    evals = torch.linalg.eigvalsh(far.problem.hessian(far.theta0, far.cfg.model.dims))
    assert far.lam_max == pytest.approx(float(evals.abs().max()), rel=1e-9)
    assert far.lam_max > 3 * far.balanced_sharpness


def test_the_curvature_budget_keeps_the_analysis_under_a_quarter_of_the_run():
    cfg = prepare(make_cfg([*TINY])).cfg
    full = choose.choose_analysis(cfg, run_seconds=1e6)
    assert full.points == cfg.log.analysis_points and full.kind == "dense"
    cut = choose.choose_analysis(cfg, run_seconds=60 * full.seconds_per_point)
    series = 1 + len(cfg.sgd.lrs)
    assert 0 < cut.points < cfg.log.analysis_points
    # the kept points cost at most a third of the rest of the run: a quarter of the whole, and one more
    # point would not (at 20 x a point's cost, a quarter of the run and a fifth of it both gave 1 point)
    assert cut.points * series * cut.seconds_per_point <= 60 * full.seconds_per_point / 3
    assert (cut.points + 1) * series * cut.seconds_per_point > 60 * full.seconds_per_point / 3
    off = choose.choose_analysis(prepare(make_cfg([*TINY, "log.analysis_points=0"])).cfg, 1.0)
    assert off.points == 0
    assert prepare(make_cfg([])).analysis.saddles == "all"  # Figure 1: every series' saddles classified
    # the wide nets' choices from the chooser itself, at the run times prepare estimates for them (about
    # 10 s and 40 s); the same through prepare (which measures the nets: 11 s) with the slow tests
    wide = choose.choose_analysis(typed_config(make_cfg(WIDE)), run_seconds=10.0)
    assert wide.kind == "lanczos" and "Lanczos" in wide.why
    huge = choose.choose_analysis(typed_config(make_cfg(HUGE)), run_seconds=40.0)
    assert huge.saddles == "none" and "a quarter of the run" in huge.saddles_why


WIDE = ["model.dims=[256,256,256]", "data.n_samples=256", "sgd.lrs=[]"]
HUGE = [
    "model.dims=[256,256,256,256,256,256,256,256,256]",
    "data.n_samples=256",
    "flow.t_max=5",
    "sgd.lrs=[0.01]",
]


@pytest.mark.slow
def test_prepare_plans_the_analysis_of_wide_nets():
    wide = prepare(make_cfg(WIDE)).analysis
    assert wide.kind == "lanczos" and "Lanczos" in wide.why
    huge = prepare(make_cfg(HUGE)).analysis  # 33 s a plateau against a 40 s run: none
    assert huge.saddles == "none" and "a quarter of the run" in huge.saddles_why


@pytest.mark.lab
def test_theta_on_a_sub_grid_above_its_size_limit(tmp_path):
    base = [*TINY, "sgd.lrs=[0.02]", "flow.t_max=2.0"]
    full = run(make_cfg(base), output_dir=tmp_path / "full")
    # 27 weights x 8 bytes x 11 rows = 2376 bytes: theta every 4th of the 41 grid points, and the last
    sub = run(make_cfg([*base, "log.theta_max_mb=0.002376"]), output_dir=tmp_path / "sub")
    assert full.exit_code == sub.exit_code == 0
    summary = json.loads((tmp_path / "sub" / "summary.json").read_text())
    assert summary["theta_every"] == 4
    for name in ("flow", "sgd_lr_0.02"):
        a = dict(np.load(tmp_path / "full" / "series" / f"{name}.npz"))
        b = dict(np.load(tmp_path / "sub" / "series" / f"{name}.npz"))
        assert "theta" not in b and b["theta_sub"].shape[0] == len(b["theta_grid_index"]) == 11
        assert b["theta_grid_index"][-1] == len(a["t"]) - 1
        rows, theta = theta_rows(b)
        np.testing.assert_array_equal(theta, a["theta"][rows])
        for key in ("t", "loss", "sv", "grad_norm"):  # every other metric on every grid point
            np.testing.assert_array_equal(a[key], b[key])
    assert summary["series"]["flow"]["plateaus"] is not None


def test_theta_rows_maps_a_sub_grid_back_to_the_grid():
    arrays = {
        "grid_index": np.arange(10),
        "theta_sub": torch.arange(6.0).reshape(3, 2).numpy(),
        "theta_grid_index": np.array([0, 4, 8]),
    }
    rows, theta = theta_rows(arrays)
    np.testing.assert_array_equal(rows, [0, 4, 8])
    assert theta_rows({"t": np.zeros(3)}) == (None, None)
