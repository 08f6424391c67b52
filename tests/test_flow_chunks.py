"""An ensemble's flow in chunks (flow.chunk_members; dlnlab/flow/_chunks.py, dlnlab/lab/runner/_flow_chunks.py):
the chunks against the one-batch solve (bit for bit where the method solves member by member, to rounding
for radau_batch), the joined status and rows of a failed or interrupted chunk, the rows handed out in
order, the workers' rows equal to the driver's bit for bit, a run's series files equal for run.workers=1 and
2, the key's choice by method and its refusal, and the auto choice's independence of run.workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from dlnlab.flow import (
    FlowInterrupted,
    FlowSolverError,
    Solver,
    integrate,
    join_chunks,
    member_chunks,
    time_grid,
    vector_field,
)
from dlnlab.init import gaussian
from dlnlab.lab.config import prepare
from dlnlab.lab.config._choose import CHUNK_MEMBERS, flow_chunks
from dlnlab.lab.config._schema import EnsembleVary
from dlnlab.lab.runner import run
from dlnlab.lab.runner._flow_chunks import solve_in_chunks
from dlnlab.network import pack
from dlnlab.problem import RegressionProblem
from dlnlab.status import Status

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DIMS = [4, 3, 3, 2]


def _ensemble(members: int):
    problem = RegressionProblem.teacher([2.0, 1.0], 4, 2, 20, seed=0)
    theta0 = torch.stack([pack(gaussian(DIMS, 0.3, seed=1 + e)) for e in range(members)])
    return problem, theta0


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


def _cfg(overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="train", overrides=overrides)


def test_member_chunks_are_consecutive_and_cover_the_ensemble():
    assert member_chunks(7, 3) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert member_chunks(4, 0) == [slice(0, 4)] == member_chunks(4, 9)
    with pytest.raises(ValueError, match="chunk_members"):
        member_chunks(4, -1)


@pytest.mark.parametrize("method", ["radau_batch", "lsoda"])
def test_chunks_agree_with_the_one_batch_solve(method):
    problem, theta0 = _ensemble(5)
    t = time_grid(2.0, dt=0.1)
    one = integrate(problem, DIMS, theta0, t, Solver(method))
    slices = member_chunks(5, 2)
    parts = [integrate(problem, DIMS, theta0[s], t, Solver(method)) for s in slices]
    joined = join_chunks(parts, slices, t)
    assert joined.status == Status.OK and joined.theta.shape == one.theta.shape
    assert joined.nfe == sum(p.nfe for p in parts)
    if method == "lsoda":  # member by member: the same operations in the same order
        assert torch.equal(joined.theta, one.theta)
    else:  # each member's own steps; its batch changes only the rounding (the float32 solve's width)
        assert 0 < _rel(joined.theta, one.theta) < 1e-11
        assert torch.equal(joined.members.n_steps, one.members.n_steps)
        assert joined.n_steps == one.n_steps  # the most steps of any member, as the one batch counts them


def test_a_failed_chunk_ends_its_own_members_and_the_rows_all_reached():
    problem, theta0 = _ensemble(4)
    t = time_grid(2.0, dt=0.1)
    slices = member_chunks(4, 2)
    ok = integrate(problem, DIMS, theta0[slices[0]], t, Solver("radau_batch"))
    with pytest.raises(FlowSolverError) as failed:
        integrate(problem, DIMS, theta0[slices[1]], t, Solver("radau_batch", max_nfe=60))
    part = failed.value.result
    joined = join_chunks([ok, part], slices, t)
    assert joined.status == Status.SOLVER_FAILED and joined.message.startswith("members 2..3: ")
    assert len(joined.t) == len(part.t) < len(t)
    assert torch.equal(joined.theta[:, :2], ok.theta[: len(part.t)])
    assert joined.members.status[:2] == (Status.OK, Status.OK)
    assert set(joined.members.status[2:]) == {Status.SOLVER_FAILED}


def test_an_interrupted_chunk_outranks_a_failed_one_in_the_joined_status():
    """The joined status is the worst of the chunks', interrupted before solver_failed (a signal says
    the run stopped, whatever else failed): its message is the interrupted chunk's."""
    problem, theta0 = _ensemble(4)
    t = time_grid(2.0, dt=0.1)
    slices = member_chunks(4, 2)
    with pytest.raises(FlowSolverError) as failed:
        integrate(problem, DIMS, theta0[slices[0]], t, Solver("radau_batch", max_nfe=60))
    with pytest.raises(FlowInterrupted) as stopped:
        integrate(problem, DIMS, theta0[slices[1]], t, Solver("radau_batch"), stop=lambda: True)
    joined = join_chunks([failed.value.result, stopped.value.result], slices, t)
    assert joined.status == Status.INTERRUPTED
    assert joined.message.startswith("members 2..3: ") and joined.message.endswith(
        "(and 1 more chunk not ok)"
    )


