"""An ensemble's series entries: each member's numbers (computed as for a single run, on its own arrays),
and their aggregate across members.

An ensemble of E members (``ensemble.size``) runs each series once for all members; its series file
holds every per-point array with the member axis first, (E, T, ...). Its summary entry keeps the keys
of a single run's with the members' aggregate over the members that did not diverge (``final_loss``:
the mean of their last losses; ``max_dist_to_flow``: the mean of their maxima, the number the
convergence order is fitted to), adds ``members``
(each member's own entry and seeds) and ``ensemble`` (mean, std, min, median, max of the per-member
numbers). The status is the series' own (interrupted, error) or, when it ran to its end, its members'
(:func:`settle_status`: ok while any member is ok, else diverged if any member diverged, else
unstable); a member that diverged alone is recorded in its own entry and the rest go on. ``diverged``
is true when the status is diverged (as a single run's), ``members_diverged`` counts the members that
diverged.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

import numpy as np

from dlnlab.lab.results._summary import finish_sgd_entry, flow_loss_rise
from dlnlab.metrics import member_arrays, members_of
from dlnlab.status import Status

__all__ = [
    "spread",
    "settle_status",
    "member_counts",
    "finish_sgd_members",
    "finish_flow_members",
    "analyze_members",
    "aggregate_members",
    "MEMBER_KEYS",
]

MEMBER_KEYS = (
    "status", "diverged", "t_stop", "step_stop", "final_loss", "max_dist_to_flow", "dist_to_flow_until", "message"
)  # fmt: skip


def spread(values) -> dict | None:
    """mean, std, min, median, max of the finite values (None if there are none); the std (ddof 1) of
    one value is None: its spread is unknown, and 0 would read as members that agree."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return None
    return {
        "mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else None, "min": float(v.min()),
        "median": float(np.median(v)), "max": float(v.max()), "n": int(len(v)),
    }  # fmt: skip


def finish_sgd_members(
    entry: dict,
    arrays: dict,
    tau: float,
    levels,
    threshold,
    flow_finals,
    member_diverged: dict,
    seeds,
    threshold_name: str = "2 / S_bal",
) -> None:
    """Fill an ensemble's SGD entry: every member as a single run's entry, then the aggregate."""
    members = []
    for e in range(members_of(arrays)):
        sub = {k: entry.get(k) for k in ("lr", "momentum", "status", "message", "steps")}
        if e in member_diverged:
            k, why = member_diverged[e]
            sub.update(status=Status.DIVERGED, message=why, steps=k)
        finish_sgd_entry(
            sub, member_arrays(arrays, e), tau, levels, threshold, flow_finals[e], threshold_name
        )
        members.append({**{k: sub.get(k) for k in MEMBER_KEYS}, "seeds": seeds[e]})
    aggregate_members(entry, members)
    entry["plateaus"] = []
    settle_status(entry, members)


def settle_status(entry: dict, members: list[dict], note: str = "") -> None:
    """A series that ran to its end (ok) takes its members' verdict: it stays ok while any member is ok
    (the message names the others); with no member ok it is the worst of theirs: diverged if any member
    diverged, else unstable. The worst, not the most common: a rate at which some members blew up and
    none converged is past stability, and like a single diverged run it is left out of the convergence
    order (which takes ok and unstable series only); the most common would also need a tie-break.

    Then ``diverged`` says what the status says, as a single run's does, and ``members_diverged`` how many
    members diverged (``diverged`` once meant "every member diverged", so that an entry could read status
    diverged with diverged false: 2 members diverged, 1 unstable)."""
    _settle(entry, members, note)
    entry["diverged"] = entry["status"] == Status.DIVERGED
    entry["members_diverged"] = sum(bool(m["diverged"]) for m in members)


