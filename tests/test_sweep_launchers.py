"""A two-job sweep through each Hydra launcher, one job failing (docs/runs.md, "Sweeps"): its record and
its console, the HParams columns of its jobs as TensorBoard's dashboard reads them, and aggregate.py on
it. One sweep per launcher (a module fixture), read by a test per thing it checks."""

from __future__ import annotations

import json
import runpy
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._helpers import CONF, QUIET, hparams_declared, hparams_table
from tests._helpers import popen_cli as _popen
from tests._helpers import read_summary as _summary

# the module's sweeps made once, on one xdist worker (--dist loadgroup)
pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("sweep_launchers")]

# joblib: the jobs in two worker processes (each imports the lab again: with the slow tests); basic: one
# after the other in the sweep's process. The sweep's record is written the same way for either. joblib is
# given backend=threading, which its launcher does not use (it sets loky): a note says so, and the jobs
# still run in processes of their own, their lines tagged.
LAUNCHERS = [
    pytest.param([], id="basic"),
    pytest.param(
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.launcher.backend=threading"],
        id="joblib",
        marks=pytest.mark.slow,
    ),
]


@dataclass(frozen=True)
class FailingSweep:
    """What the sweep left: its process (``pid``: the sweep's own), its directory, its summary's jobs."""

    proc: subprocess.CompletedProcess
    pid: int
    launcher: list[str]
    sweep: Path
    bad: dict
    good: dict


@pytest.fixture(scope="module", params=LAUNCHERS)
def failing_sweep(request, tmp_path_factory) -> FailingSweep:
    launcher = request.param
    if launcher:
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install -e '.[launchers]'")
    cwd = tmp_path_factory.mktemp("launcher")
    started = _popen(
        [
            "-m",
            *launcher,
            "experiment=tiny",
            "flow=dopri5",
            "flow.max_nfe=10,null",
            "model.dims=[4,3,3,2]",  # the tiny net's, given: a list as an HParams column
            "sgd.lrs=[0.04]",  # one rate: the others cost ~1 CPU s and check nothing more here
            *QUIET,
            "hydra.sweep.dir=sweep",  # relative, as the default outputs/multirun/...
        ],
        cwd,
    )
    out, err = started.communicate(timeout=300)  # Popen: its pid, beside the jobs' pids
    proc = subprocess.CompletedProcess(started.args, started.returncode, out, err)
    sweep = cwd / "sweep"
    ran = proc.returncode == 3  # else each test fails on the code, saying why
    jobs = json.loads((sweep / "sweep_summary.json").read_text())["jobs"] if ran else [{}, {}]
    return FailingSweep(proc, started.pid, launcher, sweep, *jobs)


def test_a_failing_job_in_a_sweep_is_recorded_and_the_others_run(failing_sweep):
    proc, sweep, bad, good = failing_sweep.proc, failing_sweep.sweep, failing_sweep.bad, failing_sweep.good
    assert proc.returncode == 3, proc.stderr[-3000:]
    # the closing line names the sweep's directory absolute, as the jobs' lines name theirs
    assert f"sweep: 2 jobs, 1 failed; 2 finished ({sweep / 'sweep_summary.json'})\n" in proc.stdout
    assert proc.stdout.endswith(  # then where to look at all its jobs together
        f"all jobs in one TensorBoard: python scripts/tb.py {sweep}\n"
        f"each setting over its seeds: python scripts/aggregate.py {sweep}\n"
    )
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["n_jobs"] == 2 and summary["n_failed"] == 1 and summary["exit_code"] == 3
    assert summary["sweep_dir"] == str(sweep)
    launcher = failing_sweep.launcher
    _check_job_tags(proc, [bad["dir"], good["dir"]], tagged=bool(launcher))
    pids = [json.loads((Path(j["dir"]) / "job.json").read_text())["process"]["pid"] for j in (bad, good)]
    assert (failing_sweep.pid not in pids) is bool(launcher), pids  # joblib: loky's processes, not threads
    noted = [line for line in proc.stderr.splitlines() if line.startswith("note: hydra.launcher.backend=")]
    assert noted == (
        ["note: hydra.launcher.backend=threading: not used: Hydra's joblib launcher runs every job in a "
         "process of loky's whatever these say (it sets backend=loky itself: threads do not work with Hydra); "
         "each job's lines are tagged [job <num>]"] if launcher else []
    )  # fmt: skip
    assert (
        bad["exit_code"] == 3 and "flow.max_nfe=10" in bad["overrides"] and "budget of 10" in bad["message"]
    )
    assert good["exit_code"] == 0 and good["message"] == ""
    for job in (bad, good):
        assert json.loads((Path(job["dir"]) / "job.json").read_text())["exit_code"] == job["exit_code"]
        assert _summary(Path(job["dir"]))["series"]["sgd_lr_0.04"]["status"] == "ok"  # the SGD series ran


