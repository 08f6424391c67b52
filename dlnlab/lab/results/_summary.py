"""What a run reports: series statuses, the convergence order, the unstable flag, the console table.

A series entry is the dict written under ``summary.json``'s ``series.<name>`` (its keys are the
README's contract); its ``status`` is a :class:`Status`, a str enum that JSON writes as its value.
"""

from __future__ import annotations

import copy
import functools
import math
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlnlab._util import fmt
from dlnlab.lab.results._summary_record import RunStatus, Summary
from dlnlab.lab.results._unstable import flag_unstable
from dlnlab.rundir import series_name
from dlnlab.status import FAILED, USABLE, Status

__all__ = [
    "RunStatus",
    "convergence_order",
    "order_series",
    "fit_order",
    "finish_sgd_entry",
    "flow_loss_rise",
    "versions",
    "fmt",
]


def _process() -> dict:
    """Who runs the run: a reader that finds status ``running`` while no such process lives on that host
    (or the run directory's lock is free) knows it was killed."""
    import os
    import socket
    from datetime import datetime, timezone

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": started}


class RunResult(Mapping):
    """What :func:`~dlnlab.lab.runner.run` and ``resume`` return: the typed summary (``summary``, a
    :class:`~dlnlab.lab.results._records.Summary`), ``exit_code`` and ``run_dir``. Read as a mapping it
    is summary.json's dict (``result["series"]["flow"]["status"]``), which scripts and tests use."""

    def __init__(self, summary: Summary) -> None:
        self.summary = summary
        self._json = summary.to_dict()

    def __getitem__(self, name: str) -> Any:
        return self._json[name]

    def __iter__(self):
        return iter(self._json)

    def __len__(self) -> int:
        return len(self._json)

    def __repr__(self) -> str:
        return f"RunResult(run_dir={self.summary.run_dir!r}, status={self.summary.status}, exit_code={self.exit_code})"

    @property
    def exit_code(self) -> int:
        return self.summary.exit_code

    @property
    def run_dir(self) -> Path:
        return Path(self.summary.run_dir)


