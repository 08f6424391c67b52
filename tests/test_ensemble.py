"""Ensembles (ensemble.size = E): one batched run equals E runs one by one, member for member."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import (
    STORE_EVERYTHING_SIZE_GUIDANCE,
    EventAccumulator,
)

from dlnlab import init
from dlnlab.lab.runner import resume, run, train_series
from dlnlab.network import pack
from dlnlab.problem import RegressionProblem
from tests._helpers import TINY, figure_text_inside, make_cfg

# its tests on one xdist worker (--dist loadgroup): its module fixtures are lab runs, made once per worker
pytestmark = pytest.mark.xdist_group("test_ensemble")

BASE = [*TINY, "flow.t_max=2.0", "sgd.lrs=[0.04,0.02]", "sgd.batch_size=5"]


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """The flow member by member with LSODA, so that a member rerun alone is the very same solve (auto
    batches this ensemble's flow with rk45, the cheaper at equal accuracy: tests/test_choose.py)."""
    out = tmp_path_factory.mktemp("ens") / "run"
    cfg = make_cfg([*BASE, "ensemble.size=3", "flow=lsoda", "logger=tensorboard", "log.figures=true"])
    return out, run(cfg, output_dir=out)


@pytest.mark.lab
def test_series_files_have_a_member_axis_and_the_summary_every_member(ensemble):
    out, res = ensemble
    assert res.exit_code == 0
    n_grid = res["grid"]["n_grid"]
    for name in ("flow", "sgd_lr_0.04", "sgd_lr_0.02"):
        arr = np.load(out / "series" / f"{name}.npz")
        assert arr["t"].shape == (n_grid,) and arr["loss"].shape == (3, n_grid)
        assert arr["theta"].shape == (3, n_grid, 27) and arr["sv"].shape[:2] == (3, n_grid)
        entry = res["series"][name]
        assert len(entry["members"]) == 3 and entry["ensemble"]["size"] == 3
        finals = [m["final_loss"] for m in entry["members"]]
        assert entry["final_loss"] == pytest.approx(np.mean(finals))
        np.testing.assert_allclose(finals, arr["loss"][:, -1], rtol=1e-15)
    seeds = res["seeds"]["members"]
    assert seeds[0]["init"] == res["seeds"]["init"] and len({m["init"] for m in seeds}) == 3
    assert np.load(out / "problem.npz")["A0"].shape == (3, 12, 12)
    assert (out / "figures" / "ensemble_loss.png").is_file()


@pytest.mark.lab
def test_the_single_run_figures_of_an_ensemble_say_whose_curves_they_draw_within_the_figure(ensemble):
    """The note on an ensemble's single-run figures goes on a line of its own (appended to a column-wide
    title it ran off the figure), and convergence_order, whose points are the entries' members' mean
    distances, says so instead of "member 0"."""
    from dlnlab.plots import build_run_figures

    out, res = ensemble
    figs = build_run_figures(out, strict=True, names=["loss", "mode_strength", "convergence_order"])
    for name, fig in figs.items():
        assert figure_text_inside(fig), name
    assert figs["loss"].axes[0].get_title().endswith("\n(member 0 of 3)")
    order = figs["convergence_order"].axes[0]
    assert order.get_title().endswith("\n(the mean of 3 members)")
    point = [ln for ln in order.get_lines() if ln.get_marker() == "o" and ln.get_xdata()[0] == 0.04]
    assert point[0].get_ydata()[0] == pytest.approx(res["series"]["sgd_lr_0.04"]["max_dist_to_flow"])
    members = [m["max_dist_to_flow"] for m in res["series"]["sgd_lr_0.04"]["members"]]
    assert point[0].get_ydata()[0] == pytest.approx(np.mean(members)) != members[0]


@pytest.mark.lab
def test_any_member_rerun_alone_gives_the_same_series(ensemble, tmp_path):
    out, res = ensemble
    m = res["seeds"]["members"][2]
    alone = run(
        make_cfg([*BASE, f"init.seed={m['init']}", f"sgd.seed={m['sgd']}"]), output_dir=tmp_path / "one"
    )
    assert alone.exit_code == 0
    for name in ("flow", "sgd_lr_0.04", "sgd_lr_0.02"):
        ens, one = (
            np.load(out / "series" / f"{name}.npz"),
            np.load(tmp_path / "one" / "series" / f"{name}.npz"),
        )
        if name == "flow":  # lsoda member by member: the very same solve
            np.testing.assert_array_equal(ens["theta"][2], one["theta"])
        else:  # batched products against one net's: equal to rounding over this horizon
            err = np.linalg.norm(ens["theta"][2] - one["theta"], axis=-1) / np.linalg.norm(
                one["theta"], axis=-1
            )
            assert err.max() <= 1e-12, err.max()
            np.testing.assert_allclose(ens["dist_to_flow"][2], one["dist_to_flow"], rtol=1e-9, atol=1e-14)


@pytest.mark.lab
def test_tensorboard_shows_the_mean_and_the_spread(ensemble):
    """The members' mean under every tag; each series' median and quartiles under its own tags (one band
    chart per series); x is the flow time (step = round(1000 t))."""
    out, _ = ensemble
    arr = np.load(out / "series" / "sgd_lr_0.02.npz")
    acc = EventAccumulator(
        str(out / "tensorboard" / "sgd_lr_0.02"), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE
    )
    acc.Reload()
    band = "spread/sgd_lr_0.02/"
    tags = set(acc.Tags()["scalars"])
    assert {"loss/loss", f"{band}loss/log10@q25", f"{band}loss/log10@median", f"{band}loss/log10@q75"} <= tags
    assert {f"{band}dist/log10_flow@median", "dist/log10_flow", "dist/log10_flow_max"} <= tags
    assert not any(
        t.startswith("spread/") and "@m" in t and "median" not in t for t in tags
    )  # no min/max bands
    steps = [round(1000 * 0.05 * m) for m in arr["grid_index"]]
    log10 = np.log10(arr["loss"])
    for tag, want in (("loss/loss", arr["loss"].mean(axis=0)), (f"{band}loss/log10@median", np.median(log10, axis=0)),
                      (f"{band}loss/log10@q25", np.quantile(log10, 0.25, axis=0))):  # fmt: skip
        got = {e.step: e.value for e in acc.Scalars(tag)}
        assert sorted(got) == steps
        np.testing.assert_allclose([got[s] for s in steps], want, rtol=1e-6, atol=1e-7)  # float32 events


def test_a_member_that_diverges_stops_alone():
    problem = RegressionProblem.teacher([2.0, 1.0], 4, 2, 20, seed=0)
    dims = (4, 3, 3, 2)
    theta0 = torch.stack([pack(init.gaussian(dims, s, seed=k)) for k, s in enumerate((0.3, 3.0, 0.3))])

    class Sink:
        def record(self, *a, **k):
            pass

        def flush(self):
            pass

    out = train_series(problem, dims, theta0, lr=0.2, dt=0.2, n_grid=11, recorder=Sink(), blowup_norm=50.0)
    assert out.status == "ok" and out.steps == 10 and set(out.member_diverged) == {1}
    assert "member 1" in out.member_diverged[1][1]


@pytest.mark.lab
@pytest.mark.slow  # ~6 s; in the default set: test_kinds.py's resume of an ensemble of 3 (SGD continued from its checkpoint, every array bit for bit)
def test_an_ensemble_killed_mid_series_resumes_to_the_same_numbers(tmp_path):
    """SIGTERM (a real one, to this process) during the second series, then resume(run dir)."""
    args = [*BASE, "ensemble.size=2", "sgd.lrs=[0.04,0.0001]", "sgd.momentum=0.5"]
    whole = run(make_cfg(args), output_dir=tmp_path / "whole")
    out = tmp_path / "killed"

    def kill_when_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if json.loads((out / "summary.json").read_text()).get("stage") == "sgd_lr_0.0001":
                    time.sleep(0.3)
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    killed = run(make_cfg(args), output_dir=out)
    killer.join()
    assert killed.exit_code == 143 and killed["series"]["sgd_lr_0.0001"]["status"] == "interrupted"
    done = resume(out)
    assert (
        done.exit_code == 0
        and done["resumed"][0]["series"]["sgd_lr_0.0001"] == "continued from its checkpoint"
    )
    for name in whole["series"]:
        a, b = np.load(tmp_path / "whole" / "series" / f"{name}.npz"), np.load(out / "series" / f"{name}.npz")
        assert set(a.files) == set(b.files)
        for key in {"theta", "loss", "t", "step", "dist_to_flow"} & set(a.files):
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name} {key}")


