"""The orders in eta: one rule for GD's convergence order and SGD's strong and weak orders, and how the
console words an order its bootstrap leaves undetermined. Constructed series: C eta^p is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from dlnlab.lab.results._limit import BOOTSTRAP, _window_stats
from dlnlab.lab.results._summary import convergence_order

LRS = [0.04, 0.02, 0.01, 0.005]  # as a run lists them: largest first


def _errors(p: float, missing: set[float]) -> list[float | None]:
    return [None if lr in missing else 0.3 * lr**p for lr in LRS]


def _boot(values: list, rng) -> list:
    """R resampled values per rate: the value times a small noise (None where the value is None)."""
    return [None if v is None else v * np.exp(0.01 * rng.standard_normal(BOOTSTRAP)) for v in values]


@pytest.mark.parametrize("missing", [set(), {0.005}, {0.01}])
def test_gd_and_sgd_orders_take_the_same_rates(missing):
    """Three to fit, four rates: a rate without a value is replaced by the next larger one, in both."""
    errors = _errors(0.5, missing)
    gd = convergence_order(LRS, errors, 3)
    sgd = _window_stats(LRS, 3, errors, _boot(errors, np.random.default_rng(0)), 0.5)
    want = sorted(lr for lr in LRS if lr not in missing)[:3]
    for got in (gd, sgd):
        assert got["lrs_used"] == want and got["message"] == ""
        assert got["order"] == pytest.approx(0.5, rel=1e-9)
    lo, hi = sgd["ci90"]
    assert lo < 0.5 < hi and hi - lo < 0.1
    assert sgd["constant"] == pytest.approx(0.3, rel=1e-9)  # C = error / eta^p over the rates fitted


@pytest.mark.parametrize("missing", [{0.005, 0.01}, {0.04, 0.02, 0.01}])
def test_too_few_rates_with_a_value_give_no_order_in_either(missing):
    """Two of four rates without a value: three cannot be fitted; neither order is made of two rates."""
    errors = _errors(1.0, missing)
    gd = convergence_order(LRS, errors, 3)
    sgd = _window_stats(LRS, 3, errors, _boot(errors, np.random.default_rng(1)), 1.0)
    have = sorted(lr for lr in LRS if lr not in missing)
    for got, what in ((gd, "a distance"), (sgd, "an error")):
        assert got["order"] is None and got["lrs_used"] == have
        assert got["message"] == f"needs at least 3 learning rates with {what}, got {len(have)}"
    assert sgd["ci90"] is None


def test_a_resample_without_a_value_is_left_out_of_the_interval():
    """The estimate has its three rates; resamples that lose one of them (a NaN) do not fit over two."""
    errors = _errors(1.0, set())
    boot = _boot(errors, np.random.default_rng(2))
    boot[3][: BOOTSTRAP // 2] = np.nan  # half the resamples lack eta = 0.005
    boot[2][: BOOTSTRAP // 2] *= 100.0  # and are wild at 0.01: fitted over 0.01 and 0.02 they would be
    got = _window_stats(LRS, 3, errors, boot, 1.0)
    lo, hi = got["ci90"]
    assert lo < 1.0 < hi and hi - lo < 0.1


@pytest.mark.parametrize(
    "order, ci90, undetermined",
    [
        (2.5, [-0.95, 4.0], True),  # the weak loss at 4096 members on the Figure 1 net: holds 0
        (1.0, [0.2, 1.3], True),  # wider (1.1) than the order
        (0.956, [0.870, 1.080], False),
        (-0.3, [-0.5, -0.2], False),  # a negative order, pinned down: a number
        (None, None, False),
        (1.0, None, False),
    ],
)
def test_an_order_is_undetermined_when_its_interval_holds_zero_or_is_wider_than_it(order, ci90, undetermined):
    from dlnlab.ensemble_errors import order_undetermined

    assert order_undetermined(order, ci90) is undetermined


def _error(order, ci90):
    """An ErrorOrder as lab/limit.py writes it (two learning rates)."""
    return {"max": [1e-3, 2e-3], "max_ci90": [None, None], "order": order, "ci90": ci90, "constant": 1.0,
            "lrs_used": [0.01, 0.02], "message": ""}  # fmt: skip


def _limit(members: int, **errors) -> dict:
    """``sgd_limit`` as lab/limit.py writes it, at two learning rates, with the given errors."""
    head = {"members": members, "bootstrap": 200, "lrs": [0.02, 0.01], "fit_lrs": [0.01, 0.02],
            "members_used": [members, members]}  # fmt: skip
    return head | errors


def test_the_console_gives_no_number_for_an_undetermined_order():
    from dlnlab.lab.results import limit_lines
    from dlnlab.lab.results._limit_text import escapes_table

    stretch = {"t_start": 0.0, "t_end": None, "escapes_before": 0}
    stretch |= {k: _error(0.5, [0.45, 0.55]) for k in ("strong", "weak_theta")}
    stretch["weak_loss"] = _error(2.5, [-0.95, 4.0])
    limit = _limit(
        4096, strong=_error(0.533, [0.523, 0.544]), weak_theta=_error(0.995, [0.925, 1.062]),
        weak_loss=_error(2.5, [-0.95, 4.0]),
        escapes={"t_exit": [], "exit_mode": [], "expected_order": {}, "stretches": [stretch]},
    )  # fmt: skip
    line = limit_lines({"sgd_limit": limit})[0]
    assert "strong 0.533 [0.523, 0.544], weak (theta) 0.995 [0.925, 1.062]" in line
    assert line.endswith("weak (loss) undetermined at 4096 members (interval [-0.95, 4])")
    assert "2.5" not in line
    row = escapes_table(limit).splitlines()[-1]
    assert row.endswith("(undetermined [-0.95, 4]) |") and "(0.5)" in row


def test_the_console_says_what_the_range_of_a_spread_ratio_is():
    """The SME line's parentheses are the ratio's 10th and 90th percentiles over the grid (summary
    ``sgd_limit.sme.spread_ratio``); the line said only "median over the grid" (a new user's review)."""
    from dlnlab.lab.results import limit_lines

    ratio = {"var_loss": {"median": 0.94, "p10": 0.61, "p90": 1.13}, "var_theta": None}
    errors = {k: _error(1.0, [0.9, 1.1]) for k in ("strong", "weak_theta", "weak_loss")}
    limit = _limit(
        500, **errors, sme={"spread_ratio": {"0.04": ratio}, "sampling_error": 0.0895, "exit_spread": {}}
    )
    line = next(s for s in limit_lines({"sgd_limit": limit}) if s.startswith("SGD's spread"))
    assert line == ("SGD's spread over the SME's at eta = 0.04: var_loss 0.94 (0.61 .. 1.13) (median over the "
                    "grid, its 10-90 % range in parentheses; sampling error about 0.0895)")  # fmt: skip


def test_the_figure_draws_no_slope_for_an_undetermined_order():
    from dlnlab.plots import new_figure
    from dlnlab.plots.ensemble import _orders_axes

    lim = {
        "members": 4096, "lrs": [0.02, 0.01, 0.005], "fit_lrs": [0.005, 0.01, 0.02],
        "strong": _error(0.5, [0.45, 0.55]), "weak_theta": _error(1.0, [0.9, 1.1]),
        "weak_loss": _error(2.5, [-0.95, 4.0]),
    }  # fmt: skip
    for e in ("strong", "weak_theta", "weak_loss"):
        lim[e]["max"] = [4e-3, 2e-3, 1e-3]
        lim[e]["max_ci90"] = [None] * 3
    ax = new_figure((4, 3)).subplots()
    _orders_axes(ax, lim)
    labels = [c.get_label() for c in ax.containers]
    assert any("slope undetermined at 4096 members [-0.95, 4.00]" in s for s in labels), labels
    assert not any("slope 2.50" in s for s in labels)
    fitted = [line for line in ax.lines if len(line.get_xdata()) == 10]  # a fit is drawn on 10 points
    assert len(fitted) == 2  # strong and weak (theta), not the weak loss


def test_the_run_figures_orders_panel_keeps_its_points_where_a_bar_reaches_zero():
    """The weak errors are debiased and floored at 0: at a few members their bars start at 0 or at its
    float rounding (3e-17), and the log axis ran down to 1e-17 under points of 1e-3. The bars now run off
    the bottom edge and the points keep the panel."""
    from dlnlab.plots import new_figure
    from dlnlab.plots.ensemble import _orders_axes

    lim = {"members": 8, "lrs": [0.02, 0.01, 0.005], "strong": _error(0.5, [0.45, 0.55]),
           "weak_theta": _error(None, None), "weak_loss": _error(None, None)}  # fmt: skip
    for e in ("strong", "weak_theta", "weak_loss"):
        lim[e]["max"] = [4e-3, 2e-3, 1e-3]
        lim[e]["max_ci90"] = [[3e-17, 5e-3], [0.0, 3e-3], [5e-4, 2e-3]]
    ax = new_figure((4, 3)).subplots()
    _orders_axes(ax, lim)
    bottom, top = ax.get_ylim()
    assert 1e-4 * (1 - 1e-9) <= bottom < 1e-3 and top > 5e-3
    lower_ends = [seg[:, 1].min() for seg in ax.containers[0].lines[2][0].get_segments()]
    assert lower_ends[0] == pytest.approx(3e-17)  # the bar is not shortened: it runs off the bottom


@pytest.mark.parametrize(
    "weak, label",
    [
        ((1.05, [0.98, 1.1]), "SGD weak ||E.||: slope 1.05 [0.98, 1.10]"),
        ((1.05, [0.70, 2.17]), "SGD weak ||E.||: slope undetermined at 4096 members [0.70, 2.17]"),
        ((None, None), "SGD weak ||E.||: no slope (needs at least 3 learning rates with an error, got 2)"),
    ],
)
def test_the_limit_scripts_panel_labels_each_kind_of_order(weak, label):
    """scripts/limit.py's panel (a): a slope, an undetermined one (no line), none (one rate without an error)."""
    from dlnlab.plots import new_figure
    from scripts.limit import _orders_panel

    lrs = [0.02, 0.01, 0.005]
    gd = {"convergence_order": 1.0, "convergence_order_modified": 2.0,
          "series": {f"sgd_lr_{lr!r}": {"lr": lr, "max_dist_to_flow": lr, "max_dist_to_modified_flow": lr**2}
                     for lr in lrs}}  # fmt: skip
    order, ci = weak
    lim = {
        "members": 4096, "lrs": lrs,
        "strong": {**_error(0.5, [0.49, 0.51]), "max": [0.14, 0.1, 0.07], "max_ci90": [None] * 3},
        "weak_theta": {**_error(order, ci), "max": [4e-3, 2e-3, None if order is None else 1e-3],
                       "max_ci90": [[3e-3, 5e-3], None, None]},
    }  # fmt: skip
    if order is None:
        lim["weak_theta"]["message"] = "needs at least 3 learning rates with an error, got 2"
    ax = new_figure((4, 3)).subplots()
    _orders_panel(ax, gd, {"sgd_limit": lim, "grid": {"t_max": 5.0}})
    assert label in [c.get_label() for c in ax.containers]
    fitted = [line for line in ax.lines if len(line.get_xdata()) == 10]
    assert len(fitted) == 3 + (
        label.endswith("[0.98, 1.10]")
    )  # GD's two, SGD's strong, the weak one if fixed
