"""Ranges and rules across keys, on top of the typed config (types are OmegaConf's job).

:func:`check_config` needs only the config; :func:`check_with_problem` runs once the data are known
(shapes, the number of samples, the GD threshold, the explicit stability bound). Values the core checks
itself (widths, singular values, solver tolerances, ...) are checked by calling the core and naming
the config key (:func:`dlnlab.lab.config.keyed`), so every rule is written once.
"""

from __future__ import annotations

import math
import re
from numbers import Real

from dlnlab._layout import Layout
from dlnlab.flow import DEFAULT_ATOL, DEFAULT_RTOL, SCIPY_STIFF, SUNDIALS, TORCHDIFFEQ_FIXED, Solver
from dlnlab.lab.config._errors import ConfigError, keyed, shown
from dlnlab.lab.config._files import MAX_ABS_VALUE
from dlnlab.lab.config._schema import INIT_OPTIONS, InitKind, TrainConfig

__all__ = [
    "MAX_RTOL",
    "FIXED_STEP_STABILITY",
    "SEED_MAX",
    "check_config",
    "make_solver",
    "check_fixed_step",
    "is_number",
]

EXACT_COUNT = 2.0**53  # counts are exact integers in float64 (and fit int64) up to here
# Above this a solve is not a reference for SGD (errors of 0.1 % and more per unit time).
MAX_RTOL = 1e-3
MIN_RTOL = 100 * 2.0**-52  # 2.2e-14: the stiff solvers' own floor, for every method
MIN_T_MAX = 1e-10  # 1e4 x rk45's smallest step (1e-14): measured, every method solves t_max = 1e-10
SEED_MAX = 2**63 - 1

# The stability interval [-c, 0] of each fixed-step method on dy/dt = -lambda y (step * lambda < c),
# measured with torchdiffeq 0.2.5 over 5000 steps (tests/test_schema.py checks each bound 3 % either
# side): Euler and the midpoint rule 2, classical RK4 2.785, Adams-Bashforth of order 4 (the lab's
# max_order 5) 0.3, torchdiffeq's implicit Adams (functional iteration, default order) 0.069.
FIXED_STEP_STABILITY = {
    "euler": 2.0,
    "midpoint": 2.0,
    "rk4": 2.785,
    "explicit_adams": 0.3,
    "implicit_adams": 0.069,
}


def is_number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _finite(v: float, key: str, *, positive: bool = False, nonneg: bool = False) -> None:
    if not math.isfinite(v):
        raise ConfigError(f"{key}: must be finite, got {v}")
    if positive and v <= 0:
        raise ConfigError(f"{key}: must be > 0, got {v}")
    if nonneg and v < 0:
        raise ConfigError(f"{key}: must be >= 0, got {v}")


def _seed(v: int | None, key: str) -> None:
    if v is not None and not 0 <= v <= SEED_MAX:
        raise ConfigError(f"{key}: a seed must be in 0 .. 2^63 - 1, got {shown(v)}")


def check_config(cfg: TrainConfig) -> None:
    """Every rule that needs only the config; raises ConfigError naming the key."""
    with keyed({"dims": "model.dims"}, "model.dims"):
        Layout(tuple(cfg.model.dims))
    _seed(cfg.seed, "seed")
    _check_device(cfg)
    _check_data(cfg)
    _check_init(cfg)
    _check_flow(cfg)
    _check_sgd(cfg)
    _check_log_and_limits(cfg)
    if cfg.run.workers is not None and cfg.run.workers < 1:
        raise ConfigError(
            f"run.workers: the number of worker processes must be >= 1 or null (the cores), got {cfg.run.workers}"
        )


