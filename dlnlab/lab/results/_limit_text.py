"""The console lines of ``summary.json``'s ``sgd_limit`` (lab/limit.py): the orders of the strong and
weak errors, their constants between the flow's saddle escapes, and the SGD ensemble's spread against
the SME's. Each reads ``sgd_limit`` through its record (:class:`LimitReport`, ``_summary_record``)."""

from __future__ import annotations

from collections.abc import Mapping

from dlnlab._util import fmt
from dlnlab.ensemble_errors import order_undetermined
from dlnlab.lab.results._records import given
from dlnlab.lab.results._summary_record import ErrorOrder, Escapes, LimitReport, SMESpread

__all__ = ["limit_lines", "escapes_table", "order_text"]

# the errors: their fields in LimitReport and Stretch (ErrorOrder each), and their names on the console
KINDS = (("strong", "strong"), ("weak_theta", "weak (theta)"), ("weak_loss", "weak (loss)"))


def _interval(ci) -> str:
    lo, hi = ci or (None, None)
    return f"[{fmt(lo)}, {fmt(hi)}]"


def order_text(error: ErrorOrder, members: int) -> str:
    """An order with its 90 % interval, "1.02 [0.93, 1.1]"; an interval that does not pin it down
    (:func:`order_undetermined`) gives no number: "undetermined at 4096 members (interval [-0.95, 4])"."""
    if order_undetermined(error.order, error.ci90):
        return f"undetermined at {members} members (interval {_interval(error.ci90)})"
    return f"{fmt(error.order)} {_interval(error.ci90)}"


def _stretch_order(error: ErrorOrder) -> str:
    """A stretch's order, or "undetermined [a, b]" (its interval does not pin it down)."""
    if order_undetermined(error.order, error.ci90):
        return f"undetermined {_interval(error.ci90)}"
    return fmt(error.order)


def _constant_cell(error: ErrorOrder) -> str:
    """A stretch's error constant with its growth over the stretch before (the first has none)."""
    growth = given(error.growth)
    return f"{fmt(error.constant)}{f' x{fmt(growth)}' if growth is not None else ''}"


def _stretch_lines(escapes: Escapes | None) -> list[str]:
    """Per kind: the error constant C = max error / eta^p (p the expected order) of each stretch between
    saddle escapes, its growth over the stretch before and the stretch's own fitted order."""
    stretches = escapes.stretches if escapes else []
    if len(stretches) < 2:
        return []
    exits = ", ".join(f"{fmt(t)} (mode {m})" for t, m in zip(escapes.t_exit, escapes.exit_mode))
    out = [f"  the flow's saddle escapes at t = {exits}; per stretch between them:"]
    for key, what in KINDS:
        cells = [
            f"{_constant_cell(getattr(s, key))} (order {_stretch_order(getattr(s, key))})" for s in stretches
        ]
        p = escapes.expected_order[key]  # per kind: a dict by the kinds' names
        out.append(f"    {what}: constant max error / eta^{fmt(p)}: " + ", ".join(cells))
    return out


def _exit_lines(sme: SMESpread, lr: str) -> list[str]:
    """Per mode: the SGD ensemble's plateau exit times against the SME's (ExitSpreadRow, after the analysis)."""
    return [
        f"  plateau exit of mode {r.mode}: SGD {fmt(r.sgd_mean)} +- {fmt(r.sgd_std)} (n {r.n_sgd}), "
        f"SME {fmt(r.sme_mean)} +- {fmt(r.sme_std)} (n {r.n_sme}), std ratio {fmt(r.std_ratio)} "
        f"(sampling error about {fmt(r.sampling_error)})"
        for r in (given(sme.exit_spread) or {}).get(lr) or []
    ]


def limit_lines(summary: Mapping) -> list[str]:
    """The lines (none without ``sgd_limit``); ``summary``: summary.json's dict (or a RunResult)."""
    if not summary.get("sgd_limit"):
        return []
    limit = LimitReport.from_dict(summary["sgd_limit"])
    parts = [f"{what} {order_text(getattr(limit, key), limit.members)}" for key, what in KINDS]
    # the strong error is the largest over t of the members' mean distance (the max of the mean), where
    # an ensemble's convergence order fits the members' mean of each one's largest distance (the mean of
    # the max, never smaller): the two orders differ by that, and the head says which is which
    lines = [
        f"SGD against the flow over {limit.members} members sharing their init, orders (90% bootstrap) of "
        "the largest over t of: strong E||theta - theta_flow|| (the members' mean distance), weak (theta) "
        "||E theta - theta_flow||, weak (loss) |E L - L_flow|: " + ", ".join(parts)
    ]
    lines += _stretch_lines(given(limit.escapes))
    sme = given(limit.sme)
    for lr, ratios in (sme.spread_ratio if sme else {}).items():
        kinds = (
            ("var_loss", ratios.var_loss),
            ("var_theta", given(ratios.var_theta)),
        )  # SpreadRatios' fields
        cells = [f"{k} {fmt(v.median)} ({fmt(v.p10)} .. {fmt(v.p90)})" for k, v in kinds if v]
        lines.append(
            f"SGD's spread over the SME's at eta = {lr}: {', '.join(cells)} "
            f"(median over the grid, its 10-90 % range in parentheses; sampling error about "
            f"{fmt(sme.sampling_error)})"
        )
        lines += _exit_lines(sme, lr)
    return lines


def escapes_table(limit: dict) -> str:
    """A markdown table of the stretches between the flow's saddle escapes: per kind the error constant
    (its growth over the stretch before) and the stretch's order (TensorBoard's text tab: its charts of
    a few points do not show values above 1 with outliers ignored). ``limit``: summary.json's ``sgd_limit``."""
    escapes = given(LimitReport.from_dict(limit).escapes)
    expected = escapes.expected_order if escapes else {}
    heads = [f"{what}: C = max / eta^{fmt(expected.get(key))} (order)" for key, what in KINDS]
    rows = ["| stretch | t | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(KINDS)]
    for s in escapes.stretches if escapes else []:
        cells = [f"{_constant_cell(getattr(s, key))} ({_stretch_order(getattr(s, key))})" for key, _ in KINDS]
        span = f"{fmt(s.t_start)} .. {fmt(s.t_end) if s.t_end is not None else 'end'}"
        rows.append(f"| {s.escapes_before} | {span} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
