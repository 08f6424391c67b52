"""One series of a run: the flow, or one (S)GD learning rate. Each survives its own failures.

A series that fails (a solver failure, an error, SIGINT / SIGTERM) is recorded up to its last grid
point, its npz written and its entry marked; the caller decides whether the run goes on.
"""

from __future__ import annotations

import math
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dlnlab import flow as flowmod
from dlnlab.descent import time_per_step
from dlnlab.errors import SeriesWarning
from dlnlab.lab.callbacks import CallbackFailed
from dlnlab.lab.config import Plan, exact_times, series_grid
from dlnlab.lab.record import (
    RunCharts,
    TagPlan,
    has_run,
    log_layout,
    make_logger,
    step_scale,
    tensorboard_layout,
)
from dlnlab.lab.results import finish_flow_members, finish_sgd_entry, finish_sgd_members, flow_loss_rise
from dlnlab.lab.runner._flow_stream import FlowStream, record_flow
from dlnlab.lab.runner._resume import check_recomputed_flow
from dlnlab.metrics import SeriesMetrics, members_of
from dlnlab.network import Layout, unpack
from dlnlab.rundir import series_name, signals
from dlnlab.status import Status

__all__ = ["Progress", "SeriesContext", "run_flow", "run_sgd", "series_name"]