def _check_device(cfg: TrainConfig) -> None:
    dev = cfg.device
    if not re.fullmatch(r"cpu|cuda(:\d+)?", dev):
        raise ConfigError(f"device: unknown device {dev!r}; allowed: cpu, cuda, cuda:<index>")
    if dev.startswith("cuda"):
        import torch  # only to ask for a device: a CPU run's checks import no torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device: {dev} asked for, but torch sees no CUDA device here; use device=cpu")
        index = int(dev.split(":")[1]) if ":" in dev else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device: {dev}: there are {torch.cuda.device_count()} CUDA devices here")
        if cfg.flow.method.name in (*SCIPY_STIFF, *SUNDIALS, "bdf_batch", "radau_batch"):
            raise ConfigError(
                f"flow.method: {cfg.flow.method.name} runs on the CPU; with device={dev} choose a torchdiffeq "
                "method, e.g. flow=dopri5"
            )


def _check_data(cfg: TrainConfig) -> None:
    d = cfg.data
    if d.kind.name == "teacher":
        if not d.singular_values:
            raise ConfigError("data.singular_values: the teacher needs at least one singular value")
        d_x, d_y = cfg.model.dims[0], cfg.model.dims[-1]
        if len(d.singular_values) > min(d_x, d_y):
            raise ConfigError(
                f"data.singular_values: at most min(d_x, d_y) = {min(d_x, d_y)} values for "
                f"model.dims={list(cfg.model.dims)}, got {len(d.singular_values)}"
            )
        top = max((v for v in d.singular_values if math.isfinite(v)), default=0.0)
        for name, value in (("singular_values", top), ("noise", d.noise)):
            if value > MAX_ABS_VALUE:
                raise ConfigError(
                    f"data.{name}: {value:g} is above {MAX_ABS_VALUE:g}, the bound on data values (their second "
                    f"moments must stay far inside float64); allowed: [0, {MAX_ABS_VALUE:g}]"
                )
        if d.whiten and d.n_samples < d_x:
            raise ConfigError(
                f"data.n_samples: {d.n_samples} < d_x = {d_x}; exactly whitened inputs (data.whiten=true) "
                "need n_samples >= d_x: raise data.n_samples or set data.whiten=false"
            )
        _seed(d.seed, "data.seed")


def _check_init(cfg: TrainConfig) -> None:
    ini = cfg.init
    option = next(name for name, cls in INIT_OPTIONS.items() if type(ini) is cls)
    if ini.kind != InitKind[option]:
        raise ConfigError(
            f"init.kind: {ini.kind.name} does not match the chosen option init={option}; choose the "
            f"initialisation with init=<{'|'.join(INIT_OPTIONS)}>, not by init.kind"
        )
    _seed(getattr(ini, "seed", None), "init.seed")
    if hasattr(ini, "scale"):
        _finite(ini.scale, "init.scale", nonneg=True)
    if hasattr(ini, "u0"):
        u0 = ini.u0
        values = u0 if isinstance(u0, list) else [u0]
        if not values or not all(is_number(v) for v in values):
            raise ConfigError(f"init.u0: expected a number or a non-empty list of numbers, got {u0!r}")
        for v in values:
            _finite(float(v), "init.u0")
        if option == "balanced" and any(v < 0 for v in values):
            raise ConfigError(f"init.u0: singular values of a balanced init must be >= 0, got {u0}")
        if len(values) > min(cfg.model.dims) and isinstance(u0, list):
            raise ConfigError(
                f"init.u0: at most r_max = min(model.dims) = {min(cfg.model.dims)} values, got {len(values)}"
            )


def make_solver(cfg: TrainConfig, method: str | None = None, max_nfe: int | None = None) -> Solver:
    """The flow's :class:`Solver` from ``flow.*`` (the core's own checks, mapped to the keys);
    ``method`` replaces ``flow.method=auto`` once it is chosen, ``max_nfe`` a null ``flow.max_nfe``."""
    f = cfg.flow
    if f.method.name == "auto" and f.step_size is not None:
        raise ConfigError(
            "flow.step_size: flow.method=auto chooses an adaptive method; name a fixed-step method "
            "(flow.method=euler, midpoint, rk4, explicit_adams, implicit_adams) to give a step"
        )
    keys = {k: f"flow.{k}" for k in ("method", "rtol", "atol", "step_size", "max_nfe", "options")}
    with keyed(keys, "flow"):
        return Solver(
            method or (f.method.name if f.method.name != "auto" else "lsoda"),
            f.rtol,
            f.atol,
            f.step_size,
            f.max_nfe if f.max_nfe is not None else max_nfe,
        )


