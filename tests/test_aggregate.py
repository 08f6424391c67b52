"""scripts/aggregate.py's logic: runs of one setting across seeds, and an ensemble's members, alike."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import re
import resource
import runpy
import shutil
import statistics
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from dlnlab.errors import ArgumentError
from dlnlab.lab import aggregate_runs
from dlnlab.lab.results import collect
from dlnlab.lab.runner import run
from tests._helpers import TINY, make_cfg

main_of_script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "aggregate.py"))["main"]

pytestmark = pytest.mark.lab  # every test here runs the lab (in-process or its CLI)

BASE = [*TINY, "flow.t_max=4", "sgd.lrs=[0.04,0.02,0.01]"]


def _spread_by_hand(values: list[float]) -> dict:
    """A quantity's spread as aggregate.json writes it, by the standard library (not numpy, which the
    aggregate uses): statistics.quantiles' inclusive method is numpy's linear interpolation. ``q5_q95``
    as two keys: pytest.approx compares a dict of numbers, not of lists."""
    cuts = statistics.quantiles(values, n=20, method="inclusive")
    return {"mean": statistics.mean(values), "std": statistics.stdev(values), "min": min(values),
            "max": max(values), "q5": cuts[0], "q95": cuts[-1], "n": len(values)}  # fmt: skip


def _flat(spread) -> dict:
    """A SampleSpread's JSON with ``q5_q95`` as two keys (as :func:`_spread_by_hand`)."""
    d = spread.to_dict()
    d["q5"], d["q95"] = d.pop("q5_q95")
    return d


