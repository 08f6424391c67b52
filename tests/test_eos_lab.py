"""The edge of stability in the lab: top-k sharpness in every series, the central flow's kind
(cflow_lr_<lr>), GD at every step through its crossing (edge_lr_<lr>), their files, summary keys,
tags and cost model. The core's own formulas (third derivative, sigma^2, reduction to the flow) are
tested in test_eos_*.py."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import make_cfg

from dlnlab.eos import integrate_central
from dlnlab.flow import Solver, integrate
from dlnlab.metrics import SeriesMetrics
from dlnlab.network import Layout, unpack
from dlnlab.problem import RegressionProblem

# its tests on one xdist worker (--dist loadgroup): its module fixtures are lab runs, made once per worker
pytestmark = pytest.mark.xdist_group("test_eos_lab")

DIMS = [4, 4, 4, 3]
EDGE_LR = 0.2163  # conf/experiment/eos.yaml's: GD enters the edge at step 6 (t = 1.3)
T_MAX = 3.0
EOS = ["experiment=eos", f"flow.t_max={T_MAX}", "log.dt=0.1", "log.analysis_points=31", "log.figures=false",
       "log.progress=never"]  # fmt: skip


@pytest.fixture(scope="module")
def eos_run(tmp_path_factory):
    from dlnlab.lab.runner import run

    out = tmp_path_factory.mktemp("eos") / "run"
    res = run(make_cfg([*EOS, "logger=tensorboard"]), output_dir=out)
    problem = RegressionProblem.from_data(*(np.load(out / "problem.npz")[k] for k in "XY"))
    return res, out, problem


def _npz(out, name):
    return dict(np.load(out / "series" / f"{name}.npz"))


@pytest.mark.lab
def test_the_run_records_gd_the_flow_the_central_flow_and_the_edge_series(eos_run):
    res, out, _ = eos_run
    assert res.exit_code == 0
    for lr in (EDGE_LR,):
        for prefix in ("cflow_lr_", "sgd_lr_", "edge_lr_"):
            assert res["series"][f"{prefix}{lr!r}"]["status"] == "ok"
        assert (out / "series" / f"cflow_lr_{lr!r}.npz").exists() and (
            out / "series" / f"edge_lr_{lr!r}.npz"
        ).exists()
    # no TensorBoard run of their own: they are compared in their GD series' run (and the report's run)
    runs = ["flow", "report", f"sgd_lr_{EDGE_LR!r}"]
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == sorted(runs)
    assert res["analysis"]["edge"]["spectra"] > 0 and res["analysis"]["edge"]["central_evals"] > 0
    # the central flow at GD's steps: on the edge from where Sigma switches on (once here), pinned to
    # 2/eta from where its gap |S - 2/eta| / (2/eta) stops falling
    edge, p = _npz(out, f"edge_lr_{EDGE_LR!r}"), res["series"][f"edge_lr_{EDGE_LR!r}"]["predictions"]
    gap, on = np.abs(edge["central_sharpness"] * EDGE_LR / 2 - 1), np.flatnonzero(edge["sigma_trace"] > 0)
    assert len(on) > 10 and np.all(np.diff(on) == 1)
    first = next(i for i in range(len(on) - 1) if gap[on[i + 1]] >= gap[on[i]])
    assert p["central_entering"] == pytest.approx(gap[on].max(), rel=1e-12)
    assert p["central_pinned"] == pytest.approx(gap[on[first:]].max(), rel=1e-12)
    assert p["central_pinned"] < 1e-3 * p["central_entering"]


@pytest.mark.lab
def test_top_eigs_match_an_autograd_hessian(eos_run):
    _, out, problem = eos_run
    flow = _npz(out, "flow")
    rows = np.flatnonzero(np.isfinite(flow["sharpness"]))
    assert flow["top_eigs"].shape == (len(flow["t"]), 3) and len(rows) >= 30
    np.testing.assert_array_equal(flow["top_eigs"][rows, 0], flow["sharpness"][rows])
    for i in rows[[0, len(rows) // 2, -1]]:
        theta = torch.as_tensor(flow["theta"][i])
        hess = torch.autograd.functional.hessian(lambda x: problem.loss(unpack(x, DIMS)), theta)
        want = torch.linalg.eigvalsh(hess).flip(0)[:3].numpy()
        np.testing.assert_allclose(flow["top_eigs"][i], want, rtol=1e-9, atol=1e-10)


def test_top_eigs_by_lobpcg_above_the_dense_limit_agree_with_dense():
    problem = RegressionProblem.teacher([2.0, 1.0, 0.5], 4, 3, 20, seed=1)
    theta = torch.randn(
        Layout(DIMS).n_weights, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    thetas = torch.stack([theta, theta * 1.01, theta * 1.02])
    kw = dict(analysis_every=1, top_eigs=3, save_theta=False)
    dense = SeriesMetrics(problem, DIMS, theta, **kw).compute([0, 1, 2], torch.zeros(3), thetas, [None] * 3)
    lob = SeriesMetrics(problem, DIMS, theta, hessian_dense_max=10, **kw).compute(
        [0, 1, 2], torch.zeros(3), thetas, [None] * 3
    )
    np.testing.assert_allclose(lob["top_eigs"], dense["top_eigs"], rtol=1e-7)
    np.testing.assert_allclose(lob["sharpness"], dense["sharpness"], rtol=1e-7)


@pytest.mark.lab
def test_the_central_flow_series_is_the_cores_and_pinned_at_the_edge(eos_run):
    res, out, problem = eos_run
    name = f"cflow_lr_{EDGE_LR!r}"
    arr, entry = _npz(out, name), res["series"][name]
    for key in ("t", "loss", "theta", "sharpness", "top_eigs", "central_sharpness", "n_critical",
                "sigma_trace", "predicted_loss", "predicted_variance", "dist_to_flow"):  # fmt: skip
        assert key in arr, key
    c = entry["central"]
    thr = 2 / EDGE_LR
    assert c["threshold"] == pytest.approx(thr) and c["t_edge"] is not None and c["t_edge"] < 2.0
    assert c["max_excess"] <= 1e-6  # S never past 2/eta beyond the solver's tolerance
    on = arr["sigma_trace"] > 0
    # held to the solver's accuracy once past the switch-on point, where S is still closing on 2/eta
    dev = np.abs(arr["central_sharpness"] / thr - 1)
    assert c["sharpness_entering_edge"] == pytest.approx(dev[on].max(), rel=1e-9)
    assert c["sharpness_on_edge"] == pytest.approx(
        dev[on & (arr["t"] >= c["t_edge_settled"])].max(), rel=1e-6
    )
    assert c["sharpness_on_edge"] <= 1e-7 and c["sharpness_entering_edge"] > 1e3 * c["sharpness_on_edge"]
    assert c["t_edge"] < c["t_edge_settled"] < c["t_edge"] + 0.5
    assert on.sum() > 10 and np.abs(arr["central_sharpness"][on][-20:] / thr - 1).max() <= 1e-4
    # below the edge it is the gradient flow (the core's test_eos_central checks it to the solver's tolerance)
    before = arr["t"] < c["t_edge"]
    assert before.sum() >= 5 and c["max_dist_to_flow_before_edge"] <= 1e-8
    assert np.nanmax(arr["dist_to_flow"][before]) == c["max_dist_to_flow_before_edge"]
    # past the edge the two part (1e-2 here): the distance is ||central - flow|| at GD's exact times k eta, on
    # the grid points they stand for (NaN elsewhere), checked against both flows solved here alone (a
    # squared norm or a time off by a step agreed below the edge, where both are 1e-9)
    rows = np.flatnonzero(np.isfinite(arr["dist_to_flow"]))
    steps = np.rint(arr["t"][rows] / EDGE_LR)
    assert np.abs(steps * EDGE_LR - arr["t"][rows]).max() <= 0.05 + 1e-12 and len(np.unique(steps)) == len(
        rows
    )
    times, theta0 = torch.as_tensor(steps * EDGE_LR), torch.as_tensor(arr["theta"][0])
    tight = Solver("rk45", rtol=1e-10, atol=1e-12)
    central = integrate_central(problem, DIMS, theta0, times, EDGE_LR, solver=tight).theta
    flow = integrate(problem, DIMS, theta0, times, solver=tight).theta
    want = torch.linalg.vector_norm(central - flow, dim=1).numpy()
    assert want.max() > 1e-2
    np.testing.assert_allclose(arr["dist_to_flow"][rows], want, rtol=1e-5, atol=1e-8)
    # the predicted loss is L + 1/2 <Sigma, H> >= L, equal below the edge
    assert np.all(arr["predicted_loss"] >= arr["loss"] * (1 - 1e-12))
    np.testing.assert_allclose(arr["predicted_loss"][~on], arr["loss"][~on], rtol=1e-12)
    assert np.all(arr["predicted_loss"][on] > arr["loss"][on])
    # the recorded trajectory is the core's central flow, integrated here alone (through the crossing)
    t = torch.as_tensor(arr["t"][:21])
    alone = integrate_central(problem, DIMS, torch.as_tensor(arr["theta"][0]), t, EDGE_LR,
                              solver=Solver("rk45", rtol=1e-9, atol=1e-11))  # fmt: skip
    assert np.abs(alone.theta.numpy() - arr["theta"][:21]).max() <= 1e-6


@pytest.mark.lab
def test_the_edge_series_is_gd_at_every_step_and_its_diagnostics(eos_run):
    res, out, _ = eos_run
    name = f"edge_lr_{EDGE_LR!r}"
    arr, entry = _npz(out, name), res["series"][name]
    e = entry["edge"]
    steps = round(T_MAX / EDGE_LR)
    np.testing.assert_array_equal(arr["step"], np.arange(steps + 1))  # every step (a short run)
    np.testing.assert_allclose(arr["t"], arr["step"] * EDGE_LR, rtol=1e-12)
    assert e["stride"] == 1 and e["every_step"] == [0, steps] and e["steps"] == steps
    # the recomputed GD is Lightning's GD series at the steps both recorded
    gd = _npz(out, f"sgd_lr_{EDGE_LR!r}")
    both = np.isin(gd["step"], arr["step"])
    np.testing.assert_allclose(arr["loss"][gd["step"][both]], gd["loss"][both], rtol=1e-9)
    ok = both & np.isfinite(gd["sharpness"])
    np.testing.assert_allclose(arr["top_eigs"][gd["step"][ok], 0], gd["sharpness"][ok], rtol=1e-8)
    # diagnostics: the first step with S >= 2/eta, hovering after it, the GFS sharpness from theta0
    s, thr = arr["top_eigs"][:, 0], 2 / EDGE_LR
    first = int(np.argmax(s >= thr))
    assert e["t_edge"] == pytest.approx(arr["t"][first]) and first >= 1
    assert e["outcome"] == "at_edge" and e["hover_share"] >= 0.9
    assert e["median_ratio"] == pytest.approx(np.median((s[first:-1] + s[first + 1 :]) / 2) / thr)
    assert e["gfs_converged"] == [True] * len(e["gfs_t"])
    assert e["gfs_t"][0] == 0.0 and e["flow_limit_sharpness"] > thr  # the flow's limit is past the edge
    assert e["balanced_sharpness"] == pytest.approx(3 * 2 ** (4 / 3))
    assert e["amplitude_median"] > 0 and np.isnan(arr["amplitude"][0])
    p = entry["predictions"]
    ratio = arr["dist_avg_central"] / arr["dist_avg_flow"]
    assert p["ratio_median"] == pytest.approx(np.nanmedian(ratio)) and p["window"] == 8
    assert math.isnan(arr["avg_loss"][0]) and np.isfinite(arr["avg_loss"][4])


@pytest.mark.lab
def test_tensorboard_holds_the_edge_and_central_curves_in_the_gd_run(eos_run):
    from tensorboard.backend.event_processing.event_accumulator import (
        STORE_EVERYTHING_SIZE_GUIDANCE,
        EventAccumulator,
    )

    _, out, _ = eos_run
    acc = EventAccumulator(
        str(out / "tensorboard" / f"sgd_lr_{EDGE_LR!r}"), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE
    )
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {
        "central/sharpness_over_edge",
        "central/log10_predicted_loss",
        "edge/sharpness_over_edge",
        "edge/dist_ratio",
        "curvature/log10_eig_2",
        "curvature/log10_eig_3",
        "hp/edge_t_edge",
        "hp/edge_hover_share",
    } <= scalars
    sharp = acc.Scalars("edge/sharpness_over_edge")
    assert len(sharp) == round(T_MAX / EDGE_LR) + 1  # every step, under log.tb_max_points
    top = _npz(out, f"edge_lr_{EDGE_LR!r}")["top_eigs"][:, 0]  # S eta / 2, linear: 1 is the edge
    np.testing.assert_allclose([e.value for e in sharp], top * EDGE_LR / 2, rtol=1e-6)  # float32 events
    central = _npz(out, f"cflow_lr_{EDGE_LR!r}")
    ratio = acc.Scalars("central/sharpness_over_edge")
    np.testing.assert_allclose(ratio[-1].value, central["central_sharpness"][-1] * EDGE_LR / 2, rtol=1e-6)
    assert abs(ratio[-1].value - 1) < 1e-3  # pinned at the edge by t = 3
    assert any("edge of stability" in tag for tag in acc.Tags()["tensors"])  # the Text tab
    report = EventAccumulator(str(out / "tensorboard" / "report"), STORE_EVERYTHING_SIZE_GUIDANCE)
    report.Reload()  # the run's Text tab: numbered without gaps (the edge was 5 after 1, 2 and 4)
    texts = sorted(tag.split("/")[1] for tag in report.Tags()["tensors"] if tag.startswith("summary/"))
    assert texts == ["1 results", "2 plateaus", "3 config", "4 edge of stability"], texts


@pytest.mark.lab
def test_the_scripts_console_says_the_edge_is_expected_with_its_numbers(
    eos_run, tmp_path, capsys, monkeypatch
):
    """scripts/eos_lab.py's main (--replot: the block the run printed, again), in-process (the script
    from its command line: its refusals in tests/test_scripts.py): the verdict says at_edge is expected
    where 2/eta is below the flow limit's sharpness, with the summary's numbers; the lines are short
    (test_eos_console.py: each outcome's wording)."""
    import runpy

    from dlnlab._util import fmt

    res, out, _ = eos_run
    main = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "eos_lab.py"))["main"]
    monkeypatch.chdir(tmp_path)  # paths given relative, printed absolute (as train.py prints its run's)
    assert main(["--run", os.path.relpath(out, tmp_path), "--replot", "--out", "e.png"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[-1] == f"wrote {Path.cwd() / 'e.png'} (the run in {out})"
    assert (tmp_path / "e.png").stat().st_size > 10_000
    e = res["series"][f"edge_lr_{EDGE_LR!r}"]["edge"]
    assert e["outcome"] == "at_edge" and e["flow_limit_sharpness"] > e["threshold"]  # 9.944 > 9.246
    lines = stdout.splitlines()
    limit = fmt(e["flow_limit_sharpness"])
    verdict = f"at_edge, as expected at eta = {EDGE_LR}: 2/eta is below the flow limit's S = {limit}"
    assert f"  eta = {EDGE_LR} (2/eta = {2 / EDGE_LR:.5g}): {verdict}" in lines
    assert f"    S reaches 2/eta at t = {fmt(e['t_edge'])} and stays (no divergence)" in lines
    block = lines[
        lines.index("edge of stability (GD recomputed at every step; docs/eos.md explains each number):") :
    ]
    assert max(len(line) for line in block[:-1]) <= 120  # the last: "wrote <figure> (the run in <dir>)"


def test_the_cost_model_counts_k_and_the_edge_work():
    from dlnlab.lab.config import typed_config
    from dlnlab.lab.config._budget import estimate
    from dlnlab.lab.config._choose import analysis_seconds, edge_work

    wide = Layout([64, 64, 64, 64])
    assert analysis_seconds(wide, 1500, 3)[1] > analysis_seconds(wide, 1500, 1)[1]
    base = {"model": {"dims": DIMS}, "sgd": {"lrs": [0.2, 0.1]}, "flow": {"t_max": 10.0}}
    assert edge_work(typed_config(base)) is None
    edge = edge_work(typed_config({**base, "sgd": {"lrs": [0.2, 0.1], "edge": True}}))
    central = edge_work(typed_config({**base, "flow": {"t_max": 10.0, "central": True}}))
    # lr >= log.dt (0.1): the window takes the central flow from its series; at log.dt = 0.15 the window
    # at lr = 0.1 solves it again
    assert edge.central_evals == 0 and central.central_evals == pytest.approx(20 * (50 + 100))
    coarse = edge_work(typed_config({**base, "flow": {"t_max": 10.0, "central": True}, "log": {"dt": 0.15}}))
    assert coarse.central_evals == pytest.approx(20 * 50 + 2 * 20 * 100)
    assert central.seconds > edge.seconds > 0 and edge.spectra == 51 + 101
    mem = estimate(typed_config({**base, "flow": {"t_max": 10.0, "central": True}})).memory
    assert any("edge window" in k for k in mem)


@pytest.mark.lab
def test_a_long_run_is_sampled_and_recorded_at_every_step_around_its_crossing(tmp_path, monkeypatch):
    """Runs longer than EDGE_STEPS steps: the run's points spaced, every step of a window centred on the
    first spaced point with S >= 2/eta (EDGE_STEPS lowered to 6 so that 14 steps are a long run)."""
    from dlnlab.lab.runner import _edge, run

    monkeypatch.setattr(_edge, "EDGE_STEPS", 6)
    cfg = [*EOS, "flow.central=false", "sgd.edge=true", "logger=none", "log.analysis_points=0"]
    res = run(make_cfg(cfg), output_dir=tmp_path / "run")
    name = f"edge_lr_{EDGE_LR!r}"
    e, arr = res["series"][name]["edge"], _npz(tmp_path / "run", name)
    steps = round(T_MAX / EDGE_LR)
    assert e["stride"] == 3 and e["steps"] == steps and res["series"][name]["predictions"] is None
    # every 3rd step and the last, 14 two past 12: 13 too, the last two points on both phases
    assert steps == 14
    np.testing.assert_array_equal(arr["run_step"], [0, 3, 6, 9, 12, 13, 14][: len(arr["run_step"])])
    first = int(arr["run_step"][np.argmax(arr["run_top_eigs"][:, 0] >= 2 / EDGE_LR)])  # step 6 on this net
    np.testing.assert_array_equal(arr["step"], np.arange(first - 3, first + 4))
    assert e["every_step"] == [first - 3, first + 3]
    crossed = arr["step"][np.argmax(arr["top_eigs"][:, 0] >= 2 / EDGE_LR)]
    assert e["t_edge"] == pytest.approx(crossed * EDGE_LR)


@pytest.mark.slow  # about 45 s: the reproduction of docs/eos.md (experiment=eos, t_max = 40)
def test_the_reproduction_gd_hovers_the_central_flow_is_pinned_and_nearer(tmp_path):
    from dlnlab.lab.runner import run

    res = run(make_cfg(["experiment=eos", "logger=none", "log.figures=false", "log.progress=never"]),
              output_dir=tmp_path / "run")  # fmt: skip
    assert res.exit_code == 0
    edge = res["series"][f"edge_lr_{EDGE_LR!r}"]
    e, p = edge["edge"], edge["predictions"]
    assert e["outcome"] == "at_edge" and e["hover_share"] == 1.0 and abs(e["median_ratio"] - 1) < 0.02
    assert e["gfs_non_increasing"] and e["flow_limit_sharpness"] > e["threshold"] > e["balanced_sharpness"]
    c = res["series"][f"cflow_lr_{EDGE_LR!r}"]["central"]
    assert c["max_excess"] <= 1e-8 and abs(c["final_sharpness"] / c["threshold"] - 1) <= 1e-6
    assert c["sharpness_on_edge"] <= 1e-8 and c["sharpness_entering_edge"] > 1e-4  # 2.8e-9 and 1.5e-3 here
    assert p["central_pinned"] <= 1e-8 and p["central_entering"] > 1e-5  # 2.6e-9 and 7.3e-5 here
    assert p["ratio_max"] < 1.0  # GD's average nearer the central flow
    assert p["loss_parting"] is not None and 2.0 < p["loss_parting"] < 20.0


@pytest.mark.lab
def test_the_window_takes_both_flows_from_the_runs_series_and_agrees_with_solving_them(eos_run, tmp_path):
    """lr >= log.dt: every step of the window is one of the lr's exact times, where the cflow_lr and flow
    series were solved, so the edge series describes their states instead of solving both flows again.
    With log.dt = 0.25 > lr some steps are not, and both are solved from theta0 by the series' solvers
    (at flow.rtol 1e-7 here, to halve the test's time; 1e-9 in the run that reuses them): the two agree
    to 1e-4, where states one step apart (t and t + eta) differ in the loss by tens of percent."""
    from dlnlab.lab.runner import run

    res, out, _ = eos_run
    name = f"edge_lr_{EDGE_LR!r}"
    assert res["series"][name]["predictions"]["flows_reused"] is True
    cfg = [*EOS, "log.dt=0.25", "logger=none", "log.analysis_points=0", "flow.rtol=1e-7", "flow.atol=1e-9"]
    solved = run(make_cfg(cfg), output_dir=tmp_path / "run")
    assert solved["series"][name]["predictions"]["flows_reused"] is False
    a, b = _npz(out, name), _npz(tmp_path / "run", name)
    np.testing.assert_array_equal(a["step"], b["step"])  # the same window of GD's steps
    for key in ("central_sharpness", "central_loss", "flow_loss", "sigma_trace", "dist_avg_central",
                "dist_avg_flow"):  # fmt: skip
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-7, err_msg=key)


def test_an_even_stride_is_made_odd_so_that_the_points_see_both_phases():
    from dlnlab.lab.runner._edge import odd_stride

    assert [odd_stride(steps, 2000) for steps in (10, 2000, 2001, 4000, 4001, 6000, 6001, 10_000)] == [
        1, 1, 3, 3, 3, 3, 5, 5
    ]  # fmt: skip
    for steps in range(1, 20_000, 97):  # at most 2000 points, never an even stride
        stride = odd_stride(steps, 2000)
        assert stride % 2 == 1 and len(range(0, steps + 1, stride)) <= 2001


def test_t_leave_is_when_sigma_switches_off_for_good_and_none_while_it_is_on():
    from dlnlab.lab.results import central_entry

    t = np.arange(6.0)
    sharp, crit, nan = np.full(6, 4.0), np.zeros(6), np.full(6, np.nan)
    loss = np.ones(6)
    on_at_end = central_entry(0.5, t, sharp, np.array([0, 1, 1, 0, 1, 1.0]), crit, loss, loss, nan, 0)
    off_at_end = central_entry(0.5, t, sharp, np.array([0, 1, 1, 0, 1, 0.0]), crit, loss, loss, nan, 0)
    assert on_at_end.t_edge == off_at_end.t_edge == 1.0
    assert on_at_end.t_leave is None and off_at_end.t_leave == 4.0


def test_sharpness_on_edge_is_measured_past_the_switch_on_transient():
    """S closes on 2/eta like exp(-(t - t_on)/delta), delta = 0.1 eta (tenfold per grid point here, as on
    experiment=eos), down to a floor of 1-3e-9 (the solver's accuracy); Sigma switches off at t = 2 and on
    again at t = 2.5 with a transient of its own. The edge is held to the floor: sharpness_on_edge; the
    switch-on point's 1.5e-3 is sharpness_entering_edge."""
    from dlnlab.lab.results import central_entry

    lr, dt = 0.2163, 0.05
    thr = 2 / lr
    t = np.round(np.arange(0, 4 + dt / 2, dt), 10)
    floor = 1e-9 * (1 + np.arange(len(t)) % 3)
    on = (t >= 0.8) & ((t < 2.0) | (t >= 2.5))
    since = np.where(t >= 2.5, t - 2.5, t - 0.8)
    first_gap = np.where(t >= 2.5, 1e-4, 1.5e-3)
    decay = np.exp(-since / (0.1 * lr))  # exp(-dt / delta) = 0.099 per grid point
    gap = np.where(on, first_gap * decay + floor, 0.02 + 0.01 * t)
    sharp = thr * (1 - gap)
    loss, nan = np.ones(len(t)), np.full(len(t), np.nan)
    c = central_entry(lr, t, sharp, on * 0.02, on * 1.0, loss, loss, nan, 0)
    assert c.t_edge == 0.8 and c.sharpness_entering_edge == pytest.approx(1.5e-3 + floor[16], rel=1e-9)
    assert 3.5e-9 >= c.sharpness_on_edge >= 3e-9  # the floor's top, not a transient
    assert 0.8 + 5 * dt <= c.t_edge_settled <= 0.8 + 8 * dt
    # the old definition, the largest over every point on the edge, was the switch-on point's
    assert np.max(np.abs(sharp[on] - thr) / thr) == c.sharpness_entering_edge


def test_the_run_s_recorded_steps_are_an_odd_number_apart_to_the_last():
    """The edge outcome reads the run's last two points as both phases of the period-2 oscillation. At
    4004 steps (stride 3; experiment=tiny sgd.edge=true sgd.lrs=[0.000999]) they were 4002 and 4004: one
    phase twice. Every two consecutive recorded steps are an odd number apart, the last one recorded."""
    from dlnlab.lab.runner._edge import odd_stride, run_record

    assert run_record(4004, 3)[-3:] == [4002, 4003, 4004]
    for steps in [*range(1, 20_000, 97), 4004, 6004, 6002]:
        record = run_record(steps, odd_stride(steps, 2000))
        gaps = np.diff(record)
        assert record[0] == 0 and record[-1] == steps and (gaps % 2 == 1).all(), (steps, record[-3:])
        assert len(record) <= 2003
