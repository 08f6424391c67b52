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

from dlnlab.flow import NATIVE, SCIPY_STIFF, SUNDIALS, TORCHDIFFEQ_ADAPTIVE
from dlnlab.network import Layout

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
# radau_batch (flow/_radau.py), fitted on 8 and 64 Figure 1 nets at t_max 5 to 300 (docs/performance.md):
# step attempts of the batch (the busiest member's: 254, 752, 1145, 1261 at t_max 5, 20, 100, 300), batched
# Newton iterations per attempt (each on the three stages of every member still iterating; 5.3 calls,
# the later ones on fewer members), the numpy work of an iteration (fixed and per stage weight) and of an
# attempt (error estimate, f at the step's end, output rows), Jacobians per member (1.0, 3.3, 5.1, 6.1)
RADAU_ATTEMPTS_PER_LOG, RADAU_ITERATIONS = 230.0, 4.0
RADAU_ITER_S, RADAU_ITER_PER_WEIGHT_S, RADAU_ATTEMPT_S = 100e-6, 17e-9, 140e-6
RADAU_NJEV_PER_LOG = 0.9
# The global error per unit rtol of each method (largest over the members measured; Figure 1 net, gaussian
# 0.1, t_max 300, rtol 1e-9, each member against its own scipy Radau solve at rtol 1e-12: docs/performance.md)
# and how its cost grows as that error is made smaller by a tighter rtol, cost ~ error^-e, measured there:
# LSODA 3.4x the cost for 316x smaller errors (rtol 1e-12), bdf_batch 2.0x for 286x (rtol 1e-12, still 19
# rtol of 1e-9 off), rk45, whose steps its stability bounds, 1.12x for 8.7x (rtol 1e-10); CVODE not
# measured (0.2, an order-5 method's); radau_batch is within the goal at the run's own rtol
GLOBAL_ERROR_PER_RTOL = {"lsoda": 600.0, "cvode": 11000.0, "rk45": 27.0, "dopri5": 27.0, "bdf_batch": 5500.0,
                         "radau_batch": 3.0}  # fmt: skip
TIGHTEN_EXPONENT = {"lsoda": 0.21, "cvode": 0.2, "rk45": 0.05, "dopri5": 0.05, "bdf_batch": 0.12}  # fmt: skip
# Members per chunk of an ensemble's flow (flow.chunk_members=null), measured on 64 Figure 1 nets at t_max 20
# and 300, one process (docs/performance.md, "An ensemble's flow in chunks"): radau_batch in 2 chunks of 32
# took 1.19 - 1.25x the CPU of one batch (4 of 16: 1.6x, 8 of 8: 2.0x: each chunk pays every step attempt's
# fixed numpy and per-call costs), repaid on 2 workers (about 1.6x faster); rk45, whose batch shares more of
# its cost, took 1.6 - 1.7x in 2 chunks: one chunk; the member-by-member methods lose nothing to chunks
CHUNK_MEMBERS = {"radau_batch": 32, "bdf_batch": 32, **dict.fromkeys(SCIPY_STIFF + SUNDIALS, 8)}
ACCURACY_GOAL = 10.0  # the run asks for its trajectory within this many rtol of the exact flow
LANCZOS_ITERS = 80  # dlnlab.analysis.lanczos_extremes' cap
# LOBPCG's iterations for the top k eigenpairs at one point, warm-started from the previous point
# (docs/eos.md measured 28 warm, 68 cold at p = 11,264), on a block of k + 2 vectors
LOBPCG_ITERS, LOBPCG_GUARD = 40, 2
# The edge-of-stability series (sgd.edge, flow.central): GD's top-k spectrum at up to EDGE_STEPS points
# evenly spaced over the run (every step when the run has at most EDGE_STEPS steps), and at every step
# of a window of EDGE_STEPS steps centred on the first crossing of 2/eta when they are spaced.
EDGE_STEPS = 2000
# The central flow by rk45: its lookahead delta = 0.1 eta makes it stiff at rate 1/delta, which holds
# rk45's steps near 3 delta = 0.3 eta, 6 evaluations each: about 20 per eta of time; one evaluation is
# the top eigenpairs, a gradient and a third-derivative pass (about 6.5 gradients, docs/eos.md)
CENTRAL_EVALS_PER_LR, CENTRAL_EVAL_GRADIENTS = 20.0, 7.5
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


