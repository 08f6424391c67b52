"""An ensemble's summary entry when its members disagree: the series' status from theirs, the mean
distance without the diverged members' blow-ups, and the console's counts. Built arrays (each member a
known trajectory), read by the very functions a run calls."""

from __future__ import annotations

import numpy as np
import pytest

from dlnlab.lab.results._console_table import series_table
from dlnlab.lab.results._ensemble import finish_flow_members, finish_sgd_members
from dlnlab.lab.results._records import entry_record
from dlnlab.lab.results._summary import convergence_order, finish_sgd_entry, order_series
from dlnlab.status import Status

LR = 0.35
T = 41  # grid points, t = k LR
LEVELS = np.array([2.5, 0.5, 0.0])  # plateau levels L*_r; the floor 0
SEEDS = [{"data": 7, "init": e, "sgd": e} for e in range(4)]  # a member's three seeds, as a run writes them
# experiment=tiny's flow entry (rounded): the keys the flow's series writes before the saddle analysis
FLOW = {
    "lr": None, "method": "lsoda", "rtol": 1e-09, "atol": 1e-11, "status": Status.OK, "message": "", "diverged": False,
    "t_stop": 4.0, "step_stop": None, "final_loss": 0.9462, "nfe": 223, "njev": 0, "wall_time_s": 0.19,
    "max_dist_to_flow": 0.0, "plateaus": [],
}  # fmt: skip


def _table(series: dict[str, dict]) -> list[str]:
    """The console's table of the entries, each read through its record as the console reads it (a key
    a run always writes, missing from an entry here: MissingKeys)."""
    return series_table({name: entry_record(name).from_dict(e) for name, e in series.items()})


def _member(kind: str, scale: float, k_blow: int = 10) -> dict[str, np.ndarray]:
    """One member's arrays: "ok" converges (loss to 1e-20, distance up to ``scale``), "unstable" stays at
    loss 0.36 with sharpness 10 > 2 / LR, "diverged" blows up at step ``k_blow`` (its distance reaches
    1e123 there, NaN after, as the stepper leaves a diverged member)."""
    k = np.arange(T, dtype=np.float64)
    loss = np.exp(-k) * 1e-20 ** (k / (T - 1)) if kind == "ok" else np.full(T, 0.36)
    dist = scale * np.sin(np.pi * k / (T - 1)) ** 2
    sharp = np.full(T, 10.0 if kind == "unstable" else 1.0)
    if kind == "diverged":
        dist[k_blow] = 1e123
        loss[k_blow] = 1e240
        for a in (loss, dist, sharp):
            a[k_blow + 1 :] = np.nan
    return {"loss": loss, "dist_to_flow": dist, "sharpness": sharp}


def _entry(kinds: list[str], scales: list[float], k_blow: int = 10) -> dict:
    """finish_sgd_members on an ensemble of the given members, as the SGD series' runner calls it."""
    per = [_member(kind, s, k_blow) for kind, s in zip(kinds, scales)]
    arrays = {name: np.stack([m[name] for m in per]) for name in per[0]}
    arrays.update(t=np.arange(T) * LR, step=np.arange(T))
    diverged = {
        e: (k_blow, f"member {e}: the weights' norm passed 1e6")
        for e, k in enumerate(kinds)
        if k == "diverged"
    }
    entry = {
        "lr": LR,
        "momentum": 0.0,
        "time_per_step": LR,
        "status": Status.OK,
        "message": "",
        "steps": T - 1,
    }
    finish_sgd_members(entry, arrays, LR, LEVELS, 0.2646, [0.0] * len(kinds), diverged, SEEDS[: len(kinds)])
    return entry | {"wall_time_s": 0.5}  # as the SGD series' runner adds it


