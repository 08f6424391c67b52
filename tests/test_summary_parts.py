"""summary.json's last parts that were plain dicts, typed (dlnlab/lab/results/_run_records.py,
_saddle_records.py, _part_records.ResumeCheck): each reads the dicts its writer makes, in each of
their shapes, and writes them back key for key in the writer's order; a part an older summary lacks
keys of still reads; refusals name where they are; the HParams columns read the typed summary."""

from __future__ import annotations

import json

import pytest
from _saddle_helpers import net, series_of, small_problem

from dlnlab import init, saddles
from dlnlab.analysis import mode_half_time
from dlnlab.lab.results import (
    ABSENT,
    AnalysisEntry,
    EdgeWorkEntry,
    EscapeBranch,
    EscapeEntry,
    FlowChoiceEntry,
    FlowEntry,
    MemberEntry,
    MissingKeys,
    NearestCriticalEntry,
    PlateauEntry,
    ProcessEntry,
    ResumeCheck,
    RunSeeds,
    SaddleEvidence,
    Summary,
    UnknownKeys,
)
from dlnlab.network import pack
from dlnlab.status import Status

MEMBER = {"data": 11, "init": 12, "sgd": 13}
SEEDS = {"seed": 0, "data": 11, "init": 12, "sgd": 13, "members": [MEMBER, {"data": 11, "init": 5, "sgd": 6}]}
PROCESS = {"pid": 7, "host": "vm", "started": "2026-12-08T01:00:00+00:00", "flow_ahead": True, "workers": 2,
           "workers_why": "the 2 cores this process may use", "flow_workers": 1}  # fmt: skip
FLOW_CHOICE = {"asked": "auto", "method": "rk45", "why": "cheapest", "estimates_s": {"lsoda": 0.2, "rk45": 0.1},
               "chunk_members": 3, "chunks": 1}  # fmt: skip
EDGE_WORK = {"spectra": 40, "gd_steps": 28.0, "central_evals": 900.0, "seconds": 0.5}
ANALYSIS = {"asked": 10, "points": 10, "kind": "dense", "seconds_per_point": 0.0002, "why": "under a quarter",
            "saddles": "all", "saddles_why": "cheap", "edge": EDGE_WORK}  # fmt: skip


def _plain(value):
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.to_dict() if hasattr(value, "to_dict") else value


def _same_json(record, data: dict) -> None:
    """Written back as it was read: the same keys in the same order, the same values (the bytes of
    summary.json come from this order)."""
    assert json.dumps(record.to_dict()) == json.dumps(data)


@pytest.mark.parametrize(
    ("record", "data", "older"),
    [
        (RunSeeds, SEEDS, ["members"]),  # a member's seeds: MemberSeeds, below
        (
            ProcessEntry,
            PROCESS,
            ["flow_ahead", "workers", "workers_why", "flow_workers"],
        ),  # before the driver
        (FlowChoiceEntry, FLOW_CHOICE, ["chunk_members", "chunks"]),  # before flow.chunk_members
        (AnalysisEntry, ANALYSIS, ["edge"]),  # before sgd.edge
    ],
)
def test_the_runs_parts_read_by_attribute_and_an_older_summarys_without_its_newer_keys(record, data, older):
    made = record.from_dict(data)
    _same_json(made, data)
    for name, value in data.items():  # each key an attribute (a nested part a record)
        assert _plain(getattr(made, name)) == value, name
    cut = {k: v for k, v in data.items() if k not in older}
    before = record.from_dict(cut)
    assert all(getattr(before, k) is ABSENT for k in older)
    _same_json(before, cut)
    with pytest.raises(MissingKeys, match=rf"lacks the key {list(cut)[1]}$"):
        record.from_dict({k: v for k, v in cut.items() if k != list(cut)[1]})


