"""The flow's kind (``flow``): the gradient flow, integrated by :func:`run_flow` (GD's modified flows
too, ``_modified``) and recorded while the solver runs (``_flow_stream``).

A flow that fails (a solver failure, an error, SIGINT / SIGTERM) is recorded up to its last grid
point, its npz written and its entry marked; the driver decides whether the run goes on.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from dlnlab import flow as flowmod
from dlnlab.errors import SeriesWarning
from dlnlab.lab.results import finish_flow_members, flow_loss_rise
from dlnlab.lab.runner._ahead import FlowAhead, flow_theta0, one_flow
from dlnlab.lab.runner._context import SeriesContext, close_recorder
from dlnlab.lab.runner._flow_chunks import in_chunks, solve_in_chunks
from dlnlab.lab.runner._flow_stream import FlowStream, record_flow
from dlnlab.lab.runner._kind import Resume, SeriesDone, SeriesKind, SeriesTask
from dlnlab.lab.runner._resume import check_recomputed_flow
from dlnlab.metrics import members_of
from dlnlab.network import unpack
from dlnlab.rundir import FLOW, signals
from dlnlab.status import Status

__all__ = ["FlowKind", "run_flow"]


class FlowKind(SeriesKind):
    """The gradient flow from the initial weights, at the grid and every (S)GD series' exact times."""

    key, prefix, per_lr, tensorboard_run, resume = "flow", FLOW, False, True, Resume.RECOMPUTE

    def enabled(self, plan) -> bool:
        return True

    def run(self, ctx: SeriesContext, task: SeriesTask) -> SeriesDone:
        entry, finish, states = run_flow(ctx, task.solve_at, task.grid, task.recorded)
        return SeriesDone(entry, finish=finish, states=states, states_at=task.solve_at)


def run_flow(
    ctx: SeriesContext,
    all_t: torch.Tensor,
    grid: torch.Tensor,
    previous: tuple[dict, dict] | None = None,
    name: str = "flow",
    modified_lr: float | None = None,
) -> tuple[dict, Callable[[], dict], torch.Tensor]:
    """Integrate the flow (``modified_lr``: GD's modified flow at that step, series ``name``) at all
    requested times and record its grid.

    Returns (entry, finish, flow_at): flow_at (len(all_t), p) holds NaN rows past a failure; the
    metrics of the grid are computed in a recorder worker (fed while the solver runs, see
    ``FlowStream``), and ``finish()`` waits for them, writes ``series/flow.npz`` and returns its
    arrays (the entry's numbers come from the losses on the grid, computed here). An interrupt is
    recorded in the entry (status interrupted); the caller checks it. ``previous`` (entry, arrays) of a finished flow (a resumed
    run): the flow is recomputed for the SGD series, checked against the recorded grid to within
    10 x rtol, and neither recorded nor logged again.
    """
    plan, cfg = ctx.plan, ctx.plan.cfg
    f = cfg.flow
    shared = one_flow(plan)  # an ensemble sharing one init: one flow, solved and recorded once
    theta0 = flow_theta0(plan)
    entry = {"lr": None, "method": plan.solver.method, "rtol": f.rtol, "atol": f.atol, "status": Status.OK}
    if modified_lr is not None:
        entry["modified_lr"] = modified_lr
    ahead = ctx.flow_ahead if modified_lr is None else None
    if ahead is None:
        ctx.progress.start(name, float(all_t[-1]))  # (ahead: the solve's process draws it meanwhile)
    t0 = time.perf_counter()
    # the grid's metrics start in their worker while the solver runs (rk45, cvode: step by step)
    with signals.deferred(raise_at_end=False):  # a signal from the worker's start to here: noted
        stream = None if previous is not None else FlowStream(ctx, name, theta0, all_t, grid)
        if ahead is None:
            res = _solve(ctx, theta0, all_t, modified_lr, stream, entry)
        else:  # its seconds: the solve's own and the recording's, not the wait for Lightning's import
            res = _take(ctx, ahead, stream, entry)
            t0 = time.perf_counter() - (ahead.seconds() if res is None else res.wall_time_s)
        n_flow = 0 if res is None else len(res.t)
        flow_at = torch.full((len(all_t), *theta0.shape), float("nan"), dtype=torch.float64)
        if n_flow:
            flow_at[:n_flow] = res.theta.cpu()
        members = (
            flow_at.unsqueeze(1).expand(-1, len(plan.theta0), -1) if shared else flow_at
        )  # for the SGD series
    if previous is not None:  # the recorded series stays, whatever the recomputation gave
        entry, arrays = check_recomputed_flow(
            previous, flow_at, all_t, grid, f, entry, plan.problem, ctx.layout
        )
        check = entry["resume_check"]
        ctx.progress.done(
            f"recomputed (resume): max |difference| {check['max_abs_diff']:.2g}"
            if "max_abs_diff" in check
            else f"recomputed (resume): {check['status']}, the recorded series kept"
        )
        return entry, lambda: arrays, members
    rec = record_flow(ctx, flow_at, n_flow, all_t, grid, entry, name, stream)
    with signals.deferred(raise_at_end=False):  # a signal from here on only stops the next stage
        losses = _grid_losses(plan.problem, ctx.layout, flow_at, all_t, grid, n_flow)
        seeds = () if shared else plan.seeds.members
        _finish_flow_entry(entry, losses, res, t0, f.rtol, flow_at, float(grid[-1]), seeds)
    ctx.progress.done(f"{entry['status']}: nfe {entry['nfe']}, {entry['wall_time_s']:.2f} s")

    def finish() -> dict:
        with signals.deferred(raise_at_end=False):
            try:
                return close_recorder(rec, ctx.logger(name))
            except Exception as err:  # noqa: BLE001 - the recorder's failure is this series' failure only
                entry.update(status=Status.ERROR, message=f"recorder: {err}")
                warnings.warn(f"{name}: {entry['message']}", SeriesWarning, stacklevel=2)
                return {}

    return entry, finish, members