class Progress:
    """One tqdm bar per series on stderr, in units of flow time t; off unless on a terminal (``auto``)
    or ``always``."""

    FORMAT = "  {desc:<16} {percentage:5.1f}% |{bar:24}| t = {n:.4g} / {total:.4g} [{elapsed} < {remaining}]{postfix}"

    def __init__(self, mode: str = "auto") -> None:
        self.enabled = mode == "always" or (mode == "auto" and sys.stderr.isatty())
        self.bar = None

    def start(self, label: str, t_end: float) -> None:
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(
            total=float(t_end), desc=label, bar_format=self.FORMAT, disable=not self.enabled, file=sys.stderr,
            mininterval=0.25, dynamic_ncols=True,
        )  # fmt: skip

    def __call__(self, t: float, t_end: float | None = None) -> None:
        if self.bar is not None and t > self.bar.n:
            self.bar.update(min(float(t), self.bar.total) - self.bar.n)

    def note(self, msg: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(f"  {msg}", file=sys.stderr)

    def done(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(msg, refresh=False)
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@dataclass
class SeriesContext:
    plan: Plan
    out: Path
    n_grid: int
    progress: Progress
    metric_kw: dict  # SeriesMetrics options: analysis_every, sv_A_top, hessian_dense_max, save_theta
    callbacks: list = field(default_factory=list)  # the user's Lightning callbacks (config ``callbacks``)
    loggers: dict = field(default_factory=dict)  # series name -> its Lightning logger (or None)
    logger_errors: dict = field(default_factory=dict)  # series name -> why its logger could not be made

    @classmethod
    def for_run(cls, plan: Plan, out: Path, n_grid: int, callbacks: list | None = None) -> SeriesContext:
        """The context of a run's series: its metrics options and the user's callbacks (made here
        unless given)."""
        log = plan.cfg.log
        return cls(
            plan=plan,
            out=out,
            n_grid=n_grid,
            progress=Progress(log.progress.name),
            metric_kw=dict(
                analysis_every=max(1, -(-n_grid // points)) if (points := plan.analysis.points) else 0,
                sv_A_top=log.sv_A_top,
                hessian_dense_max=log.hessian_dense_max,
                save_theta=log.save_theta,
                theta_every=plan.theta_every(n_grid),
                last_m=n_grid - 1,
            ),
            callbacks=plan.callbacks() if callbacks is None else callbacks,
        )

    def open_loggers(self) -> None:
        """Every TensorBoard run, now and in order: TensorBoard lists runs by their first event's time and
        colours them in that order, so the flow gets its first colour and each learning rate the next,
        as in the figures (``dlnlab.plots``' palette), however the series are later run."""
        for name in self.series_names():
            self.logger(name)

    def logger(self, name: str):
        """The series' logger, made once (the custom-scalars layout goes in with it). Only the flow and
        the (S)GD series have a TensorBoard run: a modified flow or an SME ensemble is compared with its
        (S)GD series in that series' run (one colour per learning rate, docs/tensorboard.md). A logger
        that cannot be made is that series' failure, not the run's: the series runs unlogged (None) and
        :meth:`logger_failures` marks it."""
        if not has_run(name):
            return None
        if name not in self.loggers:
            try:
                logger = make_logger(self.plan.cfg.logger, self.out, name)
                log_layout(logger, tensorboard_layout(self.charts()))
            except Exception as err:  # noqa: BLE001 - a user's logger must not end the run
                cause = err.__cause__ or err  # what the logger raised, not Hydra's wrapper
                self.logger_errors[name] = f"logger: {type(cause).__name__}: {cause}"
                warnings.warn(
                    f"{name}: {self.logger_errors[name]} (the series runs without it)",
                    SeriesWarning,
                    stacklevel=2,
                )
                logger = None
            self.loggers[name] = logger
        return self.loggers[name]

    def logger_failures(self, series: dict) -> None:
        """Mark the series whose logger could not be made (status error, unless they failed otherwise)."""
        for name, why in self.logger_errors.items():
            entry = series.get(name)
            if entry is not None and entry["status"] in (Status.OK, Status.DIVERGED, Status.UNSTABLE):
                entry.update(status=Status.ERROR, message=why)

    def charts(self) -> RunCharts:
        """What the run computes, for its TensorBoard layout."""
        cfg = self.plan.cfg
        ensemble = cfg.ensemble.size > 1
        shared_flow = ensemble and cfg.ensemble.vary.name == "sgd"
        return RunCharts(
            dt=cfg.log.dt,
            sgd=bool(self.plan.lrs),
            curvature=bool(self.metric_kw.get("analysis_every")),
            modified=cfg.flow.modified,
            limit=shared_flow and bool(self.plan.lrs),
            sme=cfg.sgd.sme,
            spread=tuple(n for n in self.series_names() if ensemble and not (n == "flow" and shared_flow)),
        )

    def series_names(self) -> list[str]:
        """The runs TensorBoard shows: the flow and one per learning rate."""
        return ["flow", *(series_name(lr) for lr in self.plan.lrs)]

    def tags(self, name: str, lr: float | None = None) -> TagPlan:
        """What series ``name`` logs: the flow also draws the plateau levels L*_r."""
        cfg, plan = self.plan.cfg, self.plan
        levels = ()
        if name == "flow":
            levels = tuple(plan.problem.plateau_levels(min(cfg.model.dims)).tolist())
        members = len(plan.theta0) if plan.seeds.members else None
        if name == "flow" and cfg.ensemble.vary.name == "sgd":
            members = None  # one flow, shared by the members
        return TagPlan(
            series=name, step_per_grid=step_scale(cfg.log.dt), lr=lr, levels=levels,
            curvature=bool(self.metric_kw.get("analysis_every")), members=members,
        )  # fmt: skip

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(self.plan.cfg.model.dims)

    @property
    def layout(self) -> Layout:
        return Layout(self.dims)


def series_times(plan: Plan, grid: torch.Tensor) -> tuple[dict, dict, torch.Tensor]:
    """Each SGD series' grid points and exact times k tau, its steps, and the union of every time the
    flow must report (the grid and every series' exact times: the solver's own dense output, never an
    interpolation of logged points)."""
    exact, steps = {}, {}
    for lr in plan.lrs:
        tau = time_per_step(lr, plan.cfg.sgd.momentum)
        ms, steps[lr] = series_grid(len(grid), plan.cfg.log.dt, tau)
        exact[lr] = (torch.tensor(ms), torch.from_numpy(exact_times(grid.numpy(), ms, steps[lr], tau)))
    return exact, steps, torch.unique(torch.cat([grid, *(e[1] for e in exact.values())]))


def at_series_grid(states: torch.Tensor, all_t: torch.Tensor, exact, n_grid: int) -> torch.Tensor:
    """(n_grid, ...): a solve's states (rows at ``all_t``) at an SGD series' exact times, on the grid
    points they stand for (``exact`` = (ms, times) from :func:`series_times`), NaN elsewhere."""
    ms, times = exact
    out = torch.full((n_grid, *states.shape[1:]), float("nan"), dtype=torch.float64)
    out[ms] = states[torch.searchsorted(all_t, times)]
    return out


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
    # an ensemble whose members share their init (ensemble.vary=sgd) has one flow: solved and recorded once
    shared = plan.seeds.members and cfg.ensemble.vary.name == "sgd"
    theta0 = plan.theta0[0] if shared else plan.theta0
    entry = {"lr": None, "method": plan.solver.method, "rtol": f.rtol, "atol": f.atol, "status": Status.OK}
    if modified_lr is not None:
        entry["modified_lr"] = modified_lr
    ctx.progress.start(name, float(all_t[-1]))
    t0 = time.perf_counter()
    # the grid's metrics start in their worker while the solver runs (rk45, cvode: step by step)
    with signals.deferred(raise_at_end=False):  # a signal from the worker's start to here: noted
        stream = None if previous is not None else FlowStream(ctx, name, theta0, all_t, grid)
        res = _solve(ctx, theta0, all_t, modified_lr, stream, entry)
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
        _finish_flow_entry(entry, losses, res, t0, f.rtol, flow_at, () if shared else plan.seeds.members)
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
    plan = ctx.plan
    try:
        # a signal is only noted while the solver runs; it stops at its next step or chunk, with
        # every output point so far (solve_ivp would lose them to an exception raised inside it)
        with signals.deferred(raise_at_end=False):
            res = flowmod.integrate(
                plan.device_problem, ctx.layout, theta0, all_t, plan.solver, progress=ctx.progress,
                stop=lambda: signals.received() is not None, modified_lr=modified_lr, on_output=stream,
            )  # fmt: skip
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


def _grid_losses(problem, layout, flow_at, all_t, grid, n_flow) -> dict:
    """t and L(t) on the flow's grid, as its series file will hold them (an ensemble: loss (E, T))."""
    idx = torch.searchsorted(all_t, grid)
    idx = idx[idx < n_flow]
    loss = problem.loss(unpack(flow_at[idx], layout))
    return {"t": grid[: len(idx)].numpy(), "loss": loss.T.numpy() if loss.ndim == 2 else loss.numpy()}


def close_recorder(rec, logger) -> dict:
    """Close a series' recorder (wait for its worker, write its npz); log the rows a worker had to leave
    to the parent (a logger that only one process may write to)."""
    arrays = rec.close()
    rows = getattr(rec, "deferred_rows", None) or []
    for step, row in rows:
        logger.log_metrics(row, step=step)
    if rows and logger is not None:
        logger.save()
    return arrays


def _finish_flow_entry(entry, arrays, res, t0, rtol, flow_at, member_seeds=()) -> None:
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
        for e in finish_flow_members(entry, arrays, rtol, member_seeds):
            warnings.warn(f"flow: member {e}: {entry['members'][e]['message']}", SeriesWarning, stacklevel=2)
            flow_at[:, e] = float("nan")  # no reference for that member's SGD series
        return
    if entry["status"] == Status.OK and len(t):
        rise = flow_loss_rise(arrays["loss"], t, rel_tol=max(1e-6, 1e3 * rtol))
        if rise is not None:
            entry.update(status=Status.SOLVER_FAILED, message=rise)
            warnings.warn(f"flow: {rise}", SeriesWarning, stacklevel=2)
            flow_at[:] = float("nan")  # no reference for the SGD series


def _blowup_norm(plan: Plan) -> float:
    """blowup x (||theta0|| + ||theta|| of a balanced global minimum, sqrt(h sum_k m_k^(2/h))); an
    ensemble: the largest member's ||theta0||."""
    lay = Layout(tuple(plan.cfg.model.dims))
    k = min(plan.problem.n_modes, lay.r_max)
    balanced = math.sqrt(lay.depth * sum(float(m) ** (2 / lay.depth) for m in plan.problem.modes[:k]))
    start = float(torch.linalg.vector_norm(plan.theta0, dim=-1).max())
    return plan.cfg.sgd.blowup * (start + balanced)


def run_sgd(
    ctx: SeriesContext,
    lr: float,
    flow_theta: torch.Tensor,
    flow_final: float | None,
    initial=None,
    modified_theta: torch.Tensor | None = None,
) -> tuple[dict, dict]:
    """One (S)GD series in Lightning; its entry says ``interrupted`` if a signal stopped it.
    ``modified_theta`` (n_grid, p): GD's modified flow at the series' exact times (flow.modified).

    ``initial``: where an interrupted series continues (a resumed run, see
    :class:`~dlnlab.lab.runner._resume.Continuation`): from its checkpoint, ``checkpoints/<name>.ckpt``.
    """
    from dlnlab.lab.record import open_recorder
    from dlnlab.lab.runner._training import chunk_size, train_series

    plan, s = ctx.plan, ctx.plan.cfg.sgd
    name, tau = series_name(lr), time_per_step(lr, s.momentum)
    logger = ctx.logger(name)
    metrics = SeriesMetrics(
        plan.problem, ctx.dims, plan.theta0, sgd=True, flow_theta=flow_theta, modified_theta=modified_theta,
        **ctx.metric_kw,
    )  # fmt: skip
    with signals.deferred(raise_at_end=False):  # from its worker's start to the try: noted, not raised
        rec = open_recorder(
            name, metrics, ctx.n_grid, ctx.out, logger=logger, tags=ctx.tags(name, lr),
            tb_max_points=plan.cfg.log.tb_max_points, initial=initial and initial.kept, worker=True,
            preload=initial and initial.preload(), quiet_upto=initial.logged_upto if initial else -1,
        )  # fmt: skip
        ckpt = plan.cfg.checkpoint
        path = ctx.out / "checkpoints" / f"{name}.ckpt" if ckpt.enabled else None
        ctx.progress.start(name, plan.cfg.flow.t_max)
        t0 = time.perf_counter()
        entry: dict = {"lr": lr, "momentum": s.momentum, "time_per_step": tau}
        prev = signal.getsignal(signal.SIGINT)
        member_diverged: dict = {}
    try:
        outcome = train_series(
            plan.device_problem, ctx.dims, plan.theta0, lr, plan.cfg.log.dt, ctx.n_grid, rec,
            batch_size=s.batch_size, sampling=s.sampling.name, momentum=s.momentum,
            seed=plan.seeds.sgd_seeds if plan.seeds.members else plan.seeds.sgd,
            blowup_norm=_blowup_norm(plan), progress=ctx.progress,
            chunk=chunk_size(plan.gradient_s), logger=logger, callbacks=ctx.callbacks, name=name,
            checkpoint=path, checkpoint_every_s=ckpt.every_s, resume=initial is not None, device=plan.device,
            reopened=(initial.position, initial.reopen) if initial else None,
        )  # fmt: skip
        entry.update(status=outcome.status, message=outcome.message, steps=outcome.steps)
        member_diverged = outcome.member_diverged
    except KeyboardInterrupt:
        entry.update(status=Status.INTERRUPTED, message="interrupted", steps=None)
    except Exception as err:  # noqa: BLE001 - one failing series must not end the run
        why = str(err) if isinstance(err, CallbackFailed) else f"{type(err).__name__}: {err}"
        entry.update(status=Status.ERROR, message=why, steps=None)
        warnings.warn(f"{name}: {entry['message']}", SeriesWarning, stacklevel=2)
    finally:
        signal.signal(signal.SIGINT, prev)  # Lightning leaves SIGINT ignored after an interrupt
    with signals.deferred(raise_at_end=False):  # a signal from here on only stops the next stage
        if signals.received() is not None and entry["status"] == Status.OK:
            entry.update(status=Status.INTERRUPTED, message="interrupted")
        try:
            arrays = close_recorder(rec, logger)
        except Exception as err:  # noqa: BLE001 - the recorder's failure is this series' failure only
            arrays = {}
            entry.update(status=Status.ERROR, message=f"recorder: {err}")
            warnings.warn(f"{name}: {entry['message']}", SeriesWarning, stacklevel=2)
        levels = plan.problem.plateau_levels(ctx.layout.r_max)
        if plan.seeds.members and arrays:
            finals = flow_final if isinstance(flow_final, list) else [flow_final] * len(plan.seeds.members)
            finish_sgd_members(
                entry, arrays, tau, levels, plan.gd_threshold, finals, member_diverged, plan.seeds.members
            )
        else:
            finish_sgd_entry(entry, arrays, tau, levels, plan.gd_threshold, flow_final)
        entry["wall_time_s"] = time.perf_counter() - t0
    if entry["status"] in (Status.DIVERGED, Status.UNSTABLE):
        warnings.warn(f"{name}: {entry['status']}: {entry['message']}", SeriesWarning, stacklevel=2)
    ctx.progress.done(f"{entry['status']}: {entry.get('steps')} steps, {entry['wall_time_s']:.2f} s")
    return entry, arrays
