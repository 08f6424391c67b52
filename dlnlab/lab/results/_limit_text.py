"""The console lines of ``summary.json``'s ``sgd_limit`` (lab/limit.py): the orders of the strong and
weak errors, their constants between the flow's saddle escapes, and the SGD ensemble's spread against
the SME's."""

from __future__ import annotations

from dlnlab._util import fmt
from dlnlab.ensemble_errors import order_undetermined

__all__ = ["limit_lines", "escapes_table", "order_text"]

KINDS = (("strong", "strong"), ("weak_theta", "weak (theta)"), ("weak_loss", "weak (loss)"))


def _interval(ci) -> str:
    lo, hi = ci or (None, None)
    return f"[{fmt(lo)}, {fmt(hi)}]"


def order_text(error: dict, members: int) -> str:
    """An order with its 90 % interval, "1.02 [0.93, 1.1]"; an interval that does not pin it down
    (:func:`order_undetermined`) gives no number: "undetermined at 4096 members (interval [-0.95, 4])"."""
    if order_undetermined(error.get("order"), error.get("ci90")):
        return f"undetermined at {members} members (interval {_interval(error['ci90'])})"
    return f"{fmt(error.get('order'))} {_interval(error.get('ci90'))}"


def _stretch_order(error: dict) -> str:
    """A stretch's order, or "undetermined [a, b]" (its interval does not pin it down)."""
    if order_undetermined(error.get("order"), error.get("ci90")):
        return f"undetermined {_interval(error['ci90'])}"
    return fmt(error.get("order"))


def _stretch_lines(escapes: dict) -> list[str]:
    """Per kind: the error constant C = max error / eta^p (p the expected order) of each stretch between
    saddle escapes, its growth over the stretch before and the stretch's own fitted order."""
    stretches = escapes.get("stretches") or []
    if len(stretches) < 2:
        return []
    exits = ", ".join(f"{fmt(t)} (mode {m})" for t, m in zip(escapes["t_exit"], escapes["exit_mode"]))
    out = [f"  the flow's saddle escapes at t = {exits}; per stretch between them:"]
    for key, what in KINDS:
        p = escapes["expected_order"][key]
        cells = []
        for s in stretches:
            e = s[key]
            growth = f" x{fmt(e['growth'])}" if e.get("growth") is not None else ""
            cells.append(f"{fmt(e['constant'])}{growth} (order {_stretch_order(e)})")
        out.append(f"    {what}: constant max error / eta^{fmt(p)}: " + ", ".join(cells))
    return out


def _exit_lines(sme: dict, lr: str) -> list[str]:
    return [
        f"  plateau exit of mode {r['mode']}: SGD {fmt(r['sgd_mean'])} +- {fmt(r['sgd_std'])} (n {r['n_sgd']}), "
        f"SME {fmt(r['sme_mean'])} +- {fmt(r['sme_std'])} (n {r['n_sme']}), std ratio {fmt(r['std_ratio'])} "
        f"(sampling error about {fmt(r['sampling_error'])})"
        for r in (sme.get("exit_spread") or {}).get(lr) or []
    ]


def limit_lines(summary: dict) -> list[str]:
    """The lines (none without ``sgd_limit``)."""
    limit = summary.get("sgd_limit")
    if not limit:
        return []
    parts = [f"{what} {order_text(limit[key], limit['members'])}" for key, what in KINDS]
    lines = [
        f"SGD against the flow over {limit['members']} members sharing their init, orders (90% bootstrap): "
        + ", ".join(parts)
    ]
    lines += _stretch_lines(limit.get("escapes") or {})
    sme = limit.get("sme") or {}
    for lr, r in (sme.get("spread_ratio") or {}).items():
        cells = [f"{k} {fmt(v['median'])} ({fmt(v['p10'])} .. {fmt(v['p90'])})" for k, v in r.items() if v]
        lines.append(
            f"SGD's spread over the SME's at eta = {lr}: {', '.join(cells)} "
            f"(median over the grid, its 10-90 % range in parentheses; sampling error about "
            f"{fmt(sme.get('sampling_error'))})"
        )
        lines += _exit_lines(sme, lr)
    return lines


def escapes_table(limit: dict) -> str:
    """A markdown table of the stretches between the flow's saddle escapes: per kind the error constant
    (its growth over the stretch before) and the stretch's order (TensorBoard's text tab: its charts of
    a few points do not show values above 1 with outliers ignored)."""
    escapes = limit.get("escapes") or {}
    heads = [
        f"{what}: C = max / eta^{fmt(escapes.get('expected_order', {}).get(key))} (order)"
        for key, what in KINDS
    ]
    rows = ["| stretch | t | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(KINDS)]
    for s in escapes.get("stretches") or []:
        cells = []
        for key, _ in KINDS:
            e = s[key]
            growth = f" x{fmt(e['growth'])}" if e.get("growth") is not None else ""
            cells.append(f"{fmt(e['constant'])}{growth} ({_stretch_order(e)})")
        span = f"{fmt(s['t_start'])} .. {fmt(s['t_end']) if s['t_end'] is not None else 'end'}"
        rows.append(f"| {s['escapes_before']} | {span} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
