"""Typed configuration: one dataclass per config group, registered in Hydra's ConfigStore.

Every key, its type and its default live here, once. ``conf/`` only chooses options (a net's widths,
which initialisation) and experiment deltas. Types, unknown keys and missing values are checked by
OmegaConf when Hydra composes; :func:`typed_config` does the same for a plain dict (notebooks, tests)
and refuses keys added with Hydra's ``+key=value``, which bypasses the schema. Ranges and rules
across keys are :mod:`dlnlab.lab.config._rules`.

The options of ``data`` and ``init`` have different keys: each has its own schema, stored as
``schema/data/<option>`` and ``schema/init/<option>``, which the option's YAML file names in its
defaults list (``- /schema/init@_here_: gaussian``), Hydra's pattern of a schema for a config file.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dlnlab._sizes import DENSE_HESSIAN_MAX
from dlnlab.flow import DEFAULT_ATOL, DEFAULT_RTOL, METHODS
from dlnlab.lab.config._errors import ConfigError
from dlnlab.lab.config._omegaconf_errors import (
    describe_omegaconf_error,
    plain_group_message,
    unknown_key_message,
    unknown_keys,
)

__all__ = [
    "config_class",
    "DataKind",
    "InitKind",
    "Sampling",
    "FlowMethod",
    "ProgressMode",
    "ModelConfig",
    "DataConfig",
    "TeacherData",
    "FileData",
    "InitConfig",
    "GaussianInit",
    "OrthogonalInit",
    "BalancedInit",
    "AlignedInit",
    "FileInit",
    "FlowConfig",
    "SGDConfig",
    "LogConfig",
    "LimitsConfig",
    "CheckpointConfig",
    "EnsembleConfig",
    "RunConfig",
    "TrainConfig",
    "typed_config",
    "to_plain",
    "describe_omegaconf_error",
]

FIGURE1_DIMS = (11, 6, 6, 6, 6, 4)  # conf/model/figure1.yaml: a plain dict's default net

# Enum members are spelt as the user types them (OmegaConf matches a string to a member's name).
DataKind = Enum("DataKind", {k: k for k in ("teacher", "file")})
InitKind = Enum("InitKind", {k: k for k in ("gaussian", "orthogonal", "balanced", "aligned", "file")})
Sampling = Enum("Sampling", {k: k for k in ("with_replacement", "without_replacement", "reshuffle")})
FlowMethod = Enum("FlowMethod", {m: m for m in ("auto", *METHODS)})  # auto: chosen by size
ProgressMode = Enum("ProgressMode", {k: k for k in ("auto", "always", "never")})
EnsembleVary = Enum("EnsembleVary", {k: k for k in ("both", "sgd")})  # what differs between members


@dataclass
class ModelConfig:
    """The network's widths [d_x, d_1, ..., d_{h-1}, d_y]; the depth is h = len(dims) - 1."""

    # widths [d_x, d_1, ..., d_y]; depth h = len - 1 >= 1, all > 0 (model=figure1: [11,6,6,6,6,4], model=tiny: [4,3,3,2])
    dims: list[int] = MISSING


@dataclass
class DataConfig:
    kind: DataKind = MISSING  # set by the option: data=teacher or data=file


@dataclass
class TeacherData(DataConfig):
    """Y = T X from a teacher T = U [diag(s) | 0] V^T with Haar-random U, V."""

    kind: DataKind = DataKind.teacher
    # the teacher's singular values (at most min(d_x, d_y), >= 0); its singular vectors are random (data.seed)
    singular_values: list[float] = field(default_factory=lambda: [4.0, 3.0, 2.0, 1.0])
    n_samples: int = 110  # N
    whiten: bool = True  # exactly whitened inputs X = sqrt(N) Q^T (needs N >= d_x); false: i.i.d. Gaussian
    noise: float = 0.0  # std of Gaussian label noise
    seed: int | None = None  # data seed (null: derived from seed)


@dataclass
class FileData(DataConfig):
    """X (d_x x N) and Y (d_y x N) from an .npz file."""

    kind: DataKind = DataKind.file
    # an .npz with X (d_x x N) and Y (d_y x N), real numbers (docs/cli.md: what is refused)
    path: str = MISSING


@dataclass
class InitConfig:
    kind: InitKind = MISSING  # set by the option: init=gaussian, orthogonal, balanced, aligned or file


@dataclass
class GaussianInit(InitConfig):
    """W_j with i.i.d. N(0, scale^2) entries."""

    kind: InitKind = InitKind.gaussian
    scale: float = 0.1  # gaussian: the std of each entry; orthogonal: every singular value of each layer
    seed: int | None = None  # init seed (null: derived from seed)


