"""Figures (issue: reproduce the seed's Figure 1 and show SGD converging to the flow).

Every run directory gets figures/*.png made from its files alone (and the same images in
TensorBoard); ``scripts/plot.py`` remakes them; ``scripts/figure1.py`` draws Figure 1 from two runs.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from dlnlab.errors import FileWarning
from dlnlab.lab.config import prepare
from dlnlab.lab.runner import run
from dlnlab.plots import FIGURES, build_run_figures, figure1, load_run, make_run_figures
from tests._helpers import FIGURE_NAMES, check_png, copy_run_files, figure_text_inside, make_cfg

# its tests on one xdist worker (--dist loadgroup): its module fixtures are lab runs, made once per worker
pytestmark = pytest.mark.xdist_group("tiny_run")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _read_summary(run_dir: Path) -> dict:
    """summary.json of a run; NaN or Infinity (not JSON) fails the test."""
    return json.loads(
        (run_dir / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON")
    )


@pytest.fixture(scope="module")
def diverged_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plots") / "diverged"
    cfg = make_cfg(
        [
            "experiment=tiny",
            "log.progress=never",
            "logger=none",
            "log.figures=false",
            "init.scale=0.5",
            "flow.t_max=8",
            "sgd.lrs=[0.8,0.02,0.01]",
        ]
    )
    res = run(cfg, output_dir=out)
    assert res["series"]["sgd_lr_0.8"]["status"] == "diverged"
    return out


# dlnlab.plots imports neither Lightning, Hydra nor matplotlib.pyplot: checked in one fresh interpreter with
# the core's and a refused run's imports (tests/test_readme.py::test_the_core_the_plots_and_a_refused_run_...)


# ---- configs -------------------------------------------------------------------------------------
def test_figure1_experiment_configs_compose():
    near = prepare(make_cfg(["experiment=figure1_near"])).cfg
    far = prepare(make_cfg(["experiment=figure1_far"])).cfg
    for rc in (near, far):
        assert rc.model.dims == [11, 6, 6, 6, 6, 4]
        assert rc.data.singular_values == [4, 3, 2, 1] and rc.data.whiten and rc.data.noise == 0
        assert rc.init.kind.name == "gaussian"
        assert len(rc.sgd.lrs) >= 3
    assert near.init.scale == 0.1 and near.flow.t_max >= 300
    assert max(near.sgd.lrs) < 0.0435 / 4
    assert far.init.scale >= 0.4 and far.flow.t_max < near.flow.t_max
    # unbalanced minima are sharper (~320 at the far init): stay well below 2/320
    assert max(far.sgd.lrs) <= 2 / 320 / 2


# ---- the figures of a run ------------------------------------------------------------------------
@pytest.mark.lab
def test_run_writes_every_figure(tiny_run):
    assert set(FIGURES) == FIGURE_NAMES
    for name in FIGURE_NAMES:
        check_png(tiny_run / "figures" / f"{name}.png")


def test_figures_asked_for_by_name_are_those_or_a_refusal_naming_names(tiny_run):
    """``names`` from a notebook: a mistyped name gave {} silently, and a str was matched as a
    substring (``names="ensemble_loss"`` drew ``loss`` too). A figure of the lab this run has no data
    for (the ensemble's, of a single run) is left out."""
    from dlnlab.errors import ArgumentError

    with pytest.raises(ArgumentError, match="^names: no figure 'los'; the figures: loss, sharpness"):
        build_run_figures(tiny_run, names=["los"])
    assert list(build_run_figures(tiny_run, names="ensemble_loss")) == []
    assert list(build_run_figures(str(tiny_run), names=("loss",))) == ["loss"]


@pytest.mark.lab
def test_every_figure_builds_strictly_with_consistent_series_colours(tiny_run):
    figs = build_run_figures(tiny_run, strict=True)
    colours: dict[str, set] = {}
    for fig in figs.values():
        for leg in fig.legends:
            for h, txt in zip(leg.legend_handles, leg.get_texts()):
                label = txt.get_text()
                if label == "gradient flow" or label.startswith("η ="):
                    c = h.get_markerfacecolor() if h.get_marker() not in (None, "None", "") else h.get_color()
                    colours.setdefault(label, set()).add(tuple(np.round(np.atleast_1d(_rgba(c)), 3)))
    assert {"gradient flow", "η = 0.04", "η = 0.02", "η = 0.01"} <= set(colours)
    for label, cs in colours.items():
        assert len(cs) == 1, (label, cs)
    assert len({next(iter(cs)) for cs in colours.values()}) == len(colours)  # distinct per series


def _cielab(color) -> np.ndarray:
    """CIELAB (D65) of a matplotlib colour: sRGB decoded, to XYZ, to L*a*b*."""
    from matplotlib.colors import to_rgb

    rgb = np.asarray(to_rgb(color))
    lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ lin
    f = np.cbrt(xyz / np.array([0.95047, 1.0, 1.08883]))  # every colour here is above the linear toe
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_every_learning_rate_has_a_colour_apart_from_the_flows():
    """Twenty learning rates: none gets the flow's colour (TensorBoard's palette would give it to the
    6th, after the figures' run has its red) nor red; the five largest keep TensorBoard's colours after
    red, and the eleven largest are as far apart from each other and from the flow as the palette's
    closest pair without red (blue and cyan, CIELAB distance 29.6) or the added colours (22.8)."""
    from dlnlab.plots._style import FLOW_COLOR, RUN_PALETTE, series_colors

    lrs = [0.1 / 2**i for i in range(20)]
    colors = series_colors(lrs)
    assert [colors[lr] for lr in lrs[:5]] == [RUN_PALETTE[1], *RUN_PALETTE[3:]]
    assert not {FLOW_COLOR, RUN_PALETTE[2]} & set(colors.values())
    first = [FLOW_COLOR, *(colors[lr] for lr in lrs[:11])]
    labs = [_cielab(c) for c in first]
    closest = min(np.linalg.norm(a - b) for i, a in enumerate(labs) for b in labs[i + 1 :])
    assert closest >= 22.5, closest
    assert series_colors(lrs[:3]) == {lr: colors[lr] for lr in lrs[:3]}  # a rate's colour: its rank


@pytest.mark.lab
def test_a_legend_takes_as_many_columns_as_fit_and_stays_inside(tiny_run):
    """The mode strengths' legend (flow, three rates, the data modes, the reference, its escapes, the
    plateaus) took one column, 45 % of the figure's height; measured as drawn, each legend is now as
    wide as the figure allows, and no wider."""
    figs = build_run_figures(tiny_run, strict=True, names=["mode_strength", "dist_to_flow"])
    for name, fig in figs.items():
        fig.canvas.draw()
        (drawn,) = fig.legends
        box = drawn.get_window_extent()
        assert box.x0 >= 0 and box.x1 <= fig.bbox.width, name
        assert box.height <= 0.3 * fig.bbox.height, (name, box.height / fig.bbox.height)
    assert figs["mode_strength"].legends[0]._ncols >= 2


@pytest.mark.lab
def test_no_text_runs_off_the_figure(tiny_run, diverged_run):
    for d in (tiny_run, diverged_run):
        for name, fig in build_run_figures(d, strict=True).items():
            assert figure_text_inside(fig), (d.name, name)
            assert not any(ax.get_legend() for ax in fig.axes)  # legends sit below the axes
    # Figure 1's text: test_figure1_is_drawn_from_two_run_directories, on the figure it builds


def _rgba(c):
    from matplotlib.colors import to_rgba

    return to_rgba(c)


@pytest.mark.lab
def test_diverged_series_is_drawn_and_marked(diverged_run):
    figs = {}  # the figures the PNGs were drawn from (building them again cost ~0.3 s)
    paths = make_run_figures(diverged_run, strict=True, on_figure=figs.__setitem__)
    assert {p.stem for p in paths} == FIGURE_NAMES == set(figs)
    for p in paths:
        check_png(p)
    labels = [t.get_text() for t in figs["loss"].legends[0].get_texts()]
    assert "η = 0.8 (diverged)" in labels and "stopped" in labels
    # the × marker sits inside the axes even though the series left the picture
    ax = figs["loss"].axes[0]
    marks = [ln for ln in ax.get_lines() if ln.get_marker() == "X"]
    assert len(marks) == 1
    x, y = marks[0].get_xdata()[0], marks[0].get_ydata()[0]
    assert ax.get_xlim()[0] <= x <= ax.get_xlim()[1] and ax.get_ylim()[0] <= y <= ax.get_ylim()[1]
    # the axis limits follow the healthy series, not the 1e26 of the diverged one
    assert ax.get_ylim()[1] < 1e3


@pytest.mark.lab
def test_short_nan_and_flow_only_runs_still_get_figures(tiny_run, tmp_path):
    broken = copy_run_files(tiny_run, tmp_path / "broken")
    path = broken / "series" / "sgd_lr_0.04.npz"
    with np.load(path) as f:
        arr = {k: f[k] for k in f.files}
    arr = {k: (v[:5].copy() if v.ndim and len(v) == len(arr["t"]) else v) for k, v in arr.items()}
    arr["loss"][2:] = np.nan
    arr["sv"][3] = np.nan
    del arr["sharpness"]
    np.savez(path, **arr)
    (broken / "series" / "sgd_lr_0.02.npz").write_bytes(b"not an npz")
    with pytest.warns(FileWarning, match=r"sgd_lr_0\.02\.npz: not an \.npz archive") as caught:
        assert len(make_run_figures(broken, strict=True)) == len(FIGURE_NAMES)
    assert not any("pickle" in str(w.message) for w in caught)  # numpy's word for any bytes not a zip

    flow_only = copy_run_files(tiny_run, tmp_path / "flow_only")
    summary = _read_summary(flow_only)
    summary["series"] = {"flow": summary["series"]["flow"]}
    summary["convergence_order"] = None
    summary["convergence_order_detail"] = {"order": None, "lrs_used": [], "pairwise": [], "message": "x"}
    (flow_only / "summary.json").write_text(json.dumps(summary))
    for p in (flow_only / "series").glob("sgd_*.npz"):
        p.unlink()
    for p in make_run_figures(flow_only, strict=True):
        check_png(p, min_bytes=2_000)  # dist_to_flow and convergence_order say "no SGD series"


@pytest.mark.lab
def test_the_convergence_order_fit_is_drawn_through_every_rate_it_used_an_unstable_one_included(
    tiny_run, tmp_path
):
    """The summary's order fits ok and unstable series (status.USABLE); the figure drew the fit through
    the ok ones alone (the right slope at the wrong height, over part of the range) and left out the
    pairwise slopes that reach an unstable rate."""
    d = copy_run_files(tiny_run, tmp_path / "unstable")
    summary = _read_summary(d)
    summary["series"]["sgd_lr_0.04"]["status"] = "unstable"
    (d / "summary.json").write_text(json.dumps(summary))
    detail = summary["convergence_order_detail"]
    assert detail["lrs_used"] == [0.01, 0.02, 0.04] and len(detail["pairwise"]) == 2
    ax = build_run_figures(d, strict=True, names=["convergence_order"])["convergence_order"].axes[0]
    fit = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and len(ln.get_xdata()) > 2]
    assert len(fit) == 1
    x, y = np.log(fit[0].get_xdata()), np.log(fit[0].get_ydata())
    lrs = np.log(detail["lrs_used"])
    dists = np.log([summary["series"][f"sgd_lr_{lr:g}"]["max_dist_to_flow"] for lr in detail["lrs_used"]])
    assert x.min() < lrs.min() and x.max() > lrs.max()  # over every rate fitted
    order = summary["convergence_order"]
    np.testing.assert_allclose(np.diff(y) / np.diff(x), order, rtol=1e-9)
    # the least-squares line of that slope: its residuals at the fitted rates sum to zero
    assert abs(np.sum(dists - np.interp(lrs, x, y))) < 1e-9
    slopes = {t.get_text() for t in ax.texts} & {f"{p['order']:.2f}" for p in detail["pairwise"]}
    assert len(slopes) == len({f"{p['order']:.2f}" for p in detail["pairwise"]})