def _settle(entry: dict, members: list[dict], note: str) -> None:
    statuses = {m["status"] for m in members}
    if entry["status"] != Status.OK or statuses <= {Status.OK}:
        return
    counts = member_counts(m["status"] for m in members)
    if Status.OK not in statuses:
        worst = Status.DIVERGED if Status.DIVERGED in statuses else Status.UNSTABLE
        first = next(i for i, m in enumerate(members) if m["status"] == worst)
        entry.update(
            status=worst, message=f"no member ok ({counts}); member {first}: {members[first]['message']}"
        )
    else:
        gone = [i for i, m in enumerate(members) if m["status"] != Status.OK]
        kinds = ", ".join(sorted(str(s) for s in statuses - {Status.OK}))
        entry["message"] = f"members {gone} are {kinds}"
    if note:
        entry["message"] += f"; {note}"


def member_counts(statuses: Iterable) -> str:
    """How many members have each status (the members' statuses, in any order), the most first:
    "7 diverged, 1 unstable"."""
    counts = Counter(str(s) for s in statuses)
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda x: (-x[1], x[0])))


def finish_flow_members(entry: dict, arrays: dict, rtol: float, seeds, t_end: float) -> list[int]:
    """Fill an ensemble's flow entry; returns the members whose loss rises (an inaccurate solve).

    A member's ``t_stop`` and ``final_loss`` are at its own last finite point (an interrupted or failed
    solve leaves the members at different times, the rest NaN); the entry's ``t_stop`` is the earliest of
    them (every member reached it), its ``final_loss`` the members' mean only when every member reached
    the last grid time ``t_end`` (else null: a mean over those that did would read as the ensemble's;
    ``ensemble.final_loss`` spreads those that did). A member that reached the end of an interrupted
    solve is ok: the signal stopped the others."""
    t = arrays.get("t", np.zeros(0))
    members, bad = [], []
    for e in range(members_of(arrays) or 0):
        loss = np.asarray(arrays["loss"][e])
        last = _last_finite(loss)
        sub = {
            "status": entry["status"],
            "t_stop": None if last is None else float(t[last]),
            "final_loss": None if last is None else float(loss[last]),
            "message": "",
            "seeds": seeds[e],
        }
        if entry["status"] == Status.INTERRUPTED and sub["t_stop"] == t_end:
            sub["status"] = Status.OK
        rise = flow_loss_rise(loss, t, rel_tol=max(1e-6, 1e3 * rtol)) if len(t) else None
        if rise is not None and entry["status"] == Status.OK:
            sub.update(status=Status.SOLVER_FAILED, message=rise)
            bad.append(e)
        members.append(sub)
    aggregate_members(entry, members)
    at_end = [m["final_loss"] for m in members if m["t_stop"] == t_end]
    entry["ensemble"]["final_loss"] = spread(at_end)  # L at one time, t_end, not at each member's last
    entry["final_loss"] = (
        (entry["ensemble"]["final_loss"] or {}).get("mean") if len(at_end) == len(members) else None
    )
    stops = [m["t_stop"] for m in members]
    entry["t_stop"] = 0.0 if not stops or None in stops else min(stops)
    if bad:
        entry.update(status=Status.SOLVER_FAILED, message=f"members {bad}: {members[bad[0]]['message']}")
    return bad


def _last_finite(values: np.ndarray) -> int | None:
    finite = np.flatnonzero(np.isfinite(values))
    return int(finite[-1]) if len(finite) else None


