"""What a run prints: a short block of what runs (before), the results (after), where to look (last).

Modes are numbered 1..q (m_1 the largest) here as in the figures, TensorBoard and the docs. A value
that is missing is never a bare "-": the line says why (the flow is the reference; an order needs three
learning rates; a mode the horizon cut off has no exit).

The results block reads the summary through its records (``Summary.from_dict``, as the run's writer
types it; the table: ``_console_table``; the limit lines: ``_limit_text``; the edge block: ``_eos``): a
key an older summary lacks is ABSENT, read as None (``given``); a plateau, a plateau exit, an order's pair
and a resume are records too (``_part_records``). The resolved config, the run's own, is a plain dict.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from dlnlab._steps import uniform_times
from dlnlab._util import fmt
from dlnlab.lab.config import resume_shell_command
from dlnlab.lab.results._console_orders import order_lines
from dlnlab.lab.results._console_table import entry_parts, entry_value, series_table
from dlnlab.lab.results._part_records import PlateauEntry, PlateauExitEntry
from dlnlab.lab.results._records import FlowEntry, Record, Spread, given
from dlnlab.lab.results._summary_record import RunStatus, Summary
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


def _plateau_lines(summary: Summary) -> list[str]:
    flow = summary.series.get("flow")
    if flow is None:
        return []
    plateaus = entry_parts(flow, "plateaus", PlateauEntry)
    if not plateaus:
        if summary.stage not in ("figures", "done"):  # stopped in a series or in the analysis itself
            return ["plateaus of the flow: not analysed (the run stopped before the saddle analysis ended)"]
        return ["plateaus of the flow: none found"]
    who = "plateaus of the flow (member 0)" if entry_value(flow, "ensemble") else "plateaus of the flow"
    # the two times differ by rule (dlnlab/saddles/plateaus.py): the window is where the loss holds the
    # level, the exit when the mode learnt next reaches half its strength, after the loss has left the band
    # (two lines: the block keeps under 100 columns, tests/test_plateaus_in_runs.py)
    lines = [
        f"{who}, modes numbered 1..{len(summary.modes)} from the largest; t = a .. b: the plateau,",
        "  where the loss is near its level, gradient small; left at t: when mode k's strength hits m_k / 2",
    ]
    for p in plateaus:
        learnt = ", ".join(str(k + 1) for k in p.modes_learnt or []) or "none"
        if p.exit_mode is None:
            left = f"not left before t_max = {fmt(summary.grid.t_max)}: the horizon cuts it"
        else:
            left = f"left by mode {p.exit_mode + 1} at t = {fmt(p.t_exit)}"
        lines.append(
            f"  t = {fmt(p.t_start)} .. {fmt(p.t_end)}: level {fmt(p.level)}, modes learnt {learnt}; {left}"
        )
        # the saddle on a line of its own: on one line the two took 150 columns (under 100 now on the
        # default run); the snap distance is how far from the flow's trajectory the critical point lies.
        evidence = given(p.evidence)  # a SaddleEvidence (dlnlab.saddles' SaddleClassification's fields)
        away = given(evidence.snap_distance) if evidence else None
        at = f" at the critical point {fmt(away)} away from the trajectory" if away else ""
        lines.append(
            f"    {given(p.label) or 'unclassified'} saddle: lambda_min {fmt(given(p.lambda_min))}{at}"
        )
    return lines


def _exit_delay_lines(series: dict[str, Record], members: int) -> list[str]:
    """Per (S)GD series, how much later than the flow it leaves each plateau (O(eta) for GD); in an
    ensemble of ``members``, member 0's exits against its flow's (the series' top level holds member 0's
    plateaus, as the plateaus' line says; the members' spread is in the entry's ``ensemble.plateau_exits``)."""
    rows = {
        n: entry_parts(e, "plateau_exits_vs_flow", PlateauExitEntry)
        for n, e in series.items()
        if e.lr is not None
    }
    rows = {n: r for n, r in rows.items() if r}
    if not rows:
        return []
    modes = sorted({d.mode for r in rows.values() for d in r})
    width = max(len(n) for n in [*rows, "mode"])
    lines = [
        "plateau exits later than the flow's (in t; negative: earlier)"
        + (
            f", member 0 of {members} against its flow (the members' spread: summary.json):"
            if members > 1
            else ":"
        ),
        f"  {'mode':<{width}}" + "".join(f"{k + 1:>10}" for k in modes),
    ]
    for name, r in rows.items():
        by = {d.mode: d.delay for d in r}
        cells = [fmt(by[k]) if by.get(k) is not None else "no exit" for k in modes]
        lines.append(f"  {name:<{width}}" + "".join(f"{c:>10}" for c in cells))
    return lines


def _span(spread: Spread | None) -> str:
    """A spread's range, "min .. max" ("- .. -" without one)."""
    return f"{fmt(spread.min)} .. {fmt(spread.max)}" if spread else f"{fmt(None)} .. {fmt(None)}"


def _ensemble_lines(series: dict[str, Record]) -> list[str]:
    lines = []
    for name, e in series.items():
        ens = given(getattr(e, "ensemble", None))
        if not ens:
            continue
        fl, md = given(ens.final_loss), given(ens.max_dist_to_flow)
        dist = "" if e.lr is None else f", max dist to flow {_span(md)}"
        if isinstance(e, FlowEntry) and given(e.final_loss) is None:  # stopped early
            fl_txt = (
                f"{_span(fl)} of the {fl.n} members that reached t_max"
                if fl
                else "none, no member reached t_max"
            )
        else:
            fl_txt = _span(fl)
        statuses = ", ".join(f"{n} {s}" for s, n in sorted((given(ens.statuses) or {}).items()))
        lines.append(
            f"ensemble {name} ({ens.size} members; the table shows their means): final loss "
            f"{fl_txt}{dist}; {statuses}"
        )
    return lines


def results_block(summary: dict) -> str:
    """The run's results: the series table, the convergence orders, the plateaus and their exits.
    ``summary``: summary.json's dict, read through its records as the run's writer types it (an entry
    with a key its record lacks, a kind without a record, in an open SeriesEntry)."""
    from dlnlab.lab.results._eos import edge_lines
    from dlnlab.lab.results._limit_text import limit_lines

    typed = Summary.from_dict(summary, strict=False)
    series = typed.series
    lines = series_table(series)
    lines += order_lines(typed)
    lines += _ensemble_lines(series)
    lines += limit_lines(summary)
    lines += edge_lines(summary)
    lines += _plateau_lines(typed)
    lines += _exit_delay_lines(series, typed.config["ensemble"]["size"])
    lines.append(f"critical values L*_r: {levels_text(typed.critical_values)}")
    lines += _closing_lines(typed)
    return "\n".join(lines)


def _closing_lines(summary: Summary) -> list[str]:
    """What a resume did, and what is left for one: the series not run, killed, the signal."""
    lines = []
    if summary.resumed and summary.resumed[-1].series:
        notes = ", ".join(f"{name} {note}" for name, note in summary.resumed[-1].series.items())
        lines.append(f"resumed: {notes}")
    # the next step as a command to copy (the end block names the run directory only as where the files are)
    run_dir = summary.run_dir
    resume = resume_shell_command(run_dir) if run_dir else "python scripts/train.py resume=<run dir>"
    if summary.not_run:
        lines.append(f"(S)GD series not run: {', '.join(summary.not_run)} (the run stopped first; "
                     f"{resume} runs them)")  # fmt: skip
    if given(summary.killed):
        lines.append(f"killed: {', '.join(summary.killed)} (their worker process ended before reporting; "
                     f"{resume} runs them again)")  # fmt: skip
    if summary.interrupted:
        lines.append(f"interrupted by {summary.interrupted}: every file written so far is complete; "
                     f"{resume} finishes the run")  # fmt: skip
    return lines


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
