"""scripts/limit.py end to end (slow: its three lab runs, with small ensembles about two minutes)."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ESCAPE_LRS = [0.02, 0.01, 0.005]  # the escape run's (scripts/limit.py): panel (c) draws the second


@pytest.mark.slow
def test_limit_script_draws_the_figure_and_redraws_it_from_kept_runs(tmp_path, capsys):
    main = runpy.run_path(str(ROOT / "scripts" / "limit.py"))["main"]
    out, runs = tmp_path / "limit.png", tmp_path / "runs"
    assert main(["--members", "32", "--plateau-members", "64", "--out", str(out), "--runs", str(runs)]) == 0
    assert out.stat().st_size > 50_000
    text = capsys.readouterr().out
    assert "GD: order" in text and "the flow's saddle escapes at t =" in text
    assert {p.name for p in runs.iterdir()} == {"gd", "plateau", "escape"}
    out.unlink()
    assert main(["--runs", str(runs), "--replot", "--out", str(out)]) == 0
    assert out.stat().st_size > 50_000
    (runs / "escape" / "series" / "sme_lr_0.01.npz").unlink()  # what panel (c) reads: refused up front
    with pytest.raises(SystemExit) as refused:
        main(["--runs", str(runs), "--replot", "--out", str(tmp_path / "again.png")])
    assert refused.value.code == 2 and not (tmp_path / "again.png").exists()
    assert "sme_lr_0.01.npz is missing" in capsys.readouterr().err


def test_the_escape_panels_legend_hides_no_curve_and_no_band(tmp_path):
    """Panel (c): the loss falls from a plateau to the next level; its legend sat upper right, over the
    start of the fall and the bands' tops. Drawn from ensembles shaped like the escape run's."""
    from dlnlab.plots import new_figure, style

    bands_panel = runpy.run_path(str(ROOT / "scripts" / "limit.py"))["_bands_panel"]
    t = np.linspace(4.6, 8.0, 35)
    rng = np.random.default_rng(0)

    def fall(t0):
        return 7.0 + 8.0 / (1.0 + np.exp((t - t0) / 0.08))

    (tmp_path / "series").mkdir()
    np.savez(tmp_path / "series" / "flow.npz", t=t, loss=fall(6.5))
    for name, spread in (("sgd_lr_0.01", 0.15), ("sme_lr_0.01", 0.12)):
        members = np.stack([fall(6.5 + d) for d in rng.normal(0.0, spread, 64)])
        np.savez(tmp_path / "series" / f"{name}.npz", t=t, loss=members)
    with style():
        fig = new_figure((4.0, 3.2))
        ax = fig.add_subplot()
        bands_panel(ax, tmp_path, 0.01, ESCAPE_LRS, 4.6)
        fig.canvas.draw()
    box = ax.get_legend().get_window_extent()

    def hidden(xy) -> bool:
        x, y = ax.transData.transform(xy).T
        return bool(((box.x0 <= x) & (x <= box.x1) & (box.y0 <= y) & (y <= box.y1)).any())

    for line in ax.get_lines():
        assert not hidden(line.get_xydata()), line.get_label()
    for band in ax.collections:
        assert not any(hidden(path.vertices) for path in band.get_paths())


def test_the_escape_panels_bands_are_over_the_members_with_a_value(tmp_path):
    """Panel (c): member 3 of the SGD ensemble diverged at the 20th point (NaN after it, as the stepper
    leaves a diverged member). np.quantile made every later median and band point NaN, so the band and
    the line stopped there; now each point is over the members with a value there, and the legend says
    one stopped early. Reference: numpy's quantiles of each point's finite members, taken one by one."""
    from dlnlab.plots import new_figure, style

    bands_panel = runpy.run_path(str(ROOT / "scripts" / "limit.py"))["_bands_panel"]
    t = np.linspace(4.6, 8.0, 35)
    rng = np.random.default_rng(1)
    members = np.stack([7.0 + 8.0 / (1.0 + np.exp((t - 6.5 - d) / 0.08)) for d in rng.normal(0.0, 0.15, 16)])
    members[3, 20:] = np.nan
    (tmp_path / "series").mkdir()
    np.savez(tmp_path / "series" / "flow.npz", t=t, loss=members[0])
    np.savez(tmp_path / "series" / "sgd_lr_0.01.npz", t=t, loss=members)
    np.savez(tmp_path / "series" / "sme_lr_0.01.npz", t=t, loss=members[:8])
    with style():
        ax = new_figure((4.0, 3.2)).add_subplot()
        bands_panel(ax, tmp_path, 0.01, ESCAPE_LRS, 4.6)
    want = np.array([np.quantile(col[np.isfinite(col)], [0.05, 0.5, 0.95]) for col in members.T])
    (median,) = [line for line in ax.get_lines() if line.get_label().startswith("SGD ensemble")]
    np.testing.assert_allclose(median.get_ydata(), want[:, 1], rtol=1e-14)
    band = ax.collections[0].get_paths()[0].vertices[:, 1]  # fill_between: along the top and the bottom
    for q in (want[:, 0], want[:, 2]):
        assert all(np.isclose(band, y, rtol=1e-14).any() for y in q)
    assert "1 of 16 members stopped early" in median.get_label()


def test_the_escape_panel_draws_the_flow_and_the_learning_rate_in_the_labs_colours(tmp_path):
    """Panel (c) drew the flow in black and the ensembles in matplotlib's C3 and C0 (C0 near panel (b)'s
    colour of eta = 0.02); now as every figure of the lab: the flow in TensorBoard's first colour, eta =
    0.01, the second largest of three rates, in its fourth (its TensorBoard run's, after the figures' run
    at the third: dlnlab/lab/record/_runs.py; and panel (b)'s), the
    SME's median dashed in that colour, the SGD band filled in it, and the legend shows the same."""
    from matplotlib.colors import to_hex

    from dlnlab.plots import new_figure, style

    bands_panel = runpy.run_path(str(ROOT / "scripts" / "limit.py"))["_bands_panel"]
    flow_hex, rate_hex = "#ff7043", "#33bbee"  # TensorBoard's tensorboardColorBlindAssist, 1st and 4th
    t = np.linspace(4.6, 8.0, 35)
    (tmp_path / "series").mkdir()
    np.savez(tmp_path / "series" / "flow.npz", t=t, loss=7.0 + 8.0 / (1.0 + np.exp((t - 6.5) / 0.08)))
    for name in ("sgd_lr_0.01", "sme_lr_0.01"):
        members = np.stack([7.0 + 8.0 / (1.0 + np.exp((t - 6.5 - d) / 0.08)) for d in (-0.1, 0.0, 0.1, 0.2)])
        np.savez(tmp_path / "series" / f"{name}.npz", t=t, loss=members)
    with style():
        ax = new_figure((4.0, 3.2)).add_subplot()
        bands_panel(ax, tmp_path, 0.01, ESCAPE_LRS, 4.6)
    labelled = {line.get_label().split(":")[0]: line for line in ax.get_lines()}
    flow, sgd, sme = labelled["gradient flow"], labelled["SGD ensemble"], labelled["SME ensemble"]
    assert to_hex(flow.get_color()) == flow_hex and flow.get_linestyle() == "-"
    assert to_hex(sgd.get_color()) == rate_hex and sgd.get_linestyle() == "-"
    assert to_hex(sme.get_color()) == rate_hex and sme.get_linestyle() == "--"
    (band,) = ax.collections  # the SGD band; the SME's is its two dashed edges, in the rate's colour
    assert to_hex(band.get_facecolor()[0]) == rate_hex
    edges = [line for line in ax.get_lines() if line not in (flow, sgd, sme)]
    assert len(edges) == 2 and {to_hex(e.get_color()) for e in edges} == {rate_hex}
    legend = ax.get_legend()
    keys = ["gradient flow", "SGD ensemble", "SME ensemble"]
    assert [text.get_text().split(":")[0] for text in legend.get_texts()] == keys
    # a band and its median are one entry, its key the band (a patch; the SME's: a dashed edge)
    flow_key, sgd_key, sme_key = legend.legend_handles
    assert to_hex(flow_key.get_color()) == flow_hex
    assert to_hex(sgd_key.get_facecolor()) == rate_hex and to_hex(sme_key.get_color()) == rate_hex


def test_panel_a_keeps_its_points_where_the_weak_errors_bars_reach_zero():
    """Panel (a) at 8 members: the weak error is debiased and floored at 0, so its bootstrap bars start at
    0 or at its float rounding (3e-17); the log axis ran down to 5e-18 and squashed the points into its
    top two decades. The bars now run off the bottom edge (their caps out of sight), the points keep the
    panel."""
    from dlnlab.plots import new_figure, style

    orders_panel = runpy.run_path(str(ROOT / "scripts" / "limit.py"))["_orders_panel"]
    lrs, slrs = [0.0025, 0.005, 0.01], [0.005, 0.01, 0.02]
    gd = {"convergence_order": 1.0, "convergence_order_modified": 2.0,
          "series": {f"sgd_lr_{lr!r}": {"lr": lr, "max_dist_to_flow": 0.3 * lr, "max_dist_to_modified_flow": 2 * lr**2}
                     for lr in lrs}}  # fmt: skip
    strong, weak = [0.02, 0.028, 0.04], [2e-3, 3e-3, 6e-3]
    lim = {
        "members": 8, "lrs": slrs,
        "strong": {"max": strong, "max_ci90": [[0.8 * v, 1.2 * v] for v in strong], "order": 0.5,
                   "ci90": [0.4, 0.6], "lrs_used": slrs},
        "weak_theta": {"max": weak, "max_ci90": [[3e-17, 5e-3], [0.0, 6e-3], [3e-3, 1.2e-2]], "order": None,
                       "ci90": None, "message": "too few learning rates"},
    }  # fmt: skip
    with style():
        ax = new_figure((4.0, 3.2)).subplots()
        orders_panel(ax, gd, {"sgd_limit": lim, "grid": {"t_max": 5.0}})
    points = [2 * lr**2 for lr in lrs] + [0.3 * lr for lr in lrs] + strong + weak
    bottom, top = ax.get_ylim()
    assert min(points) / 10 * (1 - 1e-9) <= bottom < min(points) and top > max(points)
    weak_bars = next(c for c in ax.containers if c.get_label().startswith("SGD weak"))
    lower_ends = [seg[:, 1].min() for seg in weak_bars.lines[2][0].get_segments()]
    assert lower_ends[0] == pytest.approx(3e-17) and lower_ends[0] < bottom  # the bar itself is not shortened