def test_seeds_of_a_setting_and_members_of_an_ensemble_are_samples_alike(tmp_path):
    runs = [run(make_cfg([*BASE, f"seed={s}"]), output_dir=tmp_path / "sweep" / f"job{s}") for s in (0, 1, 2)]
    agg = aggregate_runs(tmp_path / "sweep")
    assert agg.skipped == [] and len(agg.settings) == 1
    sgd = agg.row("sgd_lr_0.02")
    assert sgd.samples == 3
    finals = [r["series"]["sgd_lr_0.02"]["final_loss"] for r in runs]
    dists = [r["series"]["sgd_lr_0.02"]["max_dist_to_flow"] for r in runs]
    assert _flat(sgd.final_loss) == pytest.approx(_spread_by_hand(finals), rel=1e-12)
    assert _flat(sgd.max_dist_to_flow) == pytest.approx(_spread_by_hand(dists), rel=1e-12)
    per = [r["convergence_order"] for r in runs]  # each seed's own fitted order
    assert _flat(sgd.orders.to_flow.per_sample) == pytest.approx(_spread_by_hand(per), rel=1e-9)
    assert sgd.orders.to_modified_flow.per_sample is None and agg.row("flow").orders is None
    curves = agg.curves("sgd_lr_0.02")  # the one setting's: no key needed
    assert curves is agg.settings[0].curves["sgd_lr_0.02"] and agg.setting() is agg.settings[0]
    losses = np.stack(
        [np.load(tmp_path / "sweep" / f"job{s}" / "series" / "sgd_lr_0.02.npz")["loss"] for s in (0, 1, 2)]
    )
    np.testing.assert_allclose(curves.loss.mean, losses.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(curves.loss.q50, np.median(losses, axis=0), rtol=1e-12)
    folder = agg.write(tmp_path / "agg") / agg.settings[0].folder
    assert (folder / "loss.png").is_file()
    # an ensemble of 3 whose members have the seeds of... its own: 3 samples of its one setting
    ens = run(make_cfg([*BASE, "ensemble.size=3"]), output_dir=tmp_path / "ens")
    agg = aggregate_runs([tmp_path / "ens"])
    assert agg.row("sgd_lr_0.02").samples == 3
    members = [m["final_loss"] for m in ens["series"]["sgd_lr_0.02"]["members"]]
    assert _flat(agg.row("sgd_lr_0.02").final_loss) == pytest.approx(_spread_by_hand(members), rel=1e-12)
    exits = agg.row("flow").plateau_exits
    assert exits and all(e.t_exit.n >= 1 for e in exits)
    for e in exits:  # the members that left a plateau by the mode, counted from the summary's plateaus
        left = [
            m
            for m in ens["series"]["flow"]["members"]
            if any(p["exit_mode"] == e.mode for p in m["plateaus"])
        ]
        assert e.exited == len(left) == e.t_exit.n and e.samples == 3


def _tree(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``root``: (size, modification time, SHA-256), and every directory."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns, digest)
    return out


@pytest.mark.xdist_group("tiny_run")
def test_the_aggregate_in_memory_is_what_the_script_writes_and_writes_nothing(tiny_run, tmp_path, capsys):
    """aggregate_runs reads the runs and returns the rows, the curves' statistics and what was skipped,
    writing nothing (every file and folder under the roots as before: size, time, content); the script
    writes it (Aggregate.write): its aggregate.json, setting.json, npz and CSV read back equal the
    records and arrays in memory. Two settings: the tiny run, and a copy recorded as a sweep's job of
    another setting, beside a job that never wrote a run (skipped)."""
    from dlnlab.lab import Aggregate, aggregate_runs
    from dlnlab.lab.results import AggregateRow, SeriesCurves

    roots = tmp_path / "roots"
    shutil.copytree(tiny_run, roots / "a")
    shutil.copytree(tiny_run, roots / "b")
    (roots / "b" / ".hydra").mkdir(exist_ok=True)
    (roots / "b" / ".hydra" / "overrides.yaml").write_text("- seed=1\n- sgd.batch_size=5\n")
    summary = json.loads((roots / "b" / "summary.json").read_text())  # what that job would have run
    summary["config"]["seed"], summary["config"]["sgd"]["batch_size"] = 1, 5
    (roots / "b" / "summary.json").write_text(json.dumps(summary))
    (roots / "never").mkdir()
    (roots / "never" / "job.json").write_text('{"exit_code": 3, "message": "stopped before its run"}\n')
    before = _tree(tmp_path)
    agg = aggregate_runs(str(roots))  # one root as a str
    assert isinstance(agg, Aggregate) and _tree(tmp_path) == before
    tiny, batch = [s.label for s in agg.settings]  # a run from Python: named by its config's own keys
    assert batch == "sgd.batch_size=5" and tiny.startswith("model.dims=[4,3,3,2] ")
    assert len(agg.skipped) == 1 and "never: no run (exit 3: stopped before its run)" in agg.skipped[0]
    assert main_of_script([str(roots), "--out", str(tmp_path / "out"), "--csv", str(tmp_path / "t.csv")]) == 0
    assert capsys.readouterr().out.startswith(agg.report())
    out = tmp_path / "out"
    written = json.loads((out / "aggregate.json").read_text())
    assert written == json.loads(json.dumps(agg.to_dict()))
    assert [AggregateRow.from_dict(r) for r in written["rows"]] == agg.rows
    csv_bytes = agg.csv().encode()  # the csv module's \r\n line ends: bytes, not read_text's newlines
    assert (out / "aggregate.csv").read_bytes() == (tmp_path / "t.csv").read_bytes() == csv_bytes
    with open(out / "aggregate.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["series"], float(r["final_loss_mean"])) for r in table] == [
        (r.series, r.final_loss.mean) for r in agg.rows
    ]
    for st in agg.settings:
        assert json.loads((out / st.folder / "setting.json").read_text()) == st.to_dict()
        assert sorted(p.name for p in (out / st.folder).iterdir()) == sorted(
            [*(f"{name}.npz" for name in st.curves), "setting.json", "loss.png"]
        )
        for name, curves in st.curves.items():
            with np.load(out / st.folder / f"{name}.npz") as npz:
                assert list(npz) == list(curves.to_npz())  # the arrays in the file's order
                back = SeriesCurves.from_npz(npz).to_npz()
            for k, v in curves.to_npz().items():
                np.testing.assert_array_equal(back[k], v, err_msg=f"{name} {k}")
    assert _tree(roots) == {k[len("roots/") :]: v for k, v in before.items() if k.startswith("roots/")}
    # the row by its series (and setting, needed with two)
    assert agg.row("sgd_lr_0.02", tiny).series == "sgd_lr_0.02"
    for args, said in (
        (("flow",), "setting: needed with 2 settings"),
        (("flow", "x"), "setting: no setting 'x'"),
        (("sgd_lr_9", tiny), f"series: no series 'sgd_lr_9' in setting '{tiny}'; its series: "),
    ):
        for lookup in (agg.row, agg.curves):  # a curve's arrays are found as its row is, with the same errors
            with pytest.raises(ArgumentError, match=f"^{re.escape(said)}"):
                lookup(*args)
    with pytest.raises(
        ArgumentError, match=rf"^setting: needed with 2 settings; one of \['{re.escape(tiny)}', "
    ):
        agg.setting()
    assert agg.setting("sgd.batch_size=5") is agg.settings[1]
    with np.load(out / agg.settings[1].folder / "sgd_lr_0.02.npz") as npz:  # the curve the file holds
        got = agg.curves("sgd_lr_0.02", "sgd.batch_size=5")
        np.testing.assert_array_equal(got.loss.q50, npz["loss_q50"])
        np.testing.assert_array_equal(got.t, npz["t"])
    # write refuses a directory that holds something, or a file (nothing is overwritten)
    with pytest.raises(ArgumentError, match=r"^out: .*out is not empty; give a new or empty directory"):
        agg.write(out)
    with pytest.raises(ArgumentError, match=r"^out: .*t.csv exists and is not a directory"):
        agg.write(tmp_path / "t.csv")


@pytest.mark.xdist_group("tiny_run")
def test_the_series_come_in_the_run_s_order_not_sorted_as_strings(tiny_run):
    """The rows were sorted by name as strings: sgd_lr_0.01, 0.02, 0.04 (the learning rates upwards,
    against the run's console and figures) and sgd_lr_1e-05 after sgd_lr_0.5. Reference: the run's
    summary.json, whose series are in the order the run ran and printed them (sgd.lrs from the largest
    down), and for 1e-05 the learning rates as floats."""
    from dlnlab.rundir import series_order_key

    ran = [
        n
        for n in json.loads((tiny_run / "summary.json").read_text())["series"]
        if n.startswith(("flow", "sgd_"))
    ]
    assert ran == ["flow", "sgd_lr_0.04", "sgd_lr_0.02", "sgd_lr_0.01"]
    agg = aggregate_runs(tiny_run)
    assert [r.series for r in agg.rows] == list(agg.settings[0].curves) == ran
    assert [r["series"] for r in csv.DictReader(agg.csv().splitlines())] == ran
    listed = [line.split()[1] for line in agg.report().splitlines() if line.startswith("#0   ")]
    assert listed[: len(ran)] == ran  # the console's first table
    names = ["sgd_lr_0.5", "sgd_lr_1e-05", "flow", "sgd_lr_0.04", "sgd_lr_2.0"]
    by_float = ["flow", *sorted((n for n in names if n != "flow"), key=lambda n: -float(n[len("sgd_lr_") :]))]
    assert (
        sorted(names, key=series_order_key)
        == by_float
        == ["flow", "sgd_lr_2.0", "sgd_lr_0.5", "sgd_lr_0.04", "sgd_lr_1e-05"]
    )
    assert sorted(names) != by_float  # what the rows were sorted by


def test_overrides_hydra_quotes_or_folds_are_read_back_as_given_by_every_reader(tmp_path):
    """Hydra writes .hydra/overrides.yaml with OmegaConf.to_yaml: an override holding ': ' is quoted
    and one with spaces longer than a line is folded over two. aggregate.py read the file line by line
    (it got "'data.path=''/d/a: b.npz'''" and half of the long one); read_overrides, which aggregate,
    tb.py's names and the HParams columns share, reads the YAML."""
    from omegaconf import OmegaConf

    from dlnlab.lab.results._aggregate_collect import _overrides
    from dlnlab.lab.view import run_label
    from dlnlab.rundir import read_overrides

    given = ["data.path='/d/a: b.npz'", "seed=1", "init.path=/a b/" + "x " * 45 + "w.npz", "data.path='#h'"]
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(given)))
    assert len((tmp_path / ".hydra" / "overrides.yaml").read_text().splitlines()) == len(given) + 1  # folded
    assert read_overrides(tmp_path) == given
    assert _overrides(tmp_path) == tuple(sorted(o for o in given if o != "seed=1"))
    assert run_label(tmp_path).startswith("data.path='/d/a- b.npz' seed=1 init.path=/a b/x x")
    (tmp_path / ".hydra" / "overrides.yaml").write_text("seed: 1\n")  # not a list: named, not guessed
    with pytest.raises(
        ValueError, match=r"overrides.yaml: cannot read the run's overrides \(not a list: dict\)$"
    ):
        read_overrides(tmp_path)
    assert read_overrides(tmp_path / "none") == []


