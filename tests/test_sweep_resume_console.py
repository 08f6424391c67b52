"""What resume=<sweep dir> prints (docs/runs.md, "Finishing a stopped sweep"): each job's run as a run
prints it, and the sweep's end lines once, after the last job, as the sweep itself prints them (the
sweep's console: tests/test_sweep_console.py)."""

from __future__ import annotations

import pytest

from tests._helpers import CONF


@pytest.mark.lab
def test_a_resumed_sweep_prints_its_end_lines_once_after_its_last_job(tmp_path, capsys):
    """Two jobs that never ran (job.json, no summary), run in-process by resume=<sweep dir>: the sweep's
    table and the tb.py / aggregate.py lines come once, after the last job, as a fresh sweep's do. Before,
    they came after every job, the first while the second was still to run."""
    from omegaconf import OmegaConf

    from dlnlab.lab import sweep as sweeps
    from dlnlab.lab.cli import parse_args, resume_command

    base = ["experiment=tiny", "sgd.lrs=[]", "logger=none", "log.figures=false", "log.progress=never"]
    sweep_dir = tmp_path / "sweep"
    for num in (0, 1):
        job_dir = sweep_dir / f"{num}_seed={num + 1}"
        job_dir.mkdir(parents=True)
        sweeps.write_job_record(
            job_dir, num, [*base, f"seed={num + 1}"], 130, "not run: the sweep was interrupted"
        )
    config = OmegaConf.create({"hydra": {"overrides": {"task": [*base, "seed=1,2"]}}})
    sweeps.write_sweep_summary(sweep_dir, config, show=False)
    assert resume_command(parse_args([f"resume={sweep_dir}"]), CONF) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    record = sweep_dir / "sweep_summary.json"
    assert lines[-3:] == [
        f"sweep: 2 jobs, 0 failed; 2 finished ({record})",
        f"all jobs in one TensorBoard: python scripts/tb.py {sweep_dir}",
        f"each setting over its seeds: python scripts/aggregate.py {sweep_dir}",
    ]
    assert out.count("sweep: 2 jobs") == 1 and out.count("scripts/tb.py") == 1, out
    assert [line.split()[2] for line in lines if line.startswith("run directory")] == [
        str(sweep_dir / "0_seed=1"), str(sweep_dir / "1_seed=2")
    ]  # fmt: skip
