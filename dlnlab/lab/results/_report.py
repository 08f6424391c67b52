"""What a finished run reports through the loggers: HParams, the Text tab, the figures.

Single numbers are never charts (a chart of one point is a dot at step 0, docs/tensorboard.md):

* per (S)GD series one HParams row: few hyperparameters (the learning rate, the status, and the keys
  the run was given on the command line, a sweep's among them), and the numbers a reader compares
  across series as metric columns (the distance to the flow, the convergence order, the final loss,
  the strong and weak orders, the SME's spread);
* what belongs to the whole run, not to one series, in a run of its own, ``report`` (TensorBoard's red:
  a run that draws no lines, ``dlnlab.lab.record._runs``): the Text tab's group ``summary`` (the
  console's results table, one table of every series' plateaus and exits, modes numbered 1..q as
  everywhere, the resolved config, and where the run has them the error constants between the flow's
  saddle escapes and the edge of stability's diagnostics of every GD series) and the figures as images
  (``figures/<name>``). A series' own text stays in its run (a GD series' "edge of stability").

The curves of the strong and weak errors and of the SME's spread go to each (S)GD series' own run
(:func:`log_limit`).
"""

from __future__ import annotations

import math
import os

import numpy as np
from omegaconf import OmegaConf

from dlnlab.lab.config import to_plain
from dlnlab.lab.record import figures_logger, log_hparams, log_png, log_text, own_file, text_logger
from dlnlab.lab.results._console_table import entry_part, entry_parts, entry_value
from dlnlab.lab.results._override_columns import GivenColumns, given_columns, run_overrides
from dlnlab.lab.results._part_records import PlateauEntry, PlateauExitEntry
from dlnlab.lab.results._records import EdgeEntry, PredictionEntry, Record, given
from dlnlab.lab.results._summary_record import Summary, read_entries
from dlnlab.rundir import EDGE_PREFIX, lr_series_name

__all__ = ["log_run", "log_limit", "make_figures", "plateau_markdown"]

LIMIT_TAGS = {  # curve of sgd_limit -> its tag in the (S)GD series' run (log10 of the error)
    "strong": "limit/log10_strong",
    "weak_theta": "limit/log10_weak_theta",
    "weak_loss": "limit/log10_weak_loss",
}


def _finite(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if v is not None and math.isfinite(float(v))}


def _f(x, spec: str = ".4g") -> str:
    return "-" if x is None else format(x, spec)


def _modes(ks) -> str:
    return "none" if not ks else ", ".join(str(k + 1) for k in ks)