def test_no_member_ok_makes_the_series_its_worst_members_status_and_keeps_it_out_of_the_order():
    """3 diverged + 1 unstable: the series is diverged (the worst; was ok), its mean distance the unstable
    member's alone (was 2.5e122), and the convergence order leaves the rate out as a single diverged run's."""
    entry = _entry(["diverged", "unstable", "diverged", "diverged"], [1.0, 2.0, 3.0, 4.0])
    assert [m["status"] for m in entry["members"]] == ["diverged", "unstable", "diverged", "diverged"]
    assert entry["status"] == Status.DIVERGED
    # diverged as the status says (it was false: "every member diverged"), and how many members did
    assert entry["diverged"] is True and entry["members_diverged"] == 3
    assert entry["message"].startswith("no member ok (3 diverged, 1 unstable); member 0: member 0:")
    assert entry["max_dist_to_flow"] == pytest.approx(2.0, rel=1e-12)  # sin^2 peaks at 1 mid-grid
    assert entry["ensemble"]["max_dist_to_flow"]["n"] == 1
    assert [m["max_dist_to_flow"] for m in entry["members"]][0] == 1e123  # kept in the member's own entry
    assert entry["ensemble"]["statuses"] == {"diverged": 3, "unstable": 1}
    assert "diverged (3 diverged, 1 unstable)" in "\n".join(_table({"sgd_lr_0.35": entry}))

    small = {
        f"sgd_lr_{lr}": {"lr": lr, "status": Status.OK, "max_dist_to_flow": 0.3 * lr}
        for lr in (0.04, 0.02, 0.01)
    }
    series = {"sgd_lr_0.35": entry, **small}
    used = order_series(series)
    assert entry not in used and len(used) == 3
    order = convergence_order([e["lr"] for e in used], [e["max_dist_to_flow"] for e in used], 3)
    assert order["order"] == pytest.approx(1.0, rel=1e-9)
    assert [p["lrs"] for p in order["pairwise"]] == [[0.01, 0.02], [0.02, 0.04]]  # no pair with 0.35


def test_every_member_unstable_makes_the_series_unstable():
    entry = _entry(["unstable"] * 2, [1.0, 3.0])
    assert entry["status"] == Status.UNSTABLE and entry["max_dist_to_flow"] == pytest.approx(2.0, rel=1e-12)
    assert entry["diverged"] is False and entry["members_diverged"] == 0
    assert _table({"sgd_lr_0.35": entry})[2].split()[1:2] == ["unstable"]  # no counts: all agree


def test_a_series_with_an_ok_member_stays_ok_and_its_mean_distance_leaves_the_diverged_out():
    entry = _entry(["ok", "diverged", "ok"], [1.0, 5.0, 3.0])
    assert entry["status"] == Status.OK and entry["message"] == "members [1] are diverged"
    assert entry["diverged"] is False and entry["members_diverged"] == 1  # the series is ok
    assert entry["max_dist_to_flow"] == pytest.approx(2.0, rel=1e-12)  # (1 + 3) / 2, not 1e123 / 3
    assert entry["ensemble"]["max_dist_to_flow"]["max"] == pytest.approx(3.0, rel=1e-12)
    assert "ok (2 ok, 1 diverged)" in "\n".join(_table({"sgd_lr_0.35": entry}))


def test_a_member_that_diverged_at_the_last_step_is_left_out_of_the_mean_final_loss():
    """Member 1 blew up at the last step, so its last loss is finite (1e240, no NaN after it): the mean
    final loss was 3.3e239 over all three members. Reference: the ok members' own last losses, from the
    arrays the members were built from."""
    entry = _entry(["ok", "diverged", "ok"], [1.0, 5.0, 3.0], k_blow=T - 1)
    assert entry["members"][1]["status"] == Status.DIVERGED and entry["members"][1]["final_loss"] == 1e240
    ok_last = [_member("ok", s)["loss"][-1] for s in (1.0, 3.0)]
    assert entry["final_loss"] == pytest.approx(np.mean(ok_last), rel=1e-12)
    assert entry["ensemble"]["final_loss"]["n"] == 2 and entry["ensemble"]["final_loss"]["max"] < 1.0


def _flow_entry(points: list[int], status: Status) -> dict:
    """finish_flow_members on an ensemble flow whose member e has its first ``points[e]`` grid points
    (loss exp(-t)), NaN after: as an interrupted or failed chunked solve leaves its series file."""
    t = np.linspace(0.0, 2.0, 5)
    loss = np.full((len(points), len(t)), np.nan)
    for e, n in enumerate(points):
        loss[e, :n] = (e + 1) * np.exp(-t[:n])
    entry = {**FLOW, "status": status, "message": "interrupted", "t_stop": float(t[-1]), "final_loss": None}
    finish_flow_members(entry, {"t": t, "loss": loss}, 1e-9, SEEDS[: len(points)], t_end=2.0)
    return entry


