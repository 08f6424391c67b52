"""A GD or SGD series' ``unstable`` status (docs/results.md): its loss stays up while the sharpness is
past 2/eta, read from both phases of GD's period-2 zigzag, or eta is above the run's stability threshold."""

from __future__ import annotations

import numpy as np

from dlnlab._util import fmt
from dlnlab.status import Status


def flag_unstable(entry, arrays, lr, levels, threshold, flow_final) -> None:
    """Unstable: the loss stays up, above the floor and above where the flow got, while the
    sharpness exceeds 2/eta (2 (1 + momentum) / eta for heavy ball), or eta is above ``threshold``, the
    run's stability threshold (``Plan.stability_threshold``: 2 (1 + momentum) / S_bal), above which the
    balanced global minimum is not linearly stable (for whitened data, S_bal = h m_1^(2-2/h): none is)."""
    floor = float(levels[-1])
    scale = max(float(levels[0]) - floor, 1e-300)
    final = float(arrays["loss"][-1])
    stuck = final - floor > 1e-6 * scale and (flow_final is None or final - flow_final > 1e-3 * scale)
    if not stuck:
        return
    top = tail_sharpness(arrays)
    beta = entry.get("momentum") or 0.0
    bound = 2.0 * (1.0 + beta) / lr  # heavy ball: linearly stable while lr lambda < 2 (1 + beta)
    if top is not None and top > bound:
        what = "2/eta" if not beta else "2 (1 + momentum) / eta"
        why = (
            f"the sharpness {top:.4g} exceeds {what} = {bound:.4g} over the last quarter of the run "
            "(the higher of its medians at even and at odd steps)"
        )
    elif threshold is not None and lr > threshold:
        why = (  # the balanced minimum is the flattest for whitened data only (docs/theory.md section 6)
            f"eta = {lr:g} is above the GD stability threshold {threshold:.4g}: the balanced global minimum, "
            "the flattest for whitened data, is not stable"
        )
    else:
        return
    entry["status"] = Status.UNSTABLE
    entry["message"] = (
        f"the loss stays at {final:.4g} (floor {floor:.3g}, flow {fmt(flow_final)}) while {why}"
    )


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
