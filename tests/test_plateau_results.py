"""The typed results of the saddle analysis: :class:`~dlnlab.saddles.Plateau`, its summary.json
entry (``to_dict``), and the plateau table."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from _saddle_helpers import net, series_of, small_problem

import dlnlab
from dlnlab import init, saddles
from dlnlab.lab.results import analyze_run_saddles
from dlnlab.network import pack

ENTRY_KEYS = [  # a summary.json plateau entry, in order (t_closest once classified)
    "t_start",
    "t_end",
    "duration",
    "level",
    "level_index",
    "is_top_set",
    "modes_learnt",
    "grad_norm_min",
    "t_grad_norm_min",
    "level_gap",
    "exit_mode",
    "t_exit",
    "i_start",
    "i_end",
    "i_grad_norm_min",
    "label",
    "lambda_min",
    "evidence",
    "escape",
]


@pytest.fixture(scope="module")
def flow():
    pr = small_problem()
    dims = net(3)
    return pr, dims, series_of(pr, dims, pack(init.gaussian(dims, 0.1, seed=3)), 6.0, 0.05)


def test_plateau_to_dict_is_the_summary_entry(flow):
    pr, dims, arr = flow
    plats = saddles.analyze_series(pr, dims, arr)
    assert len(plats) == 3 and all(isinstance(p, saddles.Plateau) for p in plats)
    assert dlnlab.Plateau is saddles.Plateau
    series = {"flow": {"lr": None}}
    analyze_run_saddles(pr, dims, {"flow": arr}, series)
    assert series["flow"]["plateaus"] == [p.to_dict() for p in plats]
    for p, entry in zip(plats, series["flow"]["plateaus"]):
        assert list(entry) == [*ENTRY_KEYS, "t_closest"]
        assert entry["t_closest"] == p.t_closest and p.classified_from == "trajectory"
        assert entry["evidence"]["source"] == "trajectory"
    json.dumps(series, allow_nan=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plats[0].label = "strict"


def test_unclassified_and_failed_plateaus_keep_their_entries(flow, monkeypatch):
    from dlnlab.saddles import analyze as report

    pr, dims, arr = flow
    raw = saddles.analyze_series(pr, dims, arr, classify=False)
    assert [list(p.to_dict()) for p in raw] == [ENTRY_KEYS] * 3
    assert all(p.label is None and p.evidence == {} and p.escape == {} for p in raw)
    assert raw == saddles.detect_plateaus(
        arr["t"], arr["loss"], arr["mode_strength"], arr["grad_norm"], pr, 3, depth=3
    )

    def broken(*args, **kwargs):
        raise RuntimeError("no Hessian")

    monkeypatch.setattr(report, "classify_saddle", broken)
    for p in saddles.analyze_series(pr, dims, arr):
        entry = p.to_dict()
        assert list(entry) == ENTRY_KEYS  # no point was classified: no t_closest
        assert entry["label"] == "inconclusive" and entry["evidence"] == {"error": "RuntimeError: no Hessian"}


def test_plateau_markdown_numbers_modes_from_one_and_says_why_a_cell_is_empty():
    """The Text tab's table of plateaus (dlnlab.lab.results._report.plateau_markdown) from summary entries."""
    from dlnlab.lab.results import plateau_markdown

    assert plateau_markdown({"series": {}}) == "no saddle plateau in any series"
    plateau = saddles.Plateau(
        t_start=0.5,
        t_end=12.25,
        duration=11.75,
        level=2.5,
        level_index=1,
        is_top_set=True,
        modes_learnt=[0],
        grad_norm_min=3.14159e-5,
        t_grad_norm_min=6.0,
        level_gap=1e-9,
        exit_mode=1,
        t_exit=12.6,
        i_start=5,
        i_end=122,
        i_grad_norm_min=60,
        label="non-strict",
        lambda_min=-7.71e-13,
    )
    cut = dataclasses.replace(
        plateau, **dict.fromkeys(("level_index", "exit_mode", "t_exit", "label", "lambda_min"))
    )
    # the entries as the records require them (read through FlowEntry, SGDEntry, PlateauEntry and
    # PlateauExitEntry), the exit as the core writes it
    exit_ = saddles.PlateauExit(mode=1, t_exit_flow=12.6, t_exit=12.6213, delay=0.0213, delay_over_lr=2.13)
    flow = {"lr": None, "method": "rk45", "rtol": 1e-9, "atol": 1e-12, "status": "ok"}
    summary = {
        "series": {
            "flow": {**flow, "plateaus": [plateau.to_dict(), cut.to_dict()]},
            "sgd_lr_0.01": {
                "lr": 0.01,
                "momentum": 0.0,
                "time_per_step": 0.01,
                "status": "ok",
                "plateaus": [plateau.to_dict()],
                "plateau_exits_vs_flow": [exit_.to_dict()],
            },  # fmt: skip
        }
    }
    lines = plateau_markdown(summary).splitlines()
    assert len(lines) == 5 and lines[0].count("|") == lines[1].count("|") == 9
    assert (
        lines[2]
        == "| flow | 0.5 | 12.25 | 2.5 | 1 | non-strict (-7.7e-13) | mode 2 at t = 12.6 | 0 (the reference) |"
    )
    assert (
        lines[3] == "| flow | 0.5 | 12.25 | 2.5 | 1 | - (-) | none before t_max (the horizon cuts it) | - |"
    )
    assert (
        lines[4]
        == "| sgd_lr_0.01 | 0.5 | 12.25 | 2.5 | 1 | non-strict (-7.7e-13) | mode 2 at t = 12.6 | 0.0213 |"
    )


def test_modes_learnt():
    pr = small_problem()
    mask = saddles.modes_learnt(np.array([[1.6, 0.0, 0.0], [3.0, 1.0, 0.49]]), pr)
    assert mask.tolist() == [[True, False, False], [True, True, False]]


def test_a_series_that_leaves_by_one_mode_twice_is_compared_by_its_first_exit(fig1_problem):
    """SGD can fall back onto a plateau and leave it by the same mode again: its exit delay behind the
    flow was the last such exit's (a dict keyed by mode, the later plateau overwriting the earlier),
    where the aggregate counts each sample's first (dlnlab/lab/results/_aggregate_stats.py)."""
    base = saddles.Plateau(
        t_start=0.0, t_end=6.0, duration=6.0, level=15.0, level_index=0, is_top_set=True, modes_learnt=[],
        grad_norm_min=1e-6, t_grad_norm_min=3.0, level_gap=0.0, exit_mode=0, t_exit=6.5, i_start=0,
        i_end=60, i_grad_norm_min=30,
    )  # fmt: skip
    again = dataclasses.replace(base, t_start=7.0, t_end=8.0, duration=1.0, t_exit=8.4)
    (exit_,) = saddles.exits_vs_reference(
        [dataclasses.replace(base, t_exit=6.0)], [base, again], fig1_problem
    )
    assert (exit_.mode, exit_.t_exit, exit_.delay) == (0, 6.5, 0.5)
