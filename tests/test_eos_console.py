"""The console's edge-of-stability block says what each number means: on the edge, sharpness at 2/eta,
a loss that stays up and an oscillation larger than the central flow predicts are expected, and the
verdict and the wording follow the numbers (outcome, the flow limit against 2/eta, which way the
ratios go), never a fixed text. The real run's block: tests/test_eos_lab.py."""

from __future__ import annotations

import pytest

from dlnlab.eos import Outcome
from dlnlab.lab.results import edge_lines

# experiment=eos's entries (t_max = 40), rounded
EDGE = {
    "lr": 0.2163, "threshold": 9.2464, "band": 0.1, "t_edge": 1.2978, "hover_share": 1.0, "median_ratio": 1.0024,
    "amplitude_median": 0.008229, "outcome": "at_edge", "final_sharpness": 9.0796, "flow_limit_sharpness": 9.9443,
    "balanced_sharpness": 7.5595, "gfs_sharpness": [9.9443, 9.2895, 9.2199], "gfs_non_increasing": True,
    "gfs_converged": [True, True, True], "spectrum_unconverged": 0, "amplitude_max": 0.0121, "final_loss": 0.0102,
    "gfs_t": [0.0, 20.0, 40.0], "every_step": [0, 185], "stride": 1, "steps": 185, "spectrum_method": "dense",
}  # fmt: skip
PREDICTIONS = {
    "window": 8, "t_first": 0.8652, "t_last": 39.1503, "ratio_median": 0.7151, "ratio_last": 0.6892,
    "loss_rel_median": -0.9965, "loss_parting": 8.652, "variance_ratio_median": 291.7, "central_pinned": 2.563e-09,
    "ratio_max": 0.9581,
}  # fmt: skip


def _block(edge=None, predictions=None) -> list[str]:
    entry = {"edge": {**EDGE, **(edge or {})}, "predictions": {**PREDICTIONS, **(predictions or {})}}
    return edge_lines({"series": {"flow": {"status": "ok"}, "edge_lr_0.2163": entry}})


def test_gd_at_the_edge_where_the_flow_limit_is_sharper_is_expected_and_the_numbers_stay():
    lines = _block()
    assert lines[0] == "edge of stability (GD recomputed at every step; docs/eos.md explains each number):"
    assert lines[1] == (
        "  eta = 0.2163 (2/eta = 9.2464): at_edge, as expected at eta = 0.2163: 2/eta is below the flow limit's "
        "S = 9.944"
    )
    assert lines[2:4] == [
        "    S reaches 2/eta at t = 1.298 and stays (no divergence)",
        "    within 10 % of 2/eta 100 % of the time from then on, median 1.002 x 2/eta",
    ]
    assert lines[4].startswith("    period-2 amplitude 0.008229 (median): ")
    assert lines[6] == "    GFS sharpness 9.944, 9.29, 9.22: non-increasing, GD heads for flatter minima"
    assert lines[9] == "      distance ratio central/flow 0.7151 (median), 0.6892 at the end"
    assert lines[10] == (
        "    predicted/averaged loss - 1 = -0.9965 (median), parting at t = 8.652: GD's averaged loss stays above it"
    )
    assert (
        lines[11]
        == "    GD's variance along u_1 / predicted = 291.7 (median): GD oscillates more than predicted"
    )
    assert "a known gap of the central flow, not a fault" in lines[12] and len(lines) == 13
    assert max(map(len, lines)) <= 120  # short lines: the old block had one of 390 characters


