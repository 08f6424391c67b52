"""The run's times, apart from the series' context so that the driver can compute them before
Lightning is imported (the flow's solve starts ahead of that import: :mod:`dlnlab.lab.runner._ahead`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlnlab.descent import time_per_step
from dlnlab.lab.config import Plan, exact_times, series_grid

__all__ = ["LrTimes", "SeriesTimes", "at_series_grid"]


@dataclass(frozen=True)
class LrTimes:
    """A learning rate's times: its (S)GD series reaches grid point ``ms[i]`` at step ``steps[i]``,
    exactly at time ``exact[i]`` = steps[i] x tau (the time per step)."""

    ms: torch.Tensor
    exact: torch.Tensor
    steps: list[int]


@dataclass(frozen=True)
class SeriesTimes:
    """The run's times: the grid, each learning rate's exact times, and their union (what the flow must
    report: the solver's own dense output at every exact time, never an interpolation of logged points)."""

    grid: torch.Tensor
    by_lr: dict[float, LrTimes]
    all_t: torch.Tensor

    @classmethod
    def of(cls, plan: Plan, grid: torch.Tensor | None = None) -> SeriesTimes:
        """The times of ``plan``'s run (``grid``: its grid, t_m = m log.dt up to flow.t_max, by default)."""
        if grid is None:
            from dlnlab.flow import time_grid

            grid = time_grid(plan.cfg.flow.t_max, dt=plan.cfg.log.dt)
        by_lr = {}
        for lr in plan.lrs:
            tau = time_per_step(lr, plan.cfg.sgd.momentum)
            ms, steps = series_grid(len(grid), plan.cfg.log.dt, tau)
            by_lr[lr] = LrTimes(
                torch.tensor(ms), torch.from_numpy(exact_times(grid.numpy(), ms, steps, tau)), steps
            )
        return cls(grid, by_lr, torch.unique(torch.cat([grid, *(e.exact for e in by_lr.values())])))

    def solve_at(self, lr: float) -> torch.Tensor:
        """The grid and the learning rate's exact times, sorted."""
        return torch.unique(torch.cat([self.grid, self.by_lr[lr].exact]))


def at_series_grid(states: torch.Tensor, all_t: torch.Tensor, times: LrTimes, n_grid: int) -> torch.Tensor:
    """(n_grid, ...): a solve's states (rows at ``all_t``) at a learning rate's exact times, on the grid
    points they stand for, NaN elsewhere."""
    out = torch.full((n_grid, *states.shape[1:]), float("nan"), dtype=torch.float64)
    out[times.ms] = states[torch.searchsorted(all_t, times.exact)]
    return out