def test_the_seeds_of_the_run_and_of_a_member_and_the_refusals_say_where():
    seeds = RunSeeds.from_dict(SEEDS)
    assert [m.init for m in seeds.members] == [12, 5] and seeds.members[0].to_dict() == MEMBER
    assert isinstance(AnalysisEntry.from_dict(ANALYSIS).edge, EdgeWorkEntry)
    member = MemberEntry.from_dict({"status": "ok", "seeds": MEMBER})
    assert (member.seeds.data, member.seeds.init, member.seeds.sgd) == (11, 12, 13)
    with pytest.raises(UnknownKeys, match=r"^seeds \(MemberSeeds\): no field for \['seed'\]$"):
        MemberEntry.from_dict({"status": "ok", "seeds": {"seed": 0, **MEMBER}})  # the run's key in a member's
    with pytest.raises(MissingKeys, match=r"members\[1\] \(MemberSeeds\) lacks the key sgd$"):
        RunSeeds.from_dict({**SEEDS, "members": [MEMBER, {"data": 1, "init": 2}]})
    with pytest.raises(UnknownKeys, match=r"^edge \(EdgeWorkEntry\): no field for \['steps'\]$"):
        AnalysisEntry.from_dict({**ANALYSIS, "edge": {**EDGE_WORK, "steps": 3}})


def test_a_flows_resume_check_reads_in_both_shapes():
    """dlnlab/lab/runner/_resume.py's check_recomputed_flow writes the comparison, or the status and
    message of a recomputation that stopped."""
    compared = {"max_abs_diff": 0.0, "of": "theta", "tolerance": 9.7e-09}
    stopped = {"status": "solver_failed", "message": "the step size fell below its minimum"}
    entry = {"lr": None, "method": "lsoda", "rtol": 1e-9, "atol": 1e-12, "status": "ok"}
    check = FlowEntry.from_dict({**entry, "resume_check": compared}).resume_check
    assert isinstance(check, ResumeCheck) and (check.of, check.status) == ("theta", ABSENT)
    _same_json(check, compared)
    check = ResumeCheck.from_dict(stopped)
    assert check.status is Status.SOLVER_FAILED and check.max_abs_diff is ABSENT
    _same_json(check, stopped)


@pytest.fixture(scope="module")
def plateaus() -> list[dict]:
    """The core's plateaus of a small aligned flow (depth 4: a free channel at every saddle), each
    classified, as the lab writes them (``Plateau.to_dict``)."""
    pr, dims = small_problem(), net(4)
    theta0 = pack(init.aligned(dims, pr, 1e-3, seed=2))
    t_max = 1.3 * mode_half_time(float(pr.modes[-1]), 1e-3, 4)
    return [p.to_dict() for p in saddles.analyze_series(pr, dims, series_of(pr, dims, theta0, t_max, 0.05))]


def test_a_plateaus_evidence_and_escape_are_the_cores_fields_typed(plateaus):
    assert len(plateaus) == 3
    for data in plateaus:
        p = PlateauEntry.from_dict(data)
        _same_json(p, data)
        ev, esc = p.evidence, p.escape
        assert isinstance(ev, SaddleEvidence) and isinstance(esc, EscapeEntry)
        assert (
            ev.source == data["evidence"]["source"] and ev.snap_distance == data["evidence"]["snap_distance"]
        )
        assert ev.partial_product_ranks.prefix == data["evidence"]["partial_product_ranks"]["prefix"]
        assert ev.closest.ranks == data["evidence"]["closest"]["ranks"]
        nearest = data["evidence"]["nearest_critical"]
        assert ev.nearest_critical is None if nearest is None else ev.nearest_critical.to_dict() == nearest
        assert isinstance(ev.nearest_critical, NearestCriticalEntry | None)
        assert esc.exit_mode == p.exit_mode and esc.next_mode_agrees == data["escape"]["next_mode_agrees"]
        assert [b.mode for b in esc.branches] == [b["mode"] for b in data["escape"]["branches"]]
        assert all(isinstance(b, EscapeBranch) and b.free_channel for b in esc.branches)