@pytest.mark.parametrize(
    "edge, verdict",
    [
        ({"flow_limit_sharpness": 9.0}, "at_edge: S ends within 10 % of 2/eta"),  # the limit is not sharper
        ({"flow_limit_sharpness": None}, "at_edge: S ends within 10 % of 2/eta"),  # its flow did not converge
        ({"outcome": "converged_below_edge"}, "converged_below_edge: GD converged, at a minimum flatter"),
        ({"outcome": "below_edge"}, "below_edge: S ends below 2/eta, not converged"),
        ({"outcome": "diverged"}, "diverged: GD's loss left every bound at eta = 0.2163"),
    ],
)
def test_each_outcome_has_its_own_verdict_and_only_at_edge_is_expected(edge, verdict):
    lines = _block(edge)
    assert lines[1].startswith(f"  eta = 0.2163 (2/eta = 9.2464): {verdict}")
    assert "as expected" not in lines[1]
    assert ("no divergence" in lines[2]) is (edge.get("outcome") != "diverged")
    # S stays at 2/eta only on the edge: converged or below it, S ended below (a GD that touched 2/eta at
    # t = 0.72 and converged at S = 7.968 < 8.351, experiment=eos seed=5 sgd.lrs=[0.2395], read "stays")
    assert ("and stays" in lines[2]) is (edge.get("outcome", "at_edge") == "at_edge")
    below = edge.get("outcome") in ("converged_below_edge", "below_edge")
    assert (lines[2] == "    S reaches 2/eta at t = 1.298, ends below (no divergence)") is below


def test_every_outcome_of_the_core_has_a_verdict():
    for outcome in Outcome:
        assert _block({"outcome": outcome.value, "flow_limit_sharpness": None})[1].startswith(
            f"  eta = 0.2163 (2/eta = 9.2464): {outcome.value}: "
        )


def test_the_central_flows_lines_follow_the_directions_of_its_ratios():
    lines = _block(predictions={"ratio_median": 1.2, "loss_rel_median": 0.9, "variance_ratio_median": 0.2})
    assert lines[8].endswith("is nearer the gradient flow:")
    assert lines[10].endswith("parting at t = 8.652: GD's averaged loss falls below it")
    assert lines[11].endswith("(median): GD oscillates less than predicted")
    # within 2x, never parting: nothing to explain
    calm = _block(predictions={"loss_rel_median": 0.04, "loss_parting": None, "variance_ratio_median": 1.3})
    assert calm[10] == "    predicted/averaged loss - 1 = 0.04 (median), never parting"
    assert calm[11] == "    GD's variance along u_1 / predicted = 1.3 (median)" and len(calm) == 12
    never = _block({"t_edge": None, "outcome": "converged_below_edge"}, {"ratio_median": None})
    assert never[2] == "    S never reaches 2/eta" and never[6].endswith("0.8652..39.15:")


def test_a_central_flow_never_on_the_edge_is_the_gradient_flow_not_a_gap():
    """experiment=eos seed=5 (rounded): GD never reaches 2/eta, Sigma never switches on, so the central
    flow moves as the gradient flow (ratio 1) and GD's averaged loss parts from the flow's. The lines
    said "S within - x 2/eta ... (pinned, as built)", "nearer the gradient flow" and "a known gap of
    the central flow"."""
    lines = _block(
        {"t_edge": None, "outcome": "converged_below_edge", "final_sharpness": 8.023, "flow_limit_sharpness": 8.609},
        {"ratio_median": 1.0, "ratio_last": 1.0, "loss_rel_median": 19.39, "loss_parting": 5.4075,
         "variance_ratio_median": None, "central_pinned": None, "central_entering": None},
    )  # fmt: skip
    assert lines[5:] == [
        "    central flow: never on the edge here (Sigma = 0): it moves as the gradient flow",
        "    GD's 8-step average over t = 0.8652..39.15:",
        "      distance ratio central/flow 1 (median), 1 at the end",
        "    predicted/averaged loss - 1 = 19.39 (median), parting at t = 5.407: GD's averaged loss falls below it",
        "    GD's variance along u_1 / predicted = - (median)",
        "      GD against the gradient flow (no edge here), not a gap of the central flow",
    ]


