"""detect_plateaus' scales against their closed forms (docs/theory.md sections 4, 5): a plateau of the
learnt set S lasts at least tau_S = 1 / (h m_k^(2-2/h)) (k the largest unlearnt mode) and stays within
0.1 Delta_S = 0.1 m_k^2 / 2 of L(P_S), with ||grad L|| below 0.1 sqrt(Delta_S / tau_S); at full rank,
where a larger unlearnt mode k swaps in for the smallest learnt mode a, Delta_S = (m_k^2 - m_a^2) / 2 and
tau_S = 1 / ((m_k - m_a) m_a^((h-2)/h)). The exit time is where the next mode's strength crosses m_k / 2.

Synthetic series, built so that each threshold is met or missed by 1 %: the detection flips exactly
where the closed form says. Added by the mutation audit (docs/mutations.md): a wrong power in tau_S, a
factor 2 in Delta_S and the crossing level of an exit that does not persist passed every test before
(the flows the other tests detect plateaus on sit far inside the bands).
"""

from __future__ import annotations

import numpy as np
import pytest

from dlnlab import saddles
from dlnlab.problem import RegressionProblem

H = 3


def _problem(modes) -> RegressionProblem:
    return RegressionProblem.teacher(list(modes), d_x=5, d_y=3, n_samples=20, whiten=True, seed=1)


def _level(m: np.ndarray, s: set[int]) -> float:
    """L(P_S) of noiseless whitened data (L_min = 0): half the sum of the unlearnt m_k^2."""
    return 0.5 * sum(float(m[k]) ** 2 for k in range(m.size) if k not in s)


def _flat(m: np.ndarray, s: set[int], duration: float, *, loss_gap: float = 0.0, grad: float = 1e-9, n=41):
    """A series resting on the plateau of S for ``duration``: (t, loss, mode_strength, grad_norm)."""
    t = np.linspace(0.0, duration, n)
    strength = np.array([float(m[k]) if k in s else 0.0 for k in range(m.size)])
    return t, np.full(n, _level(m, s) + loss_gap), np.tile(strength, (n, 1)), np.full(n, grad)


def _detect(pr, series, r_max: int):
    t, loss, ms, gn = series
    return saddles.detect_plateaus(t, loss, ms, gn, pr, r_max, depth=H)


@pytest.mark.parametrize("learnt", [set(), {0}])
def test_a_plateau_lasts_at_least_the_time_constant_of_the_next_mode(learnt):
    pr = _problem([3.0, 2.0, 1.0])
    m = pr.modes.numpy()
    k = min(set(range(m.size)) - learnt)
    tau = 1.0 / (H * m[k] ** (2.0 - 2.0 / H))
    assert _detect(pr, _flat(m, learnt, 0.99 * tau), r_max=3) == []
    (plateau,) = _detect(pr, _flat(m, learnt, 1.01 * tau), r_max=3)
    assert plateau.modes_learnt == sorted(learnt) and plateau.duration == pytest.approx(1.01 * tau, rel=1e-12)
    assert plateau.level == pytest.approx(_level(m, learnt), rel=1e-12)


def test_the_loss_and_gradient_bands_are_a_tenth_of_the_drop_and_of_its_rate():
    pr = _problem([3.0, 2.0, 1.0])
    m = pr.modes.numpy()
    delta, tau = 0.5 * m[0] ** 2, 1.0 / (H * m[0] ** (2.0 - 2.0 / H))
    g_scale = np.sqrt(delta / tau)
    cases = ((0.099, 1e-9, 1), (0.101, 1e-9, 0), (-0.101, 1e-9, 0), (0.0, 0.099, 1), (0.0, 0.101, 0))
    for gap, grad, found in cases:  # (loss - level) / Delta, ||grad L|| / scale, plateaus found
        series = _flat(m, set(), 3 * tau, loss_gap=gap * delta, grad=grad * g_scale)
        assert len(_detect(pr, series, r_max=3)) == found, (gap, grad)


def test_at_full_rank_a_larger_mode_swaps_in_on_the_swap_time_constant():
    pr = _problem([4.0, 3.0, 2.0])
    m = pr.modes.numpy()
    learnt = {0, 2}  # rank 2 = r_max, mode 1 (m = 3) unlearnt and larger than the learnt mode 2 (m = 2)
    delta = 0.5 * (m[1] ** 2 - m[2] ** 2)
    tau = 1.0 / ((m[1] - m[2]) * m[2] ** ((H - 2.0) / H))
    assert _detect(pr, _flat(m, learnt, 0.99 * tau), r_max=2) == []
    (plateau,) = _detect(pr, _flat(m, learnt, 1.01 * tau), r_max=2)
    assert plateau.modes_learnt == [0, 2]
    assert len(_detect(pr, _flat(m, learnt, 3 * tau, loss_gap=0.099 * delta), r_max=2)) == 1
    assert _detect(pr, _flat(m, learnt, 3 * tau, loss_gap=0.101 * delta), r_max=2) == []


@pytest.mark.parametrize("persists", [True, False])
def test_the_exit_is_where_the_next_strength_crosses_half_its_mode(persists):
    """Mode 0's strength ramps up linearly after the plateau (its crossing of m_0 / 2 is exact on a line,
    PCHIP included), then holds or falls back below m_0 / 2 (a transient mixture): either way the exit
    is mode 0 at that crossing."""
    pr = _problem([3.0, 2.0, 1.0])
    m = pr.modes.numpy()
    tau = 1.0 / (H * m[0] ** (2.0 - 2.0 / H))
    t, loss, ms, gn = _flat(m, set(), 2 * tau, n=41)
    dt, slope = t[1], 0.8 * m[0] / (20 * t[1])  # 0.8 m_0 after 20 steps
    ramp = slope * dt * np.arange(1, 21)
    tail = np.linspace(ramp[-1], 0.2 * m[0], 6)[1:] if not persists else np.full(5, ramp[-1])
    u = np.concatenate([ramp, tail])
    t = np.concatenate([t, t[-1] + dt * np.arange(1, u.size + 1)])
    ms = np.vstack([ms, np.outer(u, [1.0, 0.0, 0.0])])
    loss, gn = np.concatenate([loss, np.full(u.size, loss[-1])]), np.concatenate([gn, np.full(u.size, 1.0)])
    (plateau,) = saddles.detect_plateaus(t, loss, ms, gn, pr, 3, depth=H)
    assert plateau.exit_mode == 0
    assert plateau.t_exit == pytest.approx(2 * tau + 0.5 * m[0] / slope, rel=1e-12)