@dataclass
class RunState:
    """A run as it goes: its series' entries and arrays, its stage; :meth:`summary` is summary.json."""

    plan: Any  # dlnlab.lab.config.Plan
    out: Path
    n_grid: int = 0
    series: dict[str, dict] = field(default_factory=dict)
    arrays: dict[str, dict] = field(default_factory=dict)
    stage: str = "starting"
    interrupted: bool = False
    resumed: list[dict] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)  # series whose worker process died before reporting
    earlier: dict[str, dict] = field(default_factory=dict)  # a resume: the entries the run had recorded
    limit: dict | None = None  # an ensemble with a shared init: SGD's strong and weak errors (lab/limit.py)
    t_start: float = field(default_factory=time.perf_counter)
    ctx: Any = None  # dlnlab.lab.runner._context.SeriesContext, once the series start
    status: RunStatus = RunStatus.RUNNING
    error: dict | None = None  # a crash: its type, message, stage and traceback
    out_of_room: bool = False  # the crash was a write the disk refused (exit code 4, not 1)
    logging_error: str | None = None  # the logger failed to take the run's results (hparams, text)
    figures_error: str | None = None  # drawing the figures failed (not for want of room: that stops the run)
    process: dict = field(default_factory=_process)

    @functools.cached_property
    def plain_config(self) -> dict:
        """The config as plain JSON types, converted once: a run's config never changes, and its
        conversion (OmegaConf.structured) took 0.07 s of every summary write, 0.8 s of a tiny run's 2.1 s
        (11 writes; measured). Each summary gets its own copy (problem.npz records it too)."""
        from dlnlab.lab.config import to_plain

        return to_plain(self.plan.cfg)

    def enter(self, stage: str) -> None:
        """Start a stage: stop here if a signal came (also one whose exception Python dropped, see
        :mod:`dlnlab.rundir.signals`); else record the stage in summary.json. The stage the run is
        in already: nothing (the flow solved ahead of Lightning's import is entered when it starts)."""
        from dlnlab.rundir import signals

        if stage == self.stage:
            return
        signals.check()
        self.stage = stage
        self.write_summary()

    def end(self) -> None:
        """The run has ended (finished or interrupted): the status the summary will say."""
        self.status = RunStatus.INTERRUPTED if self.interrupted else RunStatus.FINISHED

    def crashed(self, err: BaseException) -> None:
        """Record an unexpected error outside any series (the summary says what and where)."""
        import traceback

        from dlnlab.rundir import out_of_room

        self.status = RunStatus.CRASHED
        self.out_of_room = out_of_room(err)
        self.error = {
            "type": type(err).__name__,
            "message": str(err),
            "stage": self.stage,
            "traceback": "".join(traceback.format_exception(err)),
        }

    def exit_code(self) -> int | None:
        from dlnlab.lab.config import ExitCode
        from dlnlab.rundir import signals

        if self.status == RunStatus.RUNNING:
            return None
        if self.status == RunStatus.CRASHED:
            return int(ExitCode.WRITE_FAILED if self.out_of_room else ExitCode.CRASHED)
        if self.interrupted:
            return int(signals.exit_code(ExitCode.SIGINT))
        if any(e["status"] in FAILED for e in self.series.values()):
            return int(ExitCode.FAILED)
        return int(ExitCode.OK)

    def entries(self) -> dict[str, dict]:
        """The series' entries for summary.json: a resume's own, and the earlier run's for the series it
        has not redone yet, so that a crash, a signal or a SIGKILL during the resume loses none of them
        (the resume's summary started empty: a crash in the flow's check wrote ``series: {}``)."""
        if all(name in self.series for name in self.earlier):
            return self.series
        merged = {name: self.series.get(name, e) for name, e in self.earlier.items()}
        return merged | {name: e for name, e in self.series.items() if name not in merged}

    def summary(self) -> dict:
        """summary.json as a dict (:meth:`typed_summary`'s ``to_dict``)."""
        return self.typed_summary().to_dict()

    def typed_summary(self) -> Summary:
        """The run as it stands, typed; an entry with a key its record lacks (a kind without a record,
        an older run's kept entry) is kept whole in an open :class:`SeriesEntry`."""
        return Summary.from_dict(self._summary_dict(), strict=False)

    def _summary_dict(self) -> dict:
        from dlnlab.rundir import signals

        plan, cfg = self.plan, self.plan.cfg
        entries = self.entries()
        usable = order_series(entries)
        order = convergence_order(
            [e["lr"] for e in usable], [e["max_dist_to_flow"] for e in usable], cfg.sgd.order_fit
        )
        modified = None
        if cfg.flow.modified:
            modified = convergence_order(
                [e["lr"] for e in usable],
                [e.get("max_dist_to_modified_flow") for e in usable],
                cfg.sgd.order_fit,
            )
        sig = signals.received()
        return {
            "series": entries,
            "not_run": [series_name(lr) for lr in plan.lrs if series_name(lr) not in entries],
            "killed": list(self.killed),
            "stage": self.stage,
            "interrupted": None if not self.interrupted else (signal.Signals(sig).name if sig else "SIGINT"),
            "resumed": self.resumed,
            "critical_values": plan.problem.plateau_levels(min(cfg.model.dims)).tolist(),
            "modes": plan.problem.modes.tolist(),
            "L_min": plan.problem.L_min,
            "convergence_order": order["order"],
            "convergence_order_detail": order,
            "convergence_order_modified": None if modified is None else modified["order"],
            "convergence_order_modified_detail": modified,
            "sgd_limit": None
            if self.limit is None
            else {k: v for k, v in self.limit.items() if k != "curves"},
            "gd_stability_threshold": plan.gd_threshold,
            "seeds": vars(plan.seeds),
            "versions": versions(),
            "config": copy.deepcopy(self.plain_config),
            "grid": {"dt": cfg.log.dt, "n_grid": self.n_grid, "t_max": cfg.flow.t_max},
            "estimates": {
                "peak_memory_bytes": plan.estimate.peak_memory,
                "series_file_bytes": plan.estimate.series_file,
            },
            "flow_choice": plan.flow_choice.to_dict() if plan.flow_choice else None,
            "analysis": plan.analysis.to_dict() if plan.analysis else None,
            "theta_every": plan.theta_every(self.n_grid) if self.n_grid else None,
            "wall_time_s": time.perf_counter() - self.t_start,
            "status": self.status,
            "exit_code": self.exit_code(),
            "error": self.error,
            "logging_error": self.logging_error,
            "figures_error": self.figures_error,
            "process": self.process,
            "run_dir": str(self.out),
        }

    def write_summary(self) -> dict:
        """summary.json, atomically; a signal during the write is noted and the file written again."""
        from dlnlab.rundir import write_json

        for _ in range(2):
            try:
                summary = self.summary()
                write_json(self.out / "summary.json", summary)
                return summary
            except KeyboardInterrupt:
                self.interrupted = True
        return summary


def order_series(series: Mapping[str, dict]) -> list[dict]:
    """The (S)GD entries whose distances enter the convergence orders: ok or unstable (a diverged series,
    an ensemble's included, is left out: its distance is its blow-up)."""
    return [e for e in series.values() if e["lr"] is not None and e["status"] in USABLE]


def fit_order(lrs, values, n_fit: int, what: str = "a value") -> tuple[float | None, list[float], str]:
    """The one rule of every order in eta (GD's convergence order, SGD's strong and weak orders): the slope
    of log value against log lr over the ``n_fit`` smallest learning rates whose value is finite and
    positive. With fewer such rates there is no order: (None, the rates that have a value, why); else
    (slope, the rates fitted, "")."""
    pts = sorted((lr, v) for lr, v in zip(lrs, values) if v is not None and math.isfinite(v) and v > 0)
    if len(pts) < n_fit:
        return None, [p[0] for p in pts], f"needs at least {n_fit} learning rates with {what}, got {len(pts)}"
    use = pts[:n_fit]
    slope = float(np.polyfit(np.log([p[0] for p in use]), np.log([p[1] for p in use]), 1)[0])
    return slope, [p[0] for p in use], ""


