"""The saddle analysis of a run: analyze_run_saddles (a series it cannot analyse recorded and the rest
analysed, log.hessian_dense_max honoured, the summary's entries and exits against the flow), and the
plateaus through the experiment: summary.json, the console, TensorBoard."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _saddle_helpers import (
    PLATEAU_KEYS,
    gd_arrays,
    net,
    series_of,
    small_problem,
)

from dlnlab import init, saddles
from dlnlab.analysis import mode_half_time
from dlnlab.errors import AnalysisWarning
from dlnlab.lab.results import analyze_run_saddles
from dlnlab.network import pack
from tests._helpers import make_cfg

# ------------------------------------------------------------------------------------------------
# analyze_run_saddles


def test_the_lab_records_a_series_it_cannot_analyse_and_goes_on():
    pr = small_problem()
    dims = net(3)
    arr = series_of(pr, dims, pack(init.gaussian(dims, 0.1, seed=3)), 6.0, 0.05)
    series = {"flow": {"lr": None}, "sgd_lr_1.0": {"lr": 1.0}}
    with pytest.warns(AnalysisWarning, match="sgd_lr_1.0: saddle analysis failed: ArgumentError"):
        analyze_run_saddles(pr, dims, {"flow": arr, "sgd_lr_1.0": {"t": np.zeros(1)}}, series)
    assert len(series["flow"]["plateaus"]) == 3
    assert series["sgd_lr_1.0"]["plateaus"] == []
    assert series["sgd_lr_1.0"]["plateau_exits_vs_flow"][0]["t_exit"] is None


def test_analyze_run_saddles_honours_hessian_dense_max(monkeypatch):
    """log.hessian_dense_max reaches every classification (ClassifyTolerances.dense_max)."""
    from dlnlab.saddles import analyze as report

    pr = small_problem()
    dims = net(3)
    arr = series_of(pr, dims, pack(init.gaussian(dims, 0.1, seed=3)), 6.0, 0.05)
    seen = []
    classify = report.classify_saddle

    def spy(*args, tolerances=None, **kwargs):
        seen.append(tolerances.dense_max)
        return classify(*args, tolerances=tolerances, **kwargs)

    monkeypatch.setattr(report, "classify_saddle", spy)
    for dense_max in (None, 1234):
        series = {"flow": {"lr": None}}
        kw = {} if dense_max is None else {"hessian_dense_max": dense_max}
        analyze_run_saddles(pr, dims, {"flow": arr}, series, **kw)
        assert [p["label"] for p in series["flow"]["plateaus"]] == ["non-strict"] * 3
        assert seen == [dense_max or saddles.ClassifyTolerances().dense_max] * 3
        seen.clear()


def test_analyze_run_saddles_fills_summary():
    pr = small_problem()
    h, u0 = 4, 1e-3
    dims = net(h)
    theta0 = pack(init.aligned(dims, pr, u0, seed=2))
    dt, t_max = 0.05, 1.3 * mode_half_time(float(pr.modes[-1]), u0, h)
    arrays = {"flow": series_of(pr, dims, theta0, t_max, dt)}
    arrays["flow"]["grid_index"] = np.arange(len(arrays["flow"]["t"]))
    lr = 0.01
    gd = gd_arrays(pr, dims, theta0, lr, t_max)
    keep = np.arange(0, len(gd["t"]), int(round(dt / lr)))  # log on the grid, like the recorder
    arrays["sgd_lr_0.01"] = {k: v[keep] for k, v in gd.items()}
    arrays["sgd_lr_0.01"]["grid_index"] = np.arange(len(keep))
    series = {"flow": {"lr": None, "plateaus": []}, "sgd_lr_0.01": {"lr": lr, "plateaus": []}}
    found = analyze_run_saddles(pr, dims, arrays, series)
    json.dumps(series, allow_nan=False)
    assert [p.to_dict() for p in found["flow"]] == series["flow"]["plateaus"]
    assert len(series["flow"]["plateaus"]) == 3
    assert all(p.label == "non-strict" for p in found["flow"])
    assert all(PLATEAU_KEYS <= set(p) for p in series["sgd_lr_0.01"]["plateaus"])
    exits = series["sgd_lr_0.01"]["plateau_exits_vs_flow"]
    assert [e["mode"] for e in exits] == [0, 1, 2]
    assert all(e["delay"] > 0 and e["delay"] == pytest.approx(e["t_exit"] - e["t_exit_flow"]) for e in exits)
    assert "plateau_exits_vs_flow" not in series["flow"]


# ------------------------------------------------------------------------------------------------
# Through the experiment: summary.json, console, TensorBoard


def _read_summary(out):
    """summary.json of a run; NaN or Infinity (not JSON) fails the test."""
    return json.loads(
        (out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON")
    )


def _check_run(out, capsys, n_flow_plateaus):
    from tensorboard.backend.event_processing.event_accumulator import (
        STORE_EVERYTHING_SIZE_GUIDANCE,
        EventAccumulator,
    )

    summary = _read_summary(out)
    flow_plats = summary["series"]["flow"]["plateaus"]
    assert len(flow_plats) == n_flow_plateaus
    printed = capsys.readouterr().out
    assert "plateaus of the flow, modes numbered 1.." in printed
    assert printed.count("non-strict") >= n_flow_plateaus
    for p in flow_plats:  # the saddle under its plateau, the snap distance said as a distance
        away = p["evidence"]["snap_distance"]
        saddle = f"\n    {p['label']} saddle: lambda_min {p['lambda_min']:.4g} at the critical point " \
                 f"{away:.4g} away from the trajectory\n"  # fmt: skip
        assert f"level {p['level']:.4g}, modes learnt" in printed and saddle in printed, printed
    block = printed[printed.index("plateaus of the flow") :].splitlines()
    assert max(len(line) for line in block[: 1 + 2 * n_flow_plateaus]) <= 100, block
    for name, entry in summary["series"].items():
        for p in entry["plateaus"]:
            assert PLATEAU_KEYS <= set(p)
            assert p["label"] in saddles.LABELS
        if name != "flow":
            exits = entry["plateau_exits_vs_flow"]
            assert [e["mode"] for e in exits] == [
                p["exit_mode"] for p in flow_plats if p["exit_mode"] is not None
            ]
            for e in exits:
                assert e["delay"] > 0  # GD leaves later than the flow
    acc = EventAccumulator(str(out / "tensorboard" / "report"), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    texts = sorted(
        tag for tag in acc.Tags()["tensors"] if tag.startswith("summary/")
    )  # the Text tab, numbered
    assert texts == [f"summary/{t}/text_summary" for t in ("1 results", "2 plateaus", "3 config")], texts
    table = acc.Tensors("summary/2 plateaus/text_summary")[0].tensor_proto.string_val[0].decode()
    for name, entry in summary["series"].items():  # one table: every series' plateaus, modes from 1
        assert table.count(f"| {name} |") == len(entry["plateaus"])
        for p in entry["plateaus"]:
            if p["exit_mode"] is not None:
                assert f"mode {p['exit_mode'] + 1} at t = {p['t_exit']:.4g}" in table
    return summary


@pytest.mark.lab
def test_run_reports_plateaus_in_summary_console_and_tensorboard(tmp_path, capsys):
    from dlnlab.lab.runner import run

    out = tmp_path / "run"
    overrides = ["experiment=tiny", "flow.t_max=6", "log.figures=false", "log.progress=never"]
    run(make_cfg(overrides), output_dir=out)
    summary = _check_run(out, capsys, 1)
    p = summary["series"]["flow"]["plateaus"][0]
    assert p["modes_learnt"] == [] and p["exit_mode"] == 0 and p["level"] == pytest.approx(2.5)
    delays = [
        summary["series"][f"sgd_lr_{lr!r}"]["plateau_exits_vs_flow"][0]["delay"] for lr in (0.04, 0.02, 0.01)
    ]
    assert delays[0] > delays[1] > delays[2] > 0


@pytest.mark.slow
@pytest.mark.lab
def test_figure1_near_run_has_four_non_strict_plateaus_and_figures(tmp_path, capsys):
    """experiment=figure1_near (the default setting, stated explicitly), end to end (~30 s): the only
    slow run of the saddle and figure tests. Four non-strict plateaus at 15, 7, 2.5, 0.5 in every
    series, GD leaving each O(eta) after the flow, and the run's own figures."""
    from matplotlib.image import imread

    from dlnlab.lab.runner import run
    from dlnlab.plots import FIGURES

    out = tmp_path / "near"
    res = run(make_cfg(["experiment=figure1_near", "log.progress=never"]), output_dir=out)
    assert res.exit_code == 0
    summary = _check_run(out, capsys, 4)
    for name, entry in summary["series"].items():
        plats = entry["plateaus"]
        assert [p["level_index"] for p in plats] == [0, 1, 2, 3], name
        assert [p["level"] for p in plats] == pytest.approx([15.0, 7.0, 2.5, 0.5], abs=1e-9)
        assert all(p["label"] == "non-strict" for p in plats), name
        assert all(a["t_end"] < b["t_start"] for a, b in zip(plats, plats[1:])), name  # in time order
    for lr in (0.01, 0.005, 0.0025):
        exits = summary["series"][f"sgd_lr_{lr!r}"]["plateau_exits_vs_flow"]
        assert [e["mode"] for e in exits] == [0, 1, 2, 3]
        assert all(0 < e["delay"] < 100 * lr for e in exits)
    for name in FIGURES:
        png = out / "figures" / f"{name}.png"
        assert png.exists() and png.stat().st_size > 10_000, png
        assert float(imread(png)[..., :3].std()) > 0.02, f"{name}.png looks blank"