@pytest.mark.lab
def test_an_unstable_series_is_marked_as_ended_unstable_not_as_stopped(tiny_run, tmp_path):
    """An unstable series ran to its end (its loss stuck up above the threshold): its × was explained as
    "stopped" in the legend. A diverged one is still "stopped" (test_diverged_series_is_drawn_and_marked)."""
    d = copy_run_files(tiny_run, tmp_path / "unstable")
    summary = _read_summary(d)
    summary["series"]["sgd_lr_0.04"]["status"] = "unstable"
    (d / "summary.json").write_text(json.dumps(summary))
    for name, fig in build_run_figures(d, strict=True, names=["loss", "dist_to_flow"]).items():
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert "η = 0.04 (unstable)" in labels and "ended unstable" in labels, (name, labels)
        assert "stopped" not in labels, name
        assert len([ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "X"]) == 1


@pytest.mark.lab
def test_plateaus_from_the_summary_are_shaded(tiny_run, tmp_path):
    d = copy_run_files(tiny_run, tmp_path / "plateaus")
    summary = _read_summary(d)
    summary["series"]["flow"]["plateaus"] = [
        {"t_start": 0.5, "t_end": 1.5, "level": 2.5, "level_index": 0, "label": "non-strict"},
        {"t_start": None, "t_end": 2.0},  # incomplete entries are ignored
    ]
    (d / "summary.json").write_text(json.dumps(summary))
    figs = build_run_figures(d, strict=True)
    labels = [t.get_text() for t in figs["loss"].legends[0].get_texts()]
    assert "plateaus (flow)" in labels
    assert len(load_run(d).plateaus("flow")) == 1


