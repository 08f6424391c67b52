"""The scripts' command-line contract: scripts/aggregate.py, plot.py, figure1.py and limit.py.

A bad argument exits 2 with one line (``error: <argument>: <reason>``) before any work and before
the heavy imports, writing nothing; the runs' configs are checked before the first run starts; a
damaged run directory is skipped with its reason, or refused when nothing usable is left. Real
subprocesses for the refusals (each well under a second), the scripts' ``main`` in process where
they work on real run directories.
"""

from __future__ import annotations

import json
import re
import runpy
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from dlnlab.lab.runner import run
from dlnlab.rundir import run_damage
from tests._helpers import TINY, make_cfg

pytestmark = [
    pytest.mark.lab,
    pytest.mark.xdist_group("test_scripts"),
]  # every test here runs the lab (in-process or its CLI); its tests on one xdist worker (--dist loadgroup): its module fixtures are lab runs, made once per worker

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A working directory with things to misuse: a file, a non-empty folder, an empty one, a folder
    named like a figure."""
    (tmp_path / "afile.txt").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "dir.png").mkdir()
    return tmp_path


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def _script(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / f"{name}.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


BAD_ARGUMENTS = [  # (script, arguments, the argument the refusal names, words of its reason)
    ("plot", ["--dpi", "0", "empty"], "--dpi", "an integer from 10 to 600"),
    ("plot", ["--dpi", "-5", "empty"], "--dpi", "an integer from 10 to 600"),
    ("plot", ["--dpi", "100000", "empty"], "--dpi", "got '100000'"),
    ("plot", ["--dpi", "2.5", "empty"], "--dpi", "an integer"),
    ("plot", ["missing"], "run_dirs", "no such directory 'missing'"),
    ("plot", ["afile.txt"], "run_dirs", "is not a directory"),
    ("plot", [], "run_dirs", "missing"),
    ("plot", ["--tensorboard", "--no-tensorboard", "empty"], "--no-tensorboard", "not allowed with"),
    ("aggregate", ["missing"], "roots", "no such directory"),
    ("aggregate", ["empty", "--out", "afile.txt"], "--out", "is not a directory"),
    ("aggregate", ["empty", "--out", "full"], "--out", "is not empty"),
    ("aggregate", ["empty", "--csv", "full"], "--csv", "must end in .csv"),
    ("aggregate", ["empty", "--csv", "/proc/t.csv"], "--csv", "cannot be created"),
    ("aggregate", ["empty", "--bogus"], "--bogus", "no such argument; allowed: --help, --out, --csv"),
    ("figure1", ["--dpi", "0"], "--dpi", "an integer from 10 to 600"),
    ("figure1", ["--near", "afile.txt"], "--near", "is not a directory"),
    ("figure1", ["--runs", "full"], "--runs", "is not empty"),
    ("figure1", ["--out", "f.jpg"], "--out", "must end in .png"),
    ("figure1", ["--out", "dir.png"], "--out", "is a directory"),
    ("figure1", ["--near", "empty", "--far", "empty", "-o", "seed=1"], "-o", "nothing runs"),
    ("figure1", ["--flow-onl"], "--flow-onl", "no such argument"),  # no abbreviations
    ("figure1", ["-o", "hydra.run.dir=/tmp"], "-o", "hydra.run.dir: this script sets its runs' directories"),
    ("figure1", ["-o", "hydra.run.dir=/tmp"], "-o", "itself: give one with --runs;"),
    ("eos_lab", ["hydra.run.dir=/tmp/x"], "overrides", "itself: give one with --run;"),
    ("figure1", ["--out", "a" * 300 + ".png"], "--out", "too long"),
    ("limit", ["--members", "0"], "--members", "an integer from 2 to 100000"),
    ("limit", ["--plateau-members", "-3"], "--plateau-members", "an integer from 2 to 100000"),
    ("limit", ["--members", "9" * 5000], "--members", "an integer from 2"),
    ("limit", ["--members", ""], "--members", "an integer"),
    ("limit", ["--replot"], "--replot", "needs --runs"),
    ("limit", ["--replot", "--runs", "missing"], "--runs", "no such directory"),
    ("limit", ["--replot", "--runs", "empty", "--members", "4"], "--members", "--replot runs nothing"),
    ("limit", ["--runs", "full"], "--runs", "is not empty"),
    ("limit", ["--runs", "afile.txt"], "--runs", "is not a directory"),
    ("limit", ["--runs", "/".join(["abc"] * 1500)], "--runs", "longer than 4096 bytes"),
    ("limit", ["--out", "x.jpg"], "--out", "must end in .png or .pdf or .svg"),
    ("eos_lab", ["--out", "x.jpg"], "--out", "must end in .png or .pdf or .svg"),
    ("eos", ["--window", "3"], "--window", "an even integer from 2"),
    ("eos", ["--factor", "2.5"], "--factor", "a number in (0, 2]"),
    ("eos", ["--out", "x.txt"], "--out", "must end in .json"),
    ("eos_lab", ["--run", "full"], "--run", "is not empty"),
    ("eos_lab", ["--replot"], "--replot", "needs --run"),
    ("eos_lab", ["--replot", "--run", "empty"], "--run", "has no series/edge_lr_*.npz"),
    ("eos_lab", ["--replot", "--run", "empty", "seed=1"], "seed=1", "--replot runs nothing"),
    (
        "eos_lab",
        ["sgd.batch_size=10"],
        "overrides",
        "flow.central: the edge of stability and the central flow",
    ),
    pytest.param(  # ~5 s (the lab's checks on the composed config); the row above goes the same way
        "eos_lab", ["flow.central=false"], "overrides", "nothing to draw", marks=pytest.mark.slow
    ),
]


@pytest.mark.parametrize(("script", "args", "argument", "reason"), BAD_ARGUMENTS)
def test_a_bad_argument_is_refused_in_one_line_and_nothing_is_written(place, script, args, argument, reason):
    before = _tree(place)
    proc = _script(script, args, place)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and proc.stdout == "", proc.stderr + proc.stdout
    assert lines[0].startswith(f"error: {argument}: ") and reason in lines[0], lines[0]
    assert _tree(place) == before


def test_refusals_come_before_the_heavy_imports(place):
    """torch, numpy, matplotlib and Hydra take seconds to import: a refusal needs none of them."""
    cases = [("plot", ["--dpi", "0", "x"]), ("aggregate", ["missing"]), ("figure1", ["--dpi", "0"]),
             ("limit", ["--members", "0"]), ("eos_lab", ["--out", "x.jpg"]), ("eos", ["--window", "3"])]  # fmt: skip
    code = f"""
