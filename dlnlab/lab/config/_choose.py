"""Defaults that depend on the size of the net: the flow's method, the curvature budget, how much of
theta a series file keeps. Each choice is printed and recorded in the summary.

The choices come from a cost model of the net's shapes, not from timings taken at the start: a
default that flips with the machine's load would make the same config run different methods. The
model counts floating-point work and per-call overheads with constants fitted on a 2-core x86 CPU,
float64, one thread (``docs/scale.md``, ``python -m scripts.bench``); its absolute seconds are
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
  the member's p x p matrices fit in ``BDF_BATCH_MAX_BYTES``, and radau_batch, the batched Radau IIA
  (about 230 ln(1 + t_max) step attempts of the batch, each about 4 Newton iterations on the three stages
  of every member, plus 1 + 0.9 ln(1 + t_max) Jacobians per member). On a GPU it is rk45 (the stiff
  solvers step numpy arrays on the CPU).
* The methods are compared at the accuracy the run asks for, not at equal rtol: at rtol 1e-9 on the
  Figure 1 net through its plateaus, LSODA ends up to 600 rtol from the exact flow, CVODE 11,000, rk45
  27, bdf_batch 5,500, radau_batch 3 (each member against its own Radau solve at rtol 1e-12). An
  ensemble's estimates are each multiplied by what tightening the method's rtol until it is within
  ``ACCURACY_GOAL`` rtol costs (``accuracy_factor``), so that the choice among the batched solvers is
  made at one accuracy. bdf_batch is 1.5x faster than radau_batch at equal rtol, but at rtol 1e-12
  (2.0x its cost, 1.3x radau_batch's) it is still 19 rtol of 1e-9 off: auto no longer picks it. The
  errors are those of the stiff benchmark, whose plateau escapes amplify them; on a short horizon
  every method is closer to its rtol, and the factors then favour the batched rk45 over member-by-member
  LSODA where the two cost about the same at equal rtol (a short run, and the more accurate). A single
  run keeps the comparison at equal rtol: its default, LSODA, is the lab's measured choice
  (docs/benchmarks/flow.md), and changing it is a decision of its own.
* An ensemble's flow runs in chunks of consecutive members (``flow.chunk_members``; null: by method,
  ``CHUNK_MEMBERS``), ``run.workers`` of them at once. The choice of method compares the methods' work
  as one batch, as before the chunks: it must not depend on ``run.workers`` (the files never do), and
  the chunks' extra work (2 chunks of radau_batch: about 1.2x its CPU) is what buys their speed on two
  or more workers (docs/performance.md, "An ensemble's flow in chunks").
* The curvature analysis (``log.analysis_points``) is cut so that it costs at most a quarter of the run.
* A series file keeps theta on a sub-grid when the whole of it would exceed ``log.theta_max_mb``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from dlnlab._layout import Layout
from dlnlab._steps import time_per_step
from dlnlab.flow import NATIVE, SCIPY_STIFF, SUNDIALS, TORCHDIFFEQ_ADAPTIVE

__all__ = [
    "FlowChoice",
    "CHUNK_MEMBERS",
    "flow_chunks",
    "AnalysisChoice",
    "choose_flow",
    "choose_analysis",
    "theta_every",
    "gradient_seconds",
    "SCIPY_MAX_WEIGHTS",
    "EDGE_STEPS",
    "EdgeWork",
    "edge_work",
    "flow_seconds",
]

from dlnlab.lab.config._costs import (  # noqa: F401 - the cost model, also read as choose.<name>
    ACCURACY_GOAL,
    BDF_BATCH_EVALS_PER_NFE,
    BDF_BATCH_MAX_BYTES,
    BDF_BATCH_PER_WEIGHT_S,
    BDF_BATCH_RANKS,
    BDF_BATCH_STEP_S,
    CALL_S,
    CENTRAL_EVAL_GRADIENTS,
    CENTRAL_EVALS_PER_LR,
    CHUNK_MEMBERS,
    CVODE_JV_PER_NFE,
    EDGE_STEPS,
    EIG_RATE,
    EXPLICIT_MIN_NFE,
    EXPLICIT_PER_LAMBDA_T,
    FLOP_RATE,
    GLOBAL_ERROR_PER_RTOL,
    HESSIAN_BLOCK_S,
    HVP_GRADIENTS,
    LANCZOS_ITERS,
    LAYER_S,
    LOBPCG_GUARD,
    LOBPCG_ITERS,
    LU_RATE,
    MEMORY_RATE,
    RADAU_ATTEMPT_S,
    RADAU_ATTEMPTS_PER_LOG,
    RADAU_ITER_PER_WEIGHT_S,
    RADAU_ITER_S,
    RADAU_ITERATIONS,
    RADAU_NJEV_PER_LOG,
    RUN_OVERHEAD_S,
    SCIPY_MAX_WEIGHTS,
    SERIES_OVERHEAD_S,
    STEP_OVERHEAD_PER_WEIGHT_S,
    STEP_OVERHEAD_S,
    TIGHTEN_EXPONENT,
    accuracy_factor,
    bdf_batch_njev,
    bdf_batch_seconds,
    explicit_nfe,
    gradient_flops,
    gradient_seconds,
    jacobian_seconds,
    method_seconds,
    overhead_seconds,
    radau_batch_seconds,
    stiff_nfe,
    stiff_njev,
)


@dataclass(frozen=True)
class FlowChoice:
    asked: str  # the config's flow.method
    method: str  # what runs
    why: str
    estimates_s: dict  # method -> nominal seconds (auto only)
    chunk_members: int = 1  # members per chunk of the flow (flow.chunk_members, or by method)
    chunks: int = 1  # the flow's chunks: ceil(members / chunk_members)

    def to_dict(self) -> dict:
        return asdict(self)


def choose_flow(cfg, lam_max: float) -> FlowChoice:
    """The method the flow runs with (``flow.method``, or the cheapest estimate for ``auto``), and its
    chunks (:func:`flow_chunks`)."""
    choice = _choose_method(cfg, lam_max)
    chunk_members, chunks = flow_chunks(cfg, choice.method)
    if chunks > 1:
        why = f"{choice.why}; in {chunks} chunks of {chunk_members} members (flow.chunk_members)"
        choice = replace(choice, why=why)
    return replace(choice, chunk_members=chunk_members, chunks=chunks)


def flow_chunks(cfg, method: str) -> tuple[int, int]:
    """(members per chunk, chunks) of the flow: ``flow.chunk_members`` (0: one chunk; null: by method,
    ``CHUNK_MEMBERS``, else one chunk), for the flow's members (one where they share their init)."""
    ensemble = getattr(cfg, "ensemble", None)
    shared = ensemble is not None and ensemble.vary.name == "sgd"
    members = 1 if shared else ensemble_size(cfg)
    asked = getattr(cfg.flow, "chunk_members", None)
    size = CHUNK_MEMBERS.get(method, members) if asked is None else asked or members
    size = min(size, members)
    return size, math.ceil(members / size)