def test_gd_swinging_past_the_edge_above_the_balanced_threshold_is_not_read_as_at_the_edge():
    """experiment=eos sgd.lrs=[0.32] (rounded): 2/eta = 6.25 is below the balanced minimum's 7.56, so no
    global minimum is stable; GD ends in a period-2 cycle at 0.72 / 1.82 x 2/eta, loss 0.12. It read
    "at_edge, as expected" and "S reaches 2/eta at t = 0 and stays", from its last step alone."""
    lines = _block(
        {"lr": 0.32, "threshold": 6.25, "t_edge": 0.0, "hover_share": 0.02, "median_ratio": 1.272,
         "outcome": "above_edge", "final_sharpness": 11.39, "previous_sharpness": 4.494, "final_loss": 0.1166},
    )  # fmt: skip
    assert lines[1] == (
        "  eta = 0.32 (2/eta = 6.25): above_edge: S ends swinging over 10 % past 2/eta (a period-2 cycle), "
        "not converged"
    )
    assert lines[2] == (
        "    2/eta is below the balanced minimum's S = 7.559: not stable at eta = 0.32 (whitened data: no minimum is)"
    )
    # S(theta0) = 6.577 > 6.25 already: it read "S reaches 2/eta at t = 0" and "as on the edge"
    assert lines[3] == "    S starts above 2/eta, swings across it (no divergence)"
    assert lines[4].startswith("    within 10 % of 2/eta 2 % of the time from then on, median 1.272 x 2/eta")
    assert lines[5].endswith(": GD cycles along the top eigenvector past the edge, not hovering on it")
    assert lines[6].startswith("    S at the last two steps 4.494, 11.39 against the flow limit's 9.944")
    assert max(map(len, lines)) <= 120
    # below the balanced minimum's sharpness 2/eta is not: no such line on the lab's run
    assert not any("not stable" in line for line in _block())


def test_the_distances_to_both_flows_are_printed_beside_their_ratio():
    """The ratio alone (0.69 at the end) said which flow GD's average is nearer, not how near: the
    deviation from the central flow a paper quotes. experiment=eos's numbers, rounded."""
    dists = {"dist_central_last": 0.08021, "dist_central_median": 0.08028, "dist_flow_last": 0.1164}
    lines = _block(predictions=dists)
    assert lines[9] == "      distance ratio central/flow 0.7151 (median), 0.6892 at the end"
    assert lines[10] == (
        "      ||avg - central|| 0.08028 (median), 0.08021 at the end, against ||avg - flow|| 0.1164 (norms in theta)"
    )
    assert len(lines) == 14 and max(map(len, lines)) <= 120
    assert len(_block()) == 13  # a summary written before the distances: the line is left out


def test_the_runner_takes_the_distances_over_the_averages_only():
    import torch

    from dlnlab.eos import DistanceComparison
    from dlnlab.lab.runner._edge import _distances

    nan = float("nan")
    t = torch.arange(5.0, dtype=torch.float64)
    central = torch.tensor([nan, 0.3, 0.5, 0.2, nan], dtype=torch.float64)  # NaN: no average at the ends
    flow = torch.tensor([nan, 0.4, 0.6, 0.7, nan], dtype=torch.float64)
    assert _distances(DistanceComparison(t, central, flow)) == {
        "dist_central_last": 0.2, "dist_central_median": 0.3, "dist_flow_last": 0.7
    }  # fmt: skip
    empty = DistanceComparison(t, torch.full((5,), nan), torch.full((5,), nan))
    assert set(_distances(empty).values()) == {None}


@pytest.mark.parametrize(
    "outcome, crossing, zigzag",
    [
        ("at_edge", "S starts above 2/eta and settles at it (no divergence)", "as on the edge"),
        (
            "above_edge",
            "S starts above 2/eta, swings across it (no divergence)",
            "past the edge, not hovering",
        ),
        ("converged_below_edge", "S starts above 2/eta, ends below it (no divergence)", "then converged"),
        ("below_edge", "S starts above 2/eta, ends below it (no divergence)", "until S fell below it"),
        ("diverged", "S starts above 2/eta", "up to its divergence"),
    ],
)
def test_an_s_above_the_edge_from_the_start_and_the_zigzag_say_what_fits_the_outcome(
    outcome, crossing, zigzag
):
    """t_edge = 0 is GD's first point, theta0: S starts above 2/eta, it does not reach it (sgd.lrs=[0.32]
    printed "S reaches 2/eta at t = 0"). The period-2 line said "as on the edge" whatever the outcome."""
    start, later = _block({"t_edge": 0.0, "outcome": outcome}), _block({"outcome": outcome})
    assert start[2] == f"    {crossing}" and start[3].startswith("    within 10 % of 2/eta 100 %")
    assert later[2].startswith("    S reaches 2/eta at t = 1.298")
    for lines in (start, later):
        assert lines[4].startswith("    period-2 amplitude 0.008229 (median): GD ") and zigzag in lines[4]
        assert ("as on the edge" in lines[4]) is (outcome == "at_edge")
        assert max(map(len, lines)) <= 120


