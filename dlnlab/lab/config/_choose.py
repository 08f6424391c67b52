"""Defaults that depend on the size of the net: the flow's method, the curvature budget, how much of
theta a series file keeps. Each choice is printed and recorded in the summary.

The choices come from a cost model of the net's shapes, not from timings taken at the start: a
default that flips with the machine's load would make the same config run different methods. The
model counts floating-point work and per-call overheads with constants fitted on a 2-core x86 CPU,
float64, one thread (``docs/scale.md``, ``scripts/bench.py``); its absolute seconds are
nominal, its ratios are what choose.

* ``flow.method=auto`` takes the cheapest of: LSODA with the exact dense Jacobian (about
  100 (1 + t_max)^0.6 evaluations and 10 + 0.3 t_max Jacobians, each a p x p Hessian and its LU
  factorisation), CVODE with GMRES on Hessian-vector products (about as many evaluations as LSODA,
  plus 1.3 Hessian-vector products per evaluation at 2.5 gradients each, no p x p matrix), and an
  explicit Dormand-Prince (max(600, 2.5 lambda_max t_max) evaluations: its steps are bounded by its
  stability on the stiffest learnt mode): dlnlab's rk45 (an ensemble: one batch in which every member
  takes its own steps; its LSODA and CVODE run member by member). An ensemble also has bdf_batch, the
  stiff solve of the whole batch with per-member steps and Jacobians (about 1.75 batched evaluations per
  LSODA evaluation, each with a solve on the kept eigenpairs and about 0.5 ms of its own work, plus
  1 + 0.7 ln(1 + t_max) Jacobians per member, each a Hessian and a float32 eigendecomposition), where
  the member's p x p matrices fit in ``BDF_BATCH_MAX_BYTES``. On a GPU it is rk45 (the stiff solvers
  step numpy arrays on the CPU).
* The curvature analysis (``log.analysis_points``) is cut so that it costs at most a quarter of the run.
* A series file keeps theta on a sub-grid when the whole of it would exceed ``log.theta_max_mb``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from dlnlab.flow import NATIVE, SCIPY_STIFF, SUNDIALS, TORCHDIFFEQ_ADAPTIVE
from dlnlab.network import Layout

__all__ = [
    "FlowChoice",
    "AnalysisChoice",
    "choose_flow",
    "choose_analysis",
    "theta_every",
    "gradient_seconds",
    "SCIPY_MAX_WEIGHTS",
]

SCIPY_MAX_WEIGHTS = 5000  # the dense Jacobian of the stiff path is p x p: 5000 weights is 200 MB per copy
# Nominal costs (fitted: see the module docstring)
CALL_S, LAYER_S = 30e-6, 10e-6  # a gradient's fixed cost: torch's per-op overhead
FLOP_RATE = 40e9  # float64 matrix products, one thread
LU_RATE, EIG_RATE = 10e9, 30e9  # LAPACK's LU and symmetric eigensolver at the sizes they run at here
HESSIAN_BLOCK_S = 20e-6  # the closed-form Hessian's h^2 block einsums
HVP_GRADIENTS = 2.5  # one Hessian-vector product costs about 2.5 gradients
# the solvers' own cost per evaluation: a fixed part, and a part per weight (their vector work; torchdiffeq
# keeps its stages as the last axis of a (p, 7) tensor: 31 ms per evaluation at p = 524,288, against 2.5 ms
# for dlnlab's rk45, flow/_rk45.py)
STEP_OVERHEAD_S = {"lsoda": 30e-6, "cvode": 30e-6, "rk45": 40e-6, "dopri5": 140e-6}
STEP_OVERHEAD_PER_WEIGHT_S = {"lsoda": 5e-9, "cvode": 1e-8, "rk45": 5e-9, "dopri5": 6e-8}
EXPLICIT_MIN_NFE, EXPLICIT_PER_LAMBDA_T = 600, 2.5
CVODE_JV_PER_NFE = 1.3
# bdf_batch (flow/_bdf.py), fitted on 64 Figure 1 nets at t_max 5 to 300 (docs/performance.md): batched
# evaluations per LSODA evaluation of one member (5361 against 3070 at t_max 300), the eigenpairs a
# solve keeps (at most twice the rank d_x d_y of the Gauss-Newton part; 36 to 80 of 198 measured), its own
# work per batched evaluation (numpy bookkeeping of every member's step: 0.65 ms for 64 x 198 weights),
# and its eigenvectors' memory (float32, B p^2)
BDF_BATCH_EVALS_PER_NFE, BDF_BATCH_RANKS = 1.75, 2
BDF_BATCH_STEP_S, BDF_BATCH_PER_WEIGHT_S = 300e-6, 3e-8
BDF_BATCH_MAX_BYTES = 1e9
LANCZOS_ITERS = 80  # dlnlab.analysis.lanczos_extremes' cap
MEMORY_RATE = 10e9  # bytes per second of a memory-bound pass (gemv over many vectors)
RUN_OVERHEAD_S, SERIES_OVERHEAD_S = 3.0, 0.5  # measured: the tiny run takes about 5 s in all


def gradient_flops(layout: Layout) -> float:
    """Floating-point work of one closed-form gradient: the prefix products W_j...W_1 (d_j x d_x) and the
    backward sweep (two products per layer), 2 flops per multiply-add."""
    d = layout.dims
    return 6.0 * d[0] * sum(d[j] * d[j - 1] for j in range(1, len(d)))


def gradient_seconds(layout: Layout, members: int = 1) -> float:
    """Nominal seconds of one gradient of ``members`` nets evaluated as one batch."""
    return CALL_S + LAYER_S * layout.depth + members * gradient_flops(layout) / FLOP_RATE


def jacobian_seconds(layout: Layout) -> float:
    """The dense p x p Hessian (its Gauss-Newton part is a (d_x d_y) x p product) and its LU."""
    p = layout.n_weights
    hess = HESSIAN_BLOCK_S * layout.depth**2 + 2.0 * p * p * layout.d_x * layout.d_y / FLOP_RATE
    return hess + (2.0 / 3.0) * p**3 / LU_RATE


def stiff_nfe(t_max: float) -> float:
    return 100.0 * (1.0 + t_max) ** 0.6


def stiff_njev(t_max: float) -> float:
    return 10.0 + 0.3 * t_max


def explicit_nfe(lam_max: float, t_max: float) -> float:
    return max(EXPLICIT_MIN_NFE, EXPLICIT_PER_LAMBDA_T * lam_max * t_max)


def bdf_batch_njev(t_max: float) -> float:
    """Jacobians per member of bdf_batch (a Newton failure with an older one: 1, 2.7, 4.1, 4.8 measured
    at t_max 5, 20, 100, 300 on Figure 1)."""
    return 1.0 + 0.7 * math.log1p(t_max)


def bdf_batch_seconds(layout: Layout, t_max: float, members: int) -> float:
    """Nominal seconds of bdf_batch on ``members`` nets: batched evaluations, each with a solve on the
    kept eigenpairs (two passes over members x k x p) and the step's own work, and the Jacobians."""
    p = layout.n_weights
    k = min(p, BDF_BATCH_RANKS * layout.d_x * layout.d_y)
    solve = 4.0 * members * k * p / FLOP_RATE
    own = BDF_BATCH_STEP_S + BDF_BATCH_PER_WEIGHT_S * members * p
    evals = BDF_BATCH_EVALS_PER_NFE * stiff_nfe(t_max)
    jac = jacobian_seconds(layout) - (2.0 / 3.0) * p**3 / LU_RATE + 6.0 * p**3 / EIG_RATE
    return evals * (gradient_seconds(layout, members) + solve + own) + members * bdf_batch_njev(t_max) * jac


