"""What the console says about a run is what the run showed: the unstable flag says "stays" only where the
loss stalled (synthetic arrays whose fall is known by hand), a start from theta = 0 is warned about (its
gradient is 0: autograd-free closed form against the depth-1 case), the order line says why the
distances the table shows were not fitted, that one minibatch run is one noise sample, and what an
ensemble's order is fitted to; the plateau and exit headings say which time is which and which member."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlnlab.lab import prepare
from dlnlab.lab.results import results_block
from dlnlab.lab.results._unstable import STALL_TOL, flag_unstable, loss_tail
from dlnlab.status import Status
from tests._helpers import TINY, make_cfg

LEVELS = np.array([2.5, 0.5, 0.0])  # the tiny net's plateau levels L*_r, the floor 0
THRESHOLD = 2 / (3 * 2.0 ** (2 - 2 / 3))  # 2 / (h m_1^(2-2/h)) on the tiny net: 0.2646


def _flag(loss, sharpness, lr=0.32) -> dict:
    n = len(loss)
    arrays = {"loss": np.asarray(loss, float), "sharpness": np.full(n, sharpness), "step": np.arange(n)}
    entry = {"lr": lr, "momentum": 0.0, "status": Status.OK, "message": ""}
    flag_unstable(entry, arrays, lr, LEVELS, THRESHOLD, 1e-7, "2 / (h m_1^(2-2/h))")
    return entry


def test_the_stall_rule_by_hand():
    """Over the last quarter (8 of 32 points) a line falling 0.001 a step loses 4 steps' worth between
    the means of its halves, 0.004 of about 0.97 (0.4 %, under 1 %): stalled; falling 0.01 a step, 0.04
    of about 0.72 (5.6 %): still falling; rising: stalled (no fall). Under 4 points: unknown."""
    k = np.arange(32)
    slow, fast = loss_tail(1 - 0.001 * k), loss_tail(1 - 0.01 * k)
    assert slow.fall == pytest.approx(0.004 / np.mean(1 - 0.001 * k[24:28]), rel=1e-12) and slow.stalled
    assert fast.fall == pytest.approx(0.04 / np.mean(1 - 0.01 * k[24:28]), rel=1e-12) and not fast.stalled
    assert STALL_TOL == 0.01 and loss_tail(0.1 + 0.001 * k).stalled
    assert loss_tail([2.0, 1.0, 0.5]).stalled is None


@pytest.mark.parametrize("n", [40, 41, 42, 43])
def test_a_period_two_zigzag_stalls_whatever_the_count(n):
    """GD's zigzag at lr 0.32 on experiment=tiny (low 0.115, high 0.30) with no drift stalls at every count
    of points: each half of the tail holds an even number of points, both phases alike."""
    loss = np.where(np.arange(n) % 2, 0.30, 0.115)
    assert loss_tail(loss).stalled and loss_tail(loss).fall == pytest.approx(0.0, abs=1e-12)


def test_a_still_falling_series_above_the_threshold_is_unstable_and_says_the_horizon_ended_first():
    """eta above the threshold, the loss falling 2.48 -> 2.15 as at t_max = 4, its sharpness 1.5 far under
    2/eta = 6.25: unstable (no global minimum is linearly stable there: docs/guide.md), and the message
    says the loss still falls and the horizon ended before the instability showed, never "stays"."""
    entry = _flag(np.linspace(2.5, 2.148, 16), 1.5)
    assert entry["status"] == Status.UNSTABLE
    msg = entry["message"]
    assert (
        "stays" not in msg and "the loss still falls" in msg and "the horizon ended before it showed" in msg
    )
    assert (
        f"2 / (h m_1^(2-2/h)) = {THRESHOLD:.4g}" in msg and "its sharpness 1.5 is under 2/eta = 6.25" in msg
    )


def test_a_stalled_series_above_the_threshold_stays_up():
    entry = _flag(np.where(np.arange(40) % 2, 0.30, 0.115), 1.5)
    assert entry["status"] == Status.UNSTABLE and entry["message"].startswith("the loss stays up at 0.3 ")
    sharp = _flag(np.where(np.arange(40) % 2, 0.30, 0.115), 11.4)  # and past 2/eta: the sharpness says why
    assert "stays up" in sharp["message"] and "the sharpness 11.4 exceeds 2/eta = 6.25" in sharp["message"]


def test_a_falling_series_below_the_threshold_and_the_edge_is_ok():
    assert _flag(np.linspace(2.5, 2.148, 16), 1.5, lr=0.2)["status"] == Status.OK


def test_a_start_at_zero_is_warned_about_and_its_gradient_is_zero():
    """init.scale=0: the note names the key; the gradient there is 0 at depth 3 (the reason) and not at
    depth 1 (W x regresses on Y: -Syx), where no note is given."""
    plan = prepare(make_cfg([*TINY, "init.scale=0"]))
    [note] = [n for n in plan.notes if n.startswith("init.scale:")]
    assert "critical point" in note and "every layer" in note
    _, grad = plan.problem.loss_and_gradient(plan.weights0)
    assert len(grad) == 3 and all(not bool(g.any()) for g in grad)
    flat = prepare(make_cfg([*TINY, "init.scale=0", "model.dims=[4,2]"]))
    assert not any(n.startswith("init.scale:") for n in flat.notes)
    assert bool(flat.problem.loss_and_gradient(flat.weights0)[1][0].any())


def _summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _line(block: str, start: str) -> str:
    return next(x for x in block.splitlines() if x.startswith(start))


@pytest.mark.lab
@pytest.mark.xdist_group("tiny_run")
def test_the_order_line_says_why_the_distances_shown_are_not_fitted(tiny_run):
    s = _summary(tiny_run)
    names = [n for n in s["series"] if n != "flow"]
    dists = {n: s["series"][n]["max_dist_to_flow"] for n in names}
    none = {
        "order": None,
        "lrs_used": [],
        "pairwise": [],
        "message": "needs at least 3 learning rates with a distance, got 0",
    }
    stopped = json.loads(json.dumps(s))
    for n in names[1:]:
        stopped["series"][n]["status"] = "interrupted"
    del stopped["series"][names[0]]
    stopped |= {"not_run": [names[0]], "convergence_order_detail": none}
    line = _line(results_block(stopped), "convergence order")
    for n in names[1:]:
        assert f"{n} {dists[n]:.4g} (interrupted)" in line
    assert "the series did not finish" in line and f"{names[0]} not run" in line
    zero = json.loads(json.dumps(s)) | {"convergence_order_detail": none}
    for n in names:
        zero["series"][n]["max_dist_to_flow"] = 0.0
    line = _line(results_block(zero), "convergence order")
    assert all(f"{n} 0" in line for n in names) and "not positive" in line


@pytest.mark.lab
@pytest.mark.xdist_group("tiny_run")
def test_the_order_line_and_the_headings_say_what_they_are(tiny_run):
    s = _summary(tiny_run)
    plain = results_block(s)
    assert "one minibatch SGD run" not in plain and "member 0" not in plain
    heading = plain.splitlines().index(_line(plain, "plateaus of the flow"))
    assert "strength hits m_k / 2" in plain.splitlines()[heading + 1]
    minibatch = json.loads(json.dumps(s))
    minibatch["config"]["sgd"]["batch_size"] = 10
    assert "one sample of SGD's noise" in _line(results_block(minibatch), "convergence order")
    ensemble = json.loads(json.dumps(minibatch))
    ensemble["config"]["ensemble"]["size"] = 4
    block = results_block(ensemble)
    order = _line(block, "convergence order")
    assert "each member's max over t, the mean of the 4 members'" in order and "one sample" not in order
    assert _line(block, "plateau exits later").endswith(
        "member 0 of 4 against its flow (the members' spread: summary.json):"
    )
