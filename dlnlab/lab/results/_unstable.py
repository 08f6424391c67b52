"""A GD or SGD series' ``unstable`` status (docs/results.md): its loss stays above where the flow got
while the sharpness is past 2/eta, read from both phases of GD's period-2 zigzag, or eta is above the
run's stability threshold. The message says what the series showed: whether its loss stalled
(:func:`loss_tail`) and whether its sharpness passed 2/eta, or only that eta is above the threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlnlab._util import fmt
from dlnlab.status import Status

STALL_TOL = 0.01  # a relative fall over the tail below this: the loss stalled
STALL_MIN_POINTS = 4  # the tail holds at least this many points (two pairs) to tell


@dataclass(frozen=True)
class LossTail:
    """The loss over the last quarter of a series' points (at least ``STALL_MIN_POINTS``): its first and
    last values, ``fall`` its relative fall (negative: it rose) and whether it ``stalled`` (fall below
    ``STALL_TOL``; None: too few points to tell)."""

    first: float
    last: float
    fall: float | None
    stalled: bool | None

    def text(self) -> str:
        if self.stalled is None:
            return f"the loss ends at {self.last:.4g} (too few points to tell whether it stalled)"
        if self.stalled:
            return (
                f"the loss stays up at {self.last:.4g} (its change over the series' last quarter "
                f"{-100 * self.fall:+.2g} %, under a {100 * STALL_TOL:g} % fall)"
            )
        return f"the loss still falls ({self.first:.4g} -> {self.last:.4g} over the series' last quarter)"


def loss_tail(loss) -> LossTail:
    """How the loss ends. Stalled: its relative fall over the last quarter of the points (at least 4) is
    under ``STALL_TOL``, from the mean of the tail's first half to that of its last half, each half an
    even number of points: GD's period-2 zigzag (a low and a high phase, 0.11 and 0.30 at lr 0.32 on
    experiment=tiny) then weighs both phases alike at both ends, whatever the count's parity."""
    loss = np.asarray(loss, dtype=np.float64)
    tail = loss[-max(len(loss) // 4, STALL_MIN_POINTS) :]
    if len(tail) < STALL_MIN_POINTS or not np.isfinite(tail).all():
        return LossTail(float(tail[0]), float(tail[-1]), None, None)
    half = 2 * (len(tail) // 4)  # the largest even count up to half the tail
    start, end = float(tail[:half].mean()), float(tail[-half:].mean())
    fall = (start - end) / start if start > 0 else 0.0
    return LossTail(float(tail[0]), float(tail[-1]), fall, fall < STALL_TOL)


def flag_unstable(entry, arrays, lr, levels, threshold, flow_final, threshold_name="2 / S_bal") -> None:
    """Unstable: the loss ends up, above the floor and above where the flow got, while the sharpness
    exceeds 2/eta (2 (1 + momentum) / eta for heavy ball), or eta is above ``threshold``, the run's
    stability threshold (``Plan.stability_threshold``, named ``threshold_name``: 2 (1 + momentum) / S_bal),
    above which the balanced global minimum is not linearly stable (for whitened data, S_bal =
    h m_1^(2-2/h): none is). The threshold alone flags a series whose loss still falls too: GD cannot
    settle at that minimum, though the horizon ended before it showed (docs/guide.md); the message says so."""
    floor = float(levels[-1])
    scale = max(float(levels[0]) - floor, 1e-300)
    final = float(arrays["loss"][-1])
    above = final - floor > 1e-6 * scale and (flow_final is None or final - flow_final > 1e-3 * scale)
    if not above:
        return
    top = tail_sharpness(arrays)
    beta = entry.get("momentum") or 0.0
    bound = 2.0 * (1.0 + beta) / lr  # heavy ball: linearly stable while lr lambda < 2 (1 + beta)
    what = "2/eta" if not beta else "2 (1 + momentum) / eta"
    tail = loss_tail(arrays["loss"])
    where = f"floor {floor:.3g}, flow {fmt(flow_final)}"
    if top is not None and top > bound:
        why = (
            f"{tail.text()} ({where}) while the sharpness {top:.4g} exceeds {what} = {bound:.4g} over the "
            "last quarter of the run (the higher of its medians at even and at odd steps)"
        )
    elif threshold is not None and lr > threshold:
        above_txt = (  # the balanced minimum is the flattest for whitened data only (docs/theory.md section 6)
            f"eta = {lr:g} is above GD's stability threshold {threshold_name} = {threshold:.4g}, where the "
            "balanced global minimum (the flattest for whitened data) is not linearly stable"
        )
        if tail.stalled:
            why = f"{tail.text()} ({where}) and {above_txt}"
        else:
            seen = "" if top is None else f"; its sharpness {top:.4g} is under {what} = {bound:.4g}"
            why = (
                f"{above_txt}, so GD cannot settle there; the horizon ended before it showed: "
                f"{tail.text()} ({where}){seen}"
            )
    else:
        return
    entry["status"] = Status.UNSTABLE
    entry["message"] = why


def tail_sharpness(arrays) -> float | None:
    """The sharpness that decides ``unstable``: over the last quarter of the series' points, the median
    of its analysed points at even steps and that at odd steps, the higher of the two (None: none).

    Why by parity: at the edge of stability GD zigzags with period 2, S alternating between a phase
    below 2/eta and one above it (0.86 and 1.15 x 2/eta at lr 0.264 on the eos experiment). A median
    over the points themselves was the low phase, the high one, or their mean as the tail held more
    points of one parity, so the status flipped with the step count (159, 160, 161, 162 steps:
    unstable, ok, unstable, ok), and a series recorded an even number of steps apart saw one phase
    only. The higher phase decides, as in the edge outcome (``dlnlab.eos``). Where every analysed point
    has one parity, ``sharpness_next`` (S one plain GD step past the series' last point) stands for
    the other phase. A series without steps (the SME) has no zigzag: the median of its tail."""
    sharp = np.asarray(arrays.get("sharpness", np.zeros(0)), dtype=np.float64)
    start = len(sharp) * 3 // 4
    tail, ok = sharp[start:], np.isfinite(sharp[start:])
    if arrays.get("step") is None:
        return float(np.median(tail[ok])) if ok.any() else None
    steps = np.asarray(arrays["step"])
    parity = steps[start:] % 2
    phases = {p: tail[ok & (parity == p)] for p in (0, 1)}
    nxt = np.asarray(arrays.get("sharpness_next", np.zeros(0)), dtype=np.float64)
    if len(nxt) and np.isfinite(nxt[-1]) and not len(phases[(steps[-1] + 1) % 2]):
        phases[(steps[-1] + 1) % 2] = nxt[-1:]  # the step after the last: the phase the tail lacks
    medians = [float(np.median(v)) for v in phases.values() if len(v)]
    return max(medians) if medians else None
