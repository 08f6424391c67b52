"""Defaults that depend on the size of the net, chosen by measuring: the flow's method, the curvature
budget, how much of theta a series file keeps. Each choice is printed and recorded in the summary.

* ``flow.method=auto`` (the default) takes the cheaper of two estimates, fitted to measurements on
  this machine (``docs/benchmarks/flow.md``, section "auto"): LSODA with the exact dense Jacobian
  takes about 100 (1 + t_max)^0.6 evaluations at the gradient's cost plus 30 us, and 10 + 0.3 t_max
  Jacobians, each a p x p Hessian and its LU factorisation (timed here on the start); dopri5 takes
  about max(600, 2.5 lambda_max t_max) evaluations at the gradient's cost plus 130 us (torchdiffeq's
  step overhead), its steps bounded by its stability on the stiffest learnt mode. On a GPU, and above
  the dense Jacobian's size limit, it is dopri5.
* The curvature analysis (``log.analysis_points``) is cut so that it costs at most a quarter of the
  run: one analysis (dense eigensolver or Lanczos) is timed on the start, the run's work is estimated
  from the gradient time, and the number of analysed points per series follows.
* A series file keeps theta on a sub-grid when the whole of it would exceed ``log.theta_max_mb``; every
  other metric stays on every grid point.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch

from dlnlab.analysis import hessian_extremes
from dlnlab.flow import SCIPY_STIFF, TORCHDIFFEQ_ADAPTIVE
from dlnlab.network import Layout

__all__ = [
    "FlowChoice",
    "AnalysisChoice",
    "choose_flow",
    "choose_analysis",
    "theta_every",
    "SCIPY_MAX_WEIGHTS",
]

SCIPY_MAX_WEIGHTS = 5000  # the dense Jacobian of the stiff path is p x p: 5000 weights is 200 MB per copy
# the cost model of flow.method=auto (fitted: see the module docstring)
EXPLICIT_MIN_NFE, EXPLICIT_PER_LAMBDA_T, EXPLICIT_STEP_OVERHEAD_S = 600, 2.5, 130e-6
STIFF_STEP_OVERHEAD_S = 30e-6
RUN_OVERHEAD_S, SERIES_OVERHEAD_S = 3.0, 0.5  # measured: the tiny run takes about 5 s in all


def stiff_nfe(t_max: float) -> float:
    return 100.0 * (1.0 + t_max) ** 0.6


def stiff_njev(t_max: float) -> float:
    return 10.0 + 0.3 * t_max


def explicit_nfe(lam_max: float, t_max: float) -> float:
    return max(EXPLICIT_MIN_NFE, EXPLICIT_PER_LAMBDA_T * lam_max * t_max)


@dataclass(frozen=True)
class FlowChoice:
    asked: str  # the config's flow.method
    method: str  # what runs
    why: str
    estimates_s: dict  # method -> estimated seconds (auto only)

    def to_dict(self) -> dict:
        return asdict(self)


def _jacobian_seconds(problem, theta0: torch.Tensor, layout: Layout) -> float:
    """One dense Hessian (p x p) and its LU factorisation, timed."""
    import scipy.linalg

    t0 = time.perf_counter()
    hess = problem.hessian(theta0, layout).numpy()
    scipy.linalg.lu_factor(hess, check_finite=False)
    return time.perf_counter() - t0


def choose_flow(cfg, problem, theta0: torch.Tensor, lam_max: float, grad_s: float) -> FlowChoice:
    """The method the flow runs with (``flow.method``, or the cheaper estimate for ``auto``)."""
    asked = cfg.flow.method.name
    if asked != "auto":
        return FlowChoice(asked, asked, "chosen in the config", {})
    layout = Layout(tuple(cfg.model.dims))
    p, t_max = layout.n_weights, cfg.flow.t_max
    explicit = explicit_nfe(lam_max, t_max) * (grad_s + EXPLICIT_STEP_OVERHEAD_S)
    if cfg.device.startswith("cuda"):
        return FlowChoice(
            asked,
            "dopri5",
            f"device={cfg.device}: scipy's stiff methods run on the CPU",
            {"dopri5": explicit},
        )
    if p > SCIPY_MAX_WEIGHTS:
        why = f"p = {p} weights: a dense {p} x {p} Jacobian would not pay (more than {SCIPY_MAX_WEIGHTS} weights)"
        return FlowChoice(asked, "dopri5", why, {"dopri5": explicit})
    stiff = stiff_nfe(t_max) * (grad_s + STIFF_STEP_OVERHEAD_S) + stiff_njev(t_max) * _jacobian_seconds(
        problem, theta0, layout
    )
    est = {"lsoda": stiff, "dopri5": explicit}
    method = min(est, key=est.get)
    other = "dopri5" if method == "lsoda" else "lsoda"
    why = f"estimated {est[method]:.3g} s against {est[other]:.3g} s for {other} (p = {p}, lambda_max = {lam_max:.3g})"
    return FlowChoice(asked, method, why, est)


@dataclass(frozen=True)
class AnalysisChoice:
    asked: int  # log.analysis_points
    points: int  # per series
    kind: str  # dense (eigvalsh) or lanczos (warm-started, Hessian-vector products)
    seconds_per_point: float
    why: str

    def to_dict(self) -> dict:
        return asdict(self)


def choose_analysis(cfg, problem, theta0: torch.Tensor, run_seconds: float) -> AnalysisChoice:
    """Curvature points per series within a quarter of the run (``run_seconds``: the rest of its work)."""
    asked = int(cfg.log.analysis_points)
    layout = Layout(tuple(cfg.model.dims))
    kind = "dense" if layout.n_weights <= cfg.log.hessian_dense_max else "lanczos"
    if asked == 0:
        return AnalysisChoice(0, 0, kind, 0.0, "log.analysis_points = 0")
    t0 = time.perf_counter()
    hessian_extremes(problem, theta0, layout, dense_max=cfg.log.hessian_dense_max)
    cost = time.perf_counter() - t0
    series = 1 + len(cfg.sgd.lrs)
    # analysis <= 1/4 of (analysis + rest)  <=>  analysis <= rest / 3
    fit = int(run_seconds / 3 / max(series * cost, 1e-12))
    points = min(asked, fit)
    if points < asked:
        why = (
            f"{asked} points would take about {asked * series * cost:.3g} s against {run_seconds:.3g} s of the "
            f"rest of the run; {points} per series keep it under a quarter ({cost:.3g} s per point, {kind})"
        )
    else:
        why = f"{asked} points per series ({cost:.3g} s per point, {kind}): under a quarter of the run"
    return AnalysisChoice(asked, points, kind, cost, why)


def theta_every(cfg, n_grid: int) -> int:
    """Keep theta every this many grid points, so that one series file holds at most log.theta_max_mb."""
    if not cfg.log.save_theta:
        return 0
    p = Layout(tuple(cfg.model.dims)).n_weights
    rows = max(2, int(cfg.log.theta_max_mb * 1e6 / (8 * p)))
    return max(1, math.ceil((n_grid - 1) / (rows - 1)))


def estimated_run_seconds(cfg, method: str, lam_max: float, grad_s: float) -> float:
    """The run's work without the curvature: the flow's evaluations and every SGD step."""
    from dlnlab.descent import time_per_step

    if method in SCIPY_STIFF:
        flow = stiff_nfe(cfg.flow.t_max)
    elif method in TORCHDIFFEQ_ADAPTIVE:
        flow = explicit_nfe(lam_max, cfg.flow.t_max)
    else:
        flow = cfg.flow.t_max / (cfg.flow.step_size or 1.0)
    steps = sum(cfg.flow.t_max / time_per_step(lr, cfg.sgd.momentum) for lr in cfg.sgd.lrs)
    # plus what every run costs whatever its size (Lightning's start, recording, saddles, figures)
    return (flow + steps) * grad_s + RUN_OVERHEAD_S + SERIES_OVERHEAD_S * (1 + len(cfg.sgd.lrs))
