"""The lab's main job as one plain function: ``run(cfg)`` builds everything and writes the run directory.

Flow of data (design.md): config -> problem + initial A -> (flow, each SGD series) -> recorder ->
TensorBoard + files -> analysis and figures. ``scripts/train.py`` is a thin ``@hydra.main`` around
:func:`run`; tests call :func:`run` directly. Lightning is imported only after the config is valid.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlnlab._util import jsonable, warn
from dlnlab.lab.config import ConfigError, RunConfig, validate

__all__ = ["run", "RunResult", "EXIT_OK", "EXIT_CONFIG", "EXIT_FAILED", "EXIT_INTERRUPTED", "series_name"]

EXIT_OK = 0  # every series finished, or only diverged/unstable ones stopped (a scientific outcome)
EXIT_CONFIG = 2  # bad configuration value, nothing was run
EXIT_FAILED = 3  # a series failed for a technical reason (flow solver failure, error in a series)
EXIT_INTERRUPTED = 130  # interrupted by the user (Ctrl+C); everything recorded so far is written


def series_name(lr: float | None) -> str:
    """``flow`` or ``sgd_lr_<repr(lr)>`` (design.md)."""
    return "flow" if lr is None else f"sgd_lr_{float(lr)!r}"


class Progress:
    """One status line per series on a terminal (stderr); silent when not attached to one."""

    def __init__(self, mode: str = "auto") -> None:
        self.enabled = mode == "always" or (mode == "auto" and sys.stderr.isatty())
        self._last = 0.0
        self.label, self.t_end = "", 1.0

    def start(self, label: str, t_end: float) -> None:
        self.label, self.t_end, self._last = label, t_end, 0.0
        self(0.0, force=True)

    def __call__(self, t: float, t_end: float | None = None, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.25:
            return
        self._last = now
        frac = min(1.0, t / (t_end or self.t_end))
        sys.stderr.write(f"\r  {self.label:<28} t = {t:9.3f} / {t_end or self.t_end:g}  [{frac:6.1%}]")
        sys.stderr.flush()

    def note(self, msg: str) -> None:
        if self.enabled:
            sys.stderr.write(f"  {msg}\n")
            sys.stderr.flush()

    def done(self, msg: str) -> None:
        if self.enabled:
            sys.stderr.write(f"\r  {self.label:<28} {msg:<50}\n")
            sys.stderr.flush()


class RunResult(dict):
    """The summary dict (summary.json) plus ``exit_code`` and ``run_dir``."""

    @property
    def exit_code(self) -> int:
        return self["exit_code"]

    @property
    def run_dir(self) -> Path:
        return Path(self["run_dir"])


def _check_run_dir(out: Path) -> None:
    """A run never writes into a non-empty directory it did not create (Hydra's own files are fine)."""
    if out.exists():
        foreign = [p.name for p in out.iterdir() if p.name not in (".hydra", "train.log", "run.log")]
        if foreign:
            raise ConfigError(
                f"output directory {out} is not empty ({', '.join(sorted(foreign)[:5])}); "
                "choose a new hydra.run.dir"
            )
    out.mkdir(parents=True, exist_ok=True)


def _load_problem(rc: RunConfig):
    from dlnlab.problem import RegressionProblem

    d = rc.data
    if d.kind == "teacher":
        return RegressionProblem.teacher(
            d.singular_values,
            rc.dims[0],
            rc.dims[-1],
            d.n_samples,
            whiten=d.whiten,
            noise=d.noise,
            seed=d.seed,
        )
    with np.load(d.path) as f:
        if "X" not in f or "Y" not in f:
            raise ConfigError(f"data.path: {d.path} must hold arrays X (d_x x N) and Y (d_y x N)")
        x, y = torch.as_tensor(f["X"], dtype=torch.float64), torch.as_tensor(f["Y"], dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != rc.dims[0] or y.shape[0] != rc.dims[-1]:
        raise ConfigError(
            f"data.path: X {tuple(x.shape)} and Y {tuple(y.shape)} do not fit model.dims={list(rc.dims)} "
            f"(need X of shape ({rc.dims[0]}, N) and Y of shape ({rc.dims[-1]}, N))"
        )
    return RegressionProblem.from_data(x, y)


def convergence_order(lrs: list[float], dists: list[float], n_fit: int = 3) -> dict:
    """Slope of log max_dist_to_flow against log lr over the ``n_fit`` smallest usable learning rates.

    Returns {"order", "lrs_used", "pairwise": [{"lrs": [a, b], "order": ...}], "message"}.
    """
    pts = sorted((lr, d) for lr, d in zip(lrs, dists) if d is not None and math.isfinite(d) and d > 0)
    pairwise = [
        {"lrs": [a, b], "order": math.log(db / da) / math.log(b / a)}
        for (a, da), (b, db) in zip(pts[:-1], pts[1:])
    ]
    if len(pts) < n_fit:
        return {
            "order": None,
            "lrs_used": [p[0] for p in pts],
            "pairwise": pairwise,
            "message": f"needs at least {n_fit} non-diverged learning rates with a distance, got {len(pts)}",
        }
    use = pts[:n_fit]
    x = np.log([p[0] for p in use])
    y = np.log([p[1] for p in use])
    slope = float(np.polyfit(x, y, 1)[0])
    return {"order": slope, "lrs_used": [p[0] for p in use], "pairwise": pairwise, "message": ""}


def run(cfg: Any, output_dir: str | Path | None = None) -> RunResult:
    """Run the flow and one (S)GD series per learning rate; write the run directory; return the summary.

    ``cfg`` is the composed Hydra config (or a nested dict with the same keys). ``output_dir``
    defaults to Hydra's runtime output directory. Raises :class:`ConfigError` on bad values before
    any work starts.
    """
    rc = validate(cfg)
    if output_dir is None:
        try:
            from hydra.core.hydra_config import HydraConfig

            output_dir = HydraConfig.get().runtime.output_dir
        except Exception as err:  # noqa: BLE001 - Hydra not running
            raise ConfigError("run(cfg): pass output_dir when not running under Hydra") from err
    problem, weights0 = _build(rc)  # data and A0: any bad value is still a ConfigError, nothing written
    out = Path(output_dir)
    _check_run_dir(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the small-matrix hot loops: one thread (restored for the caller)
    try:
        return _execute(rc, out, problem, weights0)
    finally:
        torch.set_num_threads(threads)


def _build(rc: RunConfig):
    """The problem and the initial weights, or a ConfigError naming the key."""
    from dlnlab.init import initial_weights

    try:
        problem = _load_problem(rc)
    except ValueError as err:
        raise ConfigError(str(err) if isinstance(err, ConfigError) else f"data: {err}") from err
    if problem.d_x != rc.dims[0] or problem.d_y != rc.dims[-1]:
        raise ConfigError(
            f"model.dims {list(rc.dims)} do not fit the data (d_x={problem.d_x}, d_y={problem.d_y})"
        )
    ini = rc.init
    try:
        weights0 = initial_weights(ini.kind, rc.dims, problem, scale=ini.scale, u0=ini.u0, seed=ini.seed)
    except ValueError as err:
        msg = str(err)
        raise ConfigError(msg if msg.startswith("init.") else f"init: {msg}") from err
    return problem, weights0


def _execute(rc: RunConfig, out: Path, problem, weights0) -> RunResult:
    from dlnlab.analysis import gd_stability_threshold
    from dlnlab.flow import time_grid
    from dlnlab.lab.record import grid_steps
    from dlnlab.network import Layout, adjacency_from_weights, pack

    t_start = time.perf_counter()
    import dlnlab.lab.training  # noqa: F401 - Lightning's import (~3 s) now, not in the middle of the run

    layout = Layout(rc.dims)
    theta0 = pack(weights0)
    levels = problem.plateau_levels(layout.r_max)
    m1 = float(problem.modes[0]) if problem.n_modes else 0.0
    np.savez(
        out / "problem.npz",
        dims=np.asarray(rc.dims, dtype=np.int64),
        X=problem.X.numpy(),
        Y=problem.Y.numpy(),
        A0=adjacency_from_weights(weights0).numpy(),
        modes=problem.modes.numpy(),
        critical_values=levels.numpy(),
        mode_u=problem.mode_u.numpy(),
        mode_v=problem.mode_v.numpy(),
    )
    dt, t_max = rc.log.dt, rc.flow.t_max
    grid = time_grid(t_max, dt=dt)  # t_m = m dt, m = 0..M
    n_grid = len(grid)
    lrs = sorted(rc.sgd.lrs, reverse=True)
    # Each series is compared with the flow at its own exact times k_m * eta: the flow solver
    # evaluates the union of all of them (dense output), never an interpolation of logged points.
    exact = {
        lr: torch.tensor([k * lr for k in grid_steps(n_grid, dt, lr)], dtype=torch.float64) for lr in lrs
    }
    all_t = torch.unique(torch.cat([grid, *exact.values()]))
    analysis_every = max(1, math.ceil(n_grid / rc.log.analysis_points)) if rc.log.analysis_points else 0
    ctx = _RunContext(
        rc=rc,
        out=out,
        problem=problem,
        layout=layout,
        theta0=theta0,
        levels=levels,
        n_grid=n_grid,
        progress=Progress(rc.log.progress),
        rec_kw=dict(
            analysis_every=analysis_every,
            sv_A_top=rc.log.sv_A_top,
            hessian_dense_max=rc.log.hessian_dense_max,
            tensorboard=rc.log.tensorboard,
            save_theta=rc.log.save_theta,
        ),
    )
    series: dict[str, dict] = {}
    arrays: dict[str, dict] = {}
    flow_at, interrupted = _run_flow(ctx, all_t, grid, series, arrays)
    threshold = gd_stability_threshold(m1, layout.depth) if m1 > 0 else None
    for lr in lrs:
        if interrupted:
            break
        flow_theta = flow_at[torch.searchsorted(all_t, exact[lr])]
        interrupted = _run_sgd(ctx, lr, flow_theta, threshold, series, arrays)

    def summarize() -> dict:
        usable = [e for e in series.values() if e["lr"] is not None and e["status"] in ("ok", "unstable")]
        order = convergence_order(
            [e["lr"] for e in usable], [e["max_dist_to_flow"] for e in usable], rc.sgd.order_fit
        )
        statuses = [e["status"] for e in series.values()]
        if interrupted:
            code = EXIT_INTERRUPTED
        elif any(s in ("solver_failed", "error") for s in statuses):
            code = EXIT_FAILED
        else:
            code = EXIT_OK
        return {
            "series": series,
            "critical_values": levels.tolist(),
            "modes": problem.modes.tolist(),
            "L_min": problem.L_min,
            "convergence_order": order["order"],
            "convergence_order_detail": order,
            "gd_stability_threshold": threshold,
            "seeds": {"seed": rc.seed, "data": rc.data.seed, "init": rc.init.seed, "sgd": rc.sgd.seed},
            "versions": _versions(),
            "config": rc.raw,
            "grid": {"dt": dt, "n_grid": n_grid, "t_max": t_max, "analysis_every": analysis_every},
            "wall_time_s": time.perf_counter() - t_start,
            "exit_code": code,
            "run_dir": str(out),
        }

    # The summary is written as soon as the series are done, and again after each analysis step,
    # so that nothing already computed is lost if a later step fails or is interrupted.
    _write_summary(out, summarize())
    if not interrupted:
        try:
            ctx.progress.note("saddle analysis: plateaus and their saddles ...")
            from dlnlab.saddles import analyze_run_saddles

            analyze_run_saddles(
                out,
                problem,
                rc.dims,
                arrays,
                series,
                tensorboard=rc.log.tensorboard,
                hessian_dense_max=rc.log.hessian_dense_max,
            )
        except KeyboardInterrupt:
            interrupted = True
        except Exception as err:  # noqa: BLE001 - analysis must not lose the run
            warn(f"saddle analysis failed: {type(err).__name__}: {err}")
    summary = summarize()
    _write_summary(out, summary)
    try:
        _write_hparams(rc, out, series, summary)
        if rc.log.figures and not interrupted:
            ctx.progress.note("figures ...")
            from dlnlab.plots import make_run_figures

            make_run_figures(out, tensorboard=rc.log.tensorboard)
    except KeyboardInterrupt:
        summary = summarize() | {"exit_code": EXIT_INTERRUPTED}
        _write_summary(out, summary)
    except Exception as err:  # noqa: BLE001 - figures and hparams must not lose the run
        warn(f"figures/hparams failed: {type(err).__name__}: {err}")
    _print_table(summary)
    return RunResult(summary)


@dataclass
class _RunContext:
    rc: RunConfig
    out: Path
    problem: Any
    layout: Any
    theta0: torch.Tensor
    levels: torch.Tensor
    n_grid: int
    progress: Progress
    rec_kw: dict


def _run_flow(ctx: _RunContext, all_t, grid, series: dict, arrays: dict) -> tuple[torch.Tensor, bool]:
    """Integrate the flow at all requested times; record its grid; return (flow at all_t, interrupted)."""
    from dlnlab import flow as flowmod
    from dlnlab.lab.record import SeriesRecorder

    rc, interrupted, res = ctx.rc, False, None
    entry = {"lr": None, "method": rc.flow.method, "rtol": rc.flow.rtol, "atol": rc.flow.atol}
    ctx.progress.start("flow", all_t[-1].item())
    t0 = time.perf_counter()
    try:
        solver = flowmod.Solver(
            rc.flow.method, rc.flow.rtol, rc.flow.atol, rc.flow.step_size, rc.flow.max_nfe
        )
        res = flowmod.integrate(ctx.problem, rc.dims, ctx.theta0, all_t, solver, progress=ctx.progress)
        entry.update(status="ok", message="")
    except flowmod.FlowSolverError as err:
        res = err.result
        entry.update(status="solver_failed", message=str(err))
        warn(f"flow: {err}")
    except KeyboardInterrupt:
        interrupted = True
        entry.update(status="interrupted", message="interrupted by the user")
    except Exception as err:  # noqa: BLE001 - e.g. out of memory: recorded, the SGD series still run
        entry.update(status="solver_failed", message=f"{type(err).__name__}: {err}")
        warn(f"flow: {entry['message']}")
    flow_at = torch.full((len(all_t), ctx.layout.n_weights), float("nan"), dtype=torch.float64)
    n_flow = 0 if res is None else len(res.t)
    if n_flow:
        flow_at[:n_flow] = res.theta
    rec = SeriesRecorder("flow", ctx.problem, rc.dims, ctx.theta0, ctx.n_grid, ctx.out, **ctx.rec_kw)
    grid_idx = torch.searchsorted(all_t, grid)
    for m in range(ctx.n_grid):
        if grid_idx[m] < n_flow:
            rec.record(m, float(grid[m]), flow_at[grid_idx[m]], copy=False)
    arr = rec.close()
    t = arr.get("t", np.zeros(0))
    entry.update(
        diverged=False,
        t_stop=float(t[-1]) if len(t) else 0.0,
        step_stop=None,
        final_loss=float(arr["loss"][-1]) if len(t) else None,
        nfe=None if res is None else res.nfe,
        njev=None if res is None else res.njev,
        wall_time_s=time.perf_counter() - t0,
        max_dist_to_flow=0.0,
        plateaus=[],
    )
    series["flow"], arrays["flow"] = entry, arr
    ctx.progress.done(f"{entry['status']}: nfe {entry['nfe']}, {entry['wall_time_s']:.2f} s")
    return flow_at, interrupted


def _run_sgd(ctx: _RunContext, lr: float, flow_theta, threshold, series: dict, arrays: dict) -> bool:
    """One (S)GD series in Lightning; returns whether the user interrupted it."""
    from dlnlab.lab.record import open_recorder
    from dlnlab.lab.training import train_series

    rc, name, interrupted = ctx.rc, series_name(lr), False
    blowup = rc.sgd.blowup * (
        float(torch.linalg.vector_norm(ctx.theta0)) + _balanced_norm(ctx.problem, ctx.layout)
    )
    # The recorder works in a forked process, on the other core, while the hot loop runs here.
    rec = open_recorder(
        name,
        ctx.problem,
        rc.dims,
        ctx.theta0,
        ctx.n_grid,
        ctx.out,
        lr=lr,
        flow_theta=flow_theta,
        worker=True,
        **ctx.rec_kw,
    )
    ctx.progress.start(name, rc.flow.t_max)
    t0 = time.perf_counter()
    entry = {"lr": lr}
    prev = signal.getsignal(signal.SIGINT)
    try:
        outcome = train_series(
            ctx.problem,
            rc.dims,
            ctx.theta0,
            lr,
            rc.flow.t_max,
            rc.log.dt,
            ctx.n_grid,
            rec,
            batch_size=rc.sgd.batch_size,
            sampling=rc.sgd.sampling,
            momentum=rc.sgd.momentum,
            seed=rc.sgd.seed,
            blowup_norm=blowup,
            progress=ctx.progress,
        )
        entry.update(status=outcome.status, message=outcome.message, steps=outcome.steps)
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl+C into SystemExit(1)
        interrupted = True
        entry.update(status="interrupted", message="interrupted by the user", steps=None)
    except Exception as err:  # noqa: BLE001 - one failing series must not end the run
        entry.update(status="error", message=f"{type(err).__name__}: {err}", steps=None)
        warn(f"{name}: {entry['message']}")
    finally:
        signal.signal(signal.SIGINT, prev)  # Lightning leaves SIGINT ignored after an interrupt
    try:
        arr = rec.close()
    except Exception as err:  # noqa: BLE001 - the recorder's failure is this series' failure only
        arr = {}
        entry.update(status="error", message=f"recorder: {err}")
        warn(f"{name}: {entry['message']}")
    flow_final = series["flow"].get("final_loss") if series["flow"]["status"] == "ok" else None
    _finish_sgd_entry(entry, arr, lr, ctx.levels, threshold, flow_final, time.perf_counter() - t0)
    if entry["status"] in ("diverged", "unstable"):
        warn(f"{name}: {entry['status']}: {entry['message']}")
    series[name], arrays[name] = entry, arr
    ctx.progress.done(f"{entry['status']}: {entry.get('steps')} steps, {entry['wall_time_s']:.2f} s")
    return interrupted


def _write_summary(out: Path, summary: dict) -> None:
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(jsonable(summary), indent=2, allow_nan=False))
    tmp.replace(out / "summary.json")  # atomic: a reader never sees half a file


def _balanced_norm(problem, layout) -> float:
    """||theta|| of a balanced global minimum: sqrt(h sum_k m_k^(2/h)) over the learnable modes."""
    k = min(problem.n_modes, layout.r_max)
    return float(math.sqrt(layout.depth * sum(float(m) ** (2 / layout.depth) for m in problem.modes[:k])))


def _finish_sgd_entry(entry, arrays, lr, levels, threshold, flow_final, wall) -> None:
    t = arrays.get("t", np.zeros(0))
    loss = arrays.get("loss", np.zeros(0))
    dist = arrays.get("dist_to_flow", np.zeros(0))
    finite_d = dist[np.isfinite(dist)]
    entry.update(
        diverged=entry["status"] == "diverged",
        t_stop=float(t[-1]) if len(t) else 0.0,
        step_stop=int(arrays["step"][-1]) if len(arrays.get("step", [])) else None,
        final_loss=float(loss[-1]) if len(loss) and np.isfinite(loss[-1]) else None,
        wall_time_s=wall,
        max_dist_to_flow=float(finite_d.max()) if len(finite_d) else None,
        plateaus=[],
    )
    if entry["status"] == "diverged" and entry["steps"] is not None:
        entry["step_stop"] = entry["steps"]
        entry["t_stop"] = entry["steps"] * lr
    if entry["status"] == "ok" and len(loss):
        _flag_unstable(entry, arrays, lr, levels, threshold, flow_final)


def _flag_unstable(entry, arrays, lr, levels, threshold, flow_final) -> None:
    """Unstable: the loss stays up, above the floor and above where the flow got, while the
    sharpness exceeds 2/eta, or eta is above the GD threshold 2/(h m_1^(2-2/h)) at which no global
    minimum is linearly stable (math.md section 6)."""
    floor = float(levels[-1])
    scale = max(float(levels[0]) - floor, 1e-300)
    final = float(arrays["loss"][-1])
    stuck = final - floor > 1e-6 * scale and (flow_final is None or final - flow_final > 1e-3 * scale)
    if not stuck:
        return
    sharp = arrays["sharpness"]
    tail = sharp[len(sharp) * 3 // 4 :]
    tail = tail[np.isfinite(tail)]
    if len(tail) and float(np.median(tail)) > 2.0 / lr:
        why = f"the sharpness {float(np.median(tail)):.4g} exceeds 2/eta = {2 / lr:.4g} over the last quarter of the run"
    elif threshold is not None and lr > threshold:
        why = f"eta = {lr:g} is above the GD stability threshold {threshold:.4g}: no global minimum is stable"
    else:
        return
    entry["status"] = "unstable"
    entry["message"] = (
        f"the loss stays at {final:.4g} (floor {floor:.3g}, flow {_fmt(flow_final)}) while {why}"
    )


def _write_hparams(rc, out, series, summary) -> None:
    if not rc.log.tensorboard:
        return
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hp_summary

    base = {
        "dims": str(list(rc.dims)),
        "init": rc.init.kind,
        "init_scale": rc.init.scale if rc.init.scale is not None else float("nan"),
        "method": rc.flow.method,
        "batch_size": rc.sgd.batch_size or 0,
        "t_max": rc.flow.t_max,
    }
    for name, e in series.items():
        params = dict(base, series=name, lr=e["lr"] if e["lr"] is not None else 0.0)
        metrics = {
            "hp/final_loss": e.get("final_loss"),
            "hp/max_dist_to_flow": e.get("max_dist_to_flow"),
            "hp/wall_time_s": e.get("wall_time_s"),
            "hp/diverged": float(bool(e.get("diverged"))),
        }
        metrics = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        writer = SummaryWriter(log_dir=str(out / "tensorboard" / name))
        step = summary["grid"]["n_grid"] - 1
        for k, v in metrics.items():
            writer.add_scalar(k, v, step)
        fw = writer._get_file_writer()
        for s in hp_summary(params, metrics):
            fw.add_summary(s)
        writer.flush()
        writer.close()


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ("dlnlab", "torch", "torchdiffeq", "lightning", "hydra-core", "tensorboard", "scipy", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _print_table(summary: dict) -> None:
    rows = [("series", "status", "final loss", "steps/nfe", "max dist to flow", "wall s")]
    for name, e in summary["series"].items():
        work = e.get("nfe") if e["lr"] is None else e.get("steps")
        rows.append(
            (
                name,
                e["status"],
                _fmt(e.get("final_loss")),
                "-" if work is None else str(work),
                "-" if e["lr"] is None else _fmt(e.get("max_dist_to_flow")),
                f"{e.get('wall_time_s', 0):.2f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    plateaus = summary["series"].get("flow", {}).get("plateaus") or []
    if plateaus:
        lines.append("plateaus of the flow:")
        for p in plateaus:
            exit_ = (
                ""
                if p.get("exit_mode") is None
                else f"  exit: mode {p['exit_mode']} at t = {_fmt(p.get('t_exit'))}"
            )
            lines.append(
                f"  t = {_fmt(p.get('t_start'))} .. {_fmt(p.get('t_end'))}  level {_fmt(p.get('level'))}  "
                f"modes learnt {p.get('modes_learnt')}  {p.get('label', '')} "
                f"(lambda_min {_fmt(p.get('lambda_min'))}){exit_}"
            )
    for name, e in summary["series"].items():
        delays = e.get("plateau_exits_vs_flow") or []
        if delays:
            parts = [f"mode {d['mode']} {_fmt(d.get('delay'))}" for d in delays]
            lines.append(f"plateau exit delay vs flow, {name}: {', '.join(parts)}")
    order = summary.get("convergence_order")
    lines.append(f"convergence order (slope of log max dist vs log lr): {_fmt(order)}")
    lines.append(f"critical values L*_r: {', '.join(_fmt(v) for v in summary['critical_values'])}")
    lines.append(f"run directory: {summary['run_dir']}")
    print("\n".join(lines), flush=True)


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "nan"
    return f"{x:.4g}"
