"""The cost model's constants and its seconds per method: what one gradient, one Jacobian, one step
of each integrator costs on one core, measured here (docs/performance.md, docs/scale.md). The choices
made from them are :mod:`dlnlab.lab.config._choose`'s, which reads them under the same names."""

from __future__ import annotations

import math

from dlnlab._layout import Layout
from dlnlab.flow import SCIPY_STIFF, SUNDIALS

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