def overhead_seconds(method: str, weights: int) -> float:
    """The solver's own cost per evaluation on a state of ``weights`` numbers."""
    return STEP_OVERHEAD_S[method] + STEP_OVERHEAD_PER_WEIGHT_S[method] * weights


def method_seconds(method: str, layout: Layout, lam_max: float, t_max: float, members: int = 1) -> float:
    """Nominal seconds of the flow with ``method`` (an ensemble: lsoda and cvode member by member, the
    others as one batch with per-member steps)."""
    g, p = gradient_seconds(layout), layout.n_weights
    if method == "bdf_batch":
        return bdf_batch_seconds(layout, t_max, members)
    if method == "lsoda":
        nfe = stiff_nfe(t_max)
        one = nfe * (g + overhead_seconds("lsoda", p)) + stiff_njev(t_max) * jacobian_seconds(layout)
        return members * one
    if method == "cvode":
        nfe = stiff_nfe(t_max)
        one = nfe * (g + overhead_seconds("cvode", p)) + CVODE_JV_PER_NFE * nfe * HVP_GRADIENTS * g
        return members * one
    nfe = explicit_nfe(lam_max, t_max)
    return nfe * (gradient_seconds(layout, members) + overhead_seconds(method, p * members))


@dataclass(frozen=True)
class FlowChoice:
    asked: str  # the config's flow.method
    method: str  # what runs
    why: str
    estimates_s: dict  # method -> nominal seconds (auto only)

    def to_dict(self) -> dict:
        return asdict(self)


