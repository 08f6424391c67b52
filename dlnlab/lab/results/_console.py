"""What a run prints: a short block of what runs (before), the results (after), where to look (last).

Modes are numbered 1..q (m_1 the largest) here as in the figures, TensorBoard and the docs. A value
that is missing is never a bare "-": the line says why (the flow is the reference; an order needs three
learning rates; a mode the horizon cut off has no exit).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from dlnlab._steps import uniform_times
from dlnlab._util import fmt
from dlnlab.lab.config import resume_shell_command
from dlnlab.lab.results._ensemble import member_counts
from dlnlab.lab.results._summary_record import RunStatus
from dlnlab.network import Layout
from dlnlab.status import Status

__all__ = ["start_block", "resume_line", "results_block", "end_block", "tensorboard_command"]


TENSORBOARD_URL = "http://localhost:6006/#custom_scalars&_smoothingWeight=0"


def _list(values) -> str:
    return ", ".join(fmt(float(v)) for v in values)


def levels_text(levels) -> str:
    """The plateau levels L*_r, a level below 1e-12 of the first printed as 0 (the minimum, to rounding)."""
    top = max(abs(float(levels[0])), 1e-300) if len(levels) else 1.0
    return ", ".join("0" if abs(float(v)) < 1e-12 * top else fmt(float(v)) for v in levels)


def _series_line(plan) -> str:
    cfg = plan.cfg
    s, lrs = cfg.sgd, plan.lrs
    times = uniform_times(cfg.flow.t_max, cfg.log.dt)
    if times[-1] < cfg.flow.t_max * (1 - 1e-12):  # t_max not a multiple of dt: the grid stops short
        line = (
            f"the gradient flow over t <= {fmt(float(times[-1]))}, the grid's last point (grid dt = "
            f"{fmt(cfg.log.dt)}, {len(times)} points; flow.t_max = {cfg.flow.t_max!r} is not a multiple of it)"
        )
    else:
        line = f"the gradient flow over t <= {fmt(cfg.flow.t_max)} (grid dt = {fmt(cfg.log.dt)}, {len(times)} points)"
    if not lrs:
        return line + "; no learning rate (sgd.lrs=[]): the flow alone"
    kind = (
        "GD"
        if s.batch_size is None
        else f"minibatch SGD (batch {s.batch_size} of {plan.problem.n_samples}, {s.sampling.name.replace('_', ' ')})"
    )
    if s.momentum:
        kind += f" with heavy ball {fmt(s.momentum)} (a step is t = eta / (1 - momentum))"
    line += f"; {kind} at lr {_list(lrs)}"
    sharpness = plan.threshold_sharpness
    if plan.gd_threshold is not None and s.momentum:
        line += f" (the stability threshold 2 (1 + momentum) / {sharpness} = {fmt(plan.stability_threshold)})"
    elif plan.gd_threshold is not None:
        line += f" (GD's stability threshold 2 / {sharpness} = {fmt(plan.gd_threshold)})"
    extras = []
    if cfg.flow.modified:
        extras.append("GD's modified flow at each lr")
    if s.sme:
        extras.append("the SME ensemble at each lr")
    if cfg.flow.central:
        extras.append("GD's central flow at each lr")
    if s.edge or cfg.flow.central:
        extras.append("GD at every step through its crossing of 2/eta")
    return line + ("; " + ", ".join(extras) if extras else "")


def start_block(plan, out: Path) -> str:
    """A few labelled lines: the net, the data, the series, the solver, the analysis, the directory."""
    cfg = plan.cfg
    dims = list(cfg.model.dims)
    init = cfg.init.kind.name
    detail = {"gaussian": "scale", "orthogonal": "scale", "balanced": "u0", "aligned": "u0", "file": "path"}
    key = detail.get(init)
    init_txt = f"{init} ({key} {getattr(cfg.init, key)})" if key else init
    data = cfg.data
    if data.kind.name == "teacher":
        data_txt = f"teacher s = [{_list(data.singular_values)}], N = {data.n_samples}"
        data_txt += ", whitened" if data.whiten else ""
        data_txt += f", label noise {fmt(data.noise)}" if data.noise else ""
    else:
        data_txt = f"{data.path} (N = {plan.problem.n_samples})"
    levels = plan.problem.plateau_levels(min(dims)).tolist()
    lines = [
        "dlnlab run",
        f"  net       dims {dims}: depth h = {len(dims) - 1}, {Layout(dims).n_weights} weights; init {init_txt}",
        f"  data      {data_txt}; modes m_k = {_list(plan.problem.modes.tolist())}; "
        f"plateau levels L*_r = {levels_text(levels)}",
        f"  series    {_series_line(plan)}",
    ]
    if cfg.ensemble.size > 1:
        what = (
            "only their minibatches differ"
            if cfg.ensemble.vary.name == "sgd"
            else "init and minibatches differ"
        )
        lines.append(f"  ensemble  {cfg.ensemble.size} members stepped together; {what}")
    lines.append(
        f"  solver    {plan.solver.method}: {plan.flow_choice.why}"
        if plan.flow_choice
        else f"  solver    {plan.solver.method}"
    )
    if plan.analysis is not None:
        lines.append(f"  analysis  curvature: {plan.analysis.why}")
        lines.append(f"            saddles: {plan.analysis.saddles_why}")
    lines.append(f"  output    {out}")
    return "\n".join(lines)


def _status_cell(entry: dict) -> str:
    """The series' status; an ensemble whose members do not all share it adds their counts
    ("diverged (7 diverged, 1 unstable)"): a series can be ok with members that diverged."""
    members = entry.get("members") or []
    if not members or all(m.get("status") == entry["status"] for m in members):
        return str(entry["status"])
    return f"{entry['status']} ({member_counts(members)})"


def _dist_cell(entry: dict, flow: dict | None) -> str:
    """An (S)GD series' largest distance to the flow; with a flow that stopped early, up to when; without
    a distance, why: the flow stopped (where), or the series itself (its status) did."""
    d = entry.get("max_dist_to_flow")
    short = flow is not None and flow.get("status") != Status.OK
    if d is not None:
        until = entry.get("dist_to_flow_until")
        return fmt(d) + (f" to t = {fmt(until)}" if short and until is not None else "")
    if flow is None:
        return "(no flow)"
    if short:
        return f"(flow {flow['status']} at t = {fmt(flow.get('t_stop'))})"
    return f"(none: {entry['status']})" if entry["status"] != Status.OK else "(under 2 points)"


def _table(summary: dict) -> list[str]:
    rows = [("series", "status", "final loss", "steps/nfe", "max dist to flow", "wall s")]
    for name, e in summary["series"].items():
        work = e.get("nfe") if e["lr"] is None and "edge_lr" not in e else e.get("steps")
        if name == "flow":
            dist = "(reference)"
        elif name.startswith("cflow_"):
            before = (e.get("central") or {}).get("max_dist_to_flow_before_edge")
            dist = f"{fmt(before)} before the edge" if before is not None else "(never below the edge)"
        elif name.startswith("edge_"):
            dist = "(GD again, every step)"
        elif name.startswith(("modflow_", "sme_")):
            dist = "(not compared: " + ("GD's modified flow)" if name.startswith("modflow_") else "the SME)")
        else:
            dist = _dist_cell(e, summary["series"].get("flow"))
        wall = e.get("wall_time_s")
        rows.append(
            (name, _status_cell(e), fmt(e.get("final_loss")) if e.get("final_loss") is not None else "(none)",
             "(none)" if work is None else str(work), dist, "(none)" if wall is None else f"{wall:.2f}")
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _order_line(summary: dict, key: str, what: str) -> str | None:
    detail = summary.get(f"{key}_detail")
    if detail is None:
        return None
    if detail.get("order") is None:
        return f"{what}: none ({detail.get('message')})"
    used = ", ".join(fmt(x) for x in detail.get("lrs_used") or [])
    pairs = ", ".join(fmt(p["order"]) for p in detail.get("pairwise") or [])
    line = f"{what}: {fmt(detail['order'])} (slope of log max distance against log lr over lr {used}; pairwise {pairs})"
    line += _unstable_used(summary, detail.get("lrs_used") or [])
    return line + _shortened(summary, detail.get("lrs_used") or []) if key == "convergence_order" else line


def _unstable_used(summary: dict, lrs: list) -> str:
    """The order is fitted to unstable series too (their distances are finite), but a series that never
    follows the flow measures no rate of convergence: name them, so a slope such as -0.53 over three
    rates above GD's stability threshold does not read as an order."""
    unstable = sorted(
        e["lr"]
        for e in summary["series"].values()
        if e.get("lr") in lrs and e.get("status") == Status.UNSTABLE
    )
    if not unstable:
        return ""
    if len(unstable) == len(lrs):
        return "; every series fitted is unstable (it does not follow the flow): the slope is no order of convergence"
    verb = "is" if len(unstable) == 1 else "are"
    return f"; the series at lr {_list(unstable)} {verb} unstable: the slope mixes in rates where it does not follow the flow"