def test_an_interrupted_ensemble_flow_stops_where_its_earliest_member_did_and_gives_no_final_loss():
    """Members at 5, 3 and 1 of 5 points: each member's own last time and loss, the entry's t_stop their
    minimum (was 2.0, the horizon) and no final loss (was member 0's, the only one at the end)."""
    entry = _flow_entry([5, 3, 1], Status.INTERRUPTED)
    assert [m["t_stop"] for m in entry["members"]] == [2.0, 1.0, 0.0]
    assert [m["final_loss"] for m in entry["members"]] == pytest.approx([np.exp(-2.0), 2 * np.exp(-1.0), 3.0])
    assert [m["status"] for m in entry["members"]] == ["ok", "interrupted", "interrupted"]
    assert entry["t_stop"] == 0.0 and entry["final_loss"] is None and entry["status"] == Status.INTERRUPTED
    assert entry["ensemble"]["final_loss"]["n"] == 1  # the spread: of the members that reached t = 2
    table = "\n".join(_table({"flow": entry}))
    assert "interrupted (2 interrupted, 1 ok)" in table and "(none)" in table


def test_a_member_without_a_point_has_no_time_and_the_entry_none_it_did_not_reach():
    entry = _flow_entry([4, 0], Status.INTERRUPTED)
    assert [m["t_stop"] for m in entry["members"]] == [1.5, None]
    assert entry["members"][1]["final_loss"] is None and entry["t_stop"] == 0.0
    assert entry["ensemble"]["final_loss"] is None and entry["final_loss"] is None


def test_a_finished_ensemble_flow_gives_the_members_mean_at_the_horizon():
    entry = _flow_entry([5, 5], Status.OK)
    assert entry["t_stop"] == 2.0 and [m["status"] for m in entry["members"]] == ["ok", "ok"]
    assert entry["final_loss"] == pytest.approx(1.5 * np.exp(-2.0), rel=1e-12)


def _sgd_entry(known: int, status: Status = Status.OK, lr: float = 0.05) -> dict:
    """finish_sgd_entry on a GD series whose flow is known at its first ``known`` grid points (the
    distance NaN after, as a flow that failed leaves it), distance 0.1 t."""
    t = np.linspace(0.0, 7.0, 141)
    dist = np.where(np.arange(len(t)) < known, 0.1 * t, np.nan)
    arrays = {
        "t": t,
        "loss": np.exp(-t),
        "dist_to_flow": dist,
        "step": np.arange(len(t)),
        "sharpness": np.ones_like(t),
    }
    entry = {
        "lr": lr,
        "momentum": 0.0,
        "time_per_step": lr,
        "status": status,
        "message": "",
        "steps": len(t) - 1,
    }
    finish_sgd_entry(entry, arrays, lr, LEVELS, 0.2646, 0.0)
    return entry | {"wall_time_s": 0.5}


def test_a_flow_that_failed_at_once_leaves_no_distance_and_the_console_says_why():
    """The flow known at t = 0 alone: no largest distance (was 0.0, both series' common start), known
    until t = 0; the table names the flow's failure (was "0")."""
    entry = _sgd_entry(1)
    assert entry["max_dist_to_flow"] is None and entry["dist_to_flow_until"] == 0.0
    flow = {**FLOW, "status": Status.SOLVER_FAILED, "t_stop": 0.0, "final_loss": None}
    rows = _table({"flow": flow, "sgd_lr_0.05": entry})
    assert "(flow solver_failed at t = 0)" in rows[3]


def test_a_flow_that_failed_later_gives_the_distance_up_to_its_last_point():
    entry = _sgd_entry(66)  # t = 0 .. 3.25
    assert entry["max_dist_to_flow"] == pytest.approx(0.325, rel=1e-12)
    assert entry["dist_to_flow_until"] == pytest.approx(3.25, rel=1e-12)
    flow = {**FLOW, "status": Status.SOLVER_FAILED, "t_stop": 3.25, "final_loss": None}
    assert "0.325 to t = 3.25" in _table({"flow": flow, "sgd_lr_0.05": entry})[3]
    fine = {**FLOW, "t_stop": 7.0}
    assert _table({"flow": fine, "sgd_lr_0.05": _sgd_entry(141)})[3].split()[4] == "0.7"