def test_the_spread_tags_are_numpys_nan_quantiles():
    from dlnlab.lab.record import ENSEMBLE_STATS
    from dlnlab.lab.record._tags import _nanmean, _nanquantiles

    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 9, 5))
    x[rng.random(x.shape) < 0.2] = np.nan
    x[:, :, 3] = np.nan  # a tag no member has here (off the analysis grid)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        want = [np.nanquantile(x, q, axis=1) for q in ENSEMBLE_STATS.values()]
    for got, ref in zip(_nanquantiles(x), want):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-15)
    with pytest.warns(RuntimeWarning):
        np.testing.assert_allclose(_nanmean(x), np.nanmean(x, axis=1), rtol=1e-15)


@pytest.mark.lab
def test_the_ensemble_charts_band_tags_that_exist(ensemble):
    """Every Margin chart of the ensemble's layout names tags its series logs; one chart per series."""
    from dlnlab.lab.record import RunCharts, tensorboard_layout

    out, _ = ensemble
    logged = {}
    for name in ("flow", "sgd_lr_0.04", "sgd_lr_0.02"):
        acc = EventAccumulator(str(out / "tensorboard" / name), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE)
        acc.Reload()
        logged[name] = set(acc.Tags()["scalars"])
    layout = tensorboard_layout(RunCharts(dt=0.05, spread=tuple(logged)))
    bands = next(charts for title, charts in layout.items() if "spread" in title)
    assert bands and all(kind == "Margin" for kind, _ in bands.values())
    for title, (_, names) in bands.items():
        series = title.split(":")[0]
        assert set(names) <= logged[series], (title, set(names) - logged[series])
    assert len(bands) == 5  # the flow's loss; each learning rate's loss and distance
    assert not any("spread" in title for title in tensorboard_layout(RunCharts(dt=0.05)))