def plateau_markdown(summary: dict | Summary) -> str:
    """One markdown table of every series' plateaus: where each starts and ends, its level, the modes
    learnt before it (1..q), its saddle, and the mode and time it is left by, with the delay behind the
    flow's exit by the same mode. ``summary``: summary.json's dict (its series' entries read through
    their records, as the console reads them) or its typed Summary."""
    series = summary.series if isinstance(summary, Summary) else read_entries(summary["series"], strict=False)
    head = [
        "| series | t start | t end | level L | modes learnt | saddle (lambda_min) | exit: mode at t | delay vs flow |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for name, entry in series.items():
        delays = {e.mode: e.delay for e in entry_parts(entry, "plateau_exits_vs_flow", PlateauExitEntry)}
        for p in entry_parts(entry, "plateaus", PlateauEntry):
            saddle = f"{given(p.label) or '-'} ({_f(given(p.lambda_min), '.2g')})"
            if p.exit_mode is None:
                exit_, delay = "none before t_max (the horizon cuts it)", "-"
            else:
                exit_ = f"mode {p.exit_mode + 1} at t = {_f(p.t_exit)}"
                delay = "0 (the reference)" if name == "flow" else _f(delays.get(p.exit_mode), ".3g")
            rows.append(
                f"| {name} | {_f(p.t_start)} | {_f(p.t_end)} | {_f(p.level)} | "
                f"{_modes(p.modes_learnt)} | {saddle} | {exit_} | {delay} |"
            )
    return "\n".join(head + rows) if rows else "no saddle plateau in any series"


def _hparams(cfg, entry: dict, columns: GivenColumns) -> dict:
    """The HParams row's hyperparameters: the learning rate and the status (what differs between a run's
    rows), the SGD settings where set (batch size, momentum, the ensemble), and one column per key the
    run was given on the command line (``columns``, :mod:`dlnlab.lab.results._override_columns`): a
    sweep's keys (``seed``, ``model.dims``, ``init.scale``, ``experiment``), so that the table sorts and
    filters by them. A key shown here already is not shown twice (``sgd.momentum`` is the ``momentum``
    column, which then shows 0 too; ``sgd.batch_size=null`` an empty ``batch_size`` cell); a run given
    none (``run(cfg)`` from Python) has the others only. TensorBoard sorts the columns by name and
    ticks the first five (docs/tensorboard.md)."""
    params: dict = dict(columns.columns)
    params |= {"lr": entry["lr"], "status": str(entry["status"])}
    if cfg.sgd.batch_size is not None or "sgd.batch_size" in columns.keys:  # null: declared, no value
        params["batch_size"] = math.nan if cfg.sgd.batch_size is None else cfg.sgd.batch_size
    if cfg.sgd.momentum or "sgd.momentum" in columns.keys:
        params["momentum"] = cfg.sgd.momentum
    if cfg.ensemble.size > 1 or columns.keys & {"ensemble.size", "ensemble.vary"}:
        params["ensemble"] = f"{cfg.ensemble.size} ({cfg.ensemble.vary.name})"
    return params


def _metrics(summary: Summary, entry: Record) -> dict[str, float]:
    """The HParams row's metric columns (each also a scalar at step 0 of the series' run), read from the
    typed summary and the series' typed entry (an (S)GD series': its learning rate names the edge series)."""
    values = {
        "hp/max_dist_to_flow": entry_value(entry, "max_dist_to_flow"),
        "hp/convergence_order": summary.convergence_order,
        "hp/final_loss": entry_value(entry, "final_loss"),
        "hp/max_dist_to_modified_flow": entry_value(entry, "max_dist_to_modified_flow"),
        "hp/convergence_order_modified": summary.convergence_order_modified,
    }
    limit = summary.sgd_limit  # a LimitReport, or None
    for key in LIMIT_TAGS:
        error = given(getattr(limit, key)) if limit else None  # an ErrorOrder
        values[f"hp/order_{key}"] = error.order if error else None
    edge_series = summary.series.get(lr_series_name(EDGE_PREFIX, entry.lr))  # sgd.edge, flow.central
    edge = entry_part(edge_series, "edge", EdgeEntry)
    for key in ("t_edge", "hover_share", "median_ratio", "amplitude_median"):
        values[f"hp/edge_{key}"] = getattr(edge, key) if edge else None
    predictions = entry_part(edge_series, "predictions", PredictionEntry)
    values["hp/edge_dist_ratio_median"] = predictions.ratio_median if predictions else None
    sme = given(limit.sme) if limit else None
    ratios = sme.spread_ratio.get(repr(float(entry.lr))) if sme else None  # SpreadRatios
    for key in ("var_loss", "var_theta") if ratios else ():
        stats = given(getattr(ratios, key))
        values[f"hp/sme_{key}_ratio"] = stats.median if stats else None
    return _finite(values)


def log_run(ctx, summary: dict, table: str) -> None:
    """HParams rows of the (S)GD series; the report's run gets the Text tab's summary."""
    from dlnlab.lab.results._eos import edge_lines
    from dlnlab.lab.results._limit_text import escapes_table

    cfg = ctx.plan.cfg
    typed = Summary.from_dict(summary, strict=False)  # once: the plateaus' table and the limit's columns
    report = text_logger(ctx.out, cfg.logger)
    if report is not None:
        texts = [
            ("results", "```\n" + table + "\n```"),
            ("plateaus", plateau_markdown(typed)),
            ("config", "```yaml\n" + OmegaConf.to_yaml(to_plain(cfg)) + "```"),
        ]  # every run's; then those of some runs only
        if (summary.get("sgd_limit") or {}).get("escapes"):
            texts.append(("error constants between escapes", escapes_table(summary["sgd_limit"])))
        if edge := edge_lines(summary):
            texts.append(("edge of stability", "```\n" + "\n".join(edge) + "\n```"))
        # numbered in the Text tab's order (it sorts the tags by name), without gaps: a plain run's are
        # 1 .. 3 (they were 1, 2, 4, with 3 kept for an ensemble's error constants)
        for number, (name, text) in enumerate(texts, start=1):
            log_text(report, f"summary/{number} {name}", text)
        report.finalize("success")
    columns = given_columns(cfg, run_overrides(ctx.out))  # the run's own record: a resume's is its run's
    for name, entry in typed.series.items():
        logger = ctx.logger(name) if entry.lr is not None else None
        if logger is None:
            continue
        log_hparams(logger, _hparams(cfg, summary["series"][name], columns), _metrics(typed, entry))
        logger.save()


def log_limit(ctx, limit: dict) -> None:
    """SGD as a stochastic flow: each (S)GD series' strong and weak error curves and, with sgd.sme, its
    spread over the SME's (``sme/var_loss_ratio``, ``sme/var_theta_ratio``), in the series' own run, in
    an event file of its own (suffix ``.limit``) that a resume replaces (``Previous.drop_limit_events``):
    among the series' scalars, a resume that kept the series logged its curves a second time."""
    from dlnlab.rundir import series_name

    for lr, curves in limit["curves"].items():
        name = series_name(lr)
        logger = ctx.logger(name)
        if logger is None:
            continue
        tags = ctx.tags(name, lr)
        with own_file(logger, "limit"):
            for key, (grid, values) in curves.items():
                tag = LIMIT_TAGS.get(key, key)
                log = tag.startswith("limit/")
                for m, v in zip(np.asarray(grid).tolist(), np.asarray(values).tolist()):
                    if math.isfinite(v) and (v > 0 or not log):
                        logger.log_metrics({tag: math.log10(v) if log else v}, step=tags.step(m))
        logger.save()


def make_figures(ctx) -> None:
    """``figures/*.png`` from the run's files, and each figure through the figures logger."""
    from dlnlab.plots import make_run_figures

    logger = figures_logger(ctx.out, ctx.plan.cfg.logger)
    workers = min(4, len(os.sched_getaffinity(0)))  # the end of the run: the cores it may use are free
    make_run_figures(
        ctx.out, on_png=lambda name, png: log_png(logger, f"figures/{name}", png), workers=workers
    )
    if ctx.plan.cfg.sgd.edge or ctx.plan.cfg.flow.central:  # figures/eos.png from the edge series' files
        from dlnlab.plots.eos import write_eos_figure

        png = write_eos_figure(ctx.out, ctx.out / "figures" / "eos.png")
        if png is not None:
            log_png(logger, "figures/eos", png)
    if logger is not None:
        logger.finalize("success")
