"""The lab in-process: run(cfg) writes the run-directory contract, survives failing series, reports them right."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from dlnlab.lab.config import ConfigError
from dlnlab.lab.runner import run
from tests._helpers import TINY, make_cfg

SERIES_KEYS = {
    "t",
    "loss",
    "sv",
    "sv_A",
    "mode_strength",
    "grad_norm",
    "level_gap",
    "lambda_min",
    "sharpness",
    "cons_drift",
    "theta",
}
SUMMARY_SERIES_KEYS = {
    "lr",
    "status",
    "diverged",
    "t_stop",
    "step_stop",
    "message",
    "final_loss",
    "wall_time_s",
    "max_dist_to_flow",
    "plateaus",
}


def _no_nan(token):
    pytest.fail(f"summary.json holds {token}: JSON must hold null, never NaN")


@pytest.mark.lab
def test_learning_rate_above_the_gd_threshold_is_flagged_unstable(tmp_path):
    # h = 3, m_1 = 2: no global minimum is stable for eta > 2 / (3 * 2^(4/3)) = 0.265; from a small
    # init GD at eta = 0.6 never leaves the origin's plateau while the flow learns both modes.
    cfg = make_cfg([*TINY, "flow.t_max=20", "sgd.lrs=[0.6,0.02,0.01]", "init.scale=0.3"])
    res = run(cfg, output_dir=tmp_path / "run")
    bad = res["series"]["sgd_lr_0.6"]
    assert bad["status"] in ("unstable", "diverged"), bad
    if bad["status"] == "unstable":
        assert "2/eta" in bad["message"] or "threshold" in bad["message"]
    assert res["series"]["sgd_lr_0.02"]["status"] == "ok"
    assert res.exit_code == 0


@pytest.mark.lab
@pytest.mark.xdist_group("tiny_run")  # with the session's tiny run's other users (tests/test_plots.py)
def test_run_writes_the_contract(tiny_run):
    out = tiny_run  # experiment=tiny, as it comes (conftest)
    assert json.loads((out / "summary.json").read_text())["exit_code"] == 0
    prob = np.load(out / "problem.npz")
    assert {"dims", "X", "Y", "A0", "modes"} <= set(prob.files)
    dims = prob["dims"]
    n = int(dims.sum())
    assert prob["A0"].shape == (n, n)
    summary = json.loads((out / "summary.json").read_text(), parse_constant=_no_nan)
    for key in ("critical_values", "convergence_order", "seeds", "versions", "series"):
        assert key in summary
    assert set(summary["series"]) == {"flow", "sgd_lr_0.04", "sgd_lr_0.02", "sgd_lr_0.01"}
    assert summary["series"]["flow"]["lr"] is None and summary["series"]["flow"]["nfe"] > 0
    for name, entry in summary["series"].items():
        assert SUMMARY_SERIES_KEYS <= set(entry), name
        assert entry["status"] == "ok"
        arr = np.load(out / "series" / f"{name}.npz")
        keys = SERIES_KEYS | ({"step", "dist_to_flow"} if name != "flow" else set())
        assert keys <= set(arr.files), (name, keys - set(arr.files))
        t = arr["t"]
        assert len(t) == summary["grid"]["n_grid"]
        assert arr["theta"].shape == (len(t), int(sum(dims[i] * dims[i + 1] for i in range(len(dims) - 1))))
        if name != "flow":
            lr = entry["lr"]
            np.testing.assert_allclose(t, arr["step"] * lr, rtol=0, atol=1e-12)
            assert entry["steps"] == math.ceil(summary["grid"]["t_max"] / lr - 1e-9)
    # The convergence order of full-batch GD is about 1.
    assert 0.8 < summary["convergence_order"] < 1.2


def _gd_run(tmp_path, lrs, extra=()):
    cfg = make_cfg(
        [
            *TINY,
            "init.scale=0.5",
            "flow.t_max=2.0",
            "flow.rtol=1e-10",
            "flow.atol=1e-12",
            "log.dt=0.04",
            f"sgd.lrs=[{','.join(map(str, lrs))}]",
            *extra,
        ]
    )
    return run(cfg, output_dir=tmp_path / "run")


@pytest.mark.lab
def test_gd_distance_to_flow_halves_when_lr_halves(tmp_path):
    lrs = [0.01, 0.005, 0.0025]
    res = _gd_run(tmp_path, lrs)
    d = [res["series"][f"sgd_lr_{lr!r}"]["max_dist_to_flow"] for lr in lrs]
    assert d[0] > 1e-4
    for a, b in zip(d[:-1], d[1:]):
        assert 1.7 <= a / b <= 2.3, d


@pytest.mark.lab
def test_minibatch_sgd_approaches_the_flow(tmp_path):
    lrs = [0.04, 0.01, 0.0025]
    res = _gd_run(tmp_path, lrs, ["sgd.batch_size=4", "sgd.sampling=with_replacement"])
    d = [res["series"][f"sgd_lr_{lr!r}"]["max_dist_to_flow"] for lr in lrs]
    assert d[0] > d[1] > d[2], d
    # with replacement the error shrinks like eta^(1/2): a factor 4 in eta gives about 2
    assert 1.3 < d[0] / d[1] < 3.5 and 1.3 < d[1] / d[2] < 3.5, d


@pytest.mark.lab
def test_diverging_series_is_marked_and_the_others_finish(tmp_path):
    cfg = make_cfg([*TINY, "init.scale=0.5", "flow.t_max=20", "sgd.lrs=[0.8,0.02,0.01]"])
    res = run(cfg, output_dir=tmp_path / "run")
    assert res.exit_code == 0
    bad = res["series"]["sgd_lr_0.8"]
    assert bad["status"] == "diverged" and bad["diverged"] is True
    assert bad["step_stop"] is not None and bad["t_stop"] < 20.0 and bad["message"]
    for lr in (0.02, 0.01):
        assert res["series"][f"sgd_lr_{lr!r}"]["status"] == "ok"
    assert (tmp_path / "run" / "series" / "sgd_lr_0.8.npz").exists()
    json.loads((tmp_path / "run" / "summary.json").read_text(), parse_constant=_no_nan)


@pytest.mark.lab
def test_run_refuses_a_foreign_nonempty_directory(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"^output_dir: .* is not empty .* choose a new output_dir$"):
        run(make_cfg(TINY), output_dir=tmp_path / "run")  # named as the caller gave it
    assert (tmp_path / "run" / "precious.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("keep me too")
    with pytest.raises(ConfigError, match=r"^output_dir: .* is a file, not a directory"):
        run(make_cfg(TINY), output_dir=tmp_path / "file")
    assert (tmp_path / "file").read_text() == "keep me too"


@pytest.mark.lab
def test_same_config_same_numbers(tmp_path):
    a = run(make_cfg([*TINY, "sgd.batch_size=5"]), output_dir=tmp_path / "a")
    b = run(make_cfg([*TINY, "sgd.batch_size=5"]), output_dir=tmp_path / "b")
    for name in a["series"]:
        np.testing.assert_array_equal(
            np.load(tmp_path / "a" / "series" / f"{name}.npz")["theta"],
            np.load(tmp_path / "b" / "series" / f"{name}.npz")["theta"],
        )
    assert a["seeds"] == b["seeds"]


@pytest.mark.lab
def test_flow_solver_failure_is_recorded_and_the_sgd_series_still_run(tmp_path):
    out = tmp_path / "run"
    res = run(make_cfg([*TINY, "flow.method=dopri5", "flow.max_nfe=60"]), output_dir=out)
    flow = res["series"]["flow"]
    assert flow["status"] == "solver_failed" and "t =" in flow["message"]
    assert res.exit_code == 3
    arr = np.load(out / "series" / "flow.npz")
    assert 0 < len(arr["t"]) < res["grid"]["n_grid"]  # what was integrated before the failure is kept
    for lr in (0.04, 0.02, 0.01):
        entry = res["series"][f"sgd_lr_{lr!r}"]
        assert entry["status"] == "ok"
        d = np.load(out / "series" / f"sgd_lr_{lr!r}.npz")["dist_to_flow"]
        assert np.isfinite(d[0]) and np.isnan(d[-1])  # no flow to compare with after the failure
    assert json.loads((out / "summary.json").read_text())["exit_code"] == 3


# A bad config is rejected before Lightning is imported: checked in one fresh interpreter with the core's and
# the plots' imports (tests/test_readme.py::test_the_core_the_plots_and_a_refused_run_import_only_what_they_need)


@pytest.mark.lab
def test_heavy_ball_is_compared_on_its_own_time_scale(tmp_path):
    # a step of heavy ball with momentum beta moves lr / (1 - beta) along the flow: on that time scale
    # the distance to the flow falls like lr (order about 1), where on t = k lr it would stay O(1)
    res = _gd_run(tmp_path, [0.001, 0.0005, 0.00025], ["sgd.momentum=0.9"])
    d = [res["series"][f"sgd_lr_{lr!r}"]["max_dist_to_flow"] for lr in (0.001, 0.0005, 0.00025)]
    assert d[0] > d[1] > d[2] and d[0] < 0.5, d
    assert 0.8 < res["convergence_order"] < 1.2, res["convergence_order_detail"]
    entry = res["series"]["sgd_lr_0.001"]
    assert entry["time_per_step"] == pytest.approx(0.01) and entry["t_stop"] == pytest.approx(2.0)
    assert entry["steps"] == 200


@pytest.mark.lab
def test_a_learning_rate_far_above_the_threshold_has_a_true_record(tmp_path):
    # eta = 1 on the tiny net (threshold 0.265): each step is its own grid point, the record says
    # where the series got to, its loss there and its distance to the flow
    cfg = make_cfg([*TINY, "flow.t_max=20", "sgd.lrs=[1.0,0.01]", "init.scale=0.3"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run(cfg, output_dir=tmp_path / "run")
    bad = res["series"]["sgd_lr_1.0"]
    arr = np.load(tmp_path / "run" / "series" / "sgd_lr_1.0.npz")
    assert bad["status"] in ("diverged", "unstable")
    np.testing.assert_array_equal(arr["step"], np.arange(len(arr["step"])))
    np.testing.assert_allclose(arr["t"], arr["step"] * 1.0)
    np.testing.assert_array_equal(arr["grid_index"], np.rint(arr["t"] / 0.05).astype(int))
    assert bad["t_stop"] > 0 and bad["step_stop"] > 0
    assert bad["t_stop"] == pytest.approx(bad["step_stop"] * 1.0)
    finite = arr["loss"][np.isfinite(arr["loss"])]
    assert finite[-1] != finite[0]
    assert bad["max_dist_to_flow"] is not None and bad["max_dist_to_flow"] > 0.1
    assert res.exit_code == 0


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.dims=[3,2]", "data.singular_values=[2,1]"],  # h = 1: one linear map
        ["model.dims=[4,1,2]", "data.singular_values=[2,1]"],  # a width-1 bottleneck
        ["model.dims=[2,3,5]", "data.singular_values=[2,1]", "data.n_samples=20"],  # d_y > d_x
        ["data.singular_values=[2,0]"],  # a zero singular value
        ["sgd.lrs=[0.02]"],  # a single learning rate: no convergence order
        ["sgd.lrs=[]"],  # the flow alone
    ],
    ids=["h1", "width1", "dy_gt_dx", "zero_sv", "one_lr", "flow_only"],
)
@pytest.mark.lab
def test_odd_but_valid_inputs_run(overrides, tmp_path):
    res = run(make_cfg([*TINY, "flow.t_max=2", *overrides]), output_dir=tmp_path / "run")
    assert res.exit_code == 0, res["series"]
    assert all(e["status"] == "ok" for e in res["series"].values()), res["series"]
    flow = np.load(tmp_path / "run" / "series" / "flow.npz")
    assert np.isfinite(flow["loss"]).all() and flow["loss"][-1] <= flow["loss"][0]
    n_sgd = len(res["series"]) - 1
    assert n_sgd == len(make_cfg([*TINY, *overrides]).sgd.lrs)
    if n_sgd < 3:
        assert (
            res["convergence_order"] is None
            and "needs at least 3" in res["convergence_order_detail"]["message"]
        )
    json.loads((tmp_path / "run" / "summary.json").read_text(), parse_constant=_no_nan)


@pytest.mark.lab
def test_a_plain_dict_config_runs(tmp_path):
    cfg = {
        "model": {"dims": [3, 2, 2]},
        "data": {"kind": "teacher", "singular_values": [1.5], "n_samples": 10},
        "init": {"kind": "balanced", "u0": 0.1},
        "flow": {"t_max": 1.0},
        "sgd": {"lrs": [0.05]},
        "log": {"figures": False, "progress": "never", "analysis_points": 0},
        "logger": None,
    }
    res = run(cfg, output_dir=tmp_path / "run")
    assert res.exit_code == 0 and set(res["series"]) == {"flow", "sgd_lr_0.05"}
    assert res["config"]["init"] == {"kind": "balanced", "u0": 0.1, "seed": None}
    with pytest.raises(ConfigError, match=r"^init.kind: unknown value 'xavier'; allowed: gaussian"):
        run({**cfg, "init": {"kind": "xavier"}}, output_dir=tmp_path / "bad")
    with pytest.raises(ConfigError, match=r"^sgd.lr: no such key; .* did you mean sgd.lrs\?"):
        run({**cfg, "sgd": {"lr": 0.1}}, output_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_a_plain_dict_needs_no_kind_keys():
    """What the command line's defaults choose where a dict says nothing (the Figure 1 net, a teacher,
    gaussian init); an option without ``kind`` is found by its keys, and an ambiguous one refused."""
    from dlnlab.lab.config import typed_config

    cfg = typed_config({"data": {"singular_values": [2.0, 1.0]}, "init": {"scale": 0.3}})
    assert cfg.model.dims == [11, 6, 6, 6, 6, 4] and cfg.data.kind.name == "teacher" and cfg.init.scale == 0.3
    cfg = typed_config({"data": {"path": "/data.npz"}, "init": {"path": "/w.npz"}})
    assert cfg.data.kind.name == "file" and cfg.init.kind.name == "file"
    with pytest.raises(ConfigError, match=r"^init.kind: missing, and the keys u0 fit balanced and aligned"):
        typed_config({"init": {"u0": 0.1}})


@pytest.mark.lab
def test_a_resume_whose_flow_recomputation_fails_keeps_the_recorded_flow(tmp_path):
    """A resume recomputes the flow for the SGD series; when that solve fails (here: its budget, set in
    both records of the run's config, summary.json's and problem.npz's, which a resume compares) the
    recorded flow file is kept as it was, the entry says what happened, and the SGD series' distances
    stop where the recomputed flow stopped."""
    from dlnlab.lab.runner import resume

    out = tmp_path / "run"
    run(make_cfg([*TINY, "sgd.lrs=[0.02]"]), output_dir=out)
    before = (out / "series" / "flow.npz").read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    summary.update(stage="sgd_lr_0.02", interrupted="SIGTERM")  # as if stopped during the series
    summary["series"]["sgd_lr_0.02"]["status"] = "interrupted"
    summary["config"]["flow"]["max_nfe"] = 20
    (out / "summary.json").write_text(json.dumps(summary))
    with np.load(out / "problem.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["config"] = np.array(json.dumps(summary["config"]).encode())
    np.savez(out / "problem.npz", **arrays)
    done = resume(out)
    flow = done["series"]["flow"]
    assert flow["status"] == "ok" and flow["resume_check"]["status"] == "solver_failed", flow
    assert (out / "series" / "flow.npz").read_bytes() == before
    dist = np.load(out / "series" / "sgd_lr_0.02.npz")["dist_to_flow"]
    assert dist[0] == 0.0 and np.isnan(dist[-1])  # from the shared start; none past the stop


@pytest.mark.lab
def test_a_signal_noted_during_the_figures_leaves_the_run_interrupted_in_them(tmp_path, monkeypatch):
    """A SIGTERM that another thread took while the figures were drawn is noted, not raised: the run is
    interrupted in stage figures (a resume draws them again), not recorded "done" with exit 143."""
    import signal

    import dlnlab.lab.results
    from dlnlab.rundir import signals

    def noting(ctx):
        signals.note(signal.SIGTERM)

    monkeypatch.setattr(dlnlab.lab.results, "make_figures", noting)  # the driver's own stage, not the stack
    out = tmp_path / "run"
    result = run(make_cfg([*TINY, "sgd.lrs=[0.04]", "log.figures=true"]), output_dir=out)
    summary = json.loads((out / "summary.json").read_text())
    assert result.exit_code == 143 and summary["interrupted"] == "SIGTERM"
    assert summary["stage"] == "figures" and summary["status"] == "interrupted"
    monkeypatch.undo()
    from dlnlab.lab.runner import resume

    again = resume(out)  # the series are kept; the analysis and the figures run again
    assert again.exit_code == 0 and again["stage"] == "done" and (out / "figures" / "loss.png").is_file()


@pytest.mark.lab
@pytest.mark.parametrize("error", ["bug", "no room"])
def test_figures_that_fail_are_recorded_and_a_full_disk_stops_the_run_with_exit_4(
    error, tmp_path, monkeypatch
):
    """The figures stage raising: a bug is recorded in the summary (figures_error) and the run finishes
    (exit 0, every file complete); a write the disk refused stops the run as any such write does (exit 4,
    crashed, resumable), where it finished with exit 0 and nothing recorded."""
    import errno

    import dlnlab.lab.results

    def failing(ctx):
        if error == "bug":
            raise RuntimeError("a figure's bug")
        raise OSError(errno.EFBIG, "File too large", "sharpness.png")

    monkeypatch.setattr(dlnlab.lab.results, "make_figures", failing)  # the driver's own stage, not the stack
    from dlnlab.lab.config import WriteFailed

    out, cfg = tmp_path / "run", make_cfg([*TINY, "sgd.lrs=[0.04]", "log.figures=true"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if error == "bug":
            assert run(cfg, output_dir=out).exit_code == 0
        else:  # in-process the refused write is raised: the command line prints its one line, exit 4
            with pytest.raises(
                WriteFailed, match="cannot write sharpness.png: File too large; the run stopped"
            ):
                run(cfg, output_dir=out)
    summary = json.loads((out / "summary.json").read_text())
    if error == "bug":
        assert summary["status"] == "finished" and summary["figures_error"] == "RuntimeError: a figure's bug"
    else:
        assert (
            summary["status"] == "crashed" and summary["exit_code"] == 4 and summary["figures_error"] is None
        )
