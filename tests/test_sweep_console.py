"""What a sweep says on the console (docs/runs.md, "Sweeps"): each line of a job run by a parallel launcher
tagged with its job, and the one-line refusals of a resume= that finds no run, job or sweep to finish. The
sweeps themselves through the command line, tagged (joblib) or not (basic), and the sweep's closing line
with its directory absolute: tests/test_sweep_launchers.py."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from tests._helpers import CONF
from tests._helpers import run_cli as _cli


class _Writes(io.StringIO):
    """A terminal's stand-in: records each write it gets, as one write() of a process is one write to
    a shared terminal or pipe."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_a_tagged_stream_tags_every_line_and_hands_on_a_printed_block_in_one_write():
    """``print(block)`` writes the block, then its newline: held until the line ends, the block reaches
    the shared stream in one write (another job's line cannot land inside it), every line tagged, an
    empty one with the tag alone; a partial line waits for its end or a flush; a carriage return (a
    progress bar redrawn) starts a tagged line too. Not a terminal: auto progress bars stay off."""
    from dlnlab.lab._job_output import TaggedStream

    inner = _Writes()
    out = TaggedStream(inner, "[job 3]")
    print("dlnlab run\n  net  dims [4, 3]\n\n  output  /x/3_seed=1", file=out)
    assert inner.writes == [
        "[job 3] dlnlab run\n[job 3]   net  dims [4, 3]\n[job 3]\n[job 3]   output  /x/3_seed=1\n"
    ]
    out.write("partial")
    assert len(inner.writes) == 1  # held: the line has not ended
    out.write(" line\nnext ")
    assert len(inner.writes) == 1  # still in the middle of a line
    out.write("one\n")
    assert inner.writes[1] == "[job 3] partial line\n[job 3] next one\n"
    out.write("\r  flow  50%")
    out.flush()  # tqdm redraws its bar: a carriage return, the bar, a flush
    out.write("\r  flow 100%\n")
    assert inner.writes[2:] == ["\r[job 3]   flow  50%", "\r[job 3]   flow 100%\n"]
    assert inner.getvalue().count("[job 3]") == 8
    assert not out.isatty() and out.encoding == inner.encoding


def test_a_block_longer_than_a_pipe_takes_whole_is_cut_between_its_lines_only():
    """A pipe takes a write of at most PIPE_BUF bytes (4096 on Linux) whole; a block of 16 KB in one
    write was cut anywhere by the other jobs' writes. Now: pieces of at most PIPE_BUF, each ending a line,
    which together are the block, tagged; a shorter block stays one write; a longer line goes alone."""
    from dlnlab.lab._job_output import _WHOLE_WRITE, TaggedStream

    inner = _Writes()
    out = TaggedStream(inner, "[job 3]")
    print("\n".join(f"{i:03d} " + "x" * 76 for i in range(200)), file=out)  # 200 lines of 80: 17.6 KB tagged
    assert inner.getvalue() == "".join(f"[job 3] {i:03d} " + "x" * 76 + "\n" for i in range(200))
    assert len(inner.writes) > 1 and all(
        w.endswith("\n") and len(w.encode()) <= _WHOLE_WRITE for w in inner.writes
    )
    assert all(len(w.encode()) > _WHOLE_WRITE - 88 for w in inner.writes[:-1])  # as full as lines allow
    inner.writes.clear()
    print("y" * 5000 + "\nshort", file=out)
    assert inner.writes == ["[job 3] " + "y" * 5000 + "\n", "[job 3] short\n"]


def test_jobs_printing_long_blocks_into_one_pipe_keep_every_line_whole(tmp_path):
    """Three processes print blocks of 16 KB at once through TaggedStreams into one pipe (joblib's workers
    and a `| tee`), read in small pieces as a terminal's reader does: every line read back is one job's,
    tagged. Before: about 100 of 18,000 lines broken here (a write over PIPE_BUF cut by the others')."""
    import os
    import re
    import subprocess
    import time

    writer = tmp_path / "writer.py"
    writer.write_text(
        "import os, sys, time\nfrom dlnlab.lab._job_output import TaggedStream\n"
        "num, d = sys.argv[1], sys.argv[2]\nout = TaggedStream(sys.stdout, f'[job {num}]')\n"
        "block = '\\n'.join([num * 80] * 200)\nopen(os.path.join(d, 'ready' + num), 'w').close()\n"
        "while not os.path.exists(os.path.join(d, 'go')):\n    time.sleep(0.001)\n"
        "for _ in range(30):\n    print(block, file=out)\n"
    )
    read, write = os.pipe()
    procs = [
        subprocess.Popen([sys.executable, str(writer), str(n), str(tmp_path)], stdout=write)
        for n in (1, 2, 3)
    ]
    os.close(write)
    while len(list(tmp_path.glob("ready*"))) < 3 and all(p.poll() is None for p in procs):
        time.sleep(0.005)
    (tmp_path / "go").touch()  # all three at once
    chunks = []
    while chunk := os.read(read, 4096):
        chunks.append(chunk)
    os.close(read)
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    lines = b"".join(chunks).decode().splitlines()
    assert len(lines) == 3 * 30 * 200
    broken = [line for line in lines if not re.fullmatch(r"\[job (\d)\] \1{80}", line)]
    assert not broken, (len(broken), broken[:3])