def test_workers_give_the_drivers_rows_bit_for_bit_and_hand_them_out_in_order():
    method = "radau_batch"
    problem, theta0 = _ensemble(5)
    t = time_grid(1.0, dt=0.05)
    field = vector_field(problem, DIMS, None)
    res = {}
    for workers in (1, 3):
        handed, reached = [], []
        res[workers] = solve_in_chunks(
            field, theta0, t, Solver(method), 2, workers, progress=lambda tt, _e, r=reached: r.append(tt),
            on_output=lambda first, rows, h=handed: h.append((first, rows.clone())),
        )  # fmt: skip
        assert [f for f, _ in handed] == list(np.cumsum([0] + [len(r) for _, r in handed[:-1]]))
        assert torch.equal(torch.cat([r for _, r in handed]), res[workers].theta)
        assert reached[-1] == pytest.approx(1.0)
    assert torch.equal(res[1].theta, res[3].theta) and res[1].nfe == res[3].nfe
    parts = [integrate(problem, DIMS, theta0[s], t, Solver(method)) for s in member_chunks(5, 2)]
    assert torch.equal(res[3].theta, join_chunks(parts, member_chunks(5, 2), t).theta)


def test_a_stop_interrupts_the_chunks_with_the_rows_all_reached():
    problem, theta0 = _ensemble(5)
    t = time_grid(2.0, dt=0.1)
    calls = []

    def stop() -> bool:  # yes from the 5th look on: inside the first chunk, the others never start
        calls.append(1)
        return len(calls) > 4

    with pytest.raises(FlowInterrupted) as got:
        solve_in_chunks(vector_field(problem, DIMS, None), theta0, t, Solver("radau_batch"), 2, 1, stop=stop)
    res = got.value.result
    assert res.status == Status.INTERRUPTED and len(res.t) == 1
    assert torch.equal(res.theta[0], theta0)
    assert set(res.members.status) == {Status.INTERRUPTED}


def test_chunk_members_by_method():
    cfg = prepare(_cfg(["experiment=tiny", "ensemble.size=64", "flow=radau_batch"])).cfg
    assert flow_chunks(cfg, "radau_batch") == (CHUNK_MEMBERS["radau_batch"], 2)
    assert flow_chunks(cfg, "lsoda") == (8, 8)
    assert flow_chunks(cfg, "rk45") == (64, 1)
    cfg.flow.chunk_members = 0
    assert flow_chunks(cfg, "radau_batch") == (64, 1)
    cfg.flow.chunk_members = 100
    assert flow_chunks(cfg, "radau_batch") == (64, 1)
    cfg.ensemble.vary = EnsembleVary.sgd  # one init: one flow
    assert flow_chunks(cfg, "radau_batch") == (1, 1)


def test_the_auto_choice_does_not_depend_on_the_workers():
    common = ["model=figure1", "ensemble.size=64", "sgd.lrs=[]"]
    a = prepare(_cfg([*common, "run.workers=1"])).flow_choice
    b = prepare(_cfg([*common, "run.workers=64"])).flow_choice
    assert a == b and a.method == "radau_batch" and (a.chunk_members, a.chunks) == (32, 2)
    assert "in 2 chunks of 32 members" in a.why


