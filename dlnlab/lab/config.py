"""Validation of a run configuration, before any work starts (and before Lightning is imported).

``validate(cfg)`` takes the composed Hydra config (or any nested mapping with the same keys) and
returns a frozen :class:`RunConfig`, or raises :class:`ConfigError` naming the key and what is allowed.
This module imports neither Lightning nor Hydra.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "RunConfig", "validate", "derive_seed", "INIT_KINDS", "SAMPLINGS"]

INIT_KINDS = ("gaussian", "orthogonal", "balanced", "aligned")
DATA_KINDS = ("teacher", "file")
SAMPLINGS = ("with_replacement", "without_replacement")


SCIPY_MAX_WEIGHTS = 5000  # the stiff path's dense Jacobian is p x p: 5000 weights is 200 MB


class ConfigError(ValueError):
    """A configuration value is not allowed; the message names the key and the allowed values."""


@dataclass(frozen=True)
class DataConfig:
    kind: str
    path: str | None
    singular_values: tuple[float, ...]
    n_samples: int | None
    whiten: bool
    noise: float
    seed: int


@dataclass(frozen=True)
class InitConfig:
    kind: str
    scale: float | None
    u0: float | tuple[float, ...] | None
    seed: int


@dataclass(frozen=True)
class FlowConfig:
    t_max: float
    method: str
    rtol: float
    atol: float
    step_size: float | None
    max_nfe: int | None


@dataclass(frozen=True)
class SGDConfig:
    lrs: tuple[float, ...]
    batch_size: int | None
    sampling: str
    momentum: float
    seed: int
    blowup: float
    order_fit: int


@dataclass(frozen=True)
class LogConfig:
    dt: float
    analysis_points: int
    sv_A_top: int
    hessian_dense_max: int
    tensorboard: bool
    figures: bool
    save_theta: bool
    progress: str


@dataclass(frozen=True)
class RunConfig:
    dims: tuple[int, ...]
    data: DataConfig
    init: InitConfig
    flow: FlowConfig
    sgd: SGDConfig
    log: LogConfig
    seed: int
    raw: dict  # the plain nested dict the run was built from (for hparams and the record)


def derive_seed(seed: int, purpose: str) -> int:
    """A seed for ``purpose`` (data, init, sgd) derived from the run's ``seed``: stable across versions."""
    digest = hashlib.sha256(f"dlnlab:{int(seed)}:{purpose}".encode()).hexdigest()
    return int(digest[:8], 16)


def _plain(cfg: Any) -> Any:
    """DictConfig/ListConfig -> dict/list without importing omegaconf when not needed."""
    if hasattr(cfg, "_metadata") and hasattr(cfg, "_get_node"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, Mapping):
        return {k: _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_plain(v) for v in cfg]
    return cfg


def _get(d: Mapping, key: str, default: Any = ..., path: str = "") -> Any:
    full = f"{path}.{key}" if path else key
    if key not in d:
        if default is ...:
            raise ConfigError(f"{full}: missing (required)")
        return default
    return d[key]


def _number(v: Any, key: str, *, positive: bool = False, nonneg: bool = False, integer: bool = False) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{key}: expected a {'integer' if integer else 'number'}, got {v!r}")
    if integer and not float(v).is_integer():
        raise ConfigError(f"{key}: expected an integer, got {v!r}")
    if not math.isfinite(float(v)):
        raise ConfigError(f"{key}: must be finite, got {v!r}")
    if positive and v <= 0:
        raise ConfigError(f"{key}: must be > 0, got {v!r}")
    if nonneg and v < 0:
        raise ConfigError(f"{key}: must be >= 0, got {v!r}")
    return int(v) if integer else float(v)


def _bool(v: Any, key: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key}: expected true or false, got {v!r}")
    return v


def _choice(v: Any, key: str, allowed: tuple[str, ...]) -> str:
    if v not in allowed:
        raise ConfigError(f"{key}: unknown value {v!r}; allowed: {', '.join(allowed)}")
    return v


def _opt_seed(v: Any, key: str, seed: int, purpose: str) -> int:
    return derive_seed(seed, purpose) if v is None else _number(v, key, nonneg=True, integer=True)