@dataclass
class OrthogonalInit(InitConfig):
    """W_j = scale x a Haar semi-orthogonal matrix."""

    kind: InitKind = InitKind.orthogonal
    scale: float = 0.1  # every singular value of each layer
    seed: int | None = None  # init seed (null: derived from seed)


@dataclass
class BalancedInit(InitConfig):
    """0-balanced factorisation of a random map with singular values u0 (a number or a list)."""

    kind: InitKind = InitKind.balanced
    # balanced, aligned: the end-to-end map's strength, a number or one value per mode (aligned: < 0 is the stable branch)
    u0: Any = 0.001
    seed: int | None = None  # init seed (null: derived from seed)


@dataclass
class AlignedInit(InitConfig):
    """Data mode k starts at product strength u0_k (a number or one per mode; negative: stable branch)."""

    kind: InitKind = InitKind.aligned
    u0: Any = 0.001  # each mode's product strength, a number or one per mode (< 0: the stable branch)
    seed: int | None = None  # init seed (null: derived from seed)


@dataclass
class FileInit(InitConfig):
    """The user's own weights from an .npz: W_1 .. W_h, or A0 (the n x n adjacency)."""

    kind: InitKind = InitKind.file
    # an .npz with W_1 .. W_h (W_j of shape d_j x d_{j-1}; W1 also accepted) or A0 (n x n, zero outside the blocks); a run's problem.npz restarts from its weights
    path: str = MISSING


@dataclass
class FlowConfig:
    t_max: float = 300.0  # horizon of the flow and of every SGD series
    # auto: the cheapest of lsoda, cvode and rk45 by a cost model of the net's shapes, the same on every machine (dlnlab/lab/config/_choose.py, docs/performance.md); lsoda, bdf, radau: scipy with the exact Jacobian; cvode: SUNDIALS BDF with GMRES on Hessian-vector products; rk45: dlnlab's Dormand-Prince; the rest are torchdiffeq's (dopri8 and bosh3 interpolate their output between steps at low order: 1e3-1e4 x rtol off there at rtol 1e-10, docs/theory.md)
    method: FlowMethod = FlowMethod.auto
    rtol: float = DEFAULT_RTOL  # relative tolerance, at most 1e-3 (docs/benchmarks/flow.md chose the default)
    atol: float = DEFAULT_ATOL  # absolute tolerance, at most 1e-3
    step_size: float | None = None  # fixed-step methods only: at most the horizon and the stability bound
    # also GD's modified flow at each learning rate (series modflow_lr_<lr>); full-batch GD only
    modified: bool = False
    # also GD's central flow at each learning rate (series cflow_lr_<lr>, docs/eos.md) and GD's edge-of-stability report against it (edge_lr_<lr>); full-batch GD only
    central: bool = False
    max_nfe: int | None = None  # budget of right-hand-side evaluations; past it, a solver failure (recorded)
    # an ensemble's flow in ceil(E / c) chunks of c consecutive members, run.workers of them solved at once (the files never depend on run.workers); null: by method (radau_batch, bdf_batch 32; lsoda, bdf, radau, cvode 8: they solve member by member; the others, whose batch shares its per-call cost, the whole ensemble), 0: one chunk (docs/performance.md)
    chunk_members: int | None = None


@dataclass
class SGDConfig:
    # learning rates, any order, distinct, > 0; [] runs the flow alone
    lrs: list[float] = field(default_factory=lambda: [0.01, 0.005, 0.0025])
    # null: full-batch GD; else the minibatch size (without replacement: at most N; with replacement any
    # size, N or more warned: B i.i.d. draws a step, still SGD, not full-batch GD)
    batch_size: int | None = None
    # with_replacement: B i.i.d. indices a step; without_replacement: a fresh uniform B-subset a step;
    # reshuffle: consecutive slices of fresh permutations (epochs; O(eta) from the flow, no SME)
    sampling: Sampling = Sampling.with_replacement
    momentum: float = 0.0  # heavy ball beta in [0, 1); a step stands for time lr / (1 - beta)
    seed: int | None = None  # minibatch seed (null: derived from seed)
    # diverged when ||A||_F > blowup (||A0||_F + ||A*||_F), A* a balanced minimum, or not finite
    blowup: float = 1000.0
    order_fit: int = 3  # every order in eta is fitted over this many smallest learning rates with a value (>= 3; fewer: no order)
    # with an ensemble and minibatches: the SME's ensemble at each learning rate too (sme_lr_<lr>)
    sme: bool = False
    # edge-of-stability diagnostics of each GD series (series edge_lr_<lr>: GD at every step through the crossing of 2/eta, docs/eos.md); on with flow.central; full-batch GD only
    edge: bool = False


