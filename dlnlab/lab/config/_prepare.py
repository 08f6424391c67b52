"""From a config to everything a run needs, or a ConfigError before any work: :func:`prepare`.

The order is the cheap checks first: types and keys (the schema), ranges and rules across keys, the
sizes (before any array is built), then the data, the initial weights and the estimates that need
them (the stiffness of the flow, the time of one gradient). Lightning is never imported here, and
nothing is written.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from dlnlab.analysis import balanced_sharpness, gd_stability_threshold, hessian_extremes
from dlnlab.flow import SCIPY_STIFF, SUNDIALS, TORCHDIFFEQ_FIXED, Solver
from dlnlab.init import initial_weights
from dlnlab.lab.config import _budget as budget
from dlnlab.lab.config import _choose as choose
from dlnlab.lab.config import _files as files
from dlnlab.lab.config import _float64 as float64
from dlnlab.lab.config._errors import ConfigError, keyed
from dlnlab.lab.config._rules import check_config, check_fixed_step, make_solver
from dlnlab.lab.config._schema import TrainConfig, derive_seed, typed_config
from dlnlab.lab.config._targets import LOGGER_SUPPLIED, check_target, import_class
from dlnlab.network import Layout, pack
from dlnlab.problem import RegressionProblem

__all__ = ["Seeds", "Plan", "prepare", "import_class", "SCIPY_MAX_WEIGHTS"]

SCIPY_MAX_WEIGHTS = choose.SCIPY_MAX_WEIGHTS


@dataclass(frozen=True)
class Seeds:
    """The seeds a run uses (derived from ``seed`` where the config leaves them null). An ensemble's
    ``members`` lists each member's (data, init, sgd): member 0 has the run's own seeds, member e > 0
    init and sgd seeds derived from them, so that ``init.seed=<init> sgd.seed=<sgd>`` reruns it alone."""

    seed: int
    data: int | None
    init: int | None
    sgd: int
    members: tuple[dict, ...] = ()

    @property
    def sgd_seeds(self) -> list[int]:
        return [m["sgd"] for m in self.members] if self.members else [self.sgd]


@dataclass
class Plan:
    """A checked run: the typed config, its seeds, the problem, the initial weights and the estimates."""

    cfg: TrainConfig
    seeds: Seeds
    problem: RegressionProblem
    weights0: list[torch.Tensor]
    solver: Solver
    estimate: budget.Estimate
    gd_threshold: float | None  # 2 / (h m_1^(2-2/h)); None without data modes
    lam_max: float  # the flow's stiffness estimate (largest Hessian eigenvalue), 0 if unknown
    gradient_s: float  # one closed-form gradient here
    notes: list[str] = field(default_factory=list)  # warnings shown at the start of the run
    flow_choice: choose.FlowChoice | None = None  # the flow's method and why
    analysis: choose.AnalysisChoice | None = None  # the curvature points per series and why

    def choices(self) -> str:
        """The size-dependent choices, in one line (printed at the start of a run)."""
        a = self.analysis
        return (
            f"flow: {self.solver.method} ({self.flow_choice.why}; at most {self.solver.max_nfe:.3g} evaluations: "
            f"{self.budget_source}); curvature: {a.why}; saddles: {a.saddles_why}"
        )

    @property
    def budget_source(self) -> str:
        """Where the flow's evaluation budget comes from."""
        if self.cfg.flow.max_nfe is not None:
            return "flow.max_nfe"
        if self.solver.method in SCIPY_STIFF + SUNDIALS:
            return "limits.stiff_nfe_factor x 100 (1 + t_max)^0.6, at most limits.flow_nfe"
        return "limits.flow_nfe"

    def theta_every(self, n_grid: int) -> int:
        """Theta kept every this many grid points (log.theta_max_mb); 0: not kept."""
        return choose.theta_every(self.cfg, n_grid)

    @property
    def theta0(self) -> torch.Tensor:
        return pack(self.weights0)

    @property
    def lrs(self) -> list[float]:
        return sorted(self.cfg.sgd.lrs, reverse=True)

    @property
    def device(self) -> torch.device:
        return torch.device(self.cfg.device)

    @functools.cached_property
    def device_problem(self) -> RegressionProblem:
        """The problem on the run's device (the hot loops'); ``problem`` stays on the CPU (the metrics')."""
        return self.problem if self.device.type == "cpu" else self.problem.to(self.device)

    def callbacks(self) -> list:
        """The user's Lightning callbacks (config ``callbacks``), instantiated."""
        from hydra.utils import instantiate

        return [instantiate(c) for c in self.cfg.callbacks.values()]


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


def _problem(cfg: TrainConfig, seeds: Seeds) -> RegressionProblem:
    dims = tuple(cfg.model.dims)
    d = cfg.data
    if d.kind.name == "file":
        x, y = files.load_data(d.path, dims)
        with keyed({}, "data.path"):
            return RegressionProblem.from_data(x, y)
    keys = {k: f"data.{k}" for k in ("singular_values", "n_samples", "noise", "whiten")}
    with keyed(keys, "data"):
        return RegressionProblem.teacher(
            d.singular_values, dims[0], dims[-1], d.n_samples, whiten=d.whiten, noise=d.noise, seed=seeds.data
        )


