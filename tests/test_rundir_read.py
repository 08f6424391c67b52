"""Reading a run directory from Python, as a notebook does after the command line has run
(``dlnlab.rundir``): what the reader's objects print, which series it reads, and its errors."""

from __future__ import annotations

import shutil

import pytest

from dlnlab.rundir import load_run

pytestmark = pytest.mark.xdist_group("tiny_run")  # with the session's tiny run's other users


def test_a_run_prints_as_its_series_not_its_arrays(tiny_run):
    """A notebook shows ``run`` and ``run.flow``: the dataclasses' reprs printed problem.npz, the
    summary and every array in full (140,000 characters for the tiny run, 40,000 for its flow)."""
    run = load_run(str(tiny_run))
    text = repr(run)
    assert len(text) < 400 and "array(" not in text
    assert (
        "status=finished" in text and "flow (81 points, ok)" in text and "sgd_lr_0.01 (81 points, ok)" in text
    )
    flow = repr(run.flow)
    assert flow.startswith("Series('flow', lr=None, status=ok, 81 points, arrays: grid_index, t, loss")
    assert "array(" not in flow and len(flow) < 400


def test_the_series_it_does_not_read_are_named(tiny_run, tmp_path):
    """load_run reads the flow and the (S)GD series; a modified flow's file (and the SME's, the central
    flow's, the edge series') was left out with nothing saying it was there."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    shutil.copy(run_dir / "series" / "flow.npz", run_dir / "series" / "modflow_lr_0.04.npz")
    run = load_run(run_dir)
    assert list(run.series) == ["flow", "sgd_lr_0.04", "sgd_lr_0.02", "sgd_lr_0.01"]
    assert run.other_series == ["modflow_lr_0.04"] and "other series: modflow_lr_0.04" in repr(run)
    assert load_run(tiny_run).other_series == []


def test_a_folder_of_runs_is_refused_naming_the_runs_in_it(tiny_run, tmp_path):
    """``load_run(<sweep dir>)``: the refusal names the run directories below, not only what is missing."""
    (tmp_path / "0_seed=0").symlink_to(tiny_run)
    with pytest.raises(
        FileNotFoundError, match=r"not a run directory; it holds run directories, load each: 0_seed=0$"
    ):
        load_run(tmp_path)


def test_a_damaged_npz_is_named_by_read_npz_and_warned_of_at_the_callers_line(tiny_run, tmp_path):
    """read_npz (the reader of the series load_run leaves out) raised numpy's and zipfile's errors,
    which name no file (``BadZipFile: File is not a zip file``); load_run's warning pointed into
    dlnlab's own reader instead of the line that called it."""
    from dlnlab.errors import FileWarning
    from dlnlab.rundir import read_npz

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    cut = run_dir / "series" / "sgd_lr_0.04.npz"
    cut.write_bytes(cut.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"sgd_lr_0\.04\.npz: not an \.npz archive"):
        read_npz(cut)
    whole = (tiny_run / "series" / "flow.npz").read_bytes()
    bad_member = tmp_path / "flow.npz"  # the zip's directory intact, a member's bytes not
    bad_member.write_bytes(whole[:100] + bytes(200) + whole[300:])
    with pytest.raises(ValueError, match=r"flow\.npz: not a readable \.npz archive \("):
        read_npz(bad_member)
    assert read_npz(run_dir / "series" / "nothing.npz") is None
    with pytest.warns(FileWarning, match=r"sgd_lr_0\.04\.npz: not an \.npz archive") as caught:
        assert load_run(run_dir).series["sgd_lr_0.04"].n == 0
    assert {w.filename for w in caught} == {__file__}


def test_a_runs_summary_is_read_typed_from_its_directory(tiny_run, tmp_path):
    """``Summary.read(run_dir)``: a notebook wrote ``Summary.from_dict(json.load(open(...)))``; the same
    records, and a directory without a usable summary.json is refused naming ``run_dir``."""
    import json

    from dlnlab.errors import ArgumentError
    from dlnlab.lab import Summary

    read = Summary.read(str(tiny_run))
    assert read == Summary.from_dict(json.loads((tiny_run / "summary.json").read_text()))
    assert (
        read.series["flow"].final_loss == pytest.approx(0.9462, rel=1e-4) and read.status.value == "finished"
    )
    with pytest.raises(
        ArgumentError, match=r"^run_dir: .* holds no summary.json \(a run writes it as it starts\)$"
    ):
        Summary.read(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ArgumentError, match="^run_dir: "):
        Summary.read(tmp_path)