@dataclass
class LogConfig:
    dt: float = 0.1  # the time grid t_m = m dt (at most flow.t_max: where t_max is not a multiple of dt, the grid and every series end at its last point before it, and the start block says so)
    # Hessian lambda_min and sharpness on up to this many evenly spaced grid points per series, and at the last
    # (0: off), fewer where they would cost more than a quarter of the run
    analysis_points: int = 100
    sv_A_top: int = 32  # how many singular values of A to record
    # the top k Hessian eigenvalues at each analysis point (top_eigs (T, k) in the series npz); >= 1
    top_eigs: int = 3
    # dense Hessian eigensolver up to this many weights, warm-started Lanczos above
    hessian_dense_max: int = DENSE_HESSIAN_MAX
    # points per tag sent to TensorBoard: every grid point up to this many, above it each bucket's minimum and maximum; TensorBoard keeps 1000 per tag unless told otherwise (docs/tensorboard.md)
    tb_max_points: int = 1000
    figures: bool = True  # write figures/ (and the images to TensorBoard)
    save_theta: bool = True  # store theta in each series npz
    theta_max_mb: float = 256.0  # theta of one series up to this size; above it every k-th grid point (theta_sub, theta_grid_index)
    progress: ProgressMode = ProgressMode.auto  # a progress bar on a terminal (auto), always or never


@dataclass
class LimitsConfig:
    """Refuse impossible work before it starts; raise a limit to mean it."""

    # counts are floats so that limits.sgd_steps=1e9 reads as it is written
    grid_points: float = 1e6  # refused above: the grid's points flow.t_max / log.dt + 1
    sgd_steps: float = 1e8  # refused above: the steps of one SGD series, flow.t_max / tau
    # refused above: the flow's estimated right-hand-side evaluations; every solve also stops there
    flow_nfe: float = 1e8
    # a stiff solve stops (a solver failure) after this many times 100 (1 + t_max)^0.6 evaluations
    stiff_nfe_factor: float = 100.0
    memory_gb: float = 8.0  # refused above: the run's estimated peak memory
    series_file_gb: float = 2.0  # refused above: the estimated size of one series npz


@dataclass
class CheckpointConfig:
    """Lightning checkpoints of the running SGD series (``checkpoints/<series>.ckpt``), for ``resume``."""

    # checkpoint the running SGD series (checkpoints/<series>.ckpt), for resume=<run dir>
    enabled: bool = True
    every_s: float = 60.0  # wall-clock seconds between checkpoints; one more when a signal stops it


@dataclass
class EnsembleConfig:
    """B copies of the run that differ in their init and minibatch seeds, stepped together as one batch."""

    size: int = 1  # E > 1: E copies stepped together (series files get a member axis); 1: one net
    # both: init and minibatch seeds differ; sgd: one init for all, only the minibatches (the SGD noise alone: strong and weak errors)
    vary: EnsembleVary = EnsembleVary.both