def _shortened(summary: dict, lrs: list) -> str:
    """Where the flow stopped early (not ok), the fitted distances cover its horizon only: say so."""
    flow = summary["series"].get("flow")
    untils = [e.get("dist_to_flow_until") for e in summary["series"].values() if e.get("lr") in lrs]
    untils = [u for u in untils if u is not None]
    if flow is None or flow.get("status") == Status.OK or not untils:
        return ""
    t_max = ((summary.get("config") or {}).get("flow") or {}).get("t_max")
    return f"; the distances only up to t = {fmt(min(untils))}, where the flow stopped (t_max {fmt(t_max)})"


def _plateau_lines(summary: dict) -> list[str]:
    flow = summary["series"].get("flow", {})
    plateaus = flow.get("plateaus") or []
    q = len(summary.get("modes") or [])
    if not plateaus:
        if not flow:
            return []
        if summary.get("stage") not in ("figures", "done"):  # stopped in a series or in the analysis itself
            return ["plateaus of the flow: not analysed (the run stopped before the saddle analysis ended)"]
        return ["plateaus of the flow: none found"]
    who = "plateaus of the flow (member 0)" if flow.get("ensemble") else "plateaus of the flow"
    lines = [f"{who}, modes numbered 1..{q} from the largest:"]
    for p in plateaus:
        learnt = ", ".join(str(k + 1) for k in p.get("modes_learnt") or []) or "none"
        if p.get("exit_mode") is None:
            left = f"not left before t_max = {fmt(summary['grid']['t_max'])}: the horizon cuts it"
        else:
            left = f"left by mode {p['exit_mode'] + 1} at t = {fmt(p.get('t_exit'))}"
        lines.append(
            f"  t = {fmt(p.get('t_start'))} .. {fmt(p.get('t_end'))}: level {fmt(p.get('level'))}, modes learnt "
            f"{learnt}; {left}"
        )
        # the saddle on a line of its own: on one line the two took 150 columns (under 100 now on the
        # default run); the snap distance is how far from the flow's trajectory the critical point lies
        away = (p.get("evidence") or {}).get("snap_distance")
        at = f" at the critical point {fmt(away)} away from the trajectory" if away else ""
        lines.append(
            f"    {p.get('label') or 'unclassified'} saddle: lambda_min {fmt(p.get('lambda_min'))}{at}"
        )
    return lines


