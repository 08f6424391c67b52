"""Step times without torch: the flow time one (S)GD step stands for and the lab's uniform output grid.
The lab's config checks count a run's steps and grid points with them before torch is imported;
``dlnlab.descent`` and ``dlnlab.flow.time_grid`` use the same functions, so the counts are the run's."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["time_per_step", "uniform_times"]


def time_per_step(lr: float, momentum: float = 0.0) -> float:
    """tau: the flow time one step stands for, lr / (1 - momentum)."""
    return lr / (1.0 - momentum)


def uniform_times(t_max: float, dt: float) -> np.ndarray:
    """0, dt, 2 dt, ... <= t_max (a point within 1e-9 dt of t_max counts), float64: k dt, each rounded once."""
    count = int(math.floor(t_max / dt + 1e-9)) + 1
    return np.arange(count, dtype=np.float64) * dt
