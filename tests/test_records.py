"""summary.json typed (dlnlab.lab.results' records): each record reads a real summary key by key and
writes it back as it was; unknown keys are refused; RunResult is the typed summary and its JSON."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from dlnlab.lab.results import (
    ABSENT,
    AnalysisEntry,
    EstimatesEntry,
    ExitSpreadRow,
    FlowChoiceEntry,
    FlowEntry,
    GridEntry,
    LimitReport,
    MemberEntry,
    MissingKeys,
    ModeExitSpread,
    OrderPair,
    PlateauEntry,
    PlateauExitEntry,
    ProcessEntry,
    RatioSpread,
    ResumeEntry,
    RunSeeds,
    SeriesEntry,
    SGDEntry,
    SMEEntry,
    SpreadRatios,
    Summary,
    UnknownKeys,
    entry_record,
)
from dlnlab.lab.results._aggregate_records import AGGREGATE_RECORDS
from dlnlab.lab.results._summary_record import RECORDS, SMESpread
from dlnlab.status import Status

# its tests on one xdist worker (--dist loadgroup) with the other users of the session's lab runs it reads
# (conftest.py: the SME ensemble run with tests/test_kinds.py, the modified-flow run with test_modified.py)
pytestmark = pytest.mark.xdist_group("sme_ensemble_run")


def _same_keys(record, data: dict, where: str) -> None:
    """Every key of ``data`` is a field of ``record`` (and the other way round, ABSENT aside), and nested
    records hold their part key by key."""
    fields = {f.name for f in dataclasses.fields(record) if f.name != "extra"}
    written = {f for f in fields if getattr(record, f) is not ABSENT}
    assert set(data) == written, where
    for name in written:
        value = getattr(record, name)
        if hasattr(value, "to_dict"):
            _same_keys(value, data[name], f"{where}.{name}")
        elif isinstance(value, list) and value and hasattr(value[0], "to_dict"):
            for i, v in enumerate(value):
                _same_keys(v, data[name][i], f"{where}.{name}[{i}]")
        elif isinstance(value, dict):  # a map of records (spread_ratio) or of lists of them (exit_spread)
            for k, v in value.items():
                if hasattr(v, "to_dict"):
                    _same_keys(v, data[name][k], f"{where}.{name}.{k}")
                elif isinstance(v, list):
                    for i, item in enumerate(v):
                        if hasattr(item, "to_dict"):
                            _same_keys(item, data[name][k][i], f"{where}.{name}.{k}[{i}]")


@pytest.fixture(scope="module")
def runs(sme_ensemble_run, modified_run):
    """Two tiny runs, the session's (conftest.py): the flow, modified flows and GD; an SGD ensemble with
    its SME ensembles."""
    return {
        name: (result, json.loads((out / "summary.json").read_text()))
        for name, (result, out) in (("modified", modified_run), ("ensemble", sme_ensemble_run))
    }


@pytest.mark.lab
@pytest.mark.parametrize("which", ["modified", "ensemble"])
def test_a_real_summary_is_its_records_key_by_key(runs, which):
    result, data = runs[which]
    summary = Summary.from_dict(data)  # strict: a key without a field fails here
    _same_keys(summary, data, "summary")
    for name, entry in summary.series.items():
        assert type(entry) is entry_record(name) and type(entry) is not SeriesEntry
        _same_keys(entry, data["series"][name], name)
    assert json.loads(json.dumps(summary.to_dict())) == data
    assert json.loads(json.dumps(result.summary.to_dict())) == data  # what run() returned, typed
    assert json.loads(json.dumps(dict(result))) == data  # and read as a mapping


@pytest.mark.lab
def test_the_records_type_what_the_run_returns(runs):
    result, data = runs["ensemble"]
    s = result.summary
    assert isinstance(s.series["flow"], FlowEntry) and isinstance(s.series["sgd_lr_0.04"], SGDEntry)
    assert isinstance(s.series["sme_lr_0.02"], SMEEntry) and isinstance(s.sgd_limit, LimitReport)
    sgd = s.series["sgd_lr_0.04"]
    assert isinstance(sgd.members[0], MemberEntry) and sgd.ensemble.size == 3
    assert sgd.status is Status.OK and sgd.final_loss == data["series"]["sgd_lr_0.04"]["final_loss"]
    assert sgd.ensemble.final_loss.mean == sgd.final_loss
    assert s.sgd_limit.sme.sampling_error == data["sgd_limit"]["sme"]["sampling_error"]
    # the parts the entries hold, typed too (each compared with the JSON it was read from)
    flow = s.series["flow"]
    assert flow.plateaus and all(isinstance(p, PlateauEntry) for p in flow.plateaus)
    assert [p.t_exit for p in flow.plateaus] == [p["t_exit"] for p in data["series"]["flow"]["plateaus"]]
    member = sgd.members[0]
    assert all(isinstance(p, PlateauEntry) and p.label is ABSENT for p in member.plateaus)  # the six keys
    exits = sgd.plateau_exits_vs_flow
    assert exits and all(isinstance(e, PlateauExitEntry) for e in exits)
    assert [e.delay for e in exits] == [
        e["delay"] for e in data["series"]["sgd_lr_0.04"]["plateau_exits_vs_flow"]
    ]
    assert all(isinstance(m, ModeExitSpread) for m in sgd.ensemble.plateau_exits)
    ratios = s.sgd_limit.sme.spread_ratio["0.04"]
    assert isinstance(ratios, SpreadRatios) and isinstance(ratios.var_loss, RatioSpread)
    assert ratios.var_theta.p90 == data["sgd_limit"]["sme"]["spread_ratio"]["0.04"]["var_theta"]["p90"]
    assert all(isinstance(r, ExitSpreadRow) for rows in s.sgd_limit.sme.exit_spread.values() for r in rows)
    pairs = s.convergence_order_detail.pairwise
    assert pairs and all(isinstance(p, OrderPair) for p in pairs)
    assert [p.lrs for p in pairs] == [p["lrs"] for p in data["convergence_order_detail"]["pairwise"]]
    assert result.exit_code == s.exit_code == 0 and result["series"]["flow"]["status"] == "ok"
    # the run's own parts and a plateau's saddle (each compared with the JSON it was read from)
    assert isinstance(s.seeds, RunSeeds) and s.seeds.members[1] == sgd.members[1].seeds
    assert s.seeds.members[1].init == data["series"]["sgd_lr_0.04"]["members"][1]["seeds"]["init"]
    assert isinstance(s.grid, GridEntry) and s.grid.n_grid == data["grid"]["n_grid"]
    assert isinstance(s.flow_choice, FlowChoiceEntry) and s.flow_choice.method == flow.method
    assert isinstance(s.analysis, AnalysisEntry) and s.analysis.points == data["analysis"]["points"]
    assert isinstance(s.process, ProcessEntry) and s.process.workers == data["process"]["workers"]
    assert s.error is None and isinstance(s.estimates, EstimatesEntry)
    saddle = flow.plateaus[0]
    assert saddle.evidence.snap == data["series"]["flow"]["plateaus"][0]["evidence"]["snap"]
    assert saddle.escape.next_mode == data["series"]["flow"]["plateaus"][0]["escape"]["next_mode"]


def test_an_unknown_key_is_refused_unless_the_record_is_open():
    entry = {"lr": 0.1, "momentum": 0.0, "time_per_step": 0.1, "status": "ok", "surprise": 1}
    with pytest.raises(UnknownKeys, match="surprise"):
        SGDEntry.from_dict(entry)
    kept = SeriesEntry.from_dict(entry)  # a kind without a record of its own: nothing lost
    assert kept.status is Status.OK and kept.to_dict() == {**entry, "status": Status.OK}
    # inside a list or a nested record, the refusals say where (an ensemble's second member)
    members = {**entry, "members": [{"status": "ok"}, {"status": "ok", "what": 1}]}
    members.pop("surprise")
    with pytest.raises(UnknownKeys, match=r"^members\[1\] \(MemberEntry\): no field for \['what'\]$"):
        SGDEntry.from_dict(members)
    members["members"][1] = {"diverged": False}
    with pytest.raises(
        MissingKeys, match=r"^data: members\[1\] \(MemberEntry\) lacks the key status$"
    ) as lacking:
        SGDEntry.from_dict(members)
    again = pickle.loads(pickle.dumps(lacking.value))  # as a worker process sends it back
    assert (str(again), again.keys, again.argument) == (str(lacking.value), ["status"], "data")


def test_the_parts_refusals_say_where_and_an_older_plateau_reads_without_its_newer_keys():
    """The parts in a map of lists (``sgd_limit.sme.exit_spread``) name their place when refused; a
    plateau of a summary written before ``t_closest`` existed (or a member's, six keys) reads, its other
    keys ABSENT, and is written back as it was; a resume's record is a ResumeEntry."""
    row = {"mode": 0, "sgd_mean": 3.0, "sme_mean": 3.1, "sgd_std": 0.4, "sme_std": 0.1, "n_sgd": 9,
           "n_sme": 6, "std_ratio": 4.0, "sampling_error": 0.4}  # fmt: skip
    sme = {"spread_ratio": {}, "sampling_error": 0.5, "exit_spread": {"0.04": [row]}}
    assert SMESpread.from_dict(sme).exit_spread["0.04"][0] == ExitSpreadRow(**row)
    sme["exit_spread"]["0.04"].append({k: v for k, v in row.items() if k != "std_ratio"})
    with pytest.raises(
        MissingKeys, match=r"exit_spread\.0\.04\[1\] \(ExitSpreadRow\) lacks the key std_ratio$"
    ):
        SMESpread.from_dict(sme)
    member = {"t_start": 0.5, "t_end": 3.0, "level": 2.5, "modes_learnt": [], "exit_mode": 0, "t_exit": 3.2}
    plateau = PlateauEntry.from_dict(member)
    assert plateau.t_exit == 3.2 and plateau.label is ABSENT and plateau.t_closest is ABSENT
    assert plateau.to_dict() == member and list(plateau.to_dict()) == list(member)
    with pytest.raises(MissingKeys, match=r"lacks the key t_exit$"):
        PlateauEntry.from_dict({k: v for k, v in member.items() if k != "t_exit"})
    resume = {"at": "2026-12-08T01:00:00+00:00", "stage": "flow", "status": "interrupted",
              "interrupted": "SIGINT", "series": {"flow": "run again"}}  # fmt: skip
    assert ResumeEntry.from_dict(resume).series == {"flow": "run again"}


def test_every_record_field_says_what_it_means():
    for record in (*RECORDS, *AGGREGATE_RECORDS):
        for f in dataclasses.fields(record):
            assert f.name == "extra" or f.metadata.get("doc"), f"{record.__name__}.{f.name}"


def test_the_other_series_are_read_back_as_series_from_a_notebook(sme_ensemble_run):
    """``RunData.other(name)``: the SME ensembles were only named by load_run (``other_series``); a notebook
    read their npz by hand. Each is a Series of its file's arrays (member 0's, and every member's) and its
    summary entry; a name that is not one of them is refused naming ``name``."""
    import numpy as np

    from dlnlab.errors import ArgumentError
    from dlnlab.rundir import load_run

    _, out = sme_ensemble_run
    run = load_run(out)
    assert run.other_series == ["sme_lr_0.02", "sme_lr_0.04"]
    sme = run.other("sme_lr_0.04")
    with np.load(out / "series" / "sme_lr_0.04.npz") as f:
        np.testing.assert_array_equal(sme.members["loss"], f["loss"])  # (E, T): the three members
        np.testing.assert_array_equal(sme.get("loss"), f["loss"][0])
    assert sme.lr == 0.04 and sme.entry == run.summary["series"]["sme_lr_0.04"] and sme.n == len(sme.t)
    with pytest.raises(
        ArgumentError, match=r"^name: 'sgd_lr_0.04' is not one of the run's other series: sme_lr"
    ):
        run.other("sgd_lr_0.04")