def _exit_delay_lines(summary: dict) -> list[str]:
    """Per (S)GD series, how much later than the flow it leaves each plateau (O(eta) for GD)."""
    rows = {
        n: e.get("plateau_exits_vs_flow") for n, e in summary["series"].items() if e.get("lr") is not None
    }
    rows = {n: r for n, r in rows.items() if r}
    if not rows:
        return []
    modes = sorted({d["mode"] for r in rows.values() for d in r})
    width = max(len(n) for n in [*rows, "mode"])
    lines = [
        "plateau exits later than the flow's (in t; negative: earlier):",
        f"  {'mode':<{width}}" + "".join(f"{k + 1:>10}" for k in modes),
    ]
    for name, r in rows.items():
        by = {d["mode"]: d.get("delay") for d in r}
        cells = [fmt(by[k]) if by.get(k) is not None else "no exit" for k in modes]
        lines.append(f"  {name:<{width}}" + "".join(f"{c:>10}" for c in cells))
    return lines


def _ensemble_lines(summary: dict) -> list[str]:
    lines = []
    for name, e in summary["series"].items():
        ens = e.get("ensemble") or {}
        if not ens:
            continue
        fl, md = ens.get("final_loss") or {}, ens.get("max_dist_to_flow") or {}
        dist = "" if e["lr"] is None else f", max dist to flow {fmt(md.get('min'))} .. {fmt(md.get('max'))}"
        if (name == "flow" or name.startswith("modflow_")) and e.get("final_loss") is None:  # stopped early
            fl_txt = (
                f"{fmt(fl.get('min'))} .. {fmt(fl.get('max'))} of the {fl['n']} members that reached t_max"
                if fl
                else "none, no member reached t_max"
            )
        else:
            fl_txt = f"{fmt(fl.get('min'))} .. {fmt(fl.get('max'))}"
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(ens.get("statuses", {}).items()))
        lines.append(
            f"ensemble {name} ({ens['size']} members; the table shows their means): final loss "
            f"{fl_txt}{dist}; {statuses}"
        )
    return lines