def test_a_job_of_a_parallel_launcher_tags_stdout_stderr_and_logging_until_its_end(capsys):
    """tag_job_output in a job's process (SweepSummary.on_job_start where the launcher runs the job in a
    process other than the sweep's): print, stderr and a logging handler that held the original stream
    (Hydra's job logging) all tag their lines; untag_job_output (on_job_end) puts every stream back."""
    from dlnlab.lab._job_output import tag_job_output, untag_job_output

    out, err = sys.stdout, sys.stderr
    log = logging.getLogger("dlnlab.test_sweep_console")
    handler = logging.StreamHandler(sys.stdout)
    log.addHandler(handler)
    log.propagate = False
    try:
        tag_job_output(7)
        tag_job_output(12)  # the next job in the same worker, the first one's end missed: not tagged twice
        print("a result")
        print("an error", file=sys.stderr)
        log.warning("from logging")
        untag_job_output()
        assert (sys.stdout, sys.stderr, handler.stream) == (out, err, out)
        print("the sweep's own line")
        log.warning("logged after")
    finally:
        untag_job_output()
        log.removeHandler(handler)
    said = capsys.readouterr()
    assert said.out.splitlines() == [
        "[job 12] a result", "[job 12] from logging", "the sweep's own line", "logged after"
    ]  # fmt: skip
    assert said.err == "[job 12] an error\n"


def _looked_for() -> str:
    return "none of summary.json (a run), job.json (a sweep's job) or sweep_summary.json or multirun.yaml (a sweep)"