def _check_flow(cfg: TrainConfig) -> None:
    f = cfg.flow
    if cfg.sgd.sme and (cfg.ensemble.size < 2 or cfg.sgd.batch_size is None or cfg.sgd.momentum):
        raise ConfigError(
            "sgd.sme: the stochastic modified equation is minibatch SGD's, compared across an ensemble: it "
            f"needs ensemble.size >= 2, sgd.batch_size and sgd.momentum=0 (got ensemble.size "
            f"{cfg.ensemble.size}, batch_size {cfg.sgd.batch_size}, momentum {cfg.sgd.momentum})"
        )
    if cfg.sgd.sme and cfg.sgd.sampling.name == "reshuffle":
        raise ConfigError(
            "sgd.sme: the SME models independent minibatches (each step's gradient noise c Sigma); "
            "sgd.sampling=reshuffle's within an epoch are not: use sgd.sampling=with_replacement or "
            "without_replacement"
        )
    if f.modified and (cfg.sgd.batch_size is not None or cfg.sgd.momentum or not cfg.sgd.lrs):
        raise ConfigError(
            "flow.modified: the modified flow is full-batch GD's: it needs sgd.lrs, sgd.batch_size=null and "
            f"sgd.momentum=0 (got lrs {list(cfg.sgd.lrs)}, batch_size {cfg.sgd.batch_size}, momentum {cfg.sgd.momentum})"
        )
    for key, on in (("flow.central", f.central), ("sgd.edge", cfg.sgd.edge)):
        if on and (
            cfg.sgd.batch_size is not None or cfg.sgd.momentum or not cfg.sgd.lrs or cfg.ensemble.size > 1
        ):
            raise ConfigError(
                f"{key}: the edge of stability and the central flow are full-batch GD's, of one net: it needs "
                f"sgd.lrs, sgd.batch_size=null, sgd.momentum=0 and ensemble.size=1 (got lrs {list(cfg.sgd.lrs)}, "
                f"batch_size {cfg.sgd.batch_size}, momentum {cfg.sgd.momentum}, ensemble.size {cfg.ensemble.size})"
            )
    _finite(f.t_max, "flow.t_max", positive=True)
    if f.t_max < MIN_T_MAX:
        raise ConfigError(
            f"flow.t_max: {f.t_max:g} is shorter than any step the solvers take (rk45 stops below steps of "
            f"1e-14 (1 + |t|), LSODA and CVODE fail near 1e-200); allowed: flow.t_max >= {MIN_T_MAX:g}"
        )
    make_solver(cfg)
    if f.rtol < MIN_RTOL:
        raise ConfigError(
            f"flow.rtol: {f.rtol:g} is below 100 eps = {MIN_RTOL:.3g}: no error test can pass below float64's "
            f"rounding of the state; allowed: [{MIN_RTOL:.3g}, {MAX_RTOL:g}]"
        )
    defaults = {"rtol": DEFAULT_RTOL, "atol": DEFAULT_ATOL}
    for key, tol in (("rtol", f.rtol), ("atol", f.atol)):
        if tol > MAX_RTOL:
            raise ConfigError(
                f"flow.{key}: {tol:g} is above {MAX_RTOL:g}: the flow would be too coarse to compare SGD "
                f"with; allowed: (0, {MAX_RTOL:g}] (the default is {defaults[key]:g})"
            )
    if f.chunk_members is not None and f.chunk_members < 0:
        raise ConfigError(
            f"flow.chunk_members: {f.chunk_members} members per chunk; allowed: an integer >= 1, 0 (the whole "
            "ensemble in one chunk) or null (by method)"
        )
    if f.step_size is not None and f.step_size > f.t_max:
        raise ConfigError(
            f"flow.step_size: {f.step_size:g} is larger than the horizon flow.t_max = {f.t_max:g}"
        )