def _solve(ctx: SeriesContext, theta0, all_t, modified_lr, stream, entry: dict):
    """The flow's trajectory (what was reached before a failure or interrupt, which goes into
    ``entry``), or None when the solver raised before giving any."""
    try:
        # a signal is only noted while the solver runs; it stops at its next step or chunk, with
        # every output point so far (solve_ivp would lose them to an exception raised inside it)
        with signals.deferred(raise_at_end=False):
            res = _integrate(ctx, theta0, all_t, modified_lr, stream)
        entry["message"] = ""
        return res
    except flowmod.FlowSolverError as err:
        entry.update(status=Status.SOLVER_FAILED, message=str(err))
        warnings.warn(str(err), SeriesWarning, stacklevel=2)
        return err.result
    except flowmod.FlowInterrupted as err:
        entry.update(status=Status.INTERRUPTED, message=err.result.message)
        return err.result
    except KeyboardInterrupt:
        entry.update(status=Status.INTERRUPTED, message="interrupted")
    except Exception as err:  # noqa: BLE001 - e.g. out of memory: recorded, the SGD series still run
        entry.update(status=Status.SOLVER_FAILED, message=f"{type(err).__name__}: {err}")
        warnings.warn(f"flow: {entry['message']}", SeriesWarning, stacklevel=2)
    return None


def _take(ctx: SeriesContext, ahead: FlowAhead, stream, entry: dict):
    """The solve started ahead of Lightning's import (:mod:`dlnlab.lab.runner._ahead`), recorded as
    :func:`_solve` records its own: the same entry, warning and rows for the recorder."""
    outcome = ahead.outcome(ctx.progress, float(ctx.plan.cfg.flow.t_max))
    if outcome.status != Status.OK:
        entry.update(status=outcome.status)
    entry["message"] = outcome.message
    if outcome.warning is not None:
        warnings.warn(outcome.warning, SeriesWarning, stacklevel=2)
    if stream is not None and outcome.result is not None:
        stream(0, outcome.result.theta)  # what integrate's on_output would have been given, at the end
    return outcome.result


def _integrate(ctx: SeriesContext, theta0, all_t, modified_lr, stream):
    """integrate, or an ensemble's flow in its chunks (``flow.chunk_members``, ``ctx.flow_workers`` at once)."""
    plan = ctx.plan
    choice, stop = plan.flow_choice, lambda: signals.received() is not None
    if in_chunks(plan, theta0):
        field = flowmod.vector_field(plan.device_problem, ctx.layout, modified_lr)
        return solve_in_chunks(
            field, theta0, all_t, plan.solver, choice.chunk_members, ctx.flow_workers, progress=ctx.progress,
            stop=stop, on_output=stream,
        )  # fmt: skip
    return flowmod.integrate(
        plan.device_problem, ctx.layout, theta0, all_t, plan.solver, progress=ctx.progress, stop=stop,
        modified_lr=modified_lr, on_output=stream,
    )  # fmt: skip


def _grid_losses(problem, layout, flow_at, all_t, grid, n_flow) -> dict:
    """t and L(t) on the flow's grid, as its series file will hold them (an ensemble: loss (E, T))."""
    idx = torch.searchsorted(all_t, grid)
    idx = idx[idx < n_flow]
    loss = problem.loss(unpack(flow_at[idx], layout))
    return {"t": grid[: len(idx)].numpy(), "loss": loss.T.numpy() if loss.ndim == 2 else loss.numpy()}


def _finish_flow_entry(entry, arrays, res, t0, rtol, flow_at, t_end: float, member_seeds=()) -> None:
    t = arrays.get("t", np.zeros(0))
    ensemble = members_of(arrays)
    entry.update(
        diverged=False,
        t_stop=float(t[-1]) if len(t) else 0.0,
        step_stop=None,
        final_loss=float(arrays["loss"][-1]) if len(t) and not ensemble else None,
        nfe=None if res is None else res.nfe,
        njev=None if res is None else res.njev,
        wall_time_s=time.perf_counter() - t0,
        max_dist_to_flow=0.0,
        plateaus=[],
    )
    if ensemble:
        for e in finish_flow_members(entry, arrays, rtol, member_seeds, t_end):
            warnings.warn(f"flow: member {e}: {entry['members'][e]['message']}", SeriesWarning, stacklevel=2)
            flow_at[:, e] = float("nan")  # no reference for that member's SGD series
        return
    if entry["status"] == Status.OK and len(t):
        rise = flow_loss_rise(arrays["loss"], t, rel_tol=max(1e-6, 1e3 * rtol))
        if rise is not None:
            entry.update(status=Status.SOLVER_FAILED, message=rise)
            warnings.warn(f"flow: {rise}", SeriesWarning, stacklevel=2)
            flow_at[:] = float("nan")  # no reference for the SGD series