def _refusals(tmp_path):
    """resume=<target> for what resume cannot tell for a run, a sweep's job or a sweep: (target, the
    line's expected start, what else it says)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    claimed = tmp_path / "claimed"  # a sweep stopped after the preflight claimed its directory, before Hydra
    claimed.mkdir()
    (claimed / ".lock").write_text('{"pid": 1}')
    outputs = tmp_path / "outputs"  # a run's parent's parent: outputs/<date>/<time>
    (outputs / "d" / "t").mkdir(parents=True)
    (outputs / "d" / "t" / "summary.json").write_text("{}")
    (outputs / "d" / "t2").mkdir()  # nothing of a run's
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    bad_job = tmp_path / "bad_job"
    bad_job.mkdir()
    (bad_job / "job.json").write_text("[]")
    renamed = tmp_path / "renamed"  # a job that never ran, whose override the config tree no longer takes
    renamed.mkdir()
    (renamed / "job.json").write_text('{"num": 0, "overrides": ["experiment=tiny", "bogus=1"]}')
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    started = tmp_path / "started"  # a run stopped (SIGTERM) after Hydra wrote its files, before its summary
    (started / ".hydra").mkdir(parents=True)
    (started / ".hydra" / "overrides.yaml").write_text("- experiment=tiny\n")
    (started / "train.log").write_text("")
    return [
        (
            empty,
            f"{empty} is empty: {_looked_for()} is there",
            "start the run or the sweep again (this directory may",
        ),
        (
            claimed,
            f"{claimed} is empty: ",
            "start the run or the sweep again with a new directory (this one holds the .lock",
        ),
        (
            started,
            f"{started} holds only what Hydra writes as a run starts (.hydra, train.log), no summary.json",
            "nothing to finish; start it again (its overrides: .hydra/overrides.yaml) with a new hydra.run.dir",
        ),
        (
            outputs,
            f"{outputs} is not the directory of a run or a sweep: it holds {_looked_for()}, but one "
            "directory below it does: ",
            f"resume={outputs / 'd' / 't'}",
        ),  # fmt: skip
        (
            other,
            f"{other} is not the directory of a run or a sweep: it holds {_looked_for()}; give",
            "hydra.sweep.dir, by default outputs/multirun/<date>/<time>",
        ),  # fmt: skip
        (
            bad_job,
            f"{bad_job} holds no summary.json, and its job.json is no sweep job's record",
            "run the job again",
        ),
        (
            renamed,
            f"the overrides in {renamed / 'job.json'} are refused: ",
            "run the job again with overrides it takes",
        ),
        (a_file, f"{a_file} is not a directory: ", "give the directory of the run or of the sweep"),
        (tmp_path / "absent", f"{tmp_path / 'absent'} is not a directory: ", "of the sweep to finish"),
    ]


def test_a_resume_of_a_directory_with_nothing_to_finish_says_what_it_looked_for_and_what_to_do(
    tmp_path, capsys
):
    """Before: every one of these was "holds no readable summary.json (...): not a dlnlab run directory",
    with no hint; a sweep's directory its process left before Hydra wrote multirun.yaml (only the lock
    of its claim) the same. Nothing is written in them (no lock file left)."""
    from dlnlab.lab.cli import parse_args, resume_command

    for target, start, says in _refusals(tmp_path):
        before = sorted(p.name for p in target.iterdir()) if target.is_dir() else None
        assert resume_command(parse_args([f"resume={target}"]), CONF) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: resume: {start}") and says in err, err
        assert err.count("\n") == 1, err
        assert (sorted(p.name for p in target.iterdir()) if target.is_dir() else None) == before


def test_a_directory_said_to_be_given_again_is_taken_by_a_run_and_the_others_are_not(tmp_path, monkeypatch):
    """The refusals' advice against the preflight of a run given the directory: an empty one is taken;
    one holding a claim's .lock or Hydra's files is not (the line said "may be given again" of the
    .lock's, and "give the directory a run wrote" of Hydra's)."""
    from dlnlab.lab import cli
    from dlnlab.lab.cli import preflight
    from tests._helpers import TINY

    monkeypatch.setattr(cli, "_start_early", lambda plan: None)  # the flow's early solve: nothing runs here
    targets = {t.name: t for t, *_ in _refusals(tmp_path)}
    for name, taken in (("empty", True), ("claimed", False), ("started", False)):
        reason = preflight([*TINY, f"hydra.run.dir={targets[name]}"], CONF)
        assert (reason is None) is taken, (name, reason)


def test_the_refusal_names_the_directory_absolute_in_one_line_exit_2_from_the_command_line(tmp_path):
    (tmp_path / "sweep").mkdir()
    proc = _cli(["resume=sweep"], tmp_path)  # relative, as typed
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.startswith(f"error: resume: {tmp_path / 'sweep'} is empty: ")
        and proc.stderr.count("\n") == 1
    )


def test_a_damaged_sweep_summary_is_rebuilt_from_multirun_yaml_or_refused_without_it(tmp_path, capsys):
    """Before: a sweep_summary.json that was not JSON (or listed no jobs) was read as a sweep of no jobs:
    "0 of its 0 jobs to finish", exit 0, the sweep's unfinished jobs left as they were."""
    from omegaconf import OmegaConf

    from dlnlab.lab import sweep as sweeps
    from dlnlab.lab.cli import parse_args, resume_command

    sweep_dir = tmp_path / "sweep"
    job_dir = sweep_dir / "0_seed=1"
    job_dir.mkdir(parents=True)
    sweeps.write_job_record(job_dir, 0, ["experiment=tiny", "seed=1"], 0, "")
    (job_dir / "summary.json").write_text(json.dumps({"status": "finished", "series": {}, "killed": []}))
    (sweep_dir / "sweep_summary.json").write_text('{"jobs": ')
    assert resume_command(parse_args([f"resume={sweep_dir}"]), CONF) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: resume: {sweep_dir} has a sweep_summary.json that is not JSON, and it has no multirun.yaml, so "
        "the sweep's jobs are not known: finish each job with resume=<its dir>, or run the sweep again\n"
    )
    OmegaConf.save(
        {"hydra": {"overrides": {"task": ["experiment=tiny", "seed=1"]}}}, sweep_dir / "multirun.yaml"
    )
    (sweep_dir / "sweep_summary.json").write_text('{"jobs": 3}')
    assert (
        resume_command(parse_args([f"resume={sweep_dir}"]), CONF) == 0
    )  # its one job finished: nothing to run
    out = capsys.readouterr().out
    assert (
        f"resume: sweep {sweep_dir} has a sweep_summary.json that lists no jobs: rebuilt from its jobs'"
        in out
    )
    assert f"resume: sweep {sweep_dir}: 0 of its 1 jobs to finish" in out
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert (summary["rebuilt"], [j["state"] for j in summary["jobs"]]) == (True, ["finished"])