def _choose_method(cfg, lam_max: float) -> FlowChoice:
    asked = cfg.flow.method.name
    if asked != "auto":
        return FlowChoice(asked, asked, "chosen in the config", {})
    layout = Layout(tuple(cfg.model.dims))
    p, t_max, members = layout.n_weights, cfg.flow.t_max, ensemble_size(cfg)
    explicit = "rk45"  # an ensemble: per-member steps too (measured as fast as torchode's dopri5)
    candidates = ["lsoda", "cvode", explicit]
    if members > 1 and 4.0 * members * p * p <= BDF_BATCH_MAX_BYTES:  # the stiff solve of the whole batch
        candidates += ["bdf_batch", "radau_batch"]
    est = {m: method_seconds(m, layout, lam_max, t_max, members) for m in candidates}
    if members > 1:  # at the accuracy the run asks for: see the module docstring
        est = {m: s * accuracy_factor(m) for m, s in est.items()}
    if cfg.device.startswith("cuda"):
        return FlowChoice(asked, explicit, f"device={cfg.device}: the stiff solvers run on the CPU", est)
    if p > SCIPY_MAX_WEIGHTS:
        for dense in ("lsoda", "bdf_batch", "radau_batch"):  # a dense p x p Jacobian is not even tried
            est.pop(dense, None)
    method = min(est, key=est.get)
    others = ", ".join(f"{m} {s:.3g} s" for m, s in est.items() if m != method)
    at = f" to be within {ACCURACY_GOAL:g} rtol of the exact flow" if members > 1 else ""
    why = (
        f"cheapest by the cost model{at}: {est[method]:.3g} s against {others} (nominal; p = {p}, "
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
    edge: EdgeWork | None = None  # sgd.edge / flow.central: their nominal work (counted in the run's)

    def to_dict(self) -> dict:
        return asdict(self)


def analysis_seconds(layout: Layout, dense_max: int, top_eigs: int = 1) -> tuple[str, float]:
    """(kind, nominal seconds) of one lambda_min / sharpness pair and the top ``top_eigs`` eigenvalues
    (dense: one eigvalsh gives them all; Lanczos: plus a warm-started LOBPCG block when top_eigs > 1)."""
    p = layout.n_weights
    if p <= dense_max:
        return "dense", jacobian_seconds(layout) - (2.0 / 3.0) * p**3 / LU_RATE + 9.0 * p**3 / EIG_RATE
    hvps = LANCZOS_ITERS * HVP_GRADIENTS * gradient_seconds(layout)
    # the full reorthogonalisation reads the k basis vectors four times per step k: memory-bound
    # (measured 5-10 s of the 15 s of one 80-step Lanczos at p = 524,288)
    lanczos = hvps + 4.0 * LANCZOS_ITERS**2 / 2 * p * 8 / MEMORY_RATE
    return "lanczos", lanczos + (spectrum_seconds(layout, dense_max, top_eigs) if top_eigs > 1 else 0.0)


def spectrum_seconds(layout: Layout, dense_max: int, k: int) -> float:
    """Nominal seconds of the top k eigenpairs at one point (dlnlab.eos.top_eigenpairs: dense eigh,
    about twice an eigvalsh, or LOBPCG warm-started)."""
    p = layout.n_weights
    if p <= dense_max:
        return jacobian_seconds(layout) - (2.0 / 3.0) * p**3 / LU_RATE + 18.0 * p**3 / EIG_RATE
    return (k + LOBPCG_GUARD) * LOBPCG_ITERS * HVP_GRADIENTS * gradient_seconds(layout)


@dataclass(frozen=True)
class EdgeWork:
    """The nominal work of the edge-of-stability series and the central flows, all learning rates."""

    spectra: int  # top-k spectra at GD's steps
    gd_steps: float  # GD's steps (recomputed by the edge series)
    central_evals: float  # the central flow's evaluations (its series, and its solve over the edge window)
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def edge_work(cfg) -> EdgeWork | None:
    """What ``sgd.edge`` / ``flow.central`` cost (None when neither is on): per learning rate, GD's
    steps and its spectrum at min(steps, EDGE_STEPS) points (twice that when they are spaced: the
    window around the crossing); with the central flow, its series over t_max, CENTRAL_EVALS_PER_LR per
    eta, and where lr < log.dt (the window's steps are not all among the series' times, so the window
    solves both flows again: runner/_edge.py) as much again."""
    central = bool(getattr(cfg.flow, "central", False))  # (a config-like object may lack the keys)
    if not (getattr(cfg.sgd, "edge", False) or central):
        return None
    layout, k = Layout(tuple(cfg.model.dims)), int(getattr(cfg.log, "top_eigs", 1))
    spec, grad = spectrum_seconds(layout, cfg.log.hessian_dense_max, k), gradient_seconds(layout)
    spectra, steps, evals = 0, 0.0, 0.0
    for lr in cfg.sgd.lrs:
        n = cfg.flow.t_max / lr
        spectra += (int(min(n, EDGE_STEPS)) + 1) * (1 if n <= EDGE_STEPS else 2)
        steps += 2 * n
        if central:
            evals += (1 if lr >= cfg.log.dt else 2) * CENTRAL_EVALS_PER_LR * n
    seconds = spectra * spec + steps * grad + evals * (spec + CENTRAL_EVAL_GRADIENTS * grad)
    return EdgeWork(spectra, steps, evals, seconds)


def saddle_seconds(layout: Layout, dense_max: int) -> float:
    """One plateau's classification: a Levenberg-Marquardt snap (about 100 gradients) and the Hessian's
    extremes twice (critical.py), as measured: 33 s per plateau at p = 524,288; and, for a top set at
    h >= 3, the nearest critical point's search (saddles/nearest.py: LM from the closest point, 1-4
    steps on the default run, each a Hessian's worth): the default run's analysis took 1.48x with it,
    counted here as the extremes' cost twice more."""
    return 100 * gradient_seconds(layout) + 4 * analysis_seconds(layout, dense_max)[1]


def choose_analysis(cfg, run_seconds: float, n_modes: int | None = None) -> AnalysisChoice:
    """Curvature points per series and which series' saddles are classified, together within a
    quarter of the run (``run_seconds``: the rest of its work). The saddles come first (at most half of
    that budget: all series, else the flow's, else none), the points take the rest. ``n_modes``: the
    data's modes (a series has at most min(n_modes, r_max) + 1 plateaus)."""
    asked = int(cfg.log.analysis_points)
    layout = Layout(tuple(cfg.model.dims))
    kind, cost = analysis_seconds(layout, cfg.log.hessian_dense_max, int(getattr(cfg.log, "top_eigs", 1)))
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
        f"classifying a series' plateaus costs about {per_series:.3g} s (nominal), against a budget of "
        f"{budget:.3g} s for the whole analysis (a quarter of the run's nominal time): "
        + {"all": "every series' saddles classified", "flow": "the flow's saddles classified, not the (S)GD series'",
           "none": "none classified (the plateaus are still found)"}[saddles]
    )  # fmt: skip
    edge = edge_work(cfg)
    if asked == 0:
        return AnalysisChoice(0, 0, kind, cost, "log.analysis_points = 0", saddles, saddles_why, edge)
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
    if edge is not None:
        why += f"; the edge-of-stability series and central flows: about {edge.seconds:.3g} s (nominal)"
    return AnalysisChoice(asked, points, kind, cost, why, saddles, saddles_why, edge)


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


