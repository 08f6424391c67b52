"""What every series of a run shares: its context (plan, directory, metrics options, loggers, progress
bar) and how a recorder is closed (the run's times: :mod:`dlnlab.lab.runner._times`).

The context is made once per run by the driver, which opens every TensorBoard run in it before the
first series, with the order TensorBoard colours them in; the series only read it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from dlnlab.errors import SeriesWarning
from dlnlab.lab.config import Plan
from dlnlab.lab.record import (
    RunCharts,
    TagPlan,
    log_layout,
    make_logger,
    order_runs,
    step_scale,
    tensorboard_layout,
)
from dlnlab.lab.runner._progress import Progress
from dlnlab.network import Layout
from dlnlab.rundir import series_name
from dlnlab.status import Status

__all__ = ["Progress", "SeriesContext", "close_recorder"]


@dataclass
class SeriesContext:
    """What the series of a run read: the plan, the run directory, the grid's size, the metrics options,
    the user's callbacks and the loggers (one per TensorBoard run, ``runs``)."""

    plan: Plan
    out: Path
    n_grid: int
    progress: Progress
    # SeriesMetrics options: analysis_every, sv_A_top, hessian_dense_max, top_eigs, save_theta, ...
    metric_kw: dict
    callbacks: list = field(default_factory=list)  # the user's Lightning callbacks (config ``callbacks``)
    loggers: dict = field(default_factory=dict)  # series name -> its Lightning logger (or None)
    logger_errors: dict = field(default_factory=dict)  # series name -> why its logger could not be made
    runs: tuple[str, ...] = ()  # the series with a TensorBoard run of their own, in the order they are opened
    flow_ahead: object = None  # the flow's solve started before Lightning's import (runner._ahead.FlowAhead)
    flow_workers: int = 1  # chunks of an ensemble's flow solved at once (dlnlab.lab.runner._flow_chunks)

    @classmethod
    def for_run(
        cls,
        plan: Plan,
        out: Path,
        n_grid: int,
        callbacks: list | None = None,
        runs: tuple[str, ...] | None = None,
        flow_ahead=None,
        progress: Progress | None = None,
    ) -> SeriesContext:
        """The context of a run's series: its metrics options and the user's callbacks (made here
        unless given); ``runs`` (default: the flow and the (S)GD series) from the kinds' ``tensorboard_run``."""
        log = plan.cfg.log
        return cls(
            plan=plan,
            out=out,
            n_grid=n_grid,
            progress=Progress(log.progress.name) if progress is None else progress,
            metric_kw=dict(
                analysis_every=max(1, -(-n_grid // points)) if (points := plan.analysis.points) else 0,
                sv_A_top=log.sv_A_top,
                hessian_dense_max=log.hessian_dense_max,
                top_eigs=log.top_eigs,
                save_theta=log.save_theta,
                theta_every=plan.theta_every(n_grid),
                last_m=n_grid - 1,
            ),
            callbacks=plan.callbacks() if callbacks is None else callbacks,
            runs=("flow", *(series_name(lr) for lr in plan.lrs)) if runs is None else tuple(runs),
            flow_ahead=flow_ahead,
        )

    def open_loggers(self) -> None:
        """Every TensorBoard run, now, and the order TensorBoard colours them in, written into their
        files (:func:`~dlnlab.lab.record.order_runs`): the flow, the largest learning rate, the figures'
        run, the next learning rates, as in the figures (``dlnlab.plots``' palette), however and when
        the series are later run."""
        order_runs(self.out, self.plan.cfg.logger, self.runs)
        for name in self.series_names():
            self.logger(name)

    def logger(self, name: str):
        """The series' logger, made once (the custom-scalars layout goes in with it). Only the series in
        ``runs`` have a TensorBoard run (the flow and the (S)GD series): a modified flow or an SME ensemble
        is compared with its (S)GD series in that series' run (one colour per learning rate,
        docs/tensorboard.md). A logger
        that cannot be made is that series' failure, not the run's: the series runs unlogged (None) and
        :meth:`logger_failures` marks it."""
        if name not in self.runs:
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
            top_eigs=int(self.metric_kw.get("top_eigs") or 1),
            modified=cfg.flow.modified,
            central=cfg.flow.central or cfg.sgd.edge,
            limit=shared_flow and bool(self.plan.lrs),
            sme=cfg.sgd.sme,
            spread=tuple(n for n in self.series_names() if ensemble and not (n == "flow" and shared_flow)),
        )

    def series_names(self) -> list[str]:
        """The runs TensorBoard shows: the flow and one per learning rate."""
        return list(self.runs)

    def tags(self, name: str, lr: float | None = None) -> TagPlan:
        """What series ``name`` logs: the flow also draws the plateau levels L*_r and the data's modes m_k
        (the mode strengths' targets) as lines."""
        cfg, plan = self.plan.cfg, self.plan
        levels, modes = (), ()
        if name == "flow":
            levels = tuple(plan.problem.plateau_levels(min(cfg.model.dims)).tolist())
            modes = tuple(plan.problem.modes.tolist())
        members = len(plan.theta0) if plan.seeds.members else None
        if name == "flow" and cfg.ensemble.vary.name == "sgd":
            members = None  # one flow, shared by the members
        return TagPlan(
            series=name, step_per_grid=step_scale(cfg.log.dt), lr=lr, levels=levels, modes=modes,
            curvature=bool(self.metric_kw.get("analysis_every")), members=members,
        )  # fmt: skip

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(self.plan.cfg.model.dims)

    @property
    def layout(self) -> Layout:
        return Layout(self.dims)


def close_recorder(rec, logger, lines: bool = True) -> dict:
    """Close a series' recorder (wait for its worker, write its npz); log the rows a worker had to leave
    to the parent (a logger that only one process may write to). ``lines``: the series ended (its extreme
    lines are drawn, see :meth:`~dlnlab.lab.record.SeriesRecorder.close`)."""
    arrays = rec.close(lines=lines)
    rows = getattr(rec, "deferred_rows", None) or []
    for step, row in rows:
        logger.log_metrics(row, step=step)
    if rows and logger is not None:
        logger.save()
    return arrays
