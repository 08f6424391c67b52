"""The lab's main job as one plain function: ``run(cfg)`` checks, runs every series, writes the run dir.

config -> :func:`dlnlab.lab.prepare.prepare` (every refusal, before anything is written) -> the flow
-> one (S)GD series per learning rate -> saddle analysis -> hparams and figures. ``summary.json`` is
written at the start and after every stage, atomically, so a failure or a signal at any moment
leaves every finished file readable and a summary that says where the run stopped.
``scripts/train.py`` is a thin ``@hydra.main`` around :func:`run`; tests call :func:`run` directly.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlnlab._util import warn
from dlnlab.lab import signals
from dlnlab.lab.errors import ConfigError, ExitCode
from dlnlab.lab.prepare import Plan, prepare
from dlnlab.lab.rundir import check_run_dir, save_npz, write_json
from dlnlab.lab.schema import to_plain
from dlnlab.lab.series import Progress, SeriesContext, run_flow, run_sgd, series_name
from dlnlab.lab.summary import FAILED, Status, convergence_order, format_table, versions

__all__ = ["run", "RunResult", "series_name"]


class RunResult(dict):
    """The summary dict (summary.json) plus ``exit_code`` and ``run_dir``."""

    @property
    def exit_code(self) -> int:
        return self["exit_code"]

    @property
    def run_dir(self) -> Path:
        return Path(self["run_dir"])


def _output_dir(output_dir) -> Path:
    if output_dir is not None:
        return Path(output_dir)
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception as err:  # noqa: BLE001 - Hydra not running
        raise ConfigError("run(cfg): pass output_dir when not running under Hydra") from err


def run(cfg: Any, output_dir: str | Path | None = None) -> RunResult:
    """Run the flow and one (S)GD series per learning rate; write the run directory; return the summary.

    ``cfg``: a Hydra DictConfig, a plain nested dict or a :class:`~dlnlab.lab.schema.TrainConfig`.
    ``output_dir`` defaults to Hydra's output directory. Every bad value raises :class:`ConfigError`
    before anything is written. SIGINT and SIGTERM end the run with what is recorded written
    (exit code 130 or 143 in the result).
    """
    plan = prepare(cfg)
    out = _output_dir(output_dir)
    check_run_dir(out)
    main = threading.current_thread() is threading.main_thread()
    if main:
        signals.reset()
        signals.install()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the small-matrix hot loops: one thread (restored for the caller)
    try:
        return _execute(plan, out)
    finally:
        torch.set_num_threads(threads)
        if main:
            signals.uninstall()


@dataclass
class _State:
    plan: Plan
    out: Path
    n_grid: int = 0
    series: dict[str, dict] = field(default_factory=dict)
    arrays: dict[str, dict] = field(default_factory=dict)
    stage: str = "starting"
    interrupted: bool = False
    t_start: float = field(default_factory=time.perf_counter)
    ctx: SeriesContext | None = None

    def summary(self) -> dict:
        plan, cfg = self.plan, self.plan.cfg
        usable = [
            e
            for e in self.series.values()
            if e["lr"] is not None and e["status"] in (Status.OK, Status.UNSTABLE)
        ]
        order = convergence_order(
            [e["lr"] for e in usable], [e["max_dist_to_flow"] for e in usable], cfg.sgd.order_fit
        )
        if self.interrupted:
            code = signals.exit_code(ExitCode.SIGINT)
        elif any(e["status"] in FAILED for e in self.series.values()):
            code = ExitCode.FAILED
        else:
            code = ExitCode.OK
        sig = signals.received()
        return {
            "series": self.series,
            "not_run": [series_name(lr) for lr in plan.lrs if series_name(lr) not in self.series],
            "stage": self.stage,
            "interrupted": None if not self.interrupted else (signal.Signals(sig).name if sig else "SIGINT"),
            "critical_values": plan.problem.plateau_levels(min(cfg.model.dims)).tolist(),
            "modes": plan.problem.modes.tolist(),
            "L_min": plan.problem.L_min,
            "convergence_order": order["order"],
            "convergence_order_detail": order,
            "gd_stability_threshold": plan.gd_threshold,
            "seeds": vars(plan.seeds),
            "versions": versions(),
            "config": to_plain(cfg),
            "grid": {"dt": cfg.log.dt, "n_grid": self.n_grid, "t_max": cfg.flow.t_max},
            "estimates": {
                "peak_memory_bytes": plan.estimate.peak_memory,
                "series_file_bytes": plan.estimate.series_file,
            },
            "wall_time_s": time.perf_counter() - self.t_start,
            "exit_code": int(code),
            "run_dir": str(self.out),
        }

    def write_summary(self) -> dict:
        """summary.json, atomically; a signal during the write is noted and the file written again."""
        for _ in range(2):
            try:
                summary = self.summary()
                write_json(self.out / "summary.json", summary)
                return summary
            except KeyboardInterrupt:
                self.interrupted = True
        return summary


def _execute(plan: Plan, out: Path) -> RunResult:
    state = _State(plan, out)
    try:
        _run_all(state)
    except KeyboardInterrupt:
        state.interrupted = True
    summary = state.write_summary()
    table = format_table(summary)
    print(table, flush=True)
    if state.ctx is not None:
        try:
            from dlnlab.lab.report import log_run

            with signals.deferred(raise_at_end=False):
                log_run(state.ctx, summary, table)
        except Exception as err:  # noqa: BLE001 - the logger must not lose the run
            warn(f"logging the run's results failed: {type(err).__name__}: {err}")
    return RunResult(summary)


def _run_all(state: _State) -> None:
    from dlnlab.flow import time_grid
    from dlnlab.network import adjacency_from_weights

    plan, cfg, out = state.plan, state.plan.cfg, state.out
    for note in plan.notes:
        warn(note)
    problem = plan.problem
    save_npz(
        out / "problem.npz",
        dims=np.asarray(cfg.model.dims, dtype=np.int64),
        X=problem.X.numpy(),
        Y=problem.Y.numpy(),
        A0=adjacency_from_weights(plan.weights0).numpy(),
        modes=problem.modes.numpy(),
        critical_values=problem.plateau_levels(min(cfg.model.dims)).numpy(),
        mode_u=problem.mode_u.numpy(),
        mode_v=problem.mode_v.numpy(),
    )
    grid = time_grid(cfg.flow.t_max, dt=cfg.log.dt)  # t_m = m dt, m = 0..M
    state.n_grid = len(grid)
    state.write_summary()
    import dlnlab.lab.training  # noqa: F401 - Lightning's import (~3 s) now, not in the middle of the run
    from dlnlab.lab.budget import time_per_step
    from dlnlab.lab.training import series_grid

    # Each series is compared with the flow at its own exact times k tau: the flow solver evaluates
    # the union of all of them (dense output), never an interpolation of logged points.
    exact = {}
    for lr in plan.lrs:
        tau = time_per_step(lr, cfg.sgd.momentum)
        ms, ks = series_grid(state.n_grid, cfg.log.dt, tau)
        exact[lr] = (torch.tensor(ms), torch.tensor(ks, dtype=torch.float64) * tau)
    all_t = torch.unique(torch.cat([grid, *(e[1] for e in exact.values())]))
    n_analysis = cfg.log.analysis_points
    ctx = SeriesContext(
        plan=plan,
        out=out,
        n_grid=state.n_grid,
        progress=Progress(cfg.log.progress.name),
        metric_kw=dict(
            analysis_every=max(1, -(-state.n_grid // n_analysis)) if n_analysis else 0,
            sv_A_top=cfg.log.sv_A_top,
            hessian_dense_max=cfg.log.hessian_dense_max,
            save_theta=cfg.log.save_theta,
        ),
        callbacks=plan.callbacks(),
    )
    state.ctx = ctx
    state.stage = "flow"
    state.write_summary()  # each stage is announced in the summary before it starts
    entry, arrays, flow_at = run_flow(ctx, all_t, grid)
    state.series["flow"], state.arrays["flow"] = entry, arrays
    state.interrupted |= entry["status"] == Status.INTERRUPTED or signals.received() is not None
    flow_final = entry["final_loss"] if entry["status"] == Status.OK else None
    for lr in plan.lrs:
        if state.interrupted:
            break
        state.stage = series_name(lr)
        state.write_summary()
        ms, times = exact[lr]
        flow_theta = torch.full((state.n_grid, flow_at.shape[1]), float("nan"), dtype=torch.float64)
        flow_theta[ms] = flow_at[torch.searchsorted(all_t, times)]
        entry, arrays = run_sgd(ctx, lr, flow_theta, flow_final)
        state.series[series_name(lr)], state.arrays[series_name(lr)] = entry, arrays
        state.interrupted |= entry["status"] == Status.INTERRUPTED or signals.received() is not None
    state.write_summary()
    if not state.interrupted:
        _analyse(state, ctx)
    state.interrupted |= signals.received() is not None


def _analyse(state: _State, ctx: SeriesContext) -> None:
    """Saddle analysis, then figures: a failure here is reported, never loses the run."""
    from dlnlab.lab.report import log_saddles, make_figures
    from dlnlab.saddles import analyze_run_saddles

    cfg = state.plan.cfg
    state.stage = "saddle analysis"
    state.write_summary()
    try:
        ctx.progress.note("saddle analysis: plateaus and their saddles ...")
        logs = analyze_run_saddles(
            state.plan.problem, tuple(cfg.model.dims), state.arrays, state.series,
            hessian_dense_max=cfg.log.hessian_dense_max,
        )  # fmt: skip
        log_saddles(ctx, logs)
    except Exception as err:  # noqa: BLE001 - analysis must not lose the run
        warn(f"saddle analysis failed: {type(err).__name__}: {err}")
    state.stage = "figures"
    state.write_summary()
    try:
        if cfg.log.figures:
            ctx.progress.note("figures ...")
            make_figures(ctx)
    except Exception as err:  # noqa: BLE001 - figures must not lose the run
        warn(f"figures failed: {type(err).__name__}: {err}")
    state.stage = "done"