def flow_seconds(cfg, method: str, lam_max: float) -> float:
    """The flow's nominal seconds with ``method``."""
    layout, members, t_max = Layout(tuple(cfg.model.dims)), ensemble_size(cfg), cfg.flow.t_max
    if method in SCIPY_STIFF + SUNDIALS + TORCHDIFFEQ_ADAPTIVE + NATIVE:
        model = "lsoda" if method in SCIPY_STIFF else "cvode" if method in SUNDIALS else method
        model = model if model in (*STEP_OVERHEAD_S, "bdf_batch", "radau_batch") else "dopri5"
        return method_seconds(model, layout, lam_max, t_max, members)
    return t_max / (cfg.flow.step_size or 1.0) * gradient_seconds(layout, members)


def estimated_run_seconds(cfg, method: str, lam_max: float) -> float:
    """The run's nominal work without the curvature: the flow and every SGD step."""
    layout, members = Layout(tuple(cfg.model.dims)), ensemble_size(cfg)
    t_max = cfg.flow.t_max
    flow = flow_seconds(cfg, method, lam_max)
    steps = sum(t_max / time_per_step(lr, cfg.sgd.momentum) for lr in cfg.sgd.lrs)
    sgd = steps * gradient_seconds(layout, members)
    edge = edge_work(cfg)
    sgd += edge.seconds if edge is not None else 0.0
    # plus what every run costs whatever its size (Lightning's start, recording, saddles, figures)
    return flow + sgd + RUN_OVERHEAD_S + SERIES_OVERHEAD_S * (1 + len(cfg.sgd.lrs))