def _series(run_dir: Path) -> dict:
    out = {}
    for path in sorted((run_dir / "series").glob("*.npz")):
        with np.load(path) as z:
            out[path.name] = {k: z[k] for k in z.files}
    return out


def test_a_chunked_run_on_two_workers_equals_the_one_process_run(tmp_path):
    base = ["experiment=tiny", "ensemble.size=5", "flow=radau_batch", "flow.chunk_members=2", "flow.t_max=1",
            "sgd.lrs=[0.05]", "log.figures=false", "log.progress=never", "logger=none", "log.analysis_points=0"]  # fmt: skip
    files = {}
    for workers in (1, 2):
        result = run(_cfg([*base, f"run.workers={workers}"]), output_dir=tmp_path / str(workers))
        assert result.exit_code == 0 and result["process"]["flow_workers"] == workers
        assert result["flow_choice"]["chunks"] == 3
        files[workers] = _series(tmp_path / str(workers))
    assert list(files[1]) == list(files[2]) and files[1]
    for name, arrays in files[1].items():
        for key, value in arrays.items():
            np.testing.assert_array_equal(value, files[2][name][key], err_msg=f"{name} {key}")


@pytest.mark.slow  # a CLI run of 64 Figure 1 nets signalled mid-flow, and its resume: 1-2 min on 2 cores
def test_sigterm_during_a_chunked_flow_stops_every_worker_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    args = ["ensemble.size=64", "flow=radau_batch", "sgd.lrs=[0.01]", "log.figures=false", "logger=none",
            "log.progress=never", "run.workers=2", "log.analysis_points=0", f"hydra.run.dir={out}"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    summary_path = out / "summary.json"
    for _ in range(600):  # until the flow's stage (after Lightning's import), then into its solve
        if summary_path.exists() and json.loads(summary_path.read_text() or "{}").get("stage") == "flow":
            break
        time.sleep(0.1)
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGTERM)  # the driver alone: it hands the signal on to its chunks
    assert proc.wait(timeout=60) == 143
    summary = json.loads((out / "summary.json").read_text())
    assert summary["series"]["flow"]["status"] == "interrupted"  # signalled inside the chunked flow
    children = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert not children  # no worker outlives the run
    from dlnlab.lab.runner import resume

    result = resume(out)
    assert result.exit_code == 0
    assert all(s["status"] == "ok" for s in result["series"].values())


HAND_OVER = """
import torch
from dlnlab.flow import Solver, time_grid, vector_field
from dlnlab.init import gaussian
from dlnlab.lab.runner._flow_chunks import solve_in_chunks
from dlnlab.network import pack
from dlnlab.problem import RegressionProblem

torch.set_num_threads(2)
dims = [11, 6, 6, 6, 6, 4]
problem = RegressionProblem.teacher([4, 3, 2, 1], 11, 4, 110, whiten=True, seed=0)
theta0 = torch.stack([pack(gaussian(dims, 0.1, seed=k)) for k in range(4)])
t = time_grid(3.0, dt=0.02)  # 151 rows x 2 members x 198: above torch's grain for a parallel copy
out = solve_in_chunks(vector_field(problem, dims), theta0, t, Solver("lsoda"), chunk_members=2, workers=2)
print(out.status.value, tuple(out.theta.shape))
"""


@pytest.mark.slow  # a subprocess (~5 s); latent in the lab, whose driver runs with one torch thread
def test_chunks_whose_solver_hands_its_rows_over_at_the_end_do_not_hang_in_their_workers(tmp_path):
    """lsoda gives its rows at the end of the solve: they were copied into the shared board with the
    caller's torch threads, and a thread pool does not survive a fork (both workers hung in a futex)."""
    proc = subprocess.run([sys.executable, "-c", HAND_OVER], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[0] == "ok (151, 4, 198)"