# ---- Figure 1 ------------------------------------------------------------------------------------
@pytest.mark.lab
def test_figure1_is_drawn_from_two_run_directories(tiny_run, diverged_run, tmp_path, monkeypatch, capsys):
    """Figure 1 from two runs: its three panels, no text off the figure; the script draws it from
    existing runs into a new folder, or replaces the file --out names."""
    fig = figure1(tiny_run, diverged_run)
    assert figure_text_inside(fig)
    titles = [sf._suptitle.get_text() for sf in fig.subfigs]
    assert titles[0].startswith("(a)") and titles[1].startswith("(b)") and titles[2].startswith("(c)")
    assert len(fig.subfigs[1].axes) == 3 and len(fig.subfigs[2].axes) == 3
    # the script redraws from existing runs without running anything; by default into a new folder
    # under the working directory's outputs/figure1/ (never the checkout's docs/), which it names
    committed = {p: p.stat().st_mtime_ns for p in (ROOT / "docs").glob("figure1.*")}
    monkeypatch.chdir(tmp_path)
    fig1_main = runpy.run_path(str(ROOT / "scripts" / "figure1.py"))["main"]
    assert fig1_main(["--near", str(tiny_run), "--far", str(diverged_run)]) == 0
    (png,) = (tmp_path / "outputs" / "figure1").glob("*/*/figure1.png")
    check_png(png)
    assert png.with_suffix(".pdf").stat().st_size > 10_000
    assert f"wrote {png.relative_to(tmp_path)}" in capsys.readouterr().out
    # an explicit --out replaces that file (and the PDF beside it), here an older one
    png.write_bytes(b"old")
    assert (
        fig1_main(["--near", str(tiny_run), "--far", str(diverged_run), "--out", str(png), "--no-pdf"]) == 0
    )
    check_png(png)
    assert {p: p.stat().st_mtime_ns for p in (ROOT / "docs").glob("figure1.*")} == committed
