"""An SGD/GD series' ``unstable`` status on a period-2 zigzag does not depend on the step count's parity.

The case is real GD: the eos tests' task (whitened, teacher (2, 1, 0.5)) on a 4-4-4-3 net from
gaussian(0.4), seed 2, at lr 0.264, just below GD's threshold 2 / S_bal = 0.2646, so that the sharpness,
not the threshold, decides. GD ends in a zigzag, S at about 0.86 and 1.15 x 2/eta, its loss stuck near 0.01
while the flow's goes to 0. The arrays below are what the lab records of it (every step when dt = eta,
every other step when dt = 2 eta); S at every step is dlnlab's dense Hessian, one eigvalsh per step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlnlab import init
from dlnlab.analysis import balanced_minimum_sharpness
from dlnlab.descent import GDStepper
from dlnlab.lab.results import finish_sgd_entry
from dlnlab.metrics import SeriesMetrics
from dlnlab.network import as_layout, pack, unpack
from dlnlab.status import Status
from tests._helpers import eos_problem

LR, DIMS, STEPS = 0.264, [4, 4, 4, 3], 163  # steps 0 .. 162


@pytest.fixture(scope="module")
def zigzag():
    problem = eos_problem(seed=2)
    stepper = GDStepper(problem, DIMS, pack(init.gaussian(DIMS, 0.4, seed=2)), LR)
    thetas, sharp, loss = [], [], []
    for _ in range(STEPS):
        thetas.append(stepper.theta.clone())
        sharp.append(float(torch.linalg.eigvalsh(problem.hessian(stepper.theta, DIMS))[-1]))
        loss.append(float(problem.loss_and_gradient(unpack(stepper.theta, DIMS))[0]))
        stepper.advance(1)
    return problem, torch.stack(thetas), np.array(sharp), np.array(loss)


def _status(problem, arrays) -> tuple[Status, str]:
    layout = as_layout(DIMS)
    levels = problem.plateau_levels(layout.r_max)
    threshold = 2.0 / balanced_minimum_sharpness(problem, layout)
    entry = {"lr": LR, "momentum": 0.0, "status": Status.OK, "message": "", "steps": int(arrays["step"][-1])}
    finish_sgd_entry(entry, arrays, LR, levels, threshold, 1e-14)  # the flow converges (loss 1e-14)
    return entry["status"], entry["message"]


def _recorded(zig, steps, next_sharpness=None) -> dict:
    _, _, sharp, loss = zig
    steps = np.asarray(steps)
    arrays = {"t": steps * LR, "step": steps, "loss": loss[steps], "sharpness": sharp[steps],
              "dist_to_flow": np.full(len(steps), np.nan)}  # fmt: skip
    if next_sharpness is not None:
        arrays["sharpness_next"] = np.where(steps == steps[-1], next_sharpness, np.nan)
    return arrays


def test_the_case_is_a_zigzag_with_its_loss_stuck_below_the_threshold(zigzag):
    """Pins the premise: lr below 2 / S_bal, the two phases on either side of 2/eta, the loss stuck."""
    problem, _, sharp, loss = zigzag
    assert LR < 2.0 / balanced_minimum_sharpness(problem, as_layout(DIMS))
    ratio = sharp[-40:] * LR / 2
    assert (ratio[0::2].max() < 0.9 < 1.1 < ratio[1::2].min()) or (
        ratio[1::2].max() < 0.9 < 1.1 < ratio[0::2].min()
    )
    assert loss[-40:].min() > 5e-3


@pytest.mark.parametrize("last", [159, 160, 161, 162])
def test_every_step_recorded_reads_unstable_whatever_the_step_count(zigzag, last):
    """dt = eta: the median over the last quarter was the low phase, the high one or their mean as the
    tail held more even or odd steps (ok at 160 and 162 steps, unstable at 159 and 161)."""
    status, message = _status(zigzag[0], _recorded(zigzag, range(last + 1)))
    assert status == Status.UNSTABLE, message
    assert "higher of its medians" in message


@pytest.mark.parametrize("last", [158, 160])
def test_every_other_step_reads_the_other_phase_one_step_past_the_end(zigzag, last):
    """dt = 2 eta: every recorded step is even, one phase only (the low one here: ok before); the sharpness
    one GD step past the end stands for the other phase. Without it the reading is one phase's."""
    _, _, sharp, _ = zigzag
    steps = range(0, last + 1, 2)
    assert _status(zigzag[0], _recorded(zigzag, steps, sharp[last + 1]))[0] == Status.UNSTABLE
    low = sharp[last] < sharp[last + 1]
    assert _status(zigzag[0], _recorded(zigzag, steps))[0] == (Status.OK if low else Status.UNSTABLE)


def test_metrics_sharpness_next_is_the_sharpness_at_the_next_step(zigzag):
    """SeriesMetrics(next_step=lr) at the series' last point: S at GD's next iterate, to the bit (the same
    stepper, the same eigvalsh), NaN at the other points."""
    problem, thetas, sharp, _ = zigzag
    metrics = SeriesMetrics(problem, DIMS, thetas[0], sgd=True, analysis_every=1, last_m=1, next_step=LR)
    out = metrics.compute([0, 1], torch.tensor([159 * LR, 160 * LR]), thetas[[159, 160]], [159, 160])
    assert np.isnan(out["sharpness_next"][0]) and out["sharpness_next"][1] == sharp[161]
    assert out["sharpness"][1] == sharp[160]
    assert "sharpness_next" not in SeriesMetrics(problem, DIMS, thetas[0], sgd=True).compute(
        [0], torch.zeros(1), thetas[:1], [0]
    )
