"""The console's results block reads a run's summary through its records: each cell of the series table
is the summary's own value, a summary written before a key existed still prints (the column says it has
none), a kind without a record prints the numbers its open entry keeps, and a run stopped in its series
says what was not analysed and not run. The summaries are a real tiny run's (conftest), changed as the
case needs; the edge block's own cases: tests/test_eos_console.py."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from dlnlab.lab.results import PlateauEntry, results_block
from dlnlab.lab.results._records import entry_record

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("tiny_run")]  # the session's tiny run's users


def _summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _rows(block: str) -> dict[str, list[str]]:
    """The series table's rows by series, split into their cells (two or more spaces apart)."""
    table = block.split("\nconvergence order")[0].splitlines()[2:]  # past the head and its rule
    return {cells[0]: cells for cells in (re.split(r" {2,}", row) for row in table)}


def test_each_cell_of_the_table_is_the_summarys_value(tiny_run):
    """Read from the summary's JSON by key here, formatted as the console's fmt says (4 significant
    digits; wall time 2 decimals): the records hand each column the key it names."""
    summary = _summary(tiny_run)
    rows = _rows(results_block(summary))
    assert list(rows) == list(summary["series"])
    for name, e in summary["series"].items():
        work = e["nfe"] if name == "flow" else e["steps"]
        dist = "(reference)" if name == "flow" else f"{e['max_dist_to_flow']:.4g}"
        assert rows[name] == [
            name,
            e["status"],
            f"{e['final_loss']:.4g}",
            str(work),
            dist,
            f"{e['wall_time_s']:.2f}",
        ]


def test_an_older_summarys_entries_print_without_the_keys_they_lack(tiny_run):
    """Each entry cut to the keys its record requires (a resume keeps an older run's entries whole, and
    summaries before a key existed lack it): every column of a missing key says (none), the plateaus
    none found, and the lines that need no entry's key are the full summary's."""
    summary = _summary(tiny_run)
    full = results_block(summary)
    for name, e in summary["series"].items():
        fields = dataclasses.fields(entry_record(name))
        required = {f.name for f in fields if f.default is dataclasses.MISSING and f.name != "extra"}
        summary["series"][name] = {k: v for k, v in e.items() if k in required}
        assert set(summary["series"][name]) < set(e), name  # something was cut
    block = results_block(summary)
    for name, cells in _rows(block).items():
        dist = (
            "(reference)" if name == "flow" else "(under 2 points)"
        )  # no distance, beside a flow that is ok
        assert cells == [name, "ok", "(none)", "(none)", dist, "(none)"]
    assert "plateaus of the flow: none found" in block and "plateau exits" not in block
    assert block.splitlines()[-1] == full.splitlines()[-1]  # the critical values: the summary's own


def test_an_older_summarys_plateaus_exits_and_resumes_print_from_the_keys_their_records_require(tiny_run):
    """The parts the entries hold cut to the keys their records require (a plateau before t_closest
    existed, or with a member's six keys; an exit; a resume's record): the plateau lines keep their
    times, level, modes and exit and say the saddle is unclassified; the exits table and the orders are
    the full summary's; the last resume's record gives the resumed line."""
    summary = _summary(tiny_run)
    full = results_block(summary).splitlines()
    required = {f.name for f in dataclasses.fields(PlateauEntry) if f.default is dataclasses.MISSING}
    flow = summary["series"]["flow"]
    assert flow["plateaus"] and set(flow["plateaus"][0]) > required
    flow["plateaus"] = [{k: v for k, v in p.items() if k in required} for p in flow["plateaus"]]
    summary["resumed"] = [
        {"at": "2026-12-08T01:00:00+00:00", "stage": "sgd_lr_0.01", "status": "interrupted",
         "interrupted": "SIGTERM", "series": {"flow": "kept", "sgd_lr_0.01": "continued"}},
    ]  # fmt: skip
    lines = results_block(summary).splitlines()
    start = next(i for i, line in enumerate(full) if line.startswith("plateaus of the flow"))
    for i in range(start + 1, len(full)):
        if full[i].startswith("  t = "):  # a plateau's line, then its saddle's
            assert lines[i] == full[i] and lines[i + 1] == "    unclassified saddle: lambda_min -"
    assert [x for x in lines if x.startswith("convergence order")] == [
        x for x in full if x.startswith("convergence order")
    ]
    exits = full.index("plateau exits later than the flow's (in t; negative: earlier):")
    assert lines[exits : exits + 5] == full[exits : exits + 5]
    assert lines[-1] == "resumed: flow kept, sgd_lr_0.01 continued"


def test_a_kind_without_a_record_prints_the_numbers_of_its_open_entry(tiny_run):
    """tests/test_kinds.py's toy kind has no record: its entry is an open SeriesEntry whose keys beyond
    lr, status and message are undeclared (kept in ``extra``), and the table reads them there; an older
    run's kept entry with a key its record has no field for is read alike, its cells unchanged."""
    summary = _summary(tiny_run)
    full = _rows(results_block(summary))
    summary["series"]["plain_gd_lr_0.04"] = {
        "lr": None,
        "plain_gd_lr": 0.04,
        "status": "ok",
        "message": "",
        "max_dist_to_flow": 0.125,
    }  # what the toy kind writes; fmt: skip
    summary["series"]["sgd_lr_0.02"]["retired_key"] = 1.0
    rows = _rows(results_block(summary))
    assert rows["plain_gd_lr_0.04"] == ["plain_gd_lr_0.04", "ok", "(none)", "(none)", "0.125", "(none)"]
    assert rows["sgd_lr_0.02"] == full["sgd_lr_0.02"]


def test_the_console_says_when_the_plateaus_were_not_analysed_and_which_series_did_not_run(tiny_run):
    """A run stopped during its series never reached the saddle analysis: its flow's empty plateau list
    means "not analysed", not "none found", and the series it never started are named."""
    summary = _summary(tiny_run)
    flow = {**summary["series"]["flow"], "plateaus": []}  # as the flow's series leaves it
    stopped = summary | {"series": {"flow": flow}, "stage": "sgd_lr_0.01", "not_run": ["sgd_lr_0.01"],
                         "interrupted": "SIGTERM", "status": "interrupted", "exit_code": 143}  # fmt: skip
    # without the run's directory, the command's placeholder
    text = results_block(stopped | {"run_dir": ""})
    assert "plateaus of the flow: not analysed" in text and "none found" not in text
    assert (
        "(S)GD series not run: sgd_lr_0.01 (the run stopped first; python scripts/train.py resume=<run dir>"
        in text
    )
    assert text.endswith("interrupted by SIGTERM: every file written so far is complete; "
                         "python scripts/train.py resume=<run dir> finishes the run")  # fmt: skip
    # with the run's directory, the command to copy (quoted for the shell: a sweep's job holds ',' and '[')
    named = results_block(stopped | {"run_dir": "/o/0_model.dims=[6,5,4],seed=3"})
    assert named.endswith("python scripts/train.py resume='/o/0_model.dims=[6,5,4],seed=3' finishes the run")
    assert "resume='/o/0_model.dims=[6,5,4],seed=3' runs them)" in named
    done = results_block(stopped | {"stage": "done", "not_run": [], "interrupted": None})
    assert "plateaus of the flow: none found" in done and "not run" not in done