@pytest.mark.xdist_group("tiny_run")
def test_one_root_given_as_a_str_is_one_directory_not_its_characters(tiny_run, tmp_path, monkeypatch):
    """``collect("outputs/multirun/...")`` from a notebook: the str was iterated as a list of roots, one
    character each (an absolute path walked ``/``, the whole disk; a relative one found nothing). A
    str or a Path is one root; a root that is not a directory is refused naming ``roots``, by
    aggregate_runs too, and a root with no run in it is NothingToAggregate (an ArgumentError)."""
    from dlnlab.lab import NothingToAggregate  # beside aggregate_runs, which raises it
    from dlnlab.lab.results._aggregate_collect import run_dirs

    (tmp_path / "ab").symlink_to(tiny_run)
    monkeypatch.chdir(tmp_path)
    for roots in ("ab", tmp_path / "ab", ["ab"]):
        settings, skipped = collect(roots)
        assert [st.runs for st in settings.values()] == [[str(tiny_run.resolve())]] and skipped == []
    assert run_dirs("ab") == [tiny_run.resolve()]
    for bad, said in (("nowhere", "nowhere is not a directory"), (3, "expected a directory")):
        for call in (collect, aggregate_runs):
            with pytest.raises(ArgumentError, match=f"^roots: {said}"):
                call(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        NothingToAggregate, match=r"^roots: no usable run directory \(summary.json\) under empty$"
    ):
        aggregate_runs(["empty"])
    assert not any((tmp_path / "empty").iterdir())