def _check_sgd(cfg: TrainConfig) -> None:
    s = cfg.sgd
    _finite(s.momentum, "sgd.momentum", nonneg=True)
    if s.momentum >= 1:
        raise ConfigError(f"sgd.momentum: must be in [0, 1), got {s.momentum}")
    for lr in s.lrs:
        if not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"sgd.lrs: every learning rate must be finite and > 0, got {list(s.lrs)}")
    for lr in s.lrs:
        tau = lr / (1.0 - s.momentum)
        if tau > cfg.flow.t_max:
            raise ConfigError(
                f"sgd.lrs: one step at lr = {lr:g} stands for time {tau:g} > flow.t_max = {cfg.flow.t_max:g}: "
                "the series would not take a single step within the horizon; lower the learning rate or "
                "raise flow.t_max"
            )
    if len(set(s.lrs)) != len(s.lrs):
        raise ConfigError(f"sgd.lrs: learning rates must be distinct, got {list(s.lrs)}")
    if s.batch_size is not None and s.batch_size < 1:
        raise ConfigError(f"sgd.batch_size: must be >= 1 or null (full batch), got {s.batch_size}")
    _finite(s.blowup, "sgd.blowup", positive=True)
    if s.order_fit < 3:
        raise ConfigError(
            f"sgd.order_fit: the slope is fitted over at least 3 learning rates, got {s.order_fit}"
        )
    _seed(s.seed, "sgd.seed")


def _check_log_and_limits(cfg: TrainConfig) -> None:
    g = cfg.log
    _finite(g.dt, "log.dt", positive=True)
    if g.dt > cfg.flow.t_max:
        raise ConfigError(f"log.dt: {g.dt:g} is larger than flow.t_max = {cfg.flow.t_max:g}")
    for key in ("analysis_points",):
        if getattr(g, key) < 0:
            raise ConfigError(f"log.{key}: must be >= 0 (0: off), got {getattr(g, key)}")
    for key in ("sv_A_top", "hessian_dense_max", "top_eigs"):
        if getattr(g, key) < 1:
            raise ConfigError(f"log.{key}: must be >= 1, got {getattr(g, key)}")
    if g.tb_max_points < 2:
        raise ConfigError(
            f"log.tb_max_points: must be >= 2 (a bucket's minimum and maximum), got {g.tb_max_points}"
        )
    _finite(g.theta_max_mb, "log.theta_max_mb", positive=True)
    for key, value in vars(cfg.limits).items():
        _finite(float(value), f"limits.{key}", positive=True)
    for key in ("grid_points", "sgd_steps", "flow_nfe"):
        if getattr(cfg.limits, key) > EXACT_COUNT:
            raise ConfigError(
                f"limits.{key}: {getattr(cfg.limits, key):.3g} is above 2^53 = {EXACT_COUNT:.4g}, where counts "
                f"stop being exact in float64; allowed: (0, 2^53]"
            )
    _finite(cfg.checkpoint.every_s, "checkpoint.every_s", positive=True)
    if cfg.ensemble.size < 1:
        raise ConfigError(f"ensemble.size: must be >= 1 (1: one net), got {cfg.ensemble.size}")


def check_fixed_step(cfg: TrainConfig, lam_max: float, lam_where: str) -> None:
    """A fixed step above the method's stability bound c / lambda_max gives a meaningless flow."""
    f = cfg.flow
    if f.method.name not in TORCHDIFFEQ_FIXED or f.step_size is None or lam_max <= 0:
        return
    c = FIXED_STEP_STABILITY[f.method.name]
    bound = c / lam_max
    if f.step_size > bound:
        raise ConfigError(
            f"flow.step_size: {f.step_size:g} is above the stability bound of {f.method.name} on this "
            f"problem, {c:g} / lambda_max = {bound:.4g} (lambda_max = {lam_max:.4g}, the Hessian's largest "
            f"eigenvalue {lam_where}); choose flow.step_size <= {bound:.3g} or an adaptive method "
            "(flow.method=lsoda or dopri5)"
        )
