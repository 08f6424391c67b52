"""Where an SGD series' steps sit on the run's time grid t_m = m dt.

Step k of a series stands for the flow time k tau (tau = lr, or lr / (1 - momentum) for heavy ball).
Its recorded grid points, its exact times, and the set of times the flow must report (the grid and
every series' exact times) come from here, for the run and for its size estimate alike.
"""

from __future__ import annotations

import numpy as np

__all__ = ["series_grid", "exact_times", "flow_time_count"]


def series_grid(n_grid: int, dt: float, tau: float) -> tuple[list[int], list[int]]:
    """(grid indices m, steps k) of a series whose step stands for time ``tau`` on the grid t_m = m dt.

    k_m = round(t_m / tau). For tau <= dt every grid point has its own step (m = 0 .. n_grid - 1);
    for tau > dt (a step coarser than the grid) each step is recorded once, at the grid point nearest
    to its time k tau.
    """
    ks = np.unique(np.rint(np.arange(n_grid) * dt / tau).astype(np.int64))
    ms = np.minimum(n_grid - 1, np.rint(ks * tau / dt).astype(np.int64))
    return ms.tolist(), ks.tolist()


def exact_times(grid: np.ndarray, ms: list[int], ks: list[int], tau: float) -> np.ndarray:
    """The times k tau of a series' recorded steps; where one is its grid point's time to rounding
    (k tau and m dt computed apart, e.g. 30 x 0.01 and 3 x 0.1) the grid time itself, so that the flow
    is not asked for the same time twice (on the Figure 1 run, 482 near-duplicates of 3001 points)."""
    times = np.asarray(ks, dtype=np.float64) * tau
    at_grid = np.asarray(grid, dtype=np.float64)[ms]
    same = np.abs(times - at_grid) <= 1e-12 * np.maximum(1.0, np.abs(at_grid))
    return np.where(same, at_grid, times)


def flow_time_count(grid: np.ndarray, taus: list[float], dt: float) -> int:
    """How many distinct times the flow reports: the grid and each series' exact times."""
    grid = np.asarray(grid, dtype=np.float64)
    parts = [grid]
    for tau in taus:
        ms, ks = series_grid(len(grid), dt, tau)
        parts.append(exact_times(grid, ms, ks, tau))
    return int(np.unique(np.concatenate(parts)).size)