def validate(cfg: Any) -> RunConfig:
    """Check every user-facing key and return a :class:`RunConfig`; raise ConfigError on bad values."""
    from dlnlab.flow import DEFAULT_ATOL, DEFAULT_RTOL, METHODS, TORCHDIFFEQ_FIXED, Solver  # no Lightning

    raw = _plain(cfg)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a mapping, got {type(raw).__name__}")
    seed = _number(_get(raw, "seed", 0), "seed", nonneg=True, integer=True)

    model = _get(raw, "model")
    dims_raw = _get(model, "dims", path="model")
    if not isinstance(dims_raw, (list, tuple)) or len(dims_raw) < 2:
        raise ConfigError(
            f"model.dims: need a list of at least two widths [d_x, ..., d_y] (depth h >= 1), got {dims_raw!r}"
        )
    dims = tuple(_number(d, "model.dims", integer=True) for d in dims_raw)
    if any(d < 1 for d in dims):
        raise ConfigError(f"model.dims: every width must be a positive integer, got {list(dims)}")
    d_x, d_y = dims[0], dims[-1]

    data = _get(raw, "data")
    kind = _choice(_get(data, "kind", "teacher"), "data.kind", DATA_KINDS)
    path = _get(data, "path", None)
    svals = _get(data, "singular_values", [], path="data") or []
    if not isinstance(svals, (list, tuple)):
        raise ConfigError(f"data.singular_values: expected a list of numbers, got {svals!r}")
    svals = tuple(_number(s, "data.singular_values", nonneg=True) for s in svals)
    n_samples = data.get("n_samples")
    if kind == "teacher":
        n_samples = _number(n_samples, "data.n_samples", positive=True, integer=True)
    whiten = _bool(_get(data, "whiten", True), "data.whiten")
    noise = _number(_get(data, "noise", 0.0), "data.noise", nonneg=True)
    if kind == "teacher":
        if not svals:
            raise ConfigError("data.singular_values: the teacher needs at least one singular value")
        if len(svals) > min(d_x, d_y):
            raise ConfigError(
                f"data.singular_values: at most min(d_x, d_y) = {min(d_x, d_y)} values for "
                f"model.dims={list(dims)}, got {len(svals)}"
            )
        if whiten and n_samples < d_x:
            raise ConfigError(
                f"data.n_samples: {n_samples} < d_x = {d_x}; exactly whitened inputs (data.whiten=true) "
                "need n_samples >= d_x"
            )
    else:
        if not path:
            raise ConfigError("data.path: data.kind=file needs the path of an .npz holding X and Y")
        if not Path(str(path)).is_file():
            raise ConfigError(f"data.path: no such file {path!r}")
    data_cfg = DataConfig(
        kind, path, svals, n_samples, whiten, noise, _opt_seed(data.get("seed"), "data.seed", seed, "data")
    )

    init = _get(raw, "init")
    ikind = _choice(_get(init, "kind", "gaussian"), "init.kind", INIT_KINDS)
    scale = init.get("scale")
    u0 = init.get("u0")
    if ikind in ("gaussian", "orthogonal"):
        if scale is None:
            raise ConfigError(f"init.scale: required for init.kind={ikind}")
        scale = _number(scale, "init.scale", nonneg=True)
    else:
        if u0 is None:
            raise ConfigError(f"init.u0: required for init.kind={ikind} (the strength of the end-to-end map)")
        if isinstance(u0, (list, tuple)):
            u0 = tuple(_number(v, "init.u0") for v in u0)
            if ikind == "balanced" and any(v < 0 for v in u0):
                raise ConfigError(f"init.u0: singular values of a balanced init must be >= 0, got {list(u0)}")
            if len(u0) > min(dims):
                raise ConfigError(
                    f"init.u0: at most r_max = min(model.dims) = {min(dims)} values, got {len(u0)}"
                )
        else:
            u0 = _number(u0, "init.u0")
            if ikind == "balanced" and u0 < 0:
                raise ConfigError(f"init.u0: singular values of a balanced init must be >= 0, got {u0}")
    init_cfg = InitConfig(ikind, scale, u0, _opt_seed(init.get("seed"), "init.seed", seed, "init"))

    flow = _get(raw, "flow")
    method = _choice(_get(flow, "method", None) or "", "flow.method", METHODS)
    step_size = flow.get("step_size")
    if step_size is not None:
        step_size = _number(step_size, "flow.step_size", positive=True)
    if method in TORCHDIFFEQ_FIXED and step_size is None:
        raise ConfigError(f"flow.step_size: required for the fixed-step method {method}")
    max_nfe = flow.get("max_nfe")
    flow_cfg = FlowConfig(
        t_max=_number(_get(flow, "t_max", path="flow"), "flow.t_max", positive=True),
        method=method,
        rtol=_number(_get(flow, "rtol", DEFAULT_RTOL), "flow.rtol", positive=True),
        atol=_number(_get(flow, "atol", DEFAULT_ATOL), "flow.atol", positive=True),
        step_size=step_size,
        max_nfe=None if max_nfe is None else _number(max_nfe, "flow.max_nfe", positive=True, integer=True),
    )

    n_weights = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    if method in ("bdf", "radau", "lsoda") and n_weights > SCIPY_MAX_WEIGHTS:
        raise ConfigError(
            f"flow.method: {method} factorises the dense {n_weights} x {n_weights} Hessian of this net "
            f"(more than {SCIPY_MAX_WEIGHTS} weights); use an explicit method such as flow.method=dopri5"
        )
    try:  # the solver's own checks (e.g. step_size only for fixed-step methods, scipy's rtol floor)
        Solver(flow_cfg.method, flow_cfg.rtol, flow_cfg.atol, flow_cfg.step_size, flow_cfg.max_nfe)
    except ValueError as err:
        raise ConfigError(str(err) if str(err).startswith("flow.") else f"flow: {err}") from err

    sgd = _get(raw, "sgd")
    lrs = _get(sgd, "lrs", path="sgd")
    if isinstance(lrs, (int, float)) and not isinstance(lrs, bool):
        lrs = [lrs]
    if not isinstance(lrs, (list, tuple)):
        raise ConfigError(f"sgd.lrs: expected a list of learning rates, got {lrs!r}")
    lrs = tuple(_number(v, "sgd.lrs", positive=True) for v in lrs)
    if len(set(lrs)) != len(lrs):
        raise ConfigError(f"sgd.lrs: learning rates must be distinct, got {list(lrs)}")
    batch_size = sgd.get("batch_size")
    if batch_size is not None:
        batch_size = _number(batch_size, "sgd.batch_size", positive=True, integer=True)
    sgd_cfg = SGDConfig(
        lrs=lrs,
        batch_size=batch_size,
        sampling=_choice(_get(sgd, "sampling", "with_replacement"), "sgd.sampling", SAMPLINGS),
        momentum=_number(_get(sgd, "momentum", 0.0), "sgd.momentum", nonneg=True),
        seed=_opt_seed(sgd.get("seed"), "sgd.seed", seed, "sgd"),
        blowup=_number(_get(sgd, "blowup", 1e3), "sgd.blowup", positive=True),
        order_fit=_number(_get(sgd, "order_fit", 3), "sgd.order_fit", integer=True),
    )
    if sgd_cfg.momentum >= 1:
        raise ConfigError(f"sgd.momentum: must be in [0, 1), got {sgd_cfg.momentum}")
    if sgd_cfg.order_fit < 3:
        raise ConfigError(
            f"sgd.order_fit: the slope is fitted over at least 3 learning rates, got {sgd_cfg.order_fit}"
        )

    log = _get(raw, "log")
    progress = str(_get(log, "progress", "auto"))
    log_cfg = LogConfig(
        dt=_number(_get(log, "dt", path="log"), "log.dt", positive=True),
        analysis_points=_number(
            _get(log, "analysis_points", 100), "log.analysis_points", nonneg=True, integer=True
        ),
        sv_A_top=_number(_get(log, "sv_A_top", 32), "log.sv_A_top", positive=True, integer=True),
        hessian_dense_max=_number(
            _get(log, "hessian_dense_max", 1500), "log.hessian_dense_max", positive=True, integer=True
        ),
        tensorboard=_bool(_get(log, "tensorboard", True), "log.tensorboard"),
        figures=_bool(_get(log, "figures", True), "log.figures"),
        save_theta=_bool(_get(log, "save_theta", True), "log.save_theta"),
        progress=_choice(progress, "log.progress", ("auto", "always", "never")),
    )
    if log_cfg.dt > flow_cfg.t_max:
        raise ConfigError(f"log.dt: {log_cfg.dt} is larger than flow.t_max = {flow_cfg.t_max}")
    return RunConfig(dims, data_cfg, init_cfg, flow_cfg, sgd_cfg, log_cfg, seed, dict(raw))
