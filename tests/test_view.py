"""scripts/tb.py: several runs in one TensorBoard, each named by its overrides (TensorBoard's own
--logdir_spec parser reads what it builds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.data_ingester import _parse_event_files_spec

from dlnlab.lab.view import find_runs, logdir_spec, run_label

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
        ["sgd.lrs=[0.01,0.005]", "flow.t_max=100", "log.progress=never"],
    )
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