def test_the_console_handler_goes_quiet_once_its_reader_has_gone_and_reports_any_other_error(capsys):
    """Hydra's console handler (conf/train.yaml: dlnlab.lab._console.ConsoleHandler) on a pipe whose reader
    has gone: the record is dropped without logging's "--- Logging error ---" report, and the pipe's end
    now leads to /dev/null, so later records (and their flush) go nowhere without an error. A logging error
    of another kind, stdout fine, is reported on stderr as logging reports it."""
    import os

    from dlnlab.lab._console import ConsoleHandler

    read, write = os.pipe()
    os.close(read)  # the reader has gone
    stream = os.fdopen(write, "w")
    handler = ConsoleHandler(stream)
    log = logging.getLogger("dlnlab.test_console_handler")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("Launching 2 jobs locally")
        assert capsys.readouterr().err == ""
        assert os.path.samestat(os.fstat(write), os.stat(os.devnull))  # the pipe's end: /dev/null now
        log.warning("\t#0 : seed=0")
        handler.setStream(io.StringIO())  # a stream that works: an error of another kind is reported
        log.warning("%d jobs", "two")
        assert "--- Logging error ---" in capsys.readouterr().err
    finally:
        log.removeHandler(handler)
        stream.close()
    assert capsys.readouterr().err == ""  # the closing flush: nothing


def test_a_joblib_backend_its_launcher_does_not_use_is_noted_and_threads_sharing_memory_refused():
    """Hydra's joblib launcher sets backend=loky itself: hydra.launcher.backend=multiprocessing or
    threading, and prefer=threads, are not used (its jobs run in loky's processes, tagged: the joblib
    sweep of tests/test_sweep_launchers.py, given backend=threading). The sweep's start says so in one
    line; joblib's own defaults, and other launchers, get no note. require=sharedmem is refused before any work
    (tests/test_refusals_edges.py)."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install -e '.[launchers]'")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dlnlab.lab.config import launcher_note

    def note(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            cfg = compose("train", overrides=["experiment=tiny", *overrides], return_hydra_config=True)
        return launcher_note(cfg.hydra.launcher)

    joblib = "hydra/launcher=joblib"
    assert note() is None  # the basic launcher
    assert note(joblib) is None and note(joblib, "hydra.launcher.backend=loky") is None
    assert note(joblib, "hydra.launcher.backend=multiprocessing").startswith(
        "note: hydra.launcher.backend=multiprocessing: not used: Hydra's joblib launcher runs every job in a "
        "process of loky's"
    )
    both = note(joblib, "hydra.launcher.backend=threading", "hydra.launcher.prefer=threads")
    assert both.startswith(
        "note: hydra.launcher.backend=threading and hydra.launcher.prefer=threads: not used"
    )
    assert "\n" not in both and both.endswith("each job's lines are tagged [job <num>]")


def test_the_closing_commands_quote_a_sweep_directory_the_shell_would_split(tmp_path, capsys):
    """The closing block's tb.py and aggregate.py lines are commands to copy: a sweep directory with a
    space (hydra.sweep.dir='my sweep') is one argument of each, as shlex reads it back."""
    import shlex

    from omegaconf import OmegaConf

    from dlnlab.lab import sweep as sweeps

    sweep_dir = tmp_path / "my sweep"
    job_dir = sweep_dir / "0_seed=0"
    job_dir.mkdir(parents=True)
    (job_dir / "summary.json").write_text(json.dumps({"status": "finished", "exit_code": 0, "series": {}}))
    sweeps.write_job_record(job_dir, 0, ["seed=0"], 0, "")
    sweeps.write_sweep_summary(sweep_dir, OmegaConf.create({"hydra": {"overrides": {"task": ["seed=0"]}}}))
    last_two = capsys.readouterr().out.splitlines()[-2:]
    assert [shlex.split(line.split(": ", 1)[1]) for line in last_two] == [
        ["python", "scripts/tb.py", str(sweep_dir)],
        ["python", "scripts/aggregate.py", str(sweep_dir)],
    ]