def test_every_job_of_the_sweep_declares_every_hparams_column_with_its_values(failing_sweep):
    """HParams, as TensorBoard's hparams plugin answers its dashboard: the keys each job was given are
    columns with its values (the swept flow.max_nfe a number, its null an empty cell); Hydra's own keys
    (hydra.sweep.dir, the launcher), the log switches and sgd.lrs (the row's lr) are not. Every job
    declares every column, null included: TensorBoard takes the columns from one run only."""
    bad, good = failing_sweep.bad, failing_sweep.good
    assert failing_sweep.proc.returncode == 3, failing_sweep.proc.stderr[-3000:]
    string, number = "DATA_TYPE_STRING", "DATA_TYPE_FLOAT64"
    declared = {"experiment": string, "flow": string, "flow.max_nfe": number, "lr": number,
                "model.dims": string, "status": string}  # fmt: skip
    for job in (bad, good):
        assert hparams_declared(Path(job["dir"]) / "tensorboard" / "sgd_lr_0.04") == declared
    given = {"experiment": "tiny", "flow": "dopri5", "model.dims": "[4,3,3,2]", "lr": 0.04, "status": "ok"}
    bad_row, good_row = (f"{Path(job['dir']).name}/tensorboard/sgd_lr_0.04" for job in (bad, good))
    table = hparams_table(failing_sweep.sweep)
    columns, rows = table()
    assert columns == declared and rows == {bad_row: {**given, "flow.max_nfe": 10}, good_row: given}
    # a number column filters as numbers; the empty cell is kept unless missing values are excluded
    at_most = {"hparam": "flow.max_nfe", "filterInterval": {"minValue": 0, "maxValue": 100}}
    assert len(table([at_most])[1]) == 2
    assert list(table([{**at_most, "excludeMissingValues": True}])[1]) == [bad_row]


def test_aggregate_skips_the_sweeps_failed_flow_and_aggregates_the_rest(failing_sweep, tmp_path, capsys):
    """aggregate.py's main in this process on the sweep (a fresh interpreter for it cost ~2.5 s of
    imports; the script's exit codes and one-line refusals from the command line: tests/test_scripts.py,
    whose refusal table also has a folder that does not exist). It writes <sweep>/aggregate/: after the
    other tests here, which read the sweep as it ran."""
    sweep = failing_sweep.sweep
    assert failing_sweep.proc.returncode == 3, failing_sweep.proc.stderr[-3000:]
    aggregate_main = runpy.run_path(str(CONF.parent / "scripts" / "aggregate.py"))["main"]
    capsys.readouterr()
    assert aggregate_main([str(sweep), "--csv", str(tmp_path / "t.csv")]) == 0
    said = capsys.readouterr().err
    # two settings (flow.max_nfe=10 and null); the failed flow is skipped and said so, the rest aggregated
    assert "skipped" in said and "solver_failed" in said and "flow.max_nfe=10" in said
    assert len((tmp_path / "t.csv").read_text().strip().splitlines()) == 1 + 2 + 1
    rows = json.loads((sweep / "aggregate" / "aggregate.json").read_text())["rows"]
    assert {r["series"] for r in rows} == {"flow", "sgd_lr_0.04"}
    assert all(r["samples"] == 1 for r in rows)


def _check_job_tags(proc, job_dirs: list[str], tagged: bool) -> None:
    """joblib: every line a job prints, on stdout and stderr, starts with its ``[job <num>]`` (job 0's
    warning of its failed flow, each job's start block and results ending with its own directory);
    the sweep's own lines (Hydra's launch lines, the closing table) are not tagged. basic: nothing is
    tagged, the jobs' output as a single run's."""
    out_lines, err_lines = proc.stdout.splitlines(), proc.stderr.splitlines()
    closing = next(i for i, line in enumerate(out_lines) if line.startswith("sweep: "))
    jobs_out = [line for line in out_lines[:closing] if "[HYDRA]" not in line]
    if not tagged:
        assert not any(line.startswith("[job ") for line in out_lines + err_lines), proc.stdout
        return
    assert jobs_out and all(line.startswith(("[job 0] ", "[job 1] ")) for line in jobs_out), proc.stdout
    assert not any(line.startswith("[job ") for line in out_lines[closing:])
    for num, job_dir in enumerate(job_dirs):
        assert f"[job {num}]   output    {job_dir}" in jobs_out
        assert any(line.startswith(f"[job {num}] run directory  {job_dir}  (") for line in jobs_out)
    assert any(line.startswith("[job 0] warning: flow: ") for line in err_lines), proc.stderr
    jobs_err = [  # not Hydra's launch lines, nor the sweep's note on its launcher
        line for line in err_lines if "[HYDRA]" not in line and not line.startswith("note: hydra.launcher.")
    ]
    assert all(line.startswith(("[job 0] ", "[job 1] ")) for line in jobs_err), proc.stderr