def test_a_series_without_a_distance_beside_a_fine_flow_says_its_own_status_not_no_flow():
    entry = {"lr": 0.05, "momentum": 0.0, "time_per_step": 0.05, "status": Status.ERROR,
             "message": "RuntimeError: CUDA out of memory", "steps": None}  # fmt: skip
    # the entry of a series that failed before training (SGDKind.failed_entry): no distance, no loss
    assert "(none: error)" in _table({"flow": {**FLOW, "t_stop": 7.0}, "sgd_lr_0.05": entry})[3]


def test_an_ensembles_distance_is_known_until_its_shortest_member_in_the_mean():
    entry = _entry(["ok", "diverged", "ok"], [1.0, 5.0, 3.0])
    assert [m["dist_to_flow_until"] for m in entry["members"]] == [
        pytest.approx(14.0),
        pytest.approx(3.5),
        pytest.approx(14.0),
    ]
    assert entry["dist_to_flow_until"] == pytest.approx(
        14.0, rel=1e-12
    )  # the diverged member's 3.5: not in the mean


def _order_line(detail: dict, series: dict[str, dict], t_max: float | None = 7.0) -> str:
    """The console's order line of a fit against the flow over ``t_max``, the fit and the entries read
    through their records."""
    from types import SimpleNamespace

    from dlnlab.lab.results._console_orders import _order_line as line
    from dlnlab.lab.results._summary_record import OrderFit

    typed = {name: entry_record(name).from_dict(e) for name, e in series.items()}
    config = {"flow": {"t_max": t_max}, "ensemble": {"size": 1}, "sgd": {"batch_size": None}}
    summary = SimpleNamespace(series=typed, config=config, not_run=[])  # the fields the line reads
    return line(OrderFit.from_dict(detail), "convergence order", summary, "max_dist_to_flow", True)


def test_the_order_line_says_when_the_distances_stop_short_of_t_max():
    """A flow that failed at t = 3.25 of 7: the order is fitted to distances up to there, and says so."""
    entries = {f"sgd_lr_{lr}": _sgd_entry(66, lr=lr) for lr in (0.1, 0.05)}
    entries["sgd_lr_0.1"]["dist_to_flow_until"] = 3.3  # the shorter one is the horizon said
    detail = {
        "order": 1.02,
        "lrs_used": [0.05, 0.1],
        "pairwise": [{"lrs": [0.05, 0.1], "order": 1.02}],
        "message": "",
    }
    flow = {**FLOW, "status": Status.SOLVER_FAILED, "t_stop": 3.3, "final_loss": None}
    line = _order_line(detail, {"flow": flow, **entries})
    assert line.endswith("; the distances only up to t = 3.25, where the flow stopped (t_max 7)"), line
    flow["status"] = Status.OK  # a grid ending short of t_max (not a multiple of log.dt) is no stop
    for e in entries.values():
        e["dist_to_flow_until"] = 6.9
    assert "flow stopped" not in _order_line(detail, {"flow": flow, **entries})


def test_the_order_line_names_the_unstable_series_it_was_fitted_to():
    """An order fitted to series that never followed the flow is no order of convergence: the line says so
    (all unstable, some, none)."""
    lrs = (0.32, 0.3, 0.27)
    entries = {f"sgd_lr_{lr}": _sgd_entry(141, Status.UNSTABLE, lr) for lr in lrs}
    pairs = [{"lrs": [0.27, 0.3], "order": -0.47}, {"lrs": [0.3, 0.32], "order": -0.65}]
    detail = {"order": -0.53, "lrs_used": sorted(lrs), "pairwise": pairs, "message": ""}
    series = {"flow": FLOW, **entries}
    line = _order_line(detail, series)
    assert "; every series fitted is unstable (it does not follow the flow)" in line, line
    entries["sgd_lr_0.27"]["status"] = entries["sgd_lr_0.3"]["status"] = Status.OK
    line = _order_line(detail, series)
    assert "; the series at lr 0.32 is unstable: the slope mixes in" in line, line
    entries["sgd_lr_0.32"]["status"] = Status.OK
    assert "unstable" not in _order_line(detail, series)
