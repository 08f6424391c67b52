"""The flow's solve ahead of Lightning's import (dlnlab/lab/runner/_ahead.py): where it is used, its
trajectory equals the driver's own solve bit for bit, and a signal, a killed process or an early end
are handled. A whole run with it against run.workers=1, file by file: tests/test_parallel.py."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from dlnlab import flow as flowmod
from dlnlab.flow import time_grid
from dlnlab.lab.config import prepare
from dlnlab.lab.runner._ahead import FlowAhead, flow_theta0, goes_ahead
from dlnlab.lab.runner._progress import Progress
from dlnlab.lab.runner._times import SeriesTimes
from dlnlab.network import Layout
from dlnlab.rundir import signals
from dlnlab.status import Status
from tests._helpers import make_cfg

TINY = ["experiment=tiny", "model.dims=[6,5,5,4]"]


def _plan_and_times(overrides):
    plan = prepare(make_cfg([*TINY, *overrides]))
    times = SeriesTimes.of(plan, time_grid(plan.cfg.flow.t_max, dt=plan.cfg.log.dt))
    return plan, times


@pytest.fixture
def one_thread():  # as the driver solves: one torch thread, the lab's signal handlers (runner._driver)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    signals.reset()
    signals.install()
    yield
    signals.uninstall()
    torch.set_num_threads(threads)
    signals.reset()


LONG = ["flow.t_max=4000", "flow.method=dopri5"]  # 15 s nominal


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["run.workers=2", *LONG], True),
        (["run.workers=2", "flow.t_max=4000", "flow.method=lsoda"], True),
        (["run.workers=1", *LONG], False),  # one process: the run does everything in order
        (["run.workers=2", "flow.t_max=4000", "flow.method=rk45"], False),  # streams its rows while it solves
        (["run.workers=2"], False),  # 0.03 s nominal: less than the process costs
    ],
)
def test_where_the_flow_goes_ahead(overrides, expected):
    plan, _ = _plan_and_times(overrides)
    assert goes_ahead(plan) is expected


def test_the_solve_ahead_is_the_drivers_solve_bit_for_bit(one_thread):
    plan, times = _plan_and_times(["run.workers=2"])
    ahead = FlowAhead.start(plan, times.all_t)
    outcome = ahead.outcome(Progress("never"), float(times.all_t[-1]))
    own = flowmod.integrate(plan.device_problem, Layout(tuple(plan.cfg.model.dims)), flow_theta0(plan),
                            times.all_t, plan.solver)  # fmt: skip
    assert outcome.status == Status.OK and outcome.message == "" and outcome.warning is None
    assert torch.equal(outcome.result.theta, own.theta) and torch.equal(outcome.result.t, own.t)
    assert outcome.result.nfe == own.nfe and not ahead.proc.is_alive()


def test_a_signal_stops_the_solve_ahead_with_the_rows_so_far(one_thread):
    plan, times = _plan_and_times(["run.workers=2", *LONG])
    ahead = FlowAhead.start(plan, times.all_t)
    time.sleep(0.5)  # within the solve: torchdiffeq's dopri5 takes minutes over this horizon
    assert ahead.proc.is_alive()
    os.kill(ahead.proc.pid, signal.SIGTERM)  # as a signal to the run's process group reaches it
    outcome = ahead.outcome(Progress("never"), float(times.all_t[-1]))
    assert outcome.status == Status.INTERRUPTED and outcome.message.startswith("interrupted at t =")
    reached = outcome.result.theta
    assert 1 <= reached.shape[0] < len(times.all_t) and torch.isfinite(reached).all()


def test_a_killed_process_is_a_failed_flow_and_an_early_end_reaps_it(one_thread):
    plan, times = _plan_and_times(["run.workers=2", *LONG])
    ahead = FlowAhead.start(plan, times.all_t)
    os.kill(ahead.proc.pid, signal.SIGKILL)
    outcome = ahead.outcome(Progress("never"), float(times.all_t[-1]))
    assert outcome.status == Status.SOLVER_FAILED and outcome.result is None
    assert "ended with exit code -9 before reporting" in outcome.message and outcome.warning
    early = FlowAhead.start(plan, times.all_t)
    early.end()  # the driver leaves before the flow (a signal during Lightning's import)
    assert early.proc.exitcode == -signal.SIGKILL


def test_the_command_lines_early_solve_is_claimed_by_its_own_run_only(one_thread, monkeypatch):
    from dlnlab.lab.runner import _ahead

    monkeypatch.setattr(_ahead, "_lightning_imported", lambda: False)  # as in the command line's check
    monkeypatch.setattr(_ahead, "MIN_FLOW_S", 0.0)  # this 0.03 s flow: worth it
    plan, times = _plan_and_times(["run.workers=2"])
    _ahead.start_early(plan)
    same, _ = _plan_and_times(["run.workers=2"])  # the run's own prepare of the same config
    claimed = _ahead.claim(same, times.all_t)
    assert claimed is not None and _ahead.claim(same, times.all_t) is None  # claimed once
    assert claimed.outcome(Progress("never"), 4.0).status == Status.OK
    _ahead.start_early(plan)
    ((early, _),) = _ahead._early
    other, other_times = _plan_and_times(["run.workers=2", "init.seed=7"])  # another run's weights
    assert _ahead.claim(other, other_times.all_t) is None and early.ended and not early.proc.is_alive()


@pytest.mark.lab
def test_the_run_takes_the_plan_its_preflight_built_once_and_only_for_its_own_config(tmp_path):
    """The preflight's plan (stiffness, balanced sharpness, timed gradient: 1.9 s at width 100) is the
    run's: taken once, for the config it was built from; a refused config keeps none. The run made from
    the taken plan writes the numbers of a run that built its own."""
    from pathlib import Path

    import numpy as np

    from dlnlab.lab.cli import preflight
    from dlnlab.lab.runner import run
    from dlnlab.lab.runner._ahead import take_plan

    conf = Path(__file__).resolve().parents[1] / "conf"
    args = [
        "experiment=tiny",
        "sgd.lrs=[0.04]",
        "flow.t_max=1",
        "logger=none",
        "log.figures=false",
        "log.progress=never",
    ]
    assert preflight([*args, f"hydra.run.dir={tmp_path / 'a'}"], conf) is None
    other = take_plan(make_cfg([*args, "seed=3"]))
    assert other is None and take_plan(make_cfg(args)) is None  # taken by the other config: gone
    assert preflight([*args, f"hydra.run.dir={tmp_path / 'a'}"], conf) is None
    plan = take_plan(make_cfg(args))
    assert plan is not None and plan.cfg == prepare(make_cfg(args)).cfg and take_plan(make_cfg(args)) is None
    assert preflight([*args, "+callbacks.x._target_=no.such.Callback"], conf) is not None
    assert take_plan(make_cfg(args)) is None  # refused: nothing kept

    assert preflight([*args, f"hydra.run.dir={tmp_path / 'taken'}"], conf) is None
    taken = run(make_cfg(args), output_dir=tmp_path / "taken")
    assert take_plan(make_cfg(args)) is None  # the run took it
    built = run(make_cfg(args), output_dir=tmp_path / "built")
    assert taken.exit_code == built.exit_code == 0
    for name in ("flow", "sgd_lr_0.04"):
        a, b = (np.load(d / "series" / f"{name}.npz") for d in (tmp_path / "taken", tmp_path / "built"))
        assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a.files if k != "wall_s"), name
