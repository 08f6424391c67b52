"""summary.json typed (dlnlab.lab.results' records): each record reads a real summary key by key and
writes it back as it was; unknown keys are refused; RunResult is the typed summary and its JSON."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from dlnlab.lab.results import (
    ABSENT,
    FlowEntry,
    LimitReport,
    MemberEntry,
    MissingKeys,
    SeriesEntry,
    SGDEntry,
    SMEEntry,
    Summary,
    UnknownKeys,
    entry_record,
)
from dlnlab.lab.results._aggregate_records import AGGREGATE_RECORDS
from dlnlab.lab.results._summary_record import RECORDS
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
    assert result.exit_code == s.exit_code == 0 and result["series"]["flow"]["status"] == "ok"


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
