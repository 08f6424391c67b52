"""A sweep whose reader of stdout went away (``train.py -m ... | head``): nothing on stderr, its record
and exit code as they would be (docs/cli.md; the handler itself: tests/test_sweep_console.py)."""

from __future__ import annotations

import json

import pytest

from tests._helpers import QUIET
from tests._helpers import popen_cli as _popen

# every test here runs the lab's CLI; slow (6 s of the default run's budget): the handler itself is
# tested in the default set by tests/test_sweep_console.py, and a single run whose stdout is closed by
# tests/test_cli.py (two_cli_runs)
pytestmark = [pytest.mark.lab, pytest.mark.slow]

TWO_JOBS = ["-m", "experiment=tiny", "sgd.lrs=[]", "logger=none", *QUIET]


def _stdout_gone(args, cwd) -> tuple[int, str]:
    """The command line with its reader of stdout gone before the first line (``train.py ... | head``):
    its exit code and all it wrote on stderr."""
    proc = _popen(args, cwd)
    proc.stdout.close()
    err = proc.stderr.read()
    return proc.wait(timeout=300), err


def test_a_sweep_and_its_resume_whose_stdout_reader_went_away_write_nothing_on_stderr(tmp_path):
    """``train.py -m ... | head``, basic launcher (one job: Hydra's launch lines, the job's blocks, the
    closing table), then ``resume=<sweep dir> | head``. Before: each of Hydra's two launch lines, logged
    before the job's first block, printed logging's "--- Logging error ---" and a 25-line traceback on
    stderr; the resume's first line raised BrokenPipeError: a traceback and exit code 1. Now stderr holds
    nothing, and each exits with its own code. (Any other logging error is still reported:
    tests/test_sweep_console.py.)"""
    sweep = tmp_path / "sweep"
    code, err = _stdout_gone([*TWO_JOBS, "seed=1", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert (code, err) == (0, "")
    assert json.loads((sweep / "sweep_summary.json").read_text())["n_finished"] == 1
    assert _stdout_gone([f"resume={sweep}"], tmp_path) == (0, "")


@pytest.mark.slow
def test_a_joblib_sweep_whose_stdout_reader_went_away_ends_with_its_summary_and_code(tmp_path):
    """``train.py -m ... | head`` under joblib: the jobs run in worker processes, so the sweep's own
    process meets the gone reader first at Hydra's launch lines (each printed logging's "--- Logging
    error ---" and a traceback on stderr), then at its closing table, which raised BrokenPipeError out of
    its Hydra callback (Hydra turned it into a warning). Now nothing reaches stderr, and the sweep's
    record and exit code are what they would be."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install -e '.[launchers]'")
    code, err = _stdout_gone([*TWO_JOBS, "seed=1,2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                              f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)  # fmt: skip
    assert (code, err) == (0, "")
    summary = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert (summary["n_finished"], summary["exit_code"]) == (2, 0)
