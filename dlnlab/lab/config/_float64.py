"""What float64 can follow: rules on the data and the initial weights, checked before any work.

Each rule compares a bound of :mod:`dlnlab.bounds` (exact-arithmetic upper bounds, as log10, so that
the check itself never overflows) with what float64 can hold or resolve, and names the key to change:

* Magnitudes. The loss, its gradient and the Hessian's spectral norm at the initial weights are at
  most ``MAX_MAGNITUDE`` = 1e150. The run squares such numbers (the gradient's norm, sums of squares
  in the metrics, the sharpness times a learning rate) and float64 ends at 1.8e308, whose square root
  is 1.3e154; 1e150 leaves room for the sums.
* Time scales. The flow's fastest time scale is 1/lambda_max, lambda_max the Hessian's largest
  eigenvalue: at the data's balanced global minimum h m_1^(2-2/h), and at the initial weights up to
  the bound. When lambda_max t_max > 1/eps = 4.5e15, t_max + 1/lambda_max rounds to t_max: float64
  cannot resolve that time scale over the horizon. Measured on the tiny net (dims [4, 3, 3, 2],
  t_max 4, LSODA at rtol 1e-9) with the initial weights scaled up: 1300 evaluations at
  lambda_max t_max eps = 0.04, erratic from 4e6 (4,600 to over 30,000 evaluations), never done
  from 4e14 (200,000 evaluations, minutes) - as for init.scale=1e40 or data with |X| near 1e99.

The bound at the initial weights is returned: where it is above h m_1^(2-2/h), the lab computes the
Hessian's extremes there for the flow's method choice and the explicit methods' work estimate
(:func:`dlnlab.lab.config._prepare`), since the bound overstates them (2 to 20 times on the test nets).
"""

from __future__ import annotations

import math

import torch

from dlnlab.bounds import magnitudes
from dlnlab.lab.config._errors import ConfigError
from dlnlab.lab.config._schema import TrainConfig
from dlnlab.network import Layout
from dlnlab.problem import RegressionProblem

__all__ = [
    "MAX_MAGNITUDE",
    "EPS",
    "check_data_range",
    "check_weights_range",
    "fmt_log10",
    "data_key",
    "init_key",
]

MAX_LOG10 = 150.0
MAX_MAGNITUDE = 10.0**MAX_LOG10
EPS = float(torch.finfo(torch.float64).eps)  # 2.2e-16
LOG10_EPS = math.log10(EPS)


def fmt_log10(x: float) -> str:
    """10^x written out, for any x (10.0 ** 1200 would overflow)."""
    if math.isinf(x):
        return "inf" if x > 0 else "0"
    exponent = math.floor(x)
    mantissa = 10.0 ** (x - exponent)
    if -300 < exponent < 300:
        return f"{mantissa * 10.0**exponent:.3g}"
    return f"{mantissa:.3g}e{exponent:+d}"


def data_key(cfg: TrainConfig) -> str:
    d = cfg.data
    if d.kind.name == "file":
        return "data.path"
    return "data.noise" if d.noise > max(d.singular_values, default=0.0) else "data.singular_values"


def init_key(cfg: TrainConfig) -> str:
    return {"file": "init.path", "balanced": "init.u0", "aligned": "init.u0"}.get(
        cfg.init.kind.name, "init.scale"
    )


def _balanced_log10(problem: RegressionProblem, depth: int) -> float:
    """log10 of h m_1^(2-2/h), the Hessian's largest eigenvalue at the balanced global minimum."""
    if not problem.n_modes or float(problem.modes[0]) <= 0:
        return -math.inf
    return math.log10(depth) + (2.0 - 2.0 / depth) * math.log10(float(problem.modes[0]))


def _check_time_scale(cfg: TrainConfig, log_lam: float, key: str, where: str) -> None:
    stiffness = log_lam + math.log10(cfg.flow.t_max)
    if stiffness + LOG10_EPS > 0:
        raise ConfigError(
            f"{key}: the flow's Hessian reaches lambda_max = {fmt_log10(log_lam)} ({where}): lambda_max * "
            f"flow.t_max = {fmt_log10(stiffness)} is above 1/eps = {1 / EPS:.3g}, so float64 cannot resolve "
            "the flow's fastest time scale 1/lambda_max over the horizon (t_max + 1/lambda_max rounds to "
            f"t_max) and no solver can follow it; allowed: lambda_max * flow.t_max <= {1 / EPS:.3g}: lower "
            f"{key}, rescale the data, or shorten flow.t_max"
        )


def check_data_range(cfg: TrainConfig, problem: RegressionProblem) -> None:
    """The data alone: the loss at zero weights (1/2 tr Syy) within MAX_MAGNITUDE, and the time scale
    of the balanced global minimum within float64's resolution of the horizon."""
    key = data_key(cfg)
    half_tr_syy = problem.tr_Syy / 2
    if not half_tr_syy <= MAX_MAGNITUDE:
        raise ConfigError(
            f"{key}: the loss at zero weights, tr(Syy) / 2 = {half_tr_syy:.3g}, is above {MAX_MAGNITUDE:.0e}: "
            "squared, as the run's norms and metrics do, it would overflow float64 (max 1.8e308); "
            "rescale the data"
        )
    depth = Layout(tuple(cfg.model.dims)).depth
    _check_time_scale(
        cfg, _balanced_log10(problem, depth), key, "at the data's balanced global minimum, h m_1^(2-2/h)"
    )


def check_weights_range(cfg: TrainConfig, problem: RegressionProblem, weights: list[torch.Tensor]) -> float:
    """The initial weights on the data: finite, magnitudes within MAX_MAGNITUDE, time scale within
    float64's resolution; returns the bound of the Hessian's norm at the initial weights."""
    key = init_key(cfg)
    if not all(bool(torch.isfinite(w).all()) for w in weights):
        raise ConfigError(f"{key}: the initial weights are not finite (overflow): lower {key}")
    mag = magnitudes(problem, weights)
    blame = data_key(cfg) if mag.sxx >= mag.layers else key
    why = "a bound from the layers' spectral norms and the data's second moments"
    for what, value in (
        ("loss", mag.loss),
        ("gradient's norm", mag.gradient),
        ("Hessian's norm", mag.hessian),
    ):
        if value > MAX_LOG10:
            raise ConfigError(
                f"{blame}: at the initial weights the {what} is up to {fmt_log10(value)} ({why}), above "
                f"{MAX_MAGNITUDE:.0e}: squared, as the run's norms and metrics do, it would overflow float64 "
                f"(max 1.8e308); allowed: loss, gradient and Hessian at most {MAX_MAGNITUDE:.0e} at the start: "
                f"lower {key} or rescale the data"
            )
    _check_time_scale(cfg, mag.hessian, blame, f"at the initial weights, {why}")
    return 10.0**mag.hessian if mag.hessian > -300 else 0.0
