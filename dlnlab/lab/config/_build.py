"""The second half of :func:`dlnlab.lab.config.prepare`: the data, the initial weights and the estimates
that need them (the flow's stiffness, the time of one gradient), checked, into a :class:`Plan`. Imported
once the config itself has passed, so that a refused config never imports torch."""

from __future__ import annotations

from dataclasses import replace

import torch

from dlnlab.analysis import balanced_minimum_sharpness, hessian_extremes
from dlnlab.flow import TORCHDIFFEQ_FIXED
from dlnlab.init import initial_weights
from dlnlab.lab.config import _budget as budget
from dlnlab.lab.config import _choose as choose
from dlnlab.lab.config import _files as files
from dlnlab.lab.config import _float64 as float64
from dlnlab.lab.config._errors import keyed
from dlnlab.lab.config._plan import Plan, Seeds, balanced_label
from dlnlab.lab.config._rules import check_fixed_step, make_solver
from dlnlab.lab.config._schema import TrainConfig
from dlnlab.network import Layout, pack
from dlnlab.problem import RegressionProblem

__all__ = ["build"]


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


def _stiffness(
    cfg: TrainConfig, problem: RegressionProblem, theta0: torch.Tensor, bound: float, balanced: float
) -> tuple[float, str]:
    """lambda_max of the Hessian: at the balanced global minimum (``balanced``: h m_1^(2-2/h) for
    whitened data, else computed there) and, where an unbalanced start can be sharper than any balanced
    minimum, at theta0: computed (dense eigvalsh or Lanczos) for a fixed-step flow, and wherever
    ``bound`` (the norm bound at theta0, :mod:`dlnlab.bounds`) is above the balanced minimum's; the bound
    alone would overstate it (2 to 20 times on the test nets)."""
    lay = Layout(tuple(cfg.model.dims))
    lam = balanced
    where = f"at the balanced global minimum, {balanced_label(problem)}"
    if cfg.flow.method.name in TORCHDIFFEQ_FIXED or bound > lam:
        lo, hi, _ = hessian_extremes(problem, theta0, lay, dense_max=cfg.log.hessian_dense_max)
        lam0 = hi if cfg.flow.method.name in TORCHDIFFEQ_FIXED else max(hi, -lo)
        if lam0 > lam:
            lam, where = lam0, "at the initial weights"
    return lam, where


def _batch_note(cfg: TrainConfig, n_samples: int) -> str | None:
    """A batch of at least N drawn with replacement: a valid sampler (B i.i.d. indices, repeats and all;
    the gradient's noise is Sigma / B at any B), but never full-batch GD, which a researcher setting B to
    N or above may have meant. Without replacement B = N is the whole set (full batch) and B > N is
    refused (``_prepare._check_sampling``)."""
    b = cfg.sgd.batch_size
    if b is None or b < n_samples or cfg.sgd.sampling.name != "with_replacement" or not cfg.sgd.lrs:
        return None  # sgd.lrs=[]: the flow alone, no step draws a batch
    n_key = "data.n_samples" if cfg.data.kind.name != "file" else "N (the samples of data.path)"
    return (
        f"sgd.batch_size: {b} {'>' if b > n_samples else '='} {n_key} = {n_samples} with "
        f"sgd.sampling=with_replacement: each step averages {b} i.i.d. draws (repeats included), noisy "
        "minibatch SGD, not full-batch GD; for full-batch GD write sgd.batch_size=null"
    )


def _zero_init_note(plan: Plan) -> str | None:
    """Two or more layers all 0 (init.scale=0: every layer) make theta_0 a critical point: the gradient
    of a layer is the product of the others' weights around the residual, 0 with a zero factor, so no
    series moves (valid, but hardly meant)."""
    zero = [i + 1 for i, w in enumerate(plan.weights0) if not bool(w.any())]
    if len(zero) < 2:
        return None
    key = {"gaussian": "init.scale", "orthogonal": "init.scale", "balanced": "init.u0", "aligned": "init.u0"}
    name = key.get(plan.cfg.init.kind.name, "init.path")
    layers = "every layer" if len(zero) == len(plan.weights0) else f"layers {', '.join(map(str, zero))}"
    return (
        f"{name}: the initial weights are 0 in {layers}, a critical point of the loss at any depth h >= 2 "
        "(each layer's gradient is a product of the other layers' weights): the gradient is 0, the flow and "
        "every series stay at theta_0 and its loss, and every distance to the flow is 0"
    )


def _notes(plan: Plan) -> list[str]:
    """The warnings shown at the start of the run."""
    cfg, notes = plan.cfg, []
    bound = plan.stability_threshold  # heavy ball's own: 2 (1 + momentum) / (h m_1^(2-2/h))
    if bound is not None:
        above = [lr for lr in cfg.sgd.lrs if lr > bound]
        if above:
            # with data not whitened an unbalanced minimum can be flatter than the balanced one
            where = (
                "no global minimum is stable there"
                if plan.problem.whitened
                else "the balanced global minimum is not stable there (an unbalanced one may be)"
            )
            notes.append(
                f"sgd.lrs: {', '.join(f'{lr:g}' for lr in above)} above the GD stability threshold "
                f"{bound:.4g} (2 (1 + momentum) / {plan.threshold_sharpness}): {where}; "
                "the series run and are expected to diverge or stall (status unstable)"
            )
    if (batch := _batch_note(cfg, plan.problem.n_samples)) is not None:
        notes.append(batch)
    if (zero := _zero_init_note(plan)) is not None:
        notes.append(zero)
    if cfg.ensemble.size > 1 and cfg.sgd.batch_size is None and not hasattr(cfg.init, "seed"):
        notes.append(
            f"ensemble.size: {cfg.ensemble.size} members from one init ({cfg.init.kind.name}) with full-batch GD "
            "are one trajectory repeated; a random init or minibatches (sgd.batch_size) make them differ"
        )
    return notes


def build(cfg: TrainConfig, seeds: Seeds, lay: Layout, est: budget.Estimate) -> Plan:
    """The run's inputs for a config that passed the checks on the config alone."""
    problem = _problem(cfg, seeds)
    float64.check_data_range(cfg, problem)
    weights0 = _weights(cfg, seeds, problem)
    bound = float64.check_weights_range(cfg, problem, weights0)
    theta0 = pack(weights0)
    balanced = balanced_minimum_sharpness(problem, lay, dense_max=cfg.log.hessian_dense_max)
    lam, where = _stiffness(cfg, problem, theta0 if theta0.ndim == 1 else theta0[0], bound, balanced)
    check_fixed_step(cfg, lam, where)
    grad_s = budget.gradient_seconds(problem, theta0, lay)
    flow = choose.choose_flow(cfg, lam)
    budget.check_work(cfg, grad_s, lam, flow.method)
    max_nfe = budget.flow_nfe_budget(cfg, flow.method)
    analysis = choose.choose_analysis(
        cfg, choose.estimated_run_seconds(cfg, flow.method, lam), problem.n_modes
    )
    plan = Plan(
        cfg, seeds, problem, weights0, make_solver(cfg, flow.method, max_nfe), est, balanced, lam, grad_s, [],
        flow_choice=flow, analysis=analysis,
    )  # fmt: skip
    plan.notes.extend(_notes(plan))
    return plan