def aggregate_members(entry: dict, members: list[dict]) -> None:
    # a diverged member's numbers are its blow-up (a distance of 1e123, a last loss of 1e240 when it blew
    # up at the last step and no NaN followed), not SGD's: they stay in its own entry and out of the
    # spreads and the means (the distance's is the number the order is fitted to)
    kept = [m for m in members if m["status"] != Status.DIVERGED]
    finals = [m.get("final_loss") for m in kept]
    dists = [m.get("max_dist_to_flow") for m in kept]
    entry["members"] = members
    entry["ensemble"] = {
        "size": len(members),
        "final_loss": spread(finals),
        "max_dist_to_flow": spread(dists),
        "statuses": {
            str(s): sum(1 for m in members if m["status"] == s) for s in {m["status"] for m in members}
        },
    }
    entry["final_loss"] = (entry["ensemble"]["final_loss"] or {}).get("mean")
    if entry.get("lr") is not None:
        entry["max_dist_to_flow"] = (entry["ensemble"]["max_dist_to_flow"] or {}).get("mean")
        # the mean's maxima cover each member's time with a flow: the shortest of those in the mean
        untils = [
            m.get("dist_to_flow_until")
            for m in members
            if m["status"] != Status.DIVERGED and m.get("max_dist_to_flow") is not None
        ]
        entry["dist_to_flow_until"] = min(untils) if untils and None not in untils else None
        t_stops = [m["t_stop"] for m in members if m.get("t_stop") is not None]
        entry["t_stop"] = max(t_stops) if t_stops else 0.0


PLATEAU_KEYS = ("t_start", "t_end", "level", "modes_learnt", "exit_mode", "t_exit")


def analyze_members(problem, dims, series_arrays: dict, series: dict, hessian_dense_max: int, classify=True):
    """Plateaus of every member of every series (member 0's saddles classified, the others' plateaus and
    exits only: a classification per member would cost more than the run); each member's plateaus and
    exits go in its own entry, member 0's at the series' top level (as a single run's), and the spread
    of the exit times across members in ``ensemble.plateau_exits``. Returns member 0's plateaus."""
    from dlnlab.lab.results._saddles import analyze_run_saddles

    # the ensemble's size: of any series with a member axis (a shared flow, ensemble.vary=sgd, has none;
    # taking the first series' found none when the flow's arrays came first, as in a parallel run)
    size = max((members_of(a) or 0 for a in series_arrays.values() if a), default=0)
    logs = {}
    for e in range(size):
        arrays = {
            name: member_arrays(a, e) if members_of(a) else (a or {}) for name, a in series_arrays.items()
        }
        found = {name: {"lr": entry.get("lr")} for name, entry in series.items() if name in arrays}
        got = analyze_run_saddles(
            problem,
            dims,
            arrays,
            found,
            hessian_dense_max=hessian_dense_max,
            classify=classify if e == 0 else False,
        )
        logs = got if e == 0 else logs
        for name, sub in found.items():
            if e == 0:
                series[name]["plateaus"] = sub["plateaus"]
                if "plateau_exits_vs_flow" in sub:
                    series[name]["plateau_exits_vs_flow"] = sub["plateau_exits_vs_flow"]
            if series[name].get("members"):
                member = series[name]["members"][e]
                member["plateaus"] = [{k: p.get(k) for k in PLATEAU_KEYS} for p in sub["plateaus"]]
                member["plateau_exits_vs_flow"] = sub.get("plateau_exits_vs_flow")
    for entry in series.values():
        if entry.get("members"):
            entry["ensemble"]["plateau_exits"] = _exit_spread(entry["members"])
    return logs


def _exit_spread(members: list[dict]) -> list[dict]:
    """Per mode: the spread across members of the plateau exit time (and of its delay vs the flow). A
    member that left a plateau by the same mode twice (SGD unlearnt it in between) counts once, with
    its first exit (as in scripts/aggregate.py)."""
    times: dict[int, list] = {}
    delays: dict[int, list] = {}
    for m in members:
        first: dict[int, float] = {}
        for p in m.get("plateaus") or []:
            if p.get("exit_mode") is not None and p.get("t_exit") is not None:
                k = int(p["exit_mode"])
                first[k] = min(first.get(k, math.inf), float(p["t_exit"]))
        for k, t_exit in first.items():
            times.setdefault(k, []).append(t_exit)
        for x in m.get("plateau_exits_vs_flow") or []:
            delays.setdefault(int(x["mode"]), []).append(x.get("delay"))
    return [
        {"mode": k, "t_exit": spread(times[k]), "delay_vs_flow": spread(delays.get(k, []))}
        for k in sorted(times)
    ]