def results_block(summary: dict) -> str:
    """The run's results: the series table, the convergence orders, the plateaus and their exits."""
    from dlnlab.lab.results._eos import edge_lines
    from dlnlab.lab.results._limit_text import limit_lines

    lines = _table(summary)
    has_sgd = any(e.get("lr") is not None for e in summary["series"].values())
    for key, what in (("convergence_order", "convergence order"),
                      ("convergence_order_modified", "convergence order against GD's modified flows")):  # fmt: skip
        line = _order_line(summary, key, what)
        if (
            line
            and has_sgd
            and (key == "convergence_order" or summary.get(key) is not None or summary.get(f"{key}_detail"))
        ):
            lines.append(line)
    lines += _ensemble_lines(summary)
    lines += limit_lines(summary)
    lines += edge_lines(summary)
    lines += _plateau_lines(summary)
    lines += _exit_delay_lines(summary)
    lines.append(f"critical values L*_r: {levels_text(summary['critical_values'])}")
    resumed = summary.get("resumed") or []
    if resumed and resumed[-1].get("series"):
        notes = ", ".join(f"{name} {note}" for name, note in resumed[-1]["series"].items())
        lines.append(f"resumed: {notes}")
    # the next step as a command to copy (the end block names the run directory only as where the files are)
    run_dir = summary.get("run_dir")
    resume = resume_shell_command(run_dir) if run_dir else "python scripts/train.py resume=<run dir>"
    if summary.get("not_run"):
        lines.append(f"(S)GD series not run: {', '.join(summary['not_run'])} (the run stopped first; "
                     f"{resume} runs them)")  # fmt: skip
    if summary.get("killed"):
        lines.append(f"killed: {', '.join(summary['killed'])} (their worker process ended before reporting; "
                     f"{resume} runs them again)")  # fmt: skip
    if summary.get("interrupted"):
        lines.append(f"interrupted by {summary['interrupted']}: every file written so far is complete; "
                     f"{resume} finishes the run")  # fmt: skip
    return "\n".join(lines)


def resume_line(prior: dict) -> str:
    """The start block's line of a resume: how the run it resumes ended, from its summary.json (``prior``).

    Its series say what stopped: the stage alone would mislead where units ran in parallel (the stage
    is the last series entered, one of several interrupted, or one of those never run)."""
    series = prior.get("series") if isinstance(prior.get("series"), dict) else {}
    stopped = [n for n, e in series.items() if isinstance(e, dict) and e.get("status") == Status.INTERRUPTED]
    facts = [f"{', '.join(names)} {what}" for names, what in (
        (stopped, "interrupted"), (prior.get("killed") or [], "killed"), (prior.get("not_run") or [], "not run")
    ) if names]  # fmt: skip
    status = prior.get("status")
    how = {RunStatus.INTERRUPTED: f"stopped by {prior.get('interrupted')}", RunStatus.FINISHED: "that finished",
           RunStatus.CRASHED: "that crashed"}.get(status, f"left {status}")  # fmt: skip
    what = f": {'; '.join(facts)}" if facts else f" in stage {prior.get('stage')!r}"
    return f"  resume    of the run {how}{what}; each series kept, continued or run again (docs/runs.md)"


def tensorboard_command(run_dir: Path | str) -> str:
    # a command to copy: a job's directory holds '[...]' (a glob to the shell) and may hold a space
    return f"tensorboard --logdir {shlex.quote(str(Path(run_dir) / 'tensorboard'))}"


def end_block(summary: dict) -> str:
    """Where to look: the files, the figures, the exact TensorBoard command and the page to open."""
    out = Path(summary["run_dir"])
    lines = [f"run directory  {out}  (summary.json, problem.npz, series/*.npz)"]
    figures = sorted(p.stem for p in (out / "figures").glob("*.png")) if (out / "figures").is_dir() else []
    if figures:
        lines.append(f"figures        {out / 'figures'}  ({', '.join(figures)})")
    if (out / "tensorboard").is_dir():
        lines.append(f"tensorboard    {tensorboard_command(out)}")
        lines.append(f"               then open {TENSORBOARD_URL}  (docs/tensorboard.md)")
    return "\n".join(lines)
