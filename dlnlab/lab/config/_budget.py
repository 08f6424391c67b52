"""Guards against impossible work: estimates of a run's size, refused above ``limits.*`` before work.

The estimates count what the run allocates and does, not what a machine can bear: grid points, SGD
steps per series, evaluations of an explicit flow method, the peak memory of the largest arrays, and
the size of one series file. Each refusal names the estimate, the limit's key and the keys to change.
A user who means it raises the limit (``limits.memory_gb=64``).

Counts are computed in floats and compared with their limits before any is converted to an int
(``flow.t_max=1e300 log.dt=1e-300`` is a grid of inf points, refused, not an OverflowError). What the
estimates cannot bound up front, the flow's solve itself, gets an evaluation budget
(:func:`flow_nfe_budget`) that stops it as a solver failure.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from dlnlab._layout import Layout
from dlnlab._steps import time_per_step, uniform_times
from dlnlab.flow import NATIVE, SCIPY_STIFF, SUNDIALS, TORCHDIFFEQ_ADAPTIVE, TORCHDIFFEQ_FIXED
from dlnlab.lab.config import _choose as choose
from dlnlab.lab.config._errors import ConfigError
from dlnlab.lab.config._rules import EXACT_COUNT
from dlnlab.lab.config._schema import TrainConfig
from dlnlab.lab.config._times import flow_time_count

__all__ = [
    "Estimate",
    "estimate",
    "check_counts",
    "check_sizes",
    "check_work",
    "grid_points",
    "fmt_bytes",
    "flow_nfe_budget",
    "EXACT_COUNT",
]

F64 = 8
GB = 1e9
STAGES = {"euler": 1, "midpoint": 2, "rk4": 4, "explicit_adams": 1, "implicit_adams": 3}
# Explicit adaptive methods on a stiff flow take steps at their stability bound: dopri5 (6 evaluations a
# step, stable for step * lambda < 3.3) needs about 2 lambda_max evaluations per unit of time (measured
# on the stiff benchmark: 134,899 evaluations for t = 300 at lambda_max ~ 200).
EXPLICIT_EVALS_PER_LAMBDA_T = 2.0


# Counts (grid points, steps, evaluations) are exact integers in float64 and int64 up to EXACT_COUNT = 2^53;
# the limits are capped there (dlnlab/lab/config/_rules.py), so a count within its limit converts to an int safely.


def _count(horizon: float, step: float) -> float:
    """ceil(horizon / step) as a float: inf where the quotient overflows (1e300 / 1e-300), never an
    OverflowError from converting it to an int."""
    q = horizon / step
    return math.ceil(q - 1e-9) if q < EXACT_COUNT else q


def grid_count(cfg: TrainConfig) -> float:
    """flow.t_max / log.dt + 1 as a float (inf when it overflows): compared with the limit first."""
    q = cfg.flow.t_max / cfg.log.dt
    return math.floor(q + 1e-9) + 1.0 if q < EXACT_COUNT else q


def grid_points(cfg: TrainConfig) -> int:
    """The number of grid points t_m = m dt up to t_max (call after :func:`check_counts`)."""
    return int(grid_count(cfg))


def fmt_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


@dataclass(frozen=True)
class Estimate:
    """What a run will allocate: bytes per component, and the size of one series npz."""

    grid_points: int
    flow_times: int
    memory: dict[str, float] = field(default_factory=dict)
    series_file: float = 0.0

    @property
    def peak_memory(self) -> float:
        return sum(self.memory.values())


def estimate(cfg: TrainConfig, data_bytes: float | None = None) -> Estimate:
    """Sizes from the config alone (``data_bytes``: the user's data file, already measured)."""
    lay = Layout(tuple(cfg.model.dims))
    members = cfg.ensemble.size
    p, n, t = lay.n_weights * members, lay.n_nodes, grid_points(cfg)  # p: the weights of every member
    flow_times = t * (1 + len(cfg.sgd.lrs))  # at most: the grid and each series' exact times k_m * tau
    if flow_times <= 10_000_000:  # exactly (exact times on grid points count once); a bound beyond
        taus = [time_per_step(lr, cfg.sgd.momentum) for lr in cfg.sgd.lrs]
        flow_times = flow_time_count(uniform_times(cfg.flow.t_max, cfg.log.dt), taus, cfg.log.dt)
    mem: dict[str, float] = {}
    if cfg.data.kind.name == "teacher":  # X, Y and the generator's temporaries
        mem["data X, Y"] = 3.0 * (lay.d_x + lay.d_y) * cfg.data.n_samples * F64
    elif data_bytes is not None:
        mem["data X, Y"] = 2.0 * data_bytes
    if cfg.sgd.batch_size is not None and cfg.sgd.lrs:  # its indices, its X and Y columns, their products
        mem[f"a minibatch ({cfg.sgd.batch_size} samples)"] = (
            2.0 * members * cfg.sgd.batch_size * (lay.d_x + lay.d_y + 1) * F64
        )
    mem["adjacency A (n x n)"] = 4.0 * members * n * n * F64
    mem[f"flow states ({flow_times} times x {p} weights)"] = 2.0 * flow_times * p * F64
    if cfg.sgd.lrs:
        mem[f"flow at one series' times ({t} x {p})"] = t * p * F64
    rows = int(min(t, max(2.0, cfg.log.theta_max_mb * 1e6 / (F64 * p)))) if cfg.log.save_theta else 0
    if rows:
        mem[f"theta of one series ({rows} x {p})"] = 2.0 * rows * p * F64
    if cfg.flow.method.name in SCIPY_STIFF:  # (auto takes the dense path only where it is cheap)
        q = lay.n_weights  # member by member: one member's Jacobian at a time
        mem[f"dense Jacobian of the stiff solver ({q} x {q})"] = 4.0 * q * q * F64
    if cfg.flow.method.name in ("bdf_batch", "radau_batch"):  # eigenvectors (float32), Jacobians refreshed
        q = lay.n_weights
        mem[f"{cfg.flow.method.name}'s eigenvectors ({members} x {q} x {q})"] = (
            members * q * q * (4 + 3 * F64)
        )
    if cfg.log.analysis_points and lay.n_weights <= cfg.log.hessian_dense_max:
        q = lay.n_weights
        mem[f"dense Hessian ({q} x {q})"] = 3.0 * q * q * F64
    if cfg.log.analysis_points and lay.n_weights > cfg.log.hessian_dense_max and cfg.log.top_eigs > 1:
        mem[f"LOBPCG's block ({lay.n_weights} x {cfg.log.top_eigs + 2} x 4)"] = (
            4.0 * members * lay.n_weights * (cfg.log.top_eigs + 2) * F64
        )
    per_point = (16 + min(lay.d_x, lay.d_y) + cfg.log.sv_A_top + lay.depth + cfg.log.top_eigs) * members
    series_file = (t * per_point + rows * p) * F64
    if (cfg.sgd.edge or cfg.flow.central) and cfg.sgd.lrs:  # GD at every step of the edge window
        n_edge = int(min(max(cfg.flow.t_max / lr for lr in cfg.sgd.lrs), 2 * choose.EDGE_STEPS)) + 1
        mem[f"the edge window's iterates and flows ({n_edge} steps x {p} weights x 5)"] = (
            5.0 * n_edge * p * F64
        )
        series_file = max(series_file, n_edge * (16 + cfg.log.top_eigs) * F64)
    return Estimate(grid_points=t, flow_times=flow_times, memory=mem, series_file=series_file)


def check_sizes(cfg: TrainConfig, est: Estimate) -> None:
    """Refuse a peak memory or a series file above the limits (before anything is built)."""
    lim = cfg.limits
    if est.peak_memory > lim.memory_gb * GB:
        top = max(est.memory, key=est.memory.get)
        raise ConfigError(
            f"limits.memory_gb: this run needs about {fmt_bytes(est.peak_memory)} of memory, above "
            f"limits.memory_gb = {lim.memory_gb:g} (largest: {top}, {fmt_bytes(est.memory[top])}); "
            "shrink model.dims / data.n_samples / sgd.batch_size, raise log.dt, set log.save_theta=false, or raise "
            "limits.memory_gb"
        )
    if est.series_file > lim.series_file_gb * GB:
        raise ConfigError(
            f"limits.series_file_gb: each series file would hold about {fmt_bytes(est.series_file)} "
            f"({est.grid_points} grid points), above limits.series_file_gb = {lim.series_file_gb:g}; set "
            "log.save_theta=false, raise log.dt, or raise limits.series_file_gb"
        )


def _seconds(s: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.3g} {unit}"
    return f"{s:.3g} s"


def gradient_seconds(problem, theta0, dims) -> float:
    """Wall time of one closed-form gradient here (median of a few), for the time estimates."""
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        problem.gradient_theta(theta0, dims)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def check_counts(cfg: TrainConfig) -> None:
    """Refuse a grid, an SGD series or a fixed-step flow whose count is above its limit, from the
    config alone and in floats (a count that overflows is inf, not an OverflowError), before
    anything is estimated or built. The time a refused count would take is the cost model's
    (nominal, :func:`dlnlab.lab.config._choose.gradient_seconds`)."""
    lim, f = cfg.limits, cfg.flow
    n_grid = grid_count(cfg)
    if n_grid > lim.grid_points:
        raise ConfigError(
            f"log.dt: the grid t_m = m * log.dt up to flow.t_max = {f.t_max:g} has {n_grid:.3g} points, "
            f"above limits.grid_points = {lim.grid_points:.3g}; raise log.dt, lower flow.t_max, or raise "
            "limits.grid_points"
        )
    grad_s = choose.gradient_seconds(Layout(tuple(cfg.model.dims)), cfg.ensemble.size)
    for lr in cfg.sgd.lrs:
        steps = _count(f.t_max, time_per_step(lr, cfg.sgd.momentum))
        if steps > lim.sgd_steps:
            raise ConfigError(
                f"sgd.lrs: the series at lr = {lr:g} needs {steps:.3g} steps to reach flow.t_max = "
                f"{f.t_max:g} (about {_seconds(steps * grad_s)} at a nominal {grad_s * 1e6:.3g} us per "
                f"gradient), above limits.sgd_steps = {lim.sgd_steps:.3g}; raise the learning rate, lower "
                "flow.t_max, or raise limits.sgd_steps"
            )
    edge = choose.edge_work(cfg)
    if edge is not None and edge.central_evals > lim.flow_nfe:
        lr = min(cfg.sgd.lrs)
        raise ConfigError(
            f"flow.central: the central flows need about {edge.central_evals:.3g} evaluations (about "
            f"{choose.CENTRAL_EVALS_PER_LR:g} per eta of time: rk45 at lr = {lr:g} to flow.t_max = {f.t_max:g}, "
            f"each evaluation the top eigenpairs and a third-derivative pass), above limits.flow_nfe = "
            f"{lim.flow_nfe:.3g}; raise the learning rates, lower flow.t_max, or raise limits.flow_nfe"
        )
    if f.method.name in TORCHDIFFEQ_FIXED and f.step_size is not None:
        steps = _count(f.t_max, f.step_size)
        _refuse_nfe(
            cfg, f.method.name, steps * STAGES[f.method.name], f"{steps:.3g} steps of {f.step_size:g}", grad_s
        )


def _refuse_nfe(cfg: TrainConfig, method: str, nfe: float, why: str, grad_s: float) -> None:
    lim = cfg.limits
    if nfe > lim.flow_nfe:
        raise ConfigError(
            f"flow.method: {method} needs about {nfe:.3g} evaluations to reach flow.t_max = {cfg.flow.t_max:g} "
            f"({why}; about {_seconds(nfe * grad_s)} here), above limits.flow_nfe = {lim.flow_nfe:.3g}; "
            "use a stiff method (flow.method=lsoda), lower flow.t_max, or raise limits.flow_nfe"
        )


def check_work(cfg: TrainConfig, grad_s: float, lam_max: float, method: str | None = None) -> None:
    """Refuse an explicit adaptive flow whose evaluations, about 2 lambda_max t_max on a stiff flow, are
    above limits.flow_nfe (``method``: the flow's, once ``auto`` is resolved; the counts that need no
    lambda_max are :func:`check_counts`')."""
    method = method or cfg.flow.method.name
    if method in TORCHDIFFEQ_ADAPTIVE + NATIVE and lam_max > 0:
        nfe = EXPLICIT_EVALS_PER_LAMBDA_T * lam_max * cfg.flow.t_max
        why = f"the explicit method's steps are bounded by 1/lambda_max = {1 / lam_max:.3g}"
        _refuse_nfe(cfg, method, nfe, why, grad_s)


def flow_nfe_budget(cfg: TrainConfig, method: str) -> int | None:
    """The evaluations a flow solve may take before it stops as a solver failure (``flow.max_nfe`` when
    set): limits.flow_nfe for every method, and for a stiff one (lsoda, bdf, radau, cvode: its work does
    not follow from lambda_max) limits.stiff_nfe_factor times the cost model's expected count,
    100 (1 + t_max)^0.6, so that a flow float64 cannot follow stops instead of running for hours."""
    if cfg.flow.max_nfe is not None:
        return cfg.flow.max_nfe
    lim = cfg.limits
    budget = lim.flow_nfe
    if method in SCIPY_STIFF + SUNDIALS:
        budget = min(budget, lim.stiff_nfe_factor * choose.stiff_nfe(cfg.flow.t_max))
    return int(math.ceil(budget))