def test_every_line_stays_within_the_width_at_the_extremes_of_its_numbers(monkeypatch):
    """The console's eos lines are at most 120 characters (EDGE_LINE_WIDTH, docs/eos.md). The crossing
    line held 121 - 123 for a t_edge below 1, 100 % hovering and a median below 1 (and 170 with
    LOBPCG's count), the GFS line 128 with unconverged flows. Each number here prints at its widest
    that fmt gives (4 significant digits: 9 characters); an eta of 6 digits, 2/eta of 5: no line needs
    breaking (the same lines with no width at all)."""
    from dlnlab.lab.results import EDGE_LINE_WIDTH

    assert EDGE_LINE_WIDTH == 120
    wide = 0.0001234567  # fmt: "0.0001235"
    unusual = {"t_edge": 0.1234567, "hover_share": 1.0, "median_ratio": 0.9876543}  # the case reported
    widest = {"t_edge": wide, "median_ratio": wide, "amplitude_median": wide, "final_sharpness": wide,
              "previous_sharpness": wide, "flow_limit_sharpness": 1234.5678, "balanced_sharpness": 1.234567e4,
              "lr": 0.216347, "threshold": 2 / 0.216347, "spectrum_unconverged": 123456,
              "gfs_sharpness": [12.34567] * 6, "gfs_converged": [False] * 6}  # fmt: skip
    predictions = {"t_first": wide, "t_last": 12345.67, "ratio_last": wide, "loss_rel_median": -wide,
                   "loss_parting": wide, "variance_ratio_median": wide, "dist_central_last": wide,
                   "dist_central_median": wide, "dist_flow_last": wide}  # fmt: skip
    blocks = [
        _block({**edge, "outcome": outcome.value}, predictions)
        for outcome in Outcome
        for edge in (unusual, widest, {**widest, "t_edge": 0.0}, {**widest, "hover_share": None})
    ]
    assert max(len(line) for lines in blocks for line in lines) <= EDGE_LINE_WIDTH
    monkeypatch.setattr("dlnlab.lab.results._eos.EDGE_LINE_WIDTH", 10**6)
    assert blocks == [
        _block({**edge, "outcome": outcome.value}, predictions)
        for outcome in Outcome
        for edge in (unusual, widest, {**widest, "t_edge": 0.0}, {**widest, "hover_share": None})
    ]
    assert _block({**unusual, "outcome": "above_edge"})[2:4] == [
        "    S reaches 2/eta at t = 0.1235, swings past (no divergence)",
        "    within 10 % of 2/eta 100 % of the time from then on, median 0.9877 x 2/eta",
    ]


def test_a_line_that_numbers_of_extreme_size_push_past_the_width_is_broken_at_a_space(monkeypatch):
    """An eta of 1e-7 (2/eta = 2e+7) and six GFS values of 1e+4, unconverged: a line that would pass 120
    characters goes on in the next, indented two more than its own, every word kept."""
    from dlnlab.lab.results import EDGE_LINE_WIDTH

    lr = 1.23456789e-7
    edge = {"lr": lr, "threshold": 2 / lr, "flow_limit_sharpness": 1.2345e10, "outcome": "at_edge",
            "gfs_sharpness": [1.2345e4] * 6, "gfs_converged": [False] * 6}  # fmt: skip
    lines = _block(edge)
    monkeypatch.setattr("dlnlab.lab.results._eos.EDGE_LINE_WIDTH", 10**6)
    whole = _block(edge)
    assert max(map(len, lines)) <= EDGE_LINE_WIDTH < max(map(len, whole))
    assert " ".join(lines).split() == " ".join(whole).split()  # the same words in the same order
    assert lines[1:3] == [
        "  eta = 1.23457e-07 (2/eta = 1.62e+07): at_edge, as expected at eta = 1.23457e-07: 2/eta is below "
        "the flow limit's S =",
        "    1.234e+10",
    ]
    gfs = lines.index(f"    GFS sharpness {', '.join(['1.234e+04*'] * 6)}: non-increasing, GD heads for")
    stars = "      *: not converged by t = 1000, S where that flow stood"
    assert lines[gfs + 1 : gfs + 3] == ["      flatter minima", stars]
