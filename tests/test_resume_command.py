"""The command the lab prints to finish a stopped run (``resume_shell_command``: the console's lines of a
run stopped early, a write failure's refusal, a sweep's table, a resume= of a sweep folder): a real shell
reads it back as the one argument ``resume=<run dir>``, and that argument resumes the run."""

from __future__ import annotations

import json
import subprocess

import pytest

from dlnlab.lab.config import resume_shell_command
from tests._helpers import CONF, QUIET, make_cfg

pytestmark = pytest.mark.lab  # a tiny run (the flow alone), then its resume, in-process


def test_the_printed_resume_command_run_by_a_real_shell_resumes_that_run(tmp_path, capsys):
    """A run stopped by SIGTERM in a directory with a space, a quote, a comma and a bracket pair (a glob
    to the shell; a sweep's job directory holds ',' and '[...]'). The command was built in two places,
    each quoting on its own; the write failure's named the directory unquoted."""
    from _runtime_helpers import SignalAt

    from dlnlab.lab.cli import parse_args, resume_command
    from dlnlab.lab.results import results_block
    from dlnlab.lab.runner import run

    run_dir = tmp_path / "my run's dir, [1]"
    SignalAt.fired.clear()
    stop = ["+callbacks.stop._target_=_runtime_helpers.SignalAt", "+callbacks.stop.series=sgd_lr_0.04",
            "+callbacks.stop.m=40"]  # fmt: skip
    cfg = make_cfg(["experiment=tiny", "sgd.lrs=[0.04]", "logger=none", *QUIET, *stop])
    assert run(cfg, output_dir=run_dir).exit_code == 143
    command = resume_shell_command(run_dir)
    printed = results_block(json.loads((run_dir / "summary.json").read_text())).splitlines()[-1]
    stopped = "interrupted by SIGTERM: every file written so far is complete"
    assert printed == f"{stopped}; {command} finishes the run"  # the console's last line
    (tmp_path / "1").write_text("")  # a file the bracket pattern would match, were it not quoted
    shell = subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], cwd=tmp_path, capture_output=True)
    argv = shell.stdout.decode().split("\0")[:-1]
    assert argv == ["python", "scripts/train.py", f"resume={run_dir}"]
    capsys.readouterr()
    assert resume_command(parse_args(argv[2:]), CONF) == 0  # what scripts/train.py does with its arguments
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["resumed"][0]["status"] == "interrupted"
    assert summary["series"]["sgd_lr_0.04"]["status"] == "ok"