def choose_flow(cfg, lam_max: float) -> FlowChoice:
    """The method the flow runs with (``flow.method``, or the cheapest estimate for ``auto``)."""
    asked = cfg.flow.method.name
    if asked != "auto":
        return FlowChoice(asked, asked, "chosen in the config", {})
    layout = Layout(tuple(cfg.model.dims))
    p, t_max, members = layout.n_weights, cfg.flow.t_max, ensemble_size(cfg)
    explicit = "rk45"  # an ensemble: per-member steps too (measured as fast as torchode's dopri5)
    candidates = ["lsoda", "cvode", explicit]
    if members > 1 and 4.0 * members * p * p <= BDF_BATCH_MAX_BYTES:  # the stiff solve of the whole batch
        candidates.append("bdf_batch")
    est = {m: method_seconds(m, layout, lam_max, t_max, members) for m in candidates}
    if cfg.device.startswith("cuda"):
        return FlowChoice(asked, explicit, f"device={cfg.device}: the stiff solvers run on the CPU", est)
    if p > SCIPY_MAX_WEIGHTS:
        for dense in ("lsoda", "bdf_batch"):  # a dense p x p Jacobian is not even tried
            est.pop(dense, None)
    method = min(est, key=est.get)
    others = ", ".join(f"{m} {s:.3g} s" for m, s in est.items() if m != method)
    why = (
        f"cheapest by the cost model: {est[method]:.3g} s against {others} (nominal; p = {p}, "
        f"lambda_max = {lam_max:.3g}, t_max = {t_max:g}{f', {members} members' if members > 1 else ''})"
    )
    return FlowChoice(asked, method, why, est)


@dataclass(frozen=True)
class AnalysisChoice:
    asked: int  # log.analysis_points
    points: int  # per series
    kind: str  # dense (eigvalsh) or lanczos (warm-started, Hessian-vector products)
    seconds_per_point: float  # nominal
    why: str
    saddles: str = "all"  # whose plateaus are classified: all, flow (the flow's only) or none
    saddles_why: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def analysis_seconds(layout: Layout, dense_max: int) -> tuple[str, float]:
    """(kind, nominal seconds) of one lambda_min / sharpness pair."""
    p = layout.n_weights
    if p <= dense_max:
        return "dense", jacobian_seconds(layout) - (2.0 / 3.0) * p**3 / LU_RATE + 9.0 * p**3 / EIG_RATE
    hvps = LANCZOS_ITERS * HVP_GRADIENTS * gradient_seconds(layout)
    # the full reorthogonalisation reads the k basis vectors four times per step k: memory-bound
    # (measured 5-10 s of the 15 s of one 80-step Lanczos at p = 524,288)
    return "lanczos", hvps + 4.0 * LANCZOS_ITERS**2 / 2 * p * 8 / MEMORY_RATE


def saddle_seconds(layout: Layout, dense_max: int) -> float:
    """One plateau's classification: a Levenberg-Marquardt snap (about 100 gradients) and the Hessian's
    extremes twice (critical.py), as measured: 33 s per plateau at p = 524,288."""
    return 100 * gradient_seconds(layout) + 2 * analysis_seconds(layout, dense_max)[1]


