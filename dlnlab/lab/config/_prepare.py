"""From a config to everything a run needs, or a ConfigError before any work: :func:`prepare`.

The order is the cheap checks first: types and keys (the schema), ranges and rules across keys, the
sizes (before any array is built), then the data, the initial weights and the estimates that need
them (the stiffness of the flow, the time of one gradient: ``_build``, imported only then, so that a
config refused on its own imports no torch). Lightning is imported by the last check alone, and nothing
is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dlnlab._layout import Layout
from dlnlab.flow import SCIPY_STIFF
from dlnlab.lab.config import _budget as budget
from dlnlab.lab.config import _choose as choose
from dlnlab.lab.config import _files as files
from dlnlab.lab.config._errors import ConfigError
from dlnlab.lab.config._plan import Plan, Seeds
from dlnlab.lab.config._rules import check_config
from dlnlab.lab.config._schema import TrainConfig, typed_config
from dlnlab.lab.config._seeds import derive_seed
from dlnlab.lab.config._targets import LOGGER_SUPPLIED, check_target, import_class

__all__ = ["Seeds", "Plan", "prepare", "import_class", "SCIPY_MAX_WEIGHTS"]

SCIPY_MAX_WEIGHTS = choose.SCIPY_MAX_WEIGHTS


def _seeds(cfg: TrainConfig) -> Seeds:
    def pick(value, purpose):
        return derive_seed(cfg.seed, purpose) if value is None else int(value)

    data = pick(cfg.data.seed, "data") if hasattr(cfg.data, "seed") else None
    init = pick(cfg.init.seed, "init") if hasattr(cfg.init, "seed") else None
    sgd = pick(cfg.sgd.seed, "sgd")
    members: tuple[dict, ...] = ()
    if cfg.ensemble.size > 1:
        shared = cfg.ensemble.vary.name == "sgd"  # one init for all: the minibatch noise alone
        members = tuple(
            {
                "data": data,
                "init": init if e == 0 or init is None or shared else derive_seed(init, f"member{e}"),
                "sgd": sgd if e == 0 else derive_seed(sgd, f"member{e}"),
            }
            for e in range(cfg.ensemble.size)
        )
    return Seeds(seed=cfg.seed, data=data, init=init, sgd=sgd, members=members)


def _check_sampling(cfg: TrainConfig, n_samples: int) -> None:
    s = cfg.sgd
    if s.batch_size is not None and s.sampling.name != "with_replacement" and s.batch_size > n_samples:
        raise ConfigError(
            f"sgd.batch_size: {s.batch_size} > N = {n_samples} samples; a batch drawn without replacement "
            f"({s.sampling.name}) holds at most N (sgd.batch_size={n_samples} or null is full-batch GD)"
        )


def _check_logger_and_callbacks(cfg: TrainConfig) -> None:
    """Last, since it imports Lightning: the logger and the callbacks name Lightning classes that can be
    made with the config's arguments (:mod:`dlnlab.lab.config._targets`)."""
    if cfg.logger and cfg.logger.get("_target_") is not None:
        check_target(cfg.logger, "logger", "lightning.pytorch.loggers.Logger", LOGGER_SUPPLIED)
    for name, node in cfg.callbacks.items():
        check_target(node, f"callbacks.{name}", "lightning.pytorch.callbacks.Callback")


def prepare(raw_cfg: Any, before_targets: Callable[[Plan], None] | None = None) -> Plan:
    """Check ``raw_cfg`` (a Hydra DictConfig, a dict or a TrainConfig) and build the run's inputs.
    ``before_targets(plan)`` is called with the plan before the last check, the one that imports
    Lightning (the command line starts the flow's solve there: :mod:`dlnlab.lab.runner._ahead`)."""
    cfg = typed_config(raw_cfg)
    check_config(cfg)
    budget.check_counts(cfg)
    lay = Layout(tuple(cfg.model.dims))
    data_bytes = (
        sum(files.npz_bytes(cfg.data.path, "data.path").values()) if cfg.data.kind.name == "file" else None
    )
    dims = tuple(cfg.model.dims)
    # The files' names and shapes from their headers: refused here, before torch is imported
    n_samples = (
        files.check_data_shapes(cfg.data.path, dims) if cfg.data.kind.name == "file" else cfg.data.n_samples
    )
    if cfg.init.kind.name == "file":
        files.check_weight_shapes(cfg.init.path, dims)
    _check_sampling(cfg, n_samples)
    est = budget.estimate(cfg, data_bytes)
    budget.check_sizes(cfg, est)
    if (
        cfg.flow.method.name in (*SCIPY_STIFF, "bdf_batch", "radau_batch")
        and lay.n_weights > SCIPY_MAX_WEIGHTS
    ):
        raise ConfigError(
            f"flow.method: {cfg.flow.method.name} factorises the dense {lay.n_weights} x {lay.n_weights} "
            f"Hessian of this net (more than {SCIPY_MAX_WEIGHTS} weights); use flow.method=cvode (stiff, "
            "matrix-free), flow.method=auto, or an explicit method such as flow.method=dopri5"
        )
    seeds = _seeds(cfg)
    from dlnlab.lab.config._build import build  # torch: only for a config that passed the checks above

    plan = build(cfg, seeds, lay, est)
    if before_targets is not None:
        before_targets(plan)
    _check_logger_and_callbacks(cfg)
    return plan
