"""Hydra launchers from the optional extra (pip install -e '.[launchers]'): submitit on one machine."""

from __future__ import annotations

import json

import pytest

from tests._helpers import QUIET
from tests._helpers import run_cli as _cli

pytestmark = pytest.mark.lab  # every test here runs the lab (in-process or its CLI)


@pytest.mark.slow
def test_a_submitit_local_sweep_runs_every_job(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[launchers]'")
    sweep = tmp_path / "sweep"
    proc = _cli(
        ["-m", "hydra/launcher=submitit_local", "experiment=tiny", "seed=0,1", "logger=none", *QUIET,
         f"hydra.sweep.dir={sweep}"],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["n_jobs"] == 2 and summary["n_failed"] == 0
    seeds = []
    for job in summary["jobs"]:
        run = json.loads((sweep / job["dir"].split("/")[-1] / "summary.json").read_text())
        assert run["exit_code"] == 0 and run["stage"] == "done"
        seeds.append(run["seeds"]["seed"])
    assert sorted(seeds) == [0, 1]
    assert (sweep / ".submitit").is_dir()  # submitit's own job records