def radau_batch_seconds(layout: Layout, t_max: float, members: int) -> float:
    """Nominal seconds of radau_batch on ``members`` nets: step attempts of the batch, each with Newton
    iterations (an evaluation of the three stages of every member, a solve on the kept eigenpairs, its
    numpy work), an evaluation at the step's end and its own work, and the Jacobians."""
    p = layout.n_weights
    k = min(p, BDF_BATCH_RANKS * layout.d_x * layout.d_y)
    solve = 4.0 * members * k * p / FLOP_RATE  # two passes over the kept eigenvectors, three right-hand sides
    iteration = (
        gradient_seconds(layout, 3 * members)
        + solve
        + RADAU_ITER_S
        + RADAU_ITER_PER_WEIGHT_S * 3 * members * p
    )
    attempt = RADAU_ITERATIONS * iteration + gradient_seconds(layout, members) + RADAU_ATTEMPT_S
    jac = jacobian_seconds(layout) - (2.0 / 3.0) * p**3 / LU_RATE + 6.0 * p**3 / EIG_RATE
    njev = 1.0 + RADAU_NJEV_PER_LOG * math.log1p(t_max)
    return RADAU_ATTEMPTS_PER_LOG * math.log1p(t_max) * attempt + members * njev * jac


def accuracy_factor(method: str) -> float:
    """How many times the method's nominal cost (at the run's rtol) it takes to be within ACCURACY_GOAL
    rtol of the exact flow: (error / goal)^e, 1 for a method already within the goal or one not measured."""
    error = GLOBAL_ERROR_PER_RTOL.get(method, ACCURACY_GOAL)
    return max(1.0, error / ACCURACY_GOAL) ** TIGHTEN_EXPONENT.get(method, 0.0)


def overhead_seconds(method: str, weights: int) -> float:
    """The solver's own cost per evaluation on a state of ``weights`` numbers."""
    return STEP_OVERHEAD_S[method] + STEP_OVERHEAD_PER_WEIGHT_S[method] * weights


def method_seconds(method: str, layout: Layout, lam_max: float, t_max: float, members: int = 1) -> float:
    """Nominal seconds of the flow with ``method`` (an ensemble: lsoda and cvode member by member, the
    others as one batch with per-member steps)."""
    g, p = gradient_seconds(layout), layout.n_weights
    if method == "bdf_batch":
        return bdf_batch_seconds(layout, t_max, members)
    if method == "radau_batch":
        return radau_batch_seconds(layout, t_max, members)
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
    window around the crossing); with the central flow, its series over t_max and its solve over the
    every-step stretch (the whole run, or up to the window's end), CENTRAL_EVALS_PER_LR per eta each."""
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
            evals += 2 * CENTRAL_EVALS_PER_LR * n
    seconds = spectra * spec + steps * grad + evals * (spec + CENTRAL_EVAL_GRADIENTS * grad)
    return EdgeWork(spectra, steps, evals, seconds)


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
        f"classifying a series' plateaus costs about {per_series:.3g} s (nominal), against "
        f"{budget:.3g} s for the whole analysis (a quarter of the run): {saddles}"
    )
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
    from dlnlab.descent import time_per_step

    layout, members = Layout(tuple(cfg.model.dims)), ensemble_size(cfg)
    t_max = cfg.flow.t_max
    flow = flow_seconds(cfg, method, lam_max)
    steps = sum(t_max / time_per_step(lr, cfg.sgd.momentum) for lr in cfg.sgd.lrs)
    sgd = steps * gradient_seconds(layout, members)
    edge = edge_work(cfg)
    sgd += edge.seconds if edge is not None else 0.0
    # plus what every run costs whatever its size (Lightning's start, recording, saddles, figures)
    return flow + sgd + RUN_OVERHEAD_S + SERIES_OVERHEAD_S * (1 + len(cfg.sgd.lrs))