def test_the_aggregate_loss_figure_names_series_as_the_run_figures_do_and_says_how_many_samples():
    """The aggregate's loss.png had the setting's key alone as its title, the raw series names in its
    legend (sgd_lr_0.04) and no number of samples. Reference: the names a run's loss figure gives the
    same series (Series.label, the run figures' legend). It takes the typed curves (SeriesCurves, as an
    Aggregate holds them; it took the npz's dicts): each median drawn is the curves' ``loss.q50``, and a
    series without a loss curve is left out."""
    from dlnlab.lab.results import SeriesCurves
    from dlnlab.lab.results._aggregate_figure import loss_figure
    from dlnlab.lab.results._aggregate_stats import curve_stats
    from dlnlab.plots import style
    from dlnlab.rundir import Series

    t = np.linspace(0.0, 2.0, 5)

    def curves(n):  # n samples' loss curves, their statistics as the aggregate computes them
        return SeriesCurves(t=t, loss=curve_stats([(k + 1) * np.exp(-t) for k in range(n)]))

    names = {"sgd_lr_0.02": 0.02, "flow": None, "sgd_lr_0.04": 0.04}
    want = [Series(name, names[name], {}).label for name in ("flow", "sgd_lr_0.04", "sgd_lr_0.02")]
    with style():
        given = {**{name: curves(3) for name in names}, "sgd_lr_0.01": SeriesCurves(t=t)}
        fig = loss_figure("experiment=tiny", given)
        (legend,) = fig.legends
        assert [x.get_text() for x in legend.get_texts()] == want == ["gradient flow", "η = 0.04", "η = 0.02"]
        assert len(fig.axes[0].lines) == 3
        for line in fig.axes[0].lines:  # the medians: 2 exp(-t), the middle of 1, 2 and 3 times exp(-t)
            np.testing.assert_allclose(line.get_ydata(), 2 * np.exp(-t), rtol=1e-15)
            np.testing.assert_array_equal(line.get_xdata(), t)
        assert "over 3 samples" in fig.axes[0].get_title() and "experiment=tiny" in fig._suptitle.get_text()
        fig = loss_figure("k", {"flow": curves(3), "sgd_lr_0.04": curves(2)})
        assert [x.get_text() for x in fig.legends[0].get_texts()] == [
            "gradient flow (n = 3)",
            "η = 0.04 (n = 2)",
        ]
        key = "data.path=/a/$x^$.npz,sgd.lrs=[0.04]"  # a setting's key is what the user typed: not mathtext
        fig = loss_figure(key, {"flow": curves(3)})
        fig.savefig(io.BytesIO(), format="png")  # matplotlib's mathtext parser refused "$x^$"
        assert key in fig._suptitle.get_text()


