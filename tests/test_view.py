"""scripts/tb.py: several runs in one TensorBoard, each named by its overrides (TensorBoard's own
--logdir_spec parser reads what it builds)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.data_ingester import _parse_event_files_spec

from dlnlab.lab.view import find_runs, logdir_spec, run_label, run_labels

ROOT = Path(__file__).resolve().parents[1]


def _run(path: Path, overrides: list[str] | None) -> Path:
    (path / "tensorboard" / "flow").mkdir(parents=True)
    if overrides is not None:
        (path / ".hydra").mkdir()
        (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return path


def test_runs_are_named_by_their_overrides(tmp_path):
    a = _run(
        tmp_path / "outputs" / "d" / "10-00-00",
        ["sgd.lrs=[0.01,0.005]", "flow.t_max=100", "log.progress=never", "run.workers=2", "logger=csv",
         "+callbacks.top._target_=m.C", "hydra/launcher=joblib"],  # what changes no number names no run
    )  # fmt: skip
    b = _run(tmp_path / "outputs" / "d" / "10-00-01", [])
    c = _run(tmp_path / "outputs" / "d" / "10-00-02", None)
    assert find_runs([tmp_path / "outputs"]) == [a, b, c] and find_runs([a]) == [a]
    assert run_label(a) == "sgd.lrs=[0.01;0.005] flow.t_max=100"  # no ',' or ':' in a run name
    spec = logdir_spec([a, b, c])
    parsed = _parse_event_files_spec(spec)
    assert parsed == {
        str(a / "tensorboard"): "sgd.lrs=[0.01;0.005] flow.t_max=100",
        str(b / "tensorboard"): "default (10-00-01)",
        str(c / "tensorboard"): "default (10-00-02)",
    }


@pytest.mark.lab
def test_the_script_refuses_a_path_without_runs_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "tb.py"), str(tmp_path), "--print"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("error: paths: no run directory")
    assert proc.stderr.count("\n") == 1


@pytest.mark.lab
@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "99999"], "error: --port: expected an integer from 1 to 65535 (a TCP port), got '99999'"),
        (["--port", "abc"], "error: --port: expected an integer from 1 to 65535 (a TCP port), got 'abc'"),
        (["--pri"], "error: --pri: no such argument; allowed: --help, --print, --port (see --help)"),
    ],
)
def test_the_script_refuses_a_bad_port_or_an_abbreviation_in_one_line_before_any_work(
    tmp_path, args, message
):
    """A port TensorBoard cannot take was put into the command and the URL; --pri was taken for --print;
    argparse's refusal came as a usage line and an error line."""
    _run(tmp_path / "a,b", [])  # a run whose path holds ',': the command would make a folder of links
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "tb.py"), str(tmp_path), *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", message + "\n")
    assert not list(tmp_path.glob("dlnlab-tb-*"))  # nothing made


def test_sweep_jobs_whose_paths_hold_commas_reach_tensorboard_named_by_what_sets_them_apart(tmp_path):
    """A sweep's job directory holds ',' (0_model.dims=[6,5,4],seed=3), where TensorBoard splits
    --logdir_spec: it read such paths in pieces and showed no run. tb.py gives them through links;
    TensorBoard's own parser, after resolving the links, gets every run's own tensorboard/ folder,
    each named by the overrides that set it apart (the shared ones said once)."""
    shared = ["data=file", "data.path=/tmp/d.npz", "seed=3"]
    dims = ["model.dims=[6,5,4]", "model.dims=[6,5,5,4]"]
    runs = [
        _run(tmp_path / "sweep" / f"{i}_{d},seed=3", [*shared[:2], d, shared[2]]) for i, d in enumerate(dims)
    ]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "tb.py"), str(tmp_path / "sweep"), "--print"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout)
    parsed = _parse_event_files_spec(cmd[cmd.index("--logdir_spec") + 1])
    assert parsed == {
        str((r / "tensorboard").resolve()): n
        for r, n in zip(runs, ["model.dims=[6;5;4]", "model.dims=[6;5;5;4]"])
    }
    assert "every run: data=file data.path=/tmp/d.npz seed=3\n" in proc.stderr
    link_dir = proc.stderr.split("hold ',': ")[1].split(" (remove")[0]
    assert Path(link_dir).is_dir() and "," not in link_dir
    shutil.rmtree(link_dir)  # --print keeps the links for the command it prints


def test_the_overrides_every_run_shares_are_left_out_of_each_name(tmp_path):
    a = _run(tmp_path / "a", ["flow.t_max=100", "seed=1"])
    b = _run(tmp_path / "b", ["flow.t_max=100", "seed=2"])
    c = _run(tmp_path / "c", ["flow.t_max=100", "seed=2"])
    assert run_labels([a]) == ([], ["flow.t_max=100 seed=1"])  # one run: all of its own
    assert run_labels([a, b, c]) == (["flow.t_max=100"], ["seed=1", "seed=2", "seed=2"])
    assert logdir_spec([a, b, c]).split(",")[1:] == [
        f"seed=2 (b):{b / 'tensorboard'}",
        f"seed=2 (c):{c / 'tensorboard'}",
    ]
    with pytest.raises(ValueError, match="holds ','"):
        logdir_spec([_run(tmp_path / "d,e", ["seed=3"])])