@pytest.mark.parametrize("method", ["bdf_batch", "radau_batch"])
@pytest.mark.lab
def test_an_ensemble_flow_runs_with_a_batched_stiff_solver_and_agrees_with_its_members_lsoda(
    ensemble, tmp_path, method
):
    """flow=bdf_batch or radau_batch: the whole ensemble's stiff flow in one solve; each member's flow close
    to its LSODA solve (the ensemble fixture's flow, member by member): both solvers' global errors at
    rtol 1e-9 are in the difference (2e-8 measured; each against a tight solve: tests/test_flow_bdf.py,
    tests/test_flow_radau.py)."""
    out, _ = ensemble
    res = run(
        make_cfg([*BASE, "ensemble.size=3", f"flow={method}", "sgd.lrs=[0.04]"]), output_dir=tmp_path / "b"
    )
    assert res.exit_code == 0 and res["series"]["flow"]["method"] == method
    assert res["series"]["flow"]["status"] == "ok" and res["series"]["sgd_lr_0.04"]["status"] == "ok"
    ours, lsoda = (np.load(d / "series" / "flow.npz")["theta"] for d in (tmp_path / "b", out))
    assert ours.shape == lsoda.shape == (3, res["grid"]["n_grid"], 27)
    dev = np.linalg.norm(ours - lsoda, axis=-1) / np.linalg.norm(lsoda, axis=-1)
    assert dev.max() <= 100 * 1e-9, dev.max()