def test_members_that_diverged_in_an_ok_series_are_counted_and_each_number_says_what_it_is_over(tmp_path):
    """At lr 0.2 some members of this ensemble diverge while the others converge or stay unstable: the
    series is ok and aggregated, its diverged members were dropped without a word and the console's
    ``n`` was the rest's count, nowhere the series' 8. Reference: the run's summary.json, member by
    member (the spread of the usable members' final losses by the standard library)."""
    res = run(
        make_cfg([*TINY, "ensemble.size=8", "sgd.lrs=[0.2]", "init.scale=0.7"]), output_dir=tmp_path / "r"
    )
    entry = res["series"]["sgd_lr_0.2"]
    kept = [m for m in entry["members"] if m["status"] in ("ok", "unstable")]
    gone = [i for i, m in enumerate(entry["members"]) if m["status"] == "diverged"]
    assert entry["status"] == "ok" and gone and len(kept) + len(gone) == 8  # the case this test is about
    agg = aggregate_runs(tmp_path / "r")
    row = agg.row("sgd_lr_0.2")
    assert (row.samples, row.samples_left_out, row.all_samples) == (len(kept), len(gone), 8)
    assert _flat(row.final_loss) == pytest.approx(_spread_by_hand([m["final_loss"] for m in kept]), rel=1e-12)
    assert agg.skipped == [f"{(tmp_path / 'r').resolve()} sgd_lr_0.2: members {gone} left out (diverged)"]
    line = next(x for x in agg.report().splitlines() if "sgd_lr_0.2" in x)
    cells = line.split()
    assert cells[2] == "8" and line.count(f"({len(kept)} of 8)") == 2  # the final loss and the distance
    flow_line = next(x for x in agg.report().splitlines() if " flow " in x)
    assert " of 8)" not in flow_line  # every member's number: nothing to say
    rows = list(csv.DictReader(agg.csv().splitlines()))
    sgd = next(r for r in rows if r["series"] == "sgd_lr_0.2")
    assert (sgd["samples"], sgd["samples_left_out"], sgd["final_loss_n"]) == tuple(
        map(str, (len(kept), len(gone), len(kept)))
    )


@contextmanager
def _file_size_limit(n_bytes: int):
    """RLIMIT_FSIZE in this process (Python ignores SIGXFSZ: a write past it fails with EFBIG, as on a
    full disk), restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.xdist_group("tiny_run")
def test_a_write_that_fails_part_way_leaves_out_as_it_was_and_the_next_write_works(
    tiny_run, tmp_path, capsys
):
    """Aggregate.write wrote file by file into ``out``: a failure part way (here a file size limit that
    the npz files pass and loss.png, written after them, does not) left a directory holding files, which
    the next write refuses. Now it writes into a temporary sibling renamed onto ``out`` at the end:
    after the failure ``out`` is as it was (absent, or the empty directory given), no temporary folder
    is left, and the same call then succeeds. The script says it in one line, exit 4."""
    agg = aggregate_runs(tiny_run)
    limit = 40_000
    npz_sizes = [len(io_bytes) for io_bytes in _npz_bytes(agg)]
    assert max(npz_sizes) < limit  # the npz files fit: the failure comes after them, at the figure
    given_empty = tmp_path / "empty"
    given_empty.mkdir()
    for out in (tmp_path / "new" / "agg", given_empty):
        with _file_size_limit(limit), pytest.raises(OSError) as err:
            agg.write(out)
        assert err.value.errno == errno.EFBIG and err.value.filename.endswith("loss.png")
        assert (out.is_dir() and not any(out.iterdir())) if out == given_empty else not out.exists()
        assert [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")] == []
        assert agg.write(out) == out and (out / "aggregate.json").is_file()
        st = agg.settings[0]
        want = sorted([*(f"{name}.npz" for name in st.curves), "setting.json", "loss.png"])
        assert sorted(p.name for p in (out / st.folder).iterdir()) == want
    root = tmp_path / "root"
    shutil.copytree(tiny_run, root)
    with _file_size_limit(limit):
        code = main_of_script([str(root)])  # the default out: root/aggregate, made by the script
    assert code == 4 and not (root / "aggregate").exists()
    assert [p.name for p in root.iterdir() if p.name.startswith((".aggregate", "aggregate"))] == []
    said = capsys.readouterr().err.splitlines()
    assert said == [
        f"error: cannot write into {root / 'aggregate'}: File too large (loss.png); nothing written"
    ]


def _npz_bytes(agg) -> list[bytes]:
    """Each setting's npz files as Aggregate.write writes them (numpy.savez into memory)."""
    out = []
    for st in agg.settings:
        for curves in st.curves.values():
            buf = io.BytesIO()
            np.savez(buf, **curves.to_npz())
            out.append(buf.getvalue())
    return out