def _weights(cfg: TrainConfig, seeds: Seeds, problem: RegressionProblem) -> list[torch.Tensor]:
    """[W_1, ..., W_h], each (d_j, d_{j-1}), or (E, d_j, d_{j-1}) for an ensemble (member e from its seed)."""
    if seeds.members:
        each = [_weights(cfg, replace(seeds, init=m["init"], members=()), problem) for m in seeds.members]
        return [torch.stack(ws) for ws in zip(*each)]
    ini, dims = cfg.init, tuple(cfg.model.dims)
    if ini.kind.name == "file":
        return files.load_weights(ini.path, dims)
    keys = {"scale": "init.scale", "u0": "init.u0", "dims": "model.dims", "kind": "init.kind"}
    with keyed(keys, "init"):
        return initial_weights(
            ini.kind.name,
            dims,
            problem,
            scale=getattr(ini, "scale", None),
            u0=getattr(ini, "u0", None),
            seed=seeds.init,
        )


def _check_sampling(cfg: TrainConfig, problem: RegressionProblem) -> None:
    s = cfg.sgd
    if (
        s.batch_size is not None
        and s.sampling.name == "without_replacement"
        and s.batch_size > problem.n_samples
    ):
        raise ConfigError(
            f"sgd.batch_size: {s.batch_size} > N = {problem.n_samples} samples; a batch drawn without "
            f"replacement holds at most N (sgd.batch_size={problem.n_samples} or null is full-batch GD)"
        )


def _stiffness(
    cfg: TrainConfig, problem: RegressionProblem, theta0: torch.Tensor, bound: float
) -> tuple[float, str]:
    """lambda_max of the Hessian: at the balanced global minimum h m_1^(2-2/h) and, where an unbalanced
    start can be sharper than any balanced minimum, at theta0: computed (dense eigvalsh or Lanczos)
    for a fixed-step flow, and wherever ``bound`` (the norm bound at theta0, :mod:`dlnlab.bounds`) is
    above the balanced minimum's; the bound alone would overstate it (2 to 20 times on the test nets)."""
    lay = Layout(tuple(cfg.model.dims))
    lam = balanced_sharpness(float(problem.modes[0]), lay.depth) if problem.n_modes else 0.0
    where = "at the balanced global minimum, h m_1^(2-2/h)"
    if cfg.flow.method.name in TORCHDIFFEQ_FIXED or bound > lam:
        lo, hi, _ = hessian_extremes(problem, theta0, lay, dense_max=cfg.log.hessian_dense_max)
        lam0 = hi if cfg.flow.method.name in TORCHDIFFEQ_FIXED else max(hi, -lo)
        if lam0 > lam:
            lam, where = lam0, "at the initial weights"
    return lam, where


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
    problem = _problem(cfg, seeds)
    float64.check_data_range(cfg, problem)
    _check_sampling(cfg, problem)
    weights0 = _weights(cfg, seeds, problem)
    bound = float64.check_weights_range(cfg, problem, weights0)
    theta0 = pack(weights0)
    lam, where = _stiffness(cfg, problem, theta0 if theta0.ndim == 1 else theta0[0], bound)
    check_fixed_step(cfg, lam, where)
    grad_s = budget.gradient_seconds(problem, theta0, lay)
    flow = choose.choose_flow(cfg, lam)
    budget.check_work(cfg, grad_s, lam, flow.method)
    max_nfe = budget.flow_nfe_budget(cfg, flow.method)
    analysis = choose.choose_analysis(
        cfg, choose.estimated_run_seconds(cfg, flow.method, lam), problem.n_modes
    )
    m1 = float(problem.modes[0]) if problem.n_modes else 0.0
    # None also where h m_1^(2-2/h) underflows to 0 (a denormal mode): no learning rate is above it
    threshold = gd_stability_threshold(m1, lay.depth) if balanced_sharpness(m1, lay.depth) > 0 else None
    notes = []
    beta = cfg.sgd.momentum
    if threshold is not None:
        bound = threshold * (1 + beta)  # heavy ball is linearly stable for lr lambda < 2 (1 + beta)
        above = [lr for lr in cfg.sgd.lrs if lr > bound]
        if above:
            notes.append(
                f"sgd.lrs: {', '.join(f'{lr:g}' for lr in above)} above the GD stability threshold "
                f"{bound:.4g} (2 (1 + momentum) / (h m_1^(2-2/h))): no global minimum is stable there; "
                "the series run and are expected to diverge or stall (status unstable)"
            )
    if cfg.ensemble.size > 1 and cfg.sgd.batch_size is None and not hasattr(cfg.init, "seed"):
        notes.append(
            f"ensemble.size: {cfg.ensemble.size} members from one init ({cfg.init.kind.name}) with full-batch GD "
            "are one trajectory repeated; a random init or minibatches (sgd.batch_size) make them differ"
        )
    plan = Plan(
        cfg, seeds, problem, weights0, make_solver(cfg, flow.method, max_nfe), est, threshold, lam, grad_s, notes,
        flow_choice=flow, analysis=analysis,
    )  # fmt: skip
    if before_targets is not None:
        before_targets(plan)
    _check_logger_and_callbacks(cfg)
    return plan
