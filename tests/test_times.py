"""Where a series' steps sit on the grid: exact times, and how many times the flow reports."""

from __future__ import annotations

import numpy as np

from dlnlab.flow import time_grid
from dlnlab.lab.config import exact_times, flow_time_count, series_grid


def test_a_step_time_on_a_grid_point_is_the_grid_time_and_the_others_stay_exact():
    grid = time_grid(2.0, dt=0.1).numpy()
    for tau in (0.01, 0.0025):  # every grid point is a step time: the times are the grid's, bit for bit
        ms, ks = series_grid(len(grid), 0.1, tau)
        assert exact_times(grid, ms, ks, tau).tolist() == grid[ms].tolist()
        assert not np.array_equal(np.asarray(ks) * tau, grid[ms])  # computed apart they differ
    ms, ks = series_grid(len(grid), 0.1, 0.03)  # k = round(m 10 / 3): on the grid every third point
    times = exact_times(grid, ms, ks, 0.03)
    assert np.allclose(times, np.asarray(ks) * 0.03, rtol=1e-15, atol=0)
    on_grid = np.abs(times - grid[ms]) < 1e-9
    assert on_grid.tolist() == [m % 3 == 0 for m in ms]
    assert (times[on_grid] == grid[ms][on_grid]).all()


def test_the_flow_reports_each_time_once():
    grid = time_grid(300.0, dt=0.1).numpy()
    assert flow_time_count(grid, [0.01, 0.005, 0.0025], 0.1) == 3001  # the default run
    grid = time_grid(2.0, dt=0.1).numpy()
    # tau = 0.03: 21 grid points, 21 step times of which 7 are grid times
    assert flow_time_count(grid, [0.03], 0.1) == 21 + 14
