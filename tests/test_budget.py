"""Work the up-front estimates cannot bound is bounded where it happens: the flow's evaluation budget
inside the solve (stiff methods included), and an SME series that blows up is recorded as diverged."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dlnlab.lab.config import prepare
from dlnlab.lab.runner import run, stop_diverged
from tests._helpers import make_cfg

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ["experiment=tiny", "logger=none", "log.figures=false", "log.progress=never"]


def test_every_flow_method_gets_an_evaluation_budget():
    """flow.max_nfe when set; else limits.flow_nfe, and for a stiff method limits.stiff_nfe_factor x its
    expected count 100 (1 + t_max)^0.6 (t_max = 4 on the tiny net: 263)."""
    expected = 100 * (1 + 4.0) ** 0.6
    for method in ("lsoda", "bdf", "radau", "cvode"):
        plan = prepare(make_cfg([*TINY, f"flow.method={method}", "sgd.lrs=[]"]))
        assert plan.solver.max_nfe == math.ceil(100 * expected), method
        assert "limits.stiff_nfe_factor" in plan.budget_source
    plan = prepare(make_cfg([*TINY, "flow.method=lsoda", "sgd.lrs=[]", "limits.flow_nfe=1000"]))
    assert plan.solver.max_nfe == 1000  # the stiff budget is capped by limits.flow_nfe
    for method in ("dopri5", "rk45"):
        plan = prepare(make_cfg([*TINY, f"flow.method={method}", "sgd.lrs=[]"]))
        assert plan.solver.max_nfe == 100_000_000 and plan.budget_source == "limits.flow_nfe"
    plan = prepare(make_cfg([*TINY, "flow.method=lsoda", "sgd.lrs=[]", "flow.max_nfe=77"]))
    assert plan.solver.max_nfe == 77 and plan.budget_source == "flow.max_nfe"


@pytest.mark.parametrize("method", ["lsoda", "cvode"])
@pytest.mark.lab
def test_a_stiff_flow_stops_at_its_budget_as_a_solver_failure(method, tmp_path):
    cfg = make_cfg([*TINY, f"flow.method={method}", "sgd.lrs=[]", "limits.stiff_nfe_factor=0.05"])
    budget = math.ceil(0.05 * 100 * 5**0.6)
    res = run(cfg, output_dir=tmp_path / "r")
    flow = res["series"]["flow"]
    assert flow["status"] == "solver_failed", flow
    assert f"budget of {budget} right-hand-side evaluations exhausted" in flow["message"]
    assert budget <= flow["nfe"] <= budget + 10  # scipy looks at the budget after every step
    assert res.exit_code == 3
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["series"]["flow"]["status"] == "solver_failed"


@pytest.mark.lab
def test_an_ensemble_flow_by_torchode_out_of_its_budget_keeps_the_rows_every_member_reached(tmp_path):
    """dopri5 on a batch (torchode): the flow's file holds the grid points every member reached before the
    budget stopped the solve (it held t = 0 alone), its entry says where, and the run goes on (exit 3)."""
    cfg = make_cfg([*TINY, "ensemble.size=3", "flow.method=dopri5", "sgd.lrs=[]", "flow.max_nfe=200",
                    "run.workers=1", "log.analysis_points=0"])  # fmt: skip
    res = run(cfg, output_dir=tmp_path / "r")
    flow = res["series"]["flow"]
    assert res.exit_code == 3 and flow["status"] == "solver_failed" and flow["nfe"] <= 200
    assert "budget of 200 right-hand-side evaluations exhausted" in flow["message"]
    with np.load(tmp_path / "r" / "series" / "flow.npz") as f:
        t, loss = f["t"], f["loss"]
    assert 1 < len(t) < 81 and loss.shape == (3, len(t)) and np.isfinite(loss).all()
    assert flow["t_stop"] == pytest.approx(t[-1]) and f"output kept up to t = {t[-1]:.6g}" in flow["message"]


def test_stop_diverged_cuts_each_member_at_its_blowup():
    grid = torch.linspace(0, 1, 6, dtype=torch.float64)
    theta = torch.ones(6, 3, 2, dtype=torch.float64)
    theta[3, 0] = 1e6  # member 0 above the blowup norm at t = 0.6
    theta[2, 1] = float("inf")  # member 1 not finite at t = 0.4
    cut, why = stop_diverged(theta, grid, blowup=100.0)
    assert sorted(why) == [0, 1] and "t = 0.6" in why[0] and why[1] == "non-finite weights at t = 0.4"
    assert torch.isnan(cut[3:, 0]).all() and torch.isfinite(cut[:3, 0]).all()
    assert torch.isnan(cut[2:, 1]).all() and (cut[:, 2] == 1).all() and len(cut) == 6
    theta[4, 2] = float("nan")  # every member gone: the series stops where the last one went
    cut, why = stop_diverged(theta, grid, blowup=100.0)
    assert len(why) == 3 and len(cut) == 5 and torch.isnan(cut[4]).all()


@pytest.mark.lab
def test_an_sme_series_at_a_large_learning_rate_is_recorded_like_its_sgd_series(tmp_path):
    """lr = 1.5 is above the GD threshold 0.265: the SGD members are unstable; the SME's blow up or stay
    up, and are recorded so (before: eigvalsh failed on the blown-up states, exit 3 with a trace)."""
    # one healthy rate beside the large one: a third, 0.02, cost half the test's 2.5 CPU s
    cfg = make_cfg([
        *TINY, "sgd.sme=true", "ensemble.size=4", "sgd.batch_size=5", "sgd.lrs=[1.5,0.04]",
        "log.analysis_points=0",
    ])  # fmt: skip
    res = run(cfg, output_dir=tmp_path / "r")
    assert res.exit_code == 0
    sme = res["series"]["sme_lr_1.5"]
    assert {m["status"] for m in sme["members"]} <= {"unstable", "diverged"}, sme["members"]
    assert any(m["status"] == "diverged" for m in sme["members"])
    assert res["series"]["sgd_lr_1.5"]["status"] == "unstable"
    assert res["series"]["sme_lr_0.04"]["status"] == "ok"
    text = (tmp_path / "r" / "summary.json").read_text()
    json.loads(text, parse_constant=lambda token: pytest.fail(f"summary.json holds {token}"))
    arr = np.load(tmp_path / "r" / "series" / "sme_lr_1.5.npz")
    gone = [e for e, m in enumerate(sme["members"]) if m["status"] == "diverged"]
    assert sme["members_diverged"] == len(gone) and sme["diverged"] == (sme["status"] == "diverged")
    assert np.isnan(arr["loss"][gone[0]][-1]) and np.isfinite(arr["loss"][gone[0]][0])
