"""What a finished run reports through the loggers: saddles, hparams, run metrics, the config, figures.

* per series: the saddle analysis (``saddle/modes_learnt``, ``saddle/label`` on the grid,
  ``saddle/exit_time`` and ``saddle/exit_delay`` with step = mode, the text ``saddle/plateaus``);
* per SGD series: one HParams row (the flow has no learning rate: a row with lr 0 would break the
  log axes, so it has none), with the run's convergence order and GD threshold among the metrics;
* the flow's run: ``run/convergence_order`` and ``run/gd_stability_threshold`` as scalars, the
  resolved config and the console table as text, and the figures as images (``figures/<name>``).
"""

from __future__ import annotations

import math
import os

import numpy as np
from omegaconf import OmegaConf

from dlnlab.lab.logging import figures_logger, log_hparams, log_png, log_text
from dlnlab.lab.schema import to_plain

__all__ = ["log_saddles", "log_run", "make_figures"]


def log_saddles(ctx, logs: dict) -> None:
    """Each series' :class:`~dlnlab.saddles.SaddleLog` through its logger."""
    for name, log in logs.items():
        logger = ctx.logger(name)
        if logger is None:
            continue
        for step, row in [*log.rows, *log.exits]:
            logger.log_metrics(row, step=step)
        log_text(logger, "saddle/plateaus", log.table)
        logger.save()


def _finite(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if v is not None and math.isfinite(float(v))}


def log_run(ctx, summary: dict, table: str) -> None:
    """HParams rows of the SGD series; the run's numbers, config and table on the flow's logger."""
    cfg = ctx.plan.cfg
    run_metrics = _finite(
        {
            "run/convergence_order": summary.get("convergence_order"),
            "run/convergence_order_modified": summary.get("convergence_order_modified"),
            "run/gd_stability_threshold": summary.get("gd_stability_threshold"),
        }
    )
    flow = ctx.logger("flow")
    if flow is not None:
        flow.log_metrics(run_metrics, step=0)
        log_text(flow, "config", "```yaml\n" + OmegaConf.to_yaml(to_plain(cfg)) + "```")
        log_text(flow, "summary", "```\n" + table + "\n```")
        flow.save()
    base = {
        "dims": str(list(cfg.model.dims)),
        "init": cfg.init.kind.name,
        "init_scale": float(getattr(cfg.init, "scale", float("nan"))),
        "method": ctx.plan.solver.method,
        "batch_size": str(cfg.sgd.batch_size or "full"),
        "momentum": cfg.sgd.momentum,
        "t_max": cfg.flow.t_max,
    }
    for name, e in summary["series"].items():
        logger = ctx.logger(name) if e.get("lr") is not None else None
        if logger is None:
            continue
        metrics = _finite(
            {
                "hp/final_loss": e.get("final_loss"),
                "hp/max_dist_to_flow": e.get("max_dist_to_flow"),
                "hp/max_dist_to_modified_flow": e.get("max_dist_to_modified_flow"),
                "hp/convergence_order_modified": summary.get("convergence_order_modified"),
                "hp/t_stop": e.get("t_stop"),
                "hp/wall_time_s": e.get("wall_time_s"),
                "hp/diverged": float(bool(e.get("diverged"))),
                "hp/convergence_order": summary.get("convergence_order"),
                "hp/gd_stability_threshold": summary.get("gd_stability_threshold"),
            }
        )
        log_hparams(logger, dict(base, series=name, lr=e["lr"], status=str(e["status"])), metrics)
        logger.save()


def log_limit(ctx, limit: dict) -> None:
    """SGD as a stochastic flow: each series' strong and weak error curves (tags ``limit/strong``,
    ``limit/weak_theta``, ``limit/weak_loss``, step = grid index); on the flow's logger the orders, and
    per stretch between the flow's saddle escapes (step = escapes before it) each kind's order and
    error constant (``limit/<kind>_stretch_order``, ``limit/<kind>_constant``)."""
    from dlnlab.lab.limit_text import escapes_table
    from dlnlab.lab.summary import series_name

    for lr, curves in limit["curves"].items():
        logger = ctx.logger(series_name(lr))
        if logger is None:
            continue
        for key, (grid, values) in curves.items():
            for m, v in zip(np.asarray(grid).tolist(), np.asarray(values).tolist()):
                if math.isfinite(v):
                    logger.log_metrics(
                        {f"limit/{key}": v, f"log10/limit_{key}": math.log10(max(v, 1e-300))}, step=m
                    )
        logger.save()
    flow = ctx.logger("flow")
    if flow is not None:
        orders = {f"run/{key}_order": limit[key]["order"] for key in ("strong", "weak_theta", "weak_loss")}
        flow.log_metrics(_finite(orders), step=0)
        for stretch in limit["escapes"]["stretches"]:
            values = {}
            for key in ("strong", "weak_theta", "weak_loss"):
                values[f"limit/{key}_stretch_order"] = stretch[key]["order"]
                values[f"limit/{key}_constant"] = stretch[key]["constant"]
            flow.log_metrics(_finite(values), step=stretch["escapes_before"])
        log_text(flow, "limit/escapes", escapes_table(limit))
        flow.save()


def make_figures(ctx) -> None:
    """``figures/*.png`` from the run's files, and each figure through the figures logger."""
    from dlnlab.plots import make_run_figures

    logger = figures_logger(ctx.out, ctx.plan.cfg.logger)
    workers = min(4, os.cpu_count() or 1)  # the end of the run: the cores are free
    make_run_figures(
        ctx.out, on_png=lambda name, png: log_png(logger, f"figures/{name}", png), workers=workers
    )
    if logger is not None:
        logger.finalize("success")