def convergence_order(lrs: list[float], dists: list[float], n_fit: int = 3) -> dict:
    """Slope of log max_dist_to_flow against log lr over the ``n_fit`` smallest usable learning rates
    with a distance (:func:`fit_order`).

    Returns {"order", "lrs_used", "pairwise": [{"lrs": [a, b], "order": ...}], "message"}.
    """
    pts = sorted((lr, d) for lr, d in zip(lrs, dists) if d is not None and math.isfinite(d) and d > 0)
    pairwise = [
        {"lrs": [a, b], "order": math.log(db / da) / math.log(b / a)}
        for (a, da), (b, db) in zip(pts[:-1], pts[1:])
    ]
    order, used, message = fit_order(lrs, dists, n_fit, "a distance")  # lrs: the non-diverged ones
    return {"order": order, "lrs_used": used, "pairwise": pairwise, "message": message}


def flow_loss_rise(loss: np.ndarray, t: np.ndarray, rel_tol: float) -> str | None:
    """The exact flow never raises the loss (dL/dt = -||grad L||^2): a rise above ``rel_tol`` L(0)
    means the solver is wrong (e.g. a fixed step above the stability bound). Returns the message."""
    finite = np.isfinite(loss)
    if not finite.all():
        k = int(np.argmin(finite))
        return f"the flow's loss is not finite from t = {t[k]:.6g} on"
    if len(loss) < 2:
        return None
    best = np.minimum.accumulate(loss)
    rise = loss - best
    k = int(np.argmax(rise))
    if rise[k] > rel_tol * max(abs(float(loss[0])), np.finfo(float).tiny):
        j = int(np.argmax(loss[: k + 1] <= best[k]))
        return (
            f"the flow's loss rises from {best[k]:.6g} (t = {t[j]:.6g}) to {loss[k]:.6g} (t = {t[k]:.6g}); "
            "the exact flow never raises the loss: the solver is inaccurate (lower flow.step_size or "
            "flow.rtol, or use an adaptive method)"
        )
    return None


def finish_sgd_entry(
    entry: dict, arrays: dict, tau: float, levels, threshold, flow_final, threshold_name: str = "2 / S_bal"
) -> None:
    """Fill the entry's numbers from the recorded arrays; flag a stalled series above ``threshold``, the
    run's stability threshold at the entry's momentum (``Plan.stability_threshold``)."""
    t = arrays.get("t", np.zeros(0))
    loss = arrays.get("loss", np.zeros(0))
    dist = arrays.get("dist_to_flow", np.zeros(0))
    steps = arrays.get("step", np.zeros(0, dtype=np.int64))
    known = np.flatnonzero(np.isfinite(dist))  # where the flow is known: up to its last point
    entry.update(
        diverged=entry["status"] == Status.DIVERGED,
        t_stop=float(t[-1]) if len(t) else 0.0,
        step_stop=int(steps[-1]) if len(steps) else None,
        final_loss=float(loss[-1]) if len(loss) and np.isfinite(loss[-1]) else None,
        max_dist_to_flow=_largest(dist),
        dist_to_flow_until=float(t[known[-1]]) if len(known) else None,
        plateaus=[],
    )
    if "dist_to_modified" in arrays:  # flow.modified: GD's distance to its modified flow
        entry["max_dist_to_modified_flow"] = _largest(arrays["dist_to_modified"])
    if entry["status"] == Status.DIVERGED and entry.get("steps") is not None:
        entry["step_stop"] = entry["steps"]
        entry["t_stop"] = entry["steps"] * tau
    if entry["status"] == Status.OK and len(loss):
        flag_unstable(entry, arrays, entry["lr"], levels, threshold, flow_final, threshold_name)


def _largest(dist: np.ndarray) -> float | None:
    """The largest finite distance, or None with fewer than two: both series start at theta_0, so a flow
    that failed before its second grid point leaves the distance at t = 0 alone, 0, which would read as
    SGD on the flow."""
    finite = dist[np.isfinite(dist)]
    return float(finite.max()) if len(finite) >= 2 else None


def versions() -> dict:
    """The versions of Python and the packages a run's numbers depend on (a copy each call)."""
    return dict(_versions())


@functools.cache
def _versions() -> dict:
    """Looked up once per process: importlib.metadata scans the installed packages, 0.035 s a call, and
    the summary is written about 11 times in a tiny run (measured)."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ("dlnlab", "torch", "torchdiffeq", "lightning", "hydra-core", "tensorboard", "scipy", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out
