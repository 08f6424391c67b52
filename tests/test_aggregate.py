"""scripts/aggregate.py's logic: runs of one setting across seeds, and an ensemble's members, alike."""

from __future__ import annotations

import numpy as np
import pytest

from dlnlab.lab.results import aggregate, collect
from dlnlab.lab.runner import run
from tests._helpers import TINY, make_cfg

pytestmark = pytest.mark.lab  # every test here runs the lab (in-process or its CLI)

BASE = [*TINY, "flow.t_max=4", "sgd.lrs=[0.04,0.02,0.01]"]


def test_seeds_of_a_setting_and_members_of_an_ensemble_are_samples_alike(tmp_path):
    runs = [run(make_cfg([*BASE, f"seed={s}"]), output_dir=tmp_path / "sweep" / f"job{s}") for s in (0, 1, 2)]
    settings, skipped = collect([tmp_path / "sweep"])
    assert skipped == [] and len(settings) == 1
    rows = {r["series"]: r for r in aggregate(settings, tmp_path / "agg")}
    sgd = rows["sgd_lr_0.02"]
    assert sgd["samples"] == 3
    finals = [r["series"]["sgd_lr_0.02"]["final_loss"] for r in runs]
    assert sgd["final_loss"]["mean"] == pytest.approx(np.mean(finals), rel=1e-12)
    assert sgd["final_loss"]["std"] == pytest.approx(np.std(finals, ddof=1), rel=1e-9)
    per = [r["convergence_order"] for r in runs]  # each seed's own fitted order
    assert sgd["orders"]["to_flow"]["per_sample"]["mean"] == pytest.approx(np.mean(per), rel=1e-9)
    folder = next((tmp_path / "agg").iterdir())
    curves = np.load(folder / "sgd_lr_0.02.npz")
    losses = np.stack(
        [np.load(tmp_path / "sweep" / f"job{s}" / "series" / "sgd_lr_0.02.npz")["loss"] for s in (0, 1, 2)]
    )
    np.testing.assert_allclose(curves["loss_mean"], losses.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(curves["loss_q50"], np.median(losses, axis=0), rtol=1e-12)
    assert (folder / "loss.png").is_file()
    # an ensemble of 3 whose members have the seeds of... its own: 3 samples of its one setting
    ens = run(make_cfg([*BASE, "ensemble.size=3"]), output_dir=tmp_path / "ens")
    settings, _ = collect([tmp_path / "ens"])
    rows = {r["series"]: r for r in aggregate(settings, tmp_path / "agg_ens")}
    assert rows["sgd_lr_0.02"]["samples"] == 3
    members = [m["final_loss"] for m in ens["series"]["sgd_lr_0.02"]["members"]]
    assert rows["sgd_lr_0.02"]["final_loss"]["mean"] == pytest.approx(np.mean(members), rel=1e-12)
    exits = rows["flow"]["plateau_exits"]
    assert exits and all(e["t_exit"]["n"] >= 1 for e in exits)