import runpy, sys
for script, args in {cases!r}:
    sys.argv = [script, *args]
    try:
        runpy.run_path({str(SCRIPTS)!r} + "/" + script + ".py", run_name="__main__")
    except SystemExit as exit:
        assert exit.code == 2, (script, exit.code)
print(sorted(m for m in ("torch", "numpy", "matplotlib", "hydra") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=place, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert proc.stderr.count("error: ") == len(cases)


@pytest.mark.slow  # ~5 s; the scripts' one-line refusals stay in the default set (the table above)
def test_figure1_checks_its_runs_configs_before_the_first_run_starts(place):
    fig = _script("figure1", ["--near", "empty", "-o", "sgd.lrs=[-1]"], place)
    assert fig.returncode == 2 and fig.stderr.startswith("error: --near: empty: not a run directory")
    fig = _script("figure1", ["-o", "bogus=1"], place)  # Hydra composes it: an unknown key
    assert fig.returncode == 2 and fig.stderr.startswith("error: -o: bogus: no such key"), fig.stderr
    assert "Traceback" not in fig.stderr and not (place / "outputs").exists()


@pytest.mark.slow  # about 7 s under load: three configs of the Figure 1 net composed and checked
def test_limit_checks_its_runs_configs_before_the_first_run_starts(place):
    limit = _script("limit", ["--members", "100000", "--plateau-members", "100000"], place)
    assert limit.returncode == 2 and limit.stderr.startswith(
        "error: --plateau-members: the plateau run is refused"
    )
    assert "limits.memory_gb" in limit.stderr and "Traceback" not in limit.stderr
    assert not (place / "outputs").exists()


# ---- damaged run directories -----------------------------------------------------------------
@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scripts") / "good"
    assert run(make_cfg([*TINY, "flow.t_max=1", "sgd.lrs=[0.04,0.02]"]), output_dir=out).exit_code == 0
    return out


def _npz_claiming(path: Path, shape: tuple) -> None:
    """An npz whose one array's header claims ``shape`` while holding 8 bytes."""
    head = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    head["shape"] = shape
    with zipfile.ZipFile(path, "w") as zf, zf.open("loss.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, head)
        f.write(np.zeros(1).tobytes())


DAMAGE = {  # name: (how to damage a copy of a good run, words of the reason)
    "summary_list": (lambda d: (d / "summary.json").write_text("[]"), "holds a JSON list, not an object"),
    "summary_garbage": (lambda d: (d / "summary.json").write_bytes(b"\x89\x00{"), "is not valid JSON"),
    "series_not_object": (lambda d: (d / "summary.json").write_text('{"series": [1]}'), "not an object of series"),
    "npz_missing": (lambda d: (d / "series" / "sgd_lr_0.02.npz").unlink(), "sgd_lr_0.02.npz is missing"),
    "npz_garbage": (lambda d: (d / "series" / "flow.npz").write_bytes(b"PK\x03\x04" + bytes(500)), "not a readable npz"),
    "npz_cut": (lambda d: _cut(d / "series" / "sgd_lr_0.04.npz"), "not a readable npz"),
    "npz_header_lies": (lambda d: _npz_claiming(d / "series" / "flow.npz", (10**12,)), "more than the file holds"),
    "npz_objects": (lambda d: np.savez(d / "series" / "flow.npz", t=np.array([None, 1])), "holds objects"),
    "npz_crc": (lambda d: _flip_a_byte(d / "series" / "flow.npz"), "CRC"),
    "problem_garbage": (lambda d: (d / "problem.npz").write_text("not a zip"), "problem.npz is not a readable npz"),
}  # fmt: skip


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside an array's data (savez stores arrays uncompressed)
    path.write_bytes(bytes(data))


def _damaged(good: Path, where: Path, name: str) -> Path:
    d = where / name
    shutil.copytree(good, d)
    DAMAGE[name][0](d)
    return d


def test_each_kind_of_damage_is_named(good_run, tmp_path):
    assert run_damage(good_run) is None
    for name, (_, reason) in DAMAGE.items():
        why = run_damage(_damaged(good_run, tmp_path, name))
        assert why is not None and reason in why, (name, why)
    assert "not a run directory" in run_damage(tmp_path / "npz_missing" / "series")


def _main(script: str):
    return runpy.run_path(str(SCRIPTS / f"{script}.py"))["main"]


def test_scripts_skip_damaged_runs_and_refuse_when_nothing_usable_is_left(good_run, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(good_run, sweep / "good")
    for name in ("summary_list", "npz_cut", "npz_header_lies"):
        _damaged(good_run, sweep, name)
    assert _main("aggregate")([str(sweep)]) == 0
    out, err = capsys.readouterr()
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 3 and "holds a JSON list" in err and "Traceback" not in err
    assert "skipped 3 (runs, series or members" in out
    assert len(json.loads((sweep / "aggregate" / "aggregate.json").read_text())["skipped"]) == 3
    shutil.rmtree(sweep / "good")
    assert _main("aggregate")([str(sweep)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: roots: no usable run directory")
    assert not (sweep / "aggregate_1").exists()  # nothing written
    with pytest.raises(SystemExit) as refused:
        _main("plot")([str(sweep / "summary_list"), str(sweep / "npz_cut")])
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and err[-1].startswith("error: run_dirs: no usable run directory")
    assert not (sweep / "summary_list" / "figures").exists()


def test_a_run_whose_only_series_failed_is_refused_not_a_traceback(tmp_path, capsys):
    failed = tmp_path / "failed"
    res = run(make_cfg([*TINY, "flow.t_max=1", "sgd.lrs=[]", "flow.max_nfe=10"]), output_dir=failed)
    assert res["series"]["flow"]["status"] == "solver_failed"
    assert _main("aggregate")([str(failed)]) == 2
    err = capsys.readouterr().err
    assert "flow: solver_failed" in err and "error: roots: no usable series" in err
    assert not (failed / "aggregate").exists()
    # in memory, the same refusal: NothingToAggregate, its skipped the lines the script printed
    from dlnlab.lab.results import NothingToAggregate, aggregate_runs

    with pytest.raises(NothingToAggregate) as refused:
        aggregate_runs(failed)
    assert (
        refused.value.argument == "roots" and str(refused.value) == f"roots: no usable series under {failed}"
    )
    said = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert [f"skipped {line}" for line in refused.value.skipped] == said and len(said) == 1


# ---- aggregate.py: folders, tables ------------------------------------------------------------
COMMON = ["data.n_samples=20", "data.singular_values=[2.0,1.0]", "experiment=tiny", "flow.t_max=1",
          "log.analysis_points=10", "log.dt=0.05", "log.figures=false", "log.progress=never", "logger=none",
          "sgd.lrs=[0.04,0.02]"]  # fmt: skip


def _as_job(good: Path, where: Path, overrides: list[str]) -> None:
    """A copy of a run as a sweep's job: the overrides Hydra records (.hydra/overrides.yaml), and each
    that names a key of the run's config set in its summary.json's (what the job would have run: the
    aggregate groups runs by their configs)."""
    shutil.copytree(good, where)
    (where / ".hydra").mkdir(exist_ok=True)
    (where / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    summary = json.loads((where / "summary.json").read_text())
    for o in overrides:
        *path, last = o.split("=", 1)[0].split(".")
        node = summary["config"]
        for part in path:
            node = node.get(part, {})
        if last in node:  # experiment=tiny chose an option: no key of the config
            node[last] = yaml.safe_load(o.split("=", 1)[1])
    (where / "summary.json").write_text(json.dumps(summary))


def test_settings_that_differ_late_get_their_own_stable_folders(good_run, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for i, (seed, batch) in enumerate([(0, 5), (1, 5), (0, 10), (1, 10)]):
        _as_job(good_run, sweep / f"job{i}", [*COMMON, f"seed={seed}", f"sgd.batch_size={batch}"])
    assert len(" ".join(COMMON)) > 120  # the old folder names kept 120 characters: one folder for both
    assert _main("aggregate")([str(sweep)]) == 0
    out = capsys.readouterr().out
    agg = json.loads((sweep / "aggregate" / "aggregate.json").read_text())
    folders = {re.search(r"sgd.batch_size=\d+", s["setting"]).group(): s["folder"] for s in agg["settings"]}
    assert set(folders) == {"sgd.batch_size=5", "sgd.batch_size=10"} and len(set(folders.values())) == 2
    for s in agg["settings"]:
        folder = sweep / "aggregate" / s["folder"]
        assert (
            len(s["runs"]) == 2
            and json.loads((folder / "setting.json").read_text())["setting"] == s["setting"]
        )
        assert {p.name for p in folder.glob("*.npz")} == {"flow.npz", "sgd_lr_0.04.npz", "sgd_lr_0.02.npz"}
        assert len(s["folder"]) <= 51
    # a second call: a new default folder (nothing overwritten), the same setting folders
    assert _main("aggregate")([str(sweep)]) == 0
    again = json.loads((sweep / "aggregate_1" / "aggregate.json").read_text())
    assert {s["folder"] for s in again["settings"]} == set(folders.values())
    _check_console(out, agg)
    capsys.readouterr()


def test_aggregate_names_what_it_wrote_by_absolute_paths(good_run, tmp_path, capsys, monkeypatch):
    """As train.py names its run: given relative paths, the last line says where the files are from
    anywhere (it said 'wrote sweep/aggregate and t.csv')."""
    shutil.copytree(good_run, tmp_path / "sweep" / "good")
    monkeypatch.chdir(tmp_path)
    assert _main("aggregate")(["sweep", "--csv", "t.csv"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == f"wrote {Path.cwd() / 'sweep' / 'aggregate'} and {Path.cwd() / 't.csv'}"
    assert (tmp_path / "sweep" / "aggregate" / "aggregate.json").is_file() and (tmp_path / "t.csv").is_file()


def _check_console(out: str, agg: dict) -> None:
    """Within 100 columns; numbers rounded to 4 significant digits, as mean [5%, 95%]."""
    lines = [line for line in out.splitlines() if not line.startswith("wrote ")]  # a path is a path
    assert max(map(len, lines)) <= 100, max(lines, key=len)
    legend = [line for line in lines if line.startswith("#") and ": " in line]
    assert [line.split(":")[0] for line in legend] == ["#0  sgd.batch_size=5", "#1  sgd.batch_size=10"]
    tables = out[out.index("numbers: mean [5%, 95%]") : out.index("\nwrote ")]
    for number in re.findall(r"\d[\d.]*(?:e[+-]\d+)?", tables):
        digits = number.split("e")[0].replace(".", "").lstrip("0")
        assert len(digits) <= 4, number
    row = next(r for r in agg["rows"] if r["series"] == "sgd_lr_0.02" and "batch_size=5 " in r["setting"])
    d = row["max_dist_to_flow"]
    shown = f"{d['mean']:.4g} [{d['q5_q95'][0]:.4g}, {d['q5_q95'][1]:.4g}]"
    assert re.search(rf"^#0\s+sgd_lr_0.02\s+2\s+.*{re.escape(shown)}$", tables, re.M), tables


@pytest.mark.slow  # a few seconds each: the scripts' imports before the signal or the closed pipe
def test_ctrl_c_and_a_closed_pipe_end_with_one_line_not_a_traceback(good_run, tmp_path):
    import signal
    import time

    cmd = [sys.executable, str(SCRIPTS / "aggregate.py"), str(good_run)]
    # SIGINT as a terminal's Ctrl+C finds it: an xdist worker ignores SIGINT, and a child inherits that
    # (the script then ran to its end, exit 0, whenever the slow tests ran with -n)
    proc = subprocess.Popen(
        [*cmd, "--out", str(tmp_path / "a")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    # inside run_script's guard (Python and the script's import: 0.03 s), before its end (1.3-2.7 s)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert err.decode().strip() == "interrupted (SIGINT); the files written so far are complete"
    proc = subprocess.Popen(
        [*cmd, "--out", str(tmp_path / "b")], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # the reader goes away (| head)
    assert proc.wait(timeout=120) == 141 and b"Traceback" not in proc.stderr.read()
    assert json.loads((tmp_path / "b" / "aggregate.json").read_text())["rows"]  # written before the print
