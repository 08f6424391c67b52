"""GD at one learning rate against its central flow and the gradient flow: everything the edge-of-
stability comparison needs, from one call (the lab's series and the measurement script use it).

GD is recorded at every step (t_k = k eta), both flows are solved at those times with the same
explicit solver, and every quantity compares at the same t_k: GD's window averages (centred, so
they sit at t_k themselves), the central flow's prediction L + 1/2 <Sigma, H>, the distances."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dlnlab.analysis import balanced_minimum_sharpness
from dlnlab.descent import gd
from dlnlab.eos._central import CENTRAL_SOLVER, LOOKAHEAD, CentralFlowResult, integrate_central
from dlnlab.eos._diagnostics import (
    WINDOW,
    DistanceComparison,
    EdgeDiagnostics,
    GFSSharpness,
    SharpnessComparison,
    distance_comparison,
    edge_diagnostics,
    gfs_sharpness,
    oscillation_amplitude,
    oscillation_variance,
    parting_time,
    window_average,
)
from dlnlab.eos._spectrum import DEFAULT_K, SpectrumSeries, sharpness_along
from dlnlab.flow import integrate
from dlnlab.network import Layout, as_layout, unpack
from dlnlab.problem import RegressionProblem
from dlnlab.status import Status
from dlnlab.trajectory import Trajectory

__all__ = ["EdgeReport", "edge_report"]

GFS_POINTS = 8  # GD iterates whose gradient-flow limit is solved (evenly spaced in steps)
PARTING_FACTOR = 2.0  # predicted and averaged loss "part" when their ratio leaves [1/2, 2] for good


@dataclass(frozen=True)
class EdgeReport:
    """GD at ``lr`` against the central flow and the gradient flow, at GD's step times t (T,).

    gd_loss, gd_avg_loss: GD's loss and its window average; flow_loss: the gradient flow's;
    gd_spectrum: GD's top-k eigenpairs at every step; amplitude: the period-2 amplitude along the top
    eigenvector; measured_variance: GD's variance along it (against central.top_variance);
    distances: GD's window-averaged theta to both flows; loss_parting: the time from which the
    central flow's predicted loss and GD's averaged loss differ by more than a factor 2 to the end.
    restarted: both flows started afresh from GD's window-averaged theta ``restart_after`` after GD
    first reached the edge, against GD's average from there on (None: GD never reached the edge, or
    too late). Without the restart the distances also carry GD's O(eta) drift from the gradient flow
    before the edge, which neither flow models."""

    lr: float
    window: int
    t: Tensor
    gd: Trajectory
    gd_loss: Tensor
    gd_avg_loss: Tensor
    gd_spectrum: SpectrumSeries
    amplitude: Tensor
    measured_variance: Tensor
    central: CentralFlowResult
    flow: Trajectory
    flow_loss: Tensor
    distances: DistanceComparison
    diagnostics: EdgeDiagnostics
    sharpness: SharpnessComparison
    gfs: GFSSharpness
    loss_parting: float | None
    restarted: DistanceComparison | None

    @property
    def threshold(self) -> float:
        return 2.0 / self.lr


def _losses(problem: RegressionProblem, layout: Layout, thetas: Tensor) -> Tensor:
    return problem.loss(unpack(thetas, layout))


def edge_report(
    problem: RegressionProblem,
    dims: Layout | Sequence[int],
    theta0: Tensor,
    lr: float,
    steps: int,
    *,
    window: int = WINDOW,
    k: int = DEFAULT_K,
    lookahead: float = LOOKAHEAD,
    gfs_points: int = GFS_POINTS,
    blowup: float = 1e6,
    restart_after: float | None = 1.0,
) -> EdgeReport:
    """GD for ``steps`` steps at ``lr`` from theta0 (p,), its central flow and the gradient flow
    (see :class:`EdgeReport`; restart_after None: no restarted flows)."""
    layout = as_layout(dims)
    run = gd(problem, layout, theta0, lr, steps, record_steps=range(steps + 1), blowup=blowup)
    t = run.t
    spectrum = sharpness_along(problem, layout, run.theta, k)
    gd_loss = _losses(problem, layout, run.theta)
    central = integrate_central(
        problem, layout, theta0, t, lr, solver=CENTRAL_SOLVER, k=k, lookahead=lookahead
    )
    flow = integrate(problem, layout, theta0, t, CENTRAL_SOLVER)
    avg_theta = window_average(run.theta, window)
    gd_avg_loss = window_average(gd_loss, window)
    picks = torch.linspace(0, len(t) - 1, min(gfs_points, len(t))).round().long().unique()
    gfs = gfs_sharpness(problem, layout, t[picks], run.theta[picks])
    diverged = run.status == Status.DIVERGED or not math.isfinite(float(gd_loss[-1]))
    diagnostics = edge_diagnostics(
        t, spectrum.sharpness, gd_loss, lr, diverged=diverged,
        loss_floor=float(problem.plateau_levels(layout.r_max)[-1]),
    )  # fmt: skip
    restarted = None
    if restart_after is not None and diagnostics.t_edge is not None:
        restarted = _restarted(
            problem, layout, t, avg_theta, lr, diagnostics.t_edge + restart_after, k, lookahead
        )
    return EdgeReport(
        lr=float(lr), window=window, t=t, gd=run, gd_loss=gd_loss, gd_avg_loss=gd_avg_loss, gd_spectrum=spectrum,
        amplitude=oscillation_amplitude(run.theta, spectrum.top_vectors),
        measured_variance=oscillation_variance(run.theta, spectrum.top_vectors, window),
        central=central, flow=flow, flow_loss=_losses(problem, layout, flow.theta),
        distances=distance_comparison(t, avg_theta, central.theta, flow.theta),
        diagnostics=diagnostics,
        sharpness=SharpnessComparison(
            gd_final=float(spectrum.sharpness[-1]), flow_limit=float(gfs.sharpness[0]),
            balanced=balanced_minimum_sharpness(problem, layout), threshold=2.0 / lr,
        ),
        gfs=gfs, loss_parting=parting_time(t, central.predicted_loss, gd_avg_loss, PARTING_FACTOR),
        restarted=restarted,
    )  # fmt: skip


def _restarted(problem, layout, t, avg_theta, lr, t_start, k, lookahead) -> DistanceComparison | None:
    """Both flows from GD's average at the first step at or after t_start with a defined average."""
    ok = (t >= t_start) & torch.isfinite(avg_theta).all(dim=-1)
    if int(ok.sum()) < 2:
        return None
    first = int(torch.nonzero(ok)[0])
    last = int(torch.nonzero(ok)[-1])
    times, avg = t[first : last + 1], avg_theta[first : last + 1]
    central = integrate_central(
        problem, layout, avg[0], times, lr, solver=CENTRAL_SOLVER, k=k, lookahead=lookahead
    )
    flow = integrate(problem, layout, avg[0], times, CENTRAL_SOLVER)
    return distance_comparison(times, avg, central.theta, flow.theta)