def test_a_plateaus_saddle_in_its_other_shapes():
    """Not classified ({}), a classification that failed (its error alone), no escape directions (the
    exit alone), a branch without a free channel (not measured)."""
    base = {"t_start": 0.5, "t_end": 3.0, "level": 2.5, "modes_learnt": [], "exit_mode": 0, "t_exit": 3.2}
    for evidence, escape in [
        ({}, {}),
        ({"error": "ValueError: 4 learnt modes do not fit"}, {}),
        ({}, {"exit_mode": 0, "next_mode_agrees": None}),
        ({}, {"next_mode": None, "free_channel": False, "branches": [{"mode": 1, "m_k": 2.0, "order": 4,
                                                                     "free_channel": False}]}),
    ]:  # fmt: skip
        data = {**base, "evidence": evidence, "escape": escape}
        p = PlateauEntry.from_dict(data)
        _same_json(p, data)
        assert p.evidence.error == evidence.get("error", ABSENT) and p.evidence.source is ABSENT
    with pytest.raises(UnknownKeys, match=r"^evidence \(SaddleEvidence\): no field for \['why'\]$"):
        PlateauEntry.from_dict({**base, "evidence": {"why": "?"}})
    with pytest.raises(
        MissingKeys, match=r"escape.branches\[0\] \(EscapeBranch\) lacks the key free_channel$"
    ):
        PlateauEntry.from_dict({**base, "escape": {"branches": [{"mode": 1, "m_k": 2.0, "order": 4}]}})


@pytest.mark.lab
@pytest.mark.xdist_group("tiny_run")
def test_the_hparams_columns_read_the_typed_summary_and_an_edge_series_typed_or_open(tiny_run):
    """_report._metrics: the (S)GD entry's numbers and the run's orders, each the JSON's by key; the edge
    series' diagnostics (an EdgeSeriesEntry's, here one written into the tiny run's summary) the same
    whether its entry is typed or an open SeriesEntry (a key its record lacks)."""
    from dlnlab.lab.results._report import _metrics

    data = json.loads((tiny_run / "summary.json").read_text())
    sgd = data["series"]["sgd_lr_0.04"]
    edge = {"lr": 0.04, "threshold": 50.0, "band": 0.05, "t_edge": 1.5, "hover_share": 0.75, "median_ratio": 1.01,
            "amplitude_median": 0.002, "amplitude_max": 0.01, "outcome": "at_edge", "final_sharpness": 50.1,
            "final_loss": 0.3, "flow_limit_sharpness": 60.0, "balanced_sharpness": 60.0, "gfs_t": [], "gfs_sharpness": [],
            "gfs_non_increasing": True, "every_step": [], "stride": 1, "steps": 100, "spectrum_method": "dense"}  # fmt: skip
    for extra in ({}, {"surprise": 1}):  # the second: read as an open SeriesEntry, its parts from its extra
        entry = {"lr": None, "edge_lr": 0.04, "status": "ok", "edge": edge, **extra}
        typed = Summary.from_dict({**data, "series": {**data["series"], "edge_lr_0.04": entry}}, strict=False)
        got = _metrics(typed, typed.series["sgd_lr_0.04"])
        assert (
            got["hp/max_dist_to_flow"] == sgd["max_dist_to_flow"]
            and got["hp/final_loss"] == sgd["final_loss"]
        )
        assert got["hp/convergence_order"] == data["convergence_order"]
        assert {
            k: got[f"hp/edge_{k}"] for k in ("t_edge", "hover_share", "median_ratio", "amplitude_median")
        } == {k: edge[k] for k in ("t_edge", "hover_share", "median_ratio", "amplitude_median")}
        assert "hp/edge_dist_ratio_median" not in got  # no predictions: no column
    assert "hp/edge_t_edge" not in _metrics(
        Summary.from_dict(data), Summary.from_dict(data).series["sgd_lr_0.04"]
    )