@dataclass
class RunConfig:
    """How the run uses the machine (never what it computes: the files are the same for every value)."""

    # worker processes for the series after the flow (one learning rate's series each, at once); null: the cores this process may use (os.sched_getaffinity); 1: one after the other in this process
    workers: int | None = None


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = MISSING
    init: InitConfig = MISSING
    flow: FlowConfig = field(default_factory=FlowConfig)
    sgd: SGDConfig = field(default_factory=SGDConfig)
    log: LogConfig = field(default_factory=LogConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    run: RunConfig = field(default_factory=RunConfig)
    # the Lightning logger of every series (conf/logger/): logger=tensorboard (the command line's default), csv, none, or any Lightning logger by its _target_; a plain dict's default is none
    logger: Any = None
    # More Lightning callbacks for the SGD series, by name ({_target_: ...}); GridPointCallbacks also
    # see the flow's grid points.
    callbacks: dict[str, Any] = field(default_factory=dict)
    # Where the flow (torchdiffeq methods) and the SGD steps run: cpu, cuda or cuda:<index> (Lightning's
    # accelerator). The metrics are computed on the CPU.
    device: str = "cpu"
    seed: int = 0  # derives data.seed, init.seed and sgd.seed where those are null


DATA_OPTIONS: dict[str, type[DataConfig]] = {"teacher": TeacherData, "file": FileData}
INIT_OPTIONS: dict[str, type[InitConfig]] = {
    "gaussian": GaussianInit,
    "orthogonal": OrthogonalInit,
    "balanced": BalancedInit,
    "aligned": AlignedInit,
    "file": FileInit,
}


def _register() -> None:
    from dlnlab.rundir import claim_directory

    OmegaConf.register_new_resolver("dlnlab_unique", claim_directory, use_cache=True, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="dlnlab_schema", node=TrainConfig)
    for name, node in DATA_OPTIONS.items():
        cs.store(group="schema/data", name=name, node=node)
    for name, node in INIT_OPTIONS.items():
        cs.store(group="schema/init", name=name, node=node)


_register()


# ----------------------------------------------------------------------------------------------
# A config (Hydra's DictConfig, a plain dict or a TrainConfig) -> a checked TrainConfig


def _option_node(value: Any, options: Mapping[str, type], group: str) -> Any:
    """A plain mapping for ``data`` / ``init`` is merged onto the schema its ``kind`` names."""
    if isinstance(value, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(value)):
        return value
    if not isinstance(value, Mapping):
        return value
    kind = value.get("kind")
    kind = getattr(kind, "name", kind)
    if kind is None:  # no kind: the default option, or the one option whose keys these are
        fits = [k for k, cls in options.items() if set(value) <= {f.name for f in dataclasses.fields(cls)}]
        default = next(iter(options))
        kind = default if default in fits else fits[0] if len(fits) == 1 else None
        if kind is None:
            raise ConfigError(
                f"{group}.kind: missing, and the keys {', '.join(sorted(value))} fit "
                f"{' and '.join(fits) if fits else 'no option'}; give {group}.kind, one of: {', '.join(options)}"
            )
        value = {**value, "kind": kind}
    if kind not in options:
        raise ConfigError(f"{group}.kind: unknown value {kind!r}; allowed: {', '.join(options)}")
    return OmegaConf.merge(OmegaConf.structured(options[kind]), value)


def config_class(name: str) -> type | None:
    """The schema's dataclass called ``name`` (``"FlowConfig"``, ``"GaussianInit"``), or None: the node a
    Hydra error names, for the keys it allows."""
    cls = globals().get(name)
    return cls if isinstance(cls, type) and dataclasses.is_dataclass(cls) else None


def typed_config(cfg: Any) -> TrainConfig:
    """Merge ``cfg`` onto the schema and return the resolved :class:`TrainConfig`.

    A plain dict gets what the command line's defaults choose where it says nothing: the Figure 1 net
    (``model.dims``), ``data`` a teacher and ``init`` gaussian; a ``data`` or ``init`` without ``kind``
    is that default option, or the one option whose keys it has (``{"path": ...}`` is a file).

    Raises ConfigError (naming the key) for a wrong type, an unknown key, a missing value or an
    interpolation that does not resolve.
    """
    if isinstance(cfg, TrainConfig):
        cfg = OmegaConf.structured(cfg)
    try:
        if not (isinstance(cfg, DictConfig) and OmegaConf.get_type(cfg) is TrainConfig):
            if not isinstance(cfg, Mapping):
                raise ConfigError(f"config: expected a mapping, got {type(cfg).__name__}")
            cfg = dict(cfg)
            groups = (f.name for f in dataclasses.fields(TrainConfig) if str(f.type).endswith("Config"))
            if why := plain_group_message(cfg, groups):  # model, data, ...: each a mapping of its keys
                raise ConfigError(why)
            # what conf/train.yaml's defaults list chooses: the Figure 1 net, a teacher, gaussian init
            cfg["model"] = {"dims": list(FIGURE1_DIMS), **dict(cfg.get("model") or {})}
            for group, options in (("data", DATA_OPTIONS), ("init", INIT_OPTIONS)):
                cfg[group] = _option_node(cfg.get(group) or {}, options, group)
            cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg)
        bad = unknown_keys(cfg)
        if bad:
            raise ConfigError(unknown_key_message(*bad[0]))
        typed = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(describe_omegaconf_error(err)) from err
    _check_list_elements(typed)
    return typed


def _check_list_elements(obj: Any, prefix: str = "") -> None:
    """A ``list[float]`` or ``list[int]`` holds numbers: OmegaConf checks the elements of a typed list
    but lets a nested list through (``sgd.lrs=[[0.1]]``)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        if dataclasses.is_dataclass(value):
            _check_list_elements(value, f"{prefix}{f.name}.")
        elif typing.get_origin(hint) is list and typing.get_args(hint)[0] in (int, float):
            for v in value:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    kind = typing.get_args(hint)[0].__name__
                    raise ConfigError(
                        f"{prefix}{f.name}: expected a list of numbers ({kind}), got an element {v!r}"
                    )


def to_plain(cfg: TrainConfig) -> dict:
    """The config as plain JSON types (enums as their names), for the summary and TensorBoard."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