def test_a_summary_lacking_keys_is_refused_naming_them_where_they_are_missing(tiny_run, tmp_path):
    """A damaged or older summary.json: the dataclass constructor's TypeError ("__init__() missing 1
    required positional argument: 'status'") named neither the record nor where in the file; now one
    line names the keys, their place, and (read from a directory) the file."""
    import copy
    import json

    from dlnlab.errors import ArgumentError
    from dlnlab.lab import Summary
    from dlnlab.lab.results import MissingKeys

    data = json.loads((tiny_run / "summary.json").read_text())
    cases = [  # the keys deleted (each a path into the summary) -> what the refusal says
        ([("status",)], "Summary lacks the key status"),
        ([("series",)], "Summary lacks the key series"),
        ([("status",), ("exit_code",)], "Summary lacks the keys status, exit_code"),
        ([("series", "sgd_lr_0.02", "status")], "series.sgd_lr_0.02 (SGDEntry) lacks the key status"),
        ([("convergence_order_detail", "order")], "convergence_order_detail (OrderFit) lacks the key order"),
    ]
    for paths, said in cases:
        damaged = copy.deepcopy(data)
        for *parents, name in paths:
            holder = damaged
            for parent in parents:
                holder = holder[parent]
            del holder[name]
        for strict in (True, False):  # a run's own summary is read with strict=False: still refused
            with pytest.raises(MissingKeys) as refused:
                Summary.from_dict(damaged, strict=strict)
            assert str(refused.value) == f"data: {said}" and isinstance(refused.value, ArgumentError)
            assert refused.value.keys == [path[-1] for path in paths]
    # read from a run directory: the file is named, in one line
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    flow = {k: v for k, v in data["series"]["flow"].items() if k != "method"}
    (run_dir / "summary.json").write_text(json.dumps({**data, "series": {"flow": flow}}))
    with pytest.raises(ArgumentError) as refused:
        Summary.read(run_dir)
    assert str(refused.value) == (
        f"run_dir: {run_dir / 'summary.json'}: series.flow (FlowEntry) lacks the key method "
        "(damaged, or another dlnlab's)"
    )


def test_a_summary_entry_that_is_not_a_dict_is_refused_as_a_missing_key_is(tiny_run, tmp_path):
    """``"flow": null`` (a hand-edited or damaged summary.json) failed in Summary.from_dict with a raw
    TypeError ("'NoneType' object is not iterable"), naming neither the record nor the place; now it is
    refused as a missing key is (a MissingKeys, an ArgumentError: one line naming where), and
    Summary.read (whose file check said "series is not an object of series entries") names the file
    and the entry."""
    import json

    from dlnlab.errors import ArgumentError
    from dlnlab.lab import Summary
    from dlnlab.lab.results import MissingKeys

    data = json.loads((tiny_run / "summary.json").read_text())
    first_member = {**data["series"]["flow"], "members": [None]}  # a member's entry: a nested record
    cases = [  # the damaged summary -> what the refusal says
        (
            {**data, "series": {**data["series"], "flow": None}},
            "series.flow (FlowEntry) is null, not an object",
        ),
        (
            {**data, "series": {**data["series"], "sgd_lr_0.02": [1]}},
            "series.sgd_lr_0.02 (SGDEntry) is a list, not an object",
        ),
        (
            {**data, "series": {**data["series"], "flow": first_member}},
            "series.flow.members[0] (MemberEntry) is null, not an object",
        ),
        (
            {**data, "convergence_order_detail": 1.0},
            "convergence_order_detail (OrderFit) is a number, not an object",
        ),
        ({**data, "series": []}, "series (the series' entries) is a list, not an object"),
        ([data], "Summary is a list, not an object"),
    ]
    for damaged, said in cases:
        for strict in (True, False):
            with pytest.raises(MissingKeys) as refused:
                Summary.from_dict(damaged, strict=strict)
            assert str(refused.value) == f"data: {said}" and isinstance(refused.value, ArgumentError)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps(cases[0][0]))
    with pytest.raises(ArgumentError) as refused:
        Summary.read(run_dir)
    assert str(refused.value) == f"run_dir: {run_dir}: summary.json's series.flow is null, not an object"
