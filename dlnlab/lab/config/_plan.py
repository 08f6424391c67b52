"""A checked run (:class:`Plan`) and its seeds (:class:`Seeds`): what :func:`dlnlab.lab.config.prepare`
returns. No torch at import (the checks before a run is built import none)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dlnlab.flow import SCIPY_STIFF, SUNDIALS
from dlnlab.lab.config import _budget as budget
from dlnlab.lab.config import _choose as choose
from dlnlab.lab.config._schema import TrainConfig

if TYPE_CHECKING:
    import torch

    from dlnlab.flow import Solver
    from dlnlab.problem import RegressionProblem

__all__ = ["Seeds", "Plan"]


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


def balanced_label(problem: RegressionProblem) -> str:
    """The balanced minimum's sharpness S_bal in words: the closed form for whitened data; otherwise no
    closed form holds (docs/theory.md section 6) and it is computed there."""
    return (
        "h m_1^(2-2/h)" if problem.whitened else "S_bal (computed at the balanced minimum: data not whitened)"
    )


@dataclass
class Plan:
    """A checked run: the typed config, its seeds, the problem, the initial weights and the estimates."""

    cfg: TrainConfig
    seeds: Seeds
    problem: RegressionProblem
    weights0: list[torch.Tensor]
    solver: Solver
    estimate: budget.Estimate
    balanced_sharpness: float  # S_bal (h m_1^(2-2/h) for whitened data); 0 without data modes
    lam_max: float  # the flow's stiffness estimate (largest Hessian eigenvalue), 0 if unknown
    gradient_s: float  # one closed-form gradient here
    notes: list[str] = field(default_factory=list)  # warnings shown at the start of the run
    flow_choice: choose.FlowChoice | None = None  # the flow's method and why
    analysis: choose.AnalysisChoice | None = None  # the curvature points per series and why

    @property
    def gd_threshold(self) -> float | None:
        """GD's stability threshold 2 / S_bal; None also where S_bal underflows to 0 (a denormal mode): no
        learning rate is above it."""
        return 2.0 / self.balanced_sharpness if self.balanced_sharpness > 0 else None

    @property
    def threshold_sharpness(self) -> str:
        """What ``gd_threshold`` divides 2 by, in words, to follow "2 / " (:func:`balanced_label`)."""
        label = balanced_label(self.problem)
        return f"({label})" if self.problem.whitened else label

    @property
    def stability_threshold(self) -> float | None:
        """The largest learning rate at which a global minimum is linearly stable: GD's ``gd_threshold``,
        times (1 + momentum) for heavy ball (stable while lr lambda < 2 (1 + momentum))."""
        return None if self.gd_threshold is None else self.gd_threshold * (1 + self.cfg.sgd.momentum)

    @property
    def stability_threshold_name(self) -> str:
        """``stability_threshold`` as a formula: "2 / (h m_1^(2-2/h))", "2 (1 + momentum) / S_bal (...)"."""
        return f"2{' (1 + momentum)' if self.cfg.sgd.momentum else ''} / {self.threshold_sharpness}"

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
        from dlnlab.network import pack

        return pack(self.weights0)

    @property
    def lrs(self) -> list[float]:
        return sorted(self.cfg.sgd.lrs, reverse=True)

    @property
    def device(self) -> torch.device:
        import torch

        return torch.device(self.cfg.device)

    @functools.cached_property
    def device_problem(self) -> RegressionProblem:
        """The problem on the run's device (the hot loops'); ``problem`` stays on the CPU (the metrics')."""
        return self.problem if self.device.type == "cpu" else self.problem.to(self.device)

    def callbacks(self) -> list:
        """The user's Lightning callbacks (config ``callbacks``), instantiated."""
        from hydra.utils import instantiate

        return [instantiate(c) for c in self.cfg.callbacks.values()]