def test_the_script_reads_each_runs_overrides_once_for_the_shared_ones_and_the_names(
    tmp_path, monkeypatch, capsys
):
    """tb.py prints the overrides every run shares and names each run by the others: one run_labels for
    both (before, logdir_spec made its own, and every run's overrides.yaml was read twice). The command is
    the one logdir_spec makes by itself; labels that do not match the runs are refused."""
    import runpy

    from dlnlab.lab import view

    runs = [_run(tmp_path / "sweep" / f"{i}_seed={i}", ["flow.t_max=100", f"seed={i}"]) for i in range(3)]
    expected = logdir_spec(runs)
    reads: list[Path] = []
    own = view._described
    monkeypatch.setattr(view, "_described", lambda run_dir: reads.append(Path(run_dir)) or own(run_dir))
    tb_main = runpy.run_path(str(ROOT / "scripts" / "tb.py"))["main"]
    assert tb_main([str(tmp_path / "sweep"), "--print"]) == 0
    said = capsys.readouterr()
    assert sorted(reads) == sorted(runs)  # each run's overrides.yaml once
    cmd = shlex.split(said.out)
    assert cmd[cmd.index("--logdir_spec") + 1] == expected and "every run: flow.t_max=100\n" in said.err
    with pytest.raises(ValueError, match="2 labels for 3 runs"):
        logdir_spec(runs, labels=["seed=0", "seed=1"])


def test_runs_of_one_name_reach_tensorboard_each_under_a_name_of_its_own(tmp_path):
    """The same job of two sweeps (0_seed=1 under t1/ and t2/) had one name, its label and the run
    directory's name, and TensorBoard kept one of the two runs ("Conflict for name"): now the name holds
    as much of the path as tells them apart. Read back by TensorBoard's own parser and multiplexer."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    runs = [_run(tmp_path / s / "0_seed=1", ["seed=1"]) for s in ("t1", "t2")]
    runs.append(_run(tmp_path / "t3" / "1_seed=2", ["seed=2"]))
    for r in runs:
        (r / "tensorboard" / "flow" / "events.out.tfevents.0.host").write_bytes(b"")
    parsed = _parse_event_files_spec(logdir_spec(runs))
    assert list(parsed.values()) == ["seed=1 (t1/0_seed=1)", "seed=1 (t2/0_seed=1)", "seed=2"]
    seen = EventMultiplexer()
    for path, name in parsed.items():
        seen.AddRunsFromDirectory(path, name)
    assert sorted(seen.Runs()) == ["seed=1 (t1/0_seed=1)/flow", "seed=1 (t2/0_seed=1)/flow", "seed=2/flow"]


def test_a_temporary_folder_whose_path_holds_a_comma_is_refused_in_one_line(tmp_path):
    """The links go to TMPDIR: one whose path holds ',' was a ValueError's traceback, its folder left."""
    import os

    _run(tmp_path / "sweep" / "0_seed=1,sgd.batch_size=5", ["seed=1", "sgd.batch_size=5"])
    temp = tmp_path / "a,b"
    temp.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "tb.py"), str(tmp_path / "sweep"), "--print"],
        env={**os.environ, "TMPDIR": str(temp)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr == (
        f"error: TMPDIR: {temp} holds ',', where the links to the runs whose paths hold ',' would go: set "
        "TMPDIR to a folder without one\n"
    )
    assert not any(temp.iterdir())


def _child(pid: int, timeout: float = 60.0) -> int:
    """The first child process of ``pid`` (Linux' /proc), once it has one."""
    import time

    children = Path(f"/proc/{pid}/task/{pid}/children")
    if not children.exists():
        pytest.skip("no /proc/<pid>/task/<pid>/children here")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if found := children.read_text().split():
            return int(found[0])
        time.sleep(0.05)
    raise AssertionError("tb.py started no TensorBoard")


@pytest.mark.lab
def test_a_sigterm_to_tb_stops_tensorboard_and_removes_the_links(tmp_path):
    """SIGTERM (or SIGHUP) ended tb.py at once, without its finally: the folder of links stayed in the
    temporary directory and TensorBoard ran on, orphaned, holding its port."""
    import os
    import signal

    _run(tmp_path / "sweep" / "0_seed=1,sgd.batch_size=5", ["seed=1", "sgd.batch_size=5"])
    temp = tmp_path / "temp"  # where tempfile puts the folder of links
    temp.mkdir()
    log = tmp_path / "stderr.txt"  # a file, not a pipe: an orphaned TensorBoard would hold a pipe open
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "tb.py"), str(tmp_path / "sweep"), "--port", "46123"],
            env={**os.environ, "TMPDIR": str(temp)}, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    tensorboard = _child(proc.pid)
    try:
        assert [p.name for p in temp.iterdir()][0].startswith("dlnlab-tb-")  # the links, while it runs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()[-3000:]
        assert not any(temp.iterdir())  # the links removed
        with pytest.raises(ProcessLookupError):  # TensorBoard ended with it (and was reaped)
            os.kill(tensorboard, 0)
    finally:
        try:
            os.kill(tensorboard, signal.SIGKILL)  # an orphan of a failed check
        except ProcessLookupError:
            pass