def choose_analysis(cfg, run_seconds: float, n_modes: int | None = None) -> AnalysisChoice:
    """Curvature points per series and which series' saddles are classified, together within a
    quarter of the run (``run_seconds``: the rest of its work). The saddles come first (at most half of
    that budget: all series, else the flow's, else none), the points take the rest. ``n_modes``: the
    data's modes (a series has at most min(n_modes, r_max) + 1 plateaus)."""
    asked = int(cfg.log.analysis_points)
    layout = Layout(tuple(cfg.model.dims))
    kind, cost = analysis_seconds(layout, cfg.log.hessian_dense_max)
    how = (
        "dense eigvalsh of the closed-form Hessian (exact to rounding)"
        if kind == "dense"
        else f"Lanczos on Hessian-vector products, warm-started, at most {LANCZOS_ITERS} products, "
        "stopping at Ritz residuals <= 1e-10 |lambda|"
    )
    budget = run_seconds / 3  # analysis <= (analysis + rest) / 4
    plateaus = min(layout.r_max, n_modes if n_modes is not None else layout.r_max) + 1
    per_series = plateaus * saddle_seconds(layout, cfg.log.hessian_dense_max)
    n_series = 1 + len(cfg.sgd.lrs)
    if n_series * per_series <= budget / 2:
        saddles, spent = "all", n_series * per_series
    elif per_series <= budget / 2:
        saddles, spent = "flow", per_series
    else:
        saddles, spent = "none", 0.0
    saddles_why = (
        f"classifying a series' plateaus costs about {per_series:.3g} s (nominal), against "
        f"{budget:.3g} s for the whole analysis (a quarter of the run): {saddles}"
    )
    if asked == 0:
        return AnalysisChoice(0, 0, kind, cost, "log.analysis_points = 0", saddles, saddles_why)
    series = n_series * ensemble_size(cfg)
    fit = (budget - spent) / max(series * cost, 1e-12)
    points = int(min(asked, fit))
    if points < asked:
        why = (
            f"{asked} points would take about {asked * series * cost:.3g} s against {run_seconds:.3g} s for "
            f"the rest of the run (nominal); {points} per series keep it under a quarter; {how}"
        )
    else:
        why = f"{asked} points per series, under a quarter of the run (nominal {cost:.3g} s each); {how}"
    return AnalysisChoice(asked, points, kind, cost, why, saddles, saddles_why)


def ensemble_size(cfg) -> int:
    ensemble = getattr(cfg, "ensemble", None)
    return int(ensemble.size) if ensemble is not None else 1


def theta_every(cfg, n_grid: int) -> int:
    """Keep theta every this many grid points, so that one series file holds at most log.theta_max_mb."""
    if not cfg.log.save_theta:
        return 0
    p = Layout(tuple(cfg.model.dims)).n_weights * ensemble_size(cfg)
    rows = max(2, int(min(cfg.log.theta_max_mb * 1e6 / (8 * p), n_grid)))  # in floats first: 1e308 MB
    return max(1, math.ceil((n_grid - 1) / (rows - 1)))


def estimated_run_seconds(cfg, method: str, lam_max: float) -> float:
    """The run's nominal work without the curvature: the flow and every SGD step."""
    from dlnlab.descent import time_per_step

    layout, members = Layout(tuple(cfg.model.dims)), ensemble_size(cfg)
    t_max = cfg.flow.t_max
    if method in SCIPY_STIFF + SUNDIALS + TORCHDIFFEQ_ADAPTIVE + NATIVE:
        model = "lsoda" if method in SCIPY_STIFF else "cvode" if method in SUNDIALS else method
        model = model if model in (*STEP_OVERHEAD_S, "bdf_batch") else "dopri5"
        flow = method_seconds(model, layout, lam_max, t_max, members)
    else:
        flow = t_max / (cfg.flow.step_size or 1.0) * gradient_seconds(layout, members)
    steps = sum(t_max / time_per_step(lr, cfg.sgd.momentum) for lr in cfg.sgd.lrs)
    sgd = steps * gradient_seconds(layout, members)
    # plus what every run costs whatever its size (Lightning's start, recording, saddles, figures)
    return flow + sgd + RUN_OVERHEAD_S + SERIES_OVERHEAD_S * (1 + len(cfg.sgd.lrs))
