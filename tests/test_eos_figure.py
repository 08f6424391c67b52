"""The edge-of-stability figure (dlnlab.plots.eos) of a run with sgd.edge and no central flow: GD's loss
and the flow's are drawn, and the panel that needs the central flow says so. Panels (b) and (c) were
left blank (and matplotlib warned that the legend had nothing to show): the loss's non-monotone fall,
what the edge looks like, was not on the figure. The central-flow run's figure: tests/test_eos_lab.py."""

from __future__ import annotations

import warnings

import numpy as np

from dlnlab.plots.eos import eos_figure


def _edge_only_run(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    lr, k = 0.25, np.arange(41.0)
    loss = np.exp(-k * lr) * (1.5 + 0.5 * (-1.0) ** k)  # non-monotone, down on average
    top = np.stack([8.0 + 0.3 * (-1.0) ** k, np.full(41, 3.0)], axis=1)
    np.savez(series / "edge_lr_0.25.npz", run_step=k, run_t=k * lr, run_loss=loss, run_top_eigs=top,
             step=k, t=k * lr, loss=loss, top_eigs=top)  # fmt: skip
    t = np.linspace(0.0, 10.0, 21)
    np.savez(series / "flow.npz", t=t, loss=np.exp(-t), sharpness=np.full(21, 9.0))
    return tmp_path, k * lr, loss


def test_without_a_central_flow_the_losses_are_drawn_and_panel_c_says_why_it_is_empty(tmp_path):
    run_dir, t, loss = _edge_only_run(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "No artists with labels found to put in legend"
        fig = eos_figure(run_dir)
    _, ax_l, ax_d = fig.axes
    lines = {line.get_label(): line for line in ax_l.lines}
    assert set(lines) == {"GD, $\\eta$ = 0.25", "gradient flow"}
    np.testing.assert_array_equal(lines["GD, $\\eta$ = 0.25"].get_ydata(), loss)
    np.testing.assert_array_equal(lines["GD, $\\eta$ = 0.25"].get_xdata(), t)
    np.testing.assert_array_equal(lines["gradient flow"].get_xdata(), np.linspace(0.0, 10.0, 21))
    assert ax_l.get_title() == "(b) losses"
    assert [x.get_text() for x in ax_d.texts] == ["no central flow in this run\n(flow.central=true draws it)"]


def test_the_flow_and_each_learning_rate_have_the_colours_of_the_other_figures(tmp_path):
    """The flow was black here and orange in every other figure (and on TensorBoard), and the rates took
    matplotlib's cycle (its second colour an orange like the flow's)."""
    from matplotlib.colors import same_color

    from dlnlab.plots import FLOW_COLOR, series_colors

    run_dir, _, _ = _edge_only_run(tmp_path)
    np.savez(run_dir / "series" / "sgd_lr_0.5.npz", t=np.zeros(1))  # a larger rate without an edge series
    ax_s, ax_l, _ = eos_figure(run_dir).axes
    rate = series_colors([0.5, 0.25])[0.25]  # the second largest: blue would be the largest's
    for ax in (ax_s, ax_l):
        lines = {line.get_label(): line.get_color() for line in ax.lines}
        assert same_color(lines["gradient flow"], FLOW_COLOR)
        assert same_color(lines["GD, $\\eta$ = 0.25"], rate)
    assert same_color(ax_s.lines[-1].get_color(), rate)  # its 2/eta line
