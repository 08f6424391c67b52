"""The series kinds (dlnlab.lab.runner._kind): the registry's invariants, and what a new kind costs,
measured with a toy kind plugged into a real run."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import dlnlab.lab.runner._registry as registry
from dlnlab.lab.runner import KINDS, Resume, SeriesDone, SeriesKind, SeriesTask, run
from dlnlab.rundir import parse_series_name
from dlnlab.status import Status
from tests._helpers import SME_ENSEMBLE_RUN

CONF = Path(__file__).resolve().parents[1] / "conf"


# --- the toy kind: begin ---------------------------------------------------------------------------
class PlainGDKind(SeriesKind):
    """GD at each learning rate by dlnlab.descent.gd (no Lightning, no recorder), against the flow."""

    key, prefix, needs, resume = "plain_gd", "plain_gd_lr_", ("flow",), Resume.RERUN

    def enabled(self, plan) -> bool:
        return True

    def run(self, ctx, task: SeriesTask) -> SeriesDone:
        from dlnlab.descent import gd

        steps = task.times.steps
        traj = gd(ctx.plan.problem, ctx.dims, ctx.plan.theta0, task.lr, steps[-1], record_steps=steps)
        flow = task.given["flow"][task.times.ms]
        dist = torch.linalg.vector_norm(traj.theta - flow, dim=-1)
        entry = {"lr": None, "plain_gd_lr": task.lr, "status": Status.OK, "message": ""}
        return SeriesDone({**entry, "max_dist_to_flow": float(dist.max())})


# --- the toy kind: end -----------------------------------------------------------------------------


def test_the_toy_kind_costs_its_class_and_one_registry_line():
    """What a new kind costs: the class above (the number is the report's, checked to stay honest)."""
    lines = inspect.getsource(PlainGDKind).strip().splitlines()
    assert len(lines) <= 20, len(lines)


def test_the_registry_runs_the_flow_first_and_each_kind_after_what_it_needs():
    keys = [kind.key for kind in KINDS]
    assert keys[0] == "flow" and not KINDS[0].per_lr
    assert len(set(keys)) == len(keys) and len({kind.prefix for kind in KINDS}) == len(KINDS)
    for i, kind in enumerate(KINDS):
        assert set(kind.needs) <= set(keys[:i]), kind.key
        if kind.per_lr:  # the run directory's readers know its series' names
            assert parse_series_name(kind.series_name(0.01)) == (kind.prefix, 0.01)
    assert [k.key for k in KINDS if k.tensorboard_run] == ["flow", "sgd"]  # docs/tensorboard.md's runs


@pytest.mark.lab
def test_a_toy_kind_plugs_into_a_real_run(tmp_path, monkeypatch):
    """Registered by one line, the toy kind runs once per learning rate between the flow and the (S)GD
    series, receives the flow at its exact times, and its GD (descent.gd) agrees with the Lightning
    series' distance to the flow; it has no TensorBoard run and leaves the convergence order alone."""
    monkeypatch.setattr(registry, "KINDS", (*KINDS[:-1], PlainGDKind(), KINDS[-1]))
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(
            config_name="train",
            overrides=["experiment=tiny", "log.figures=false", "log.progress=never", "logger=none"],
        )
    result = run(cfg, output_dir=tmp_path / "run")
    assert result.exit_code == 0
    series = result["series"]
    lrs = [0.04, 0.02, 0.01]
    assert list(series) == ["flow", *(f"plain_gd_lr_{lr}" for lr in lrs), *(f"sgd_lr_{lr}" for lr in lrs)]
    for lr in lrs:
        toy, sgd = series[f"plain_gd_lr_{lr}"], series[f"sgd_lr_{lr}"]
        assert toy["status"] == Status.OK and toy["plain_gd_lr"] == lr
        assert toy["max_dist_to_flow"] == pytest.approx(sgd["max_dist_to_flow"], rel=1e-9)
    assert result["convergence_order_detail"]["lrs_used"] == sorted(lrs)
    assert not (tmp_path / "run" / "series" / "plain_gd_lr_0.04.npz").exists()
    assert np.isfinite(result["convergence_order"])


@pytest.mark.lab
@pytest.mark.xdist_group("sme_ensemble_run")  # with the session run's other users (tests/test_records.py)
def test_a_resume_applies_each_kinds_policy(sme_ensemble_run, tmp_path):
    """SIGTERM in the first SGD series after the SME ensembles: the resume runs the SME ensembles again
    (Resume.RERUN, recorded as run from the start), rechecks the flow (RECOMPUTE, not listed), keeps the
    SGD series (KEEP: it is one chunk of steps, so the signal let it end ok; a series continued from a
    checkpoint mid-way: tests/test_runs.py); every array equals the unbroken run's bit for bit (the
    session's run, its series in worker processes: the same numbers as in one, tests/test_parallel.py)."""
    from _runtime_helpers import SignalAt

    from dlnlab.lab.runner import resume

    whole, whole_dir = sme_ensemble_run
    stop = ["run.workers=1",  # one process: which series a signal finds running is fixed
            "+callbacks.stop._target_=_runtime_helpers.SignalAt", "+callbacks.stop.series=sgd_lr_0.04",
            "+callbacks.stop.m=40"]  # fmt: skip
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        killed_cfg = compose(config_name="train", overrides=[*SME_ENSEMBLE_RUN, *stop])
    SignalAt.fired.clear()
    out = tmp_path / "killed"
    assert run(killed_cfg, output_dir=out).exit_code == 143
    assert not (out / "checkpoints" / "sgd_lr_0.04.ckpt").exists()  # whole: nothing to continue
    result = resume(out)
    assert result.exit_code == 0
    assert result["resumed"][-1]["series"] == {
        "sme_lr_0.04": "run from the start",
        "sme_lr_0.02": "run from the start",
        "sgd_lr_0.04": "kept",
        "sgd_lr_0.02": "run from the start",
    }
    assert "max_abs_diff" in result["series"]["flow"]["resume_check"]
    for name in whole["series"]:
        a, b = np.load(whole_dir / "series" / f"{name}.npz"), np.load(out / "series" / f"{name}.npz")
        assert set(a.files) == set(b.files), name
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name} {key}")


def test_the_kinds_table_in_the_architecture_page_is_the_registry():
    """docs/architecture.md's table of kinds: one row per registered kind, in order, with its attributes."""
    from dlnlab.lab.results import entry_record

    page = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    block = page.split("<!-- kinds table:", 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip().strip("`") for c in line.strip("|").split("|")] for line in block.splitlines()[3:]]
    assert [r[0] for r in rows] == [k.key for k in KINDS]
    for row, kind in zip(rows, KINDS):
        key, series, module, _, tensorboard, needs, resume, record = row
        assert series == (kind.series_name(0.1).replace("0.1", "<lr>") if kind.per_lr else kind.prefix)
        assert module == f"{type(kind).__module__.rsplit('.', 1)[1]}.py"
        assert tensorboard.startswith("yes" if kind.tensorboard_run else "no")
        assert [n.strip() for n in needs.split(",") if n.strip()] == list(kind.needs)
        assert (
            resume == kind.resume.value
            and record == entry_record(kind.series_name(0.1 if kind.per_lr else None)).__name__
        )
