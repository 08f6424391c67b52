"""GD at the edge of stability, measured: pure functions on arrays recorded at every GD step.

Conventions: a GD series recorded at every step k (times t_k = k eta, thetas (T, p)), its sharpness
S_k = lambda_max(H(theta_k)) and the top eigenvector u_k (``dlnlab.eos.sharpness_along``).

* Window: GD's time average over ``window`` steps (even, default 8) centred on step k, with
  trapezoid weights [1/2, 1, ..., 1, 1/2] / window on the window + 1 steps k - window/2 .. k + window/2.
  These weights cancel a period-2 oscillation (-1)^k exactly and keep a linear drift, so the
  average at step k compares with a flow at t_k itself; steps within window/2 of either end get NaN.
* Edge: S reaches 2/eta; "hovering" means |S - 2/eta| <= band x 2/eta (band 0.1). The outcome reads
  the last two points, both phases of a period-2 oscillation: the higher one decides where GD ends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from dlnlab.analysis import balanced_minimum_sharpness
from dlnlab.eos._spectrum import top_eigenpairs
from dlnlab.errors import ArgumentError
from dlnlab.flow import Convergence, Solver, integrate
from dlnlab.network import Layout, as_layout
from dlnlab.problem import RegressionProblem

__all__ = [
    "WINDOW",
    "HOVER_BAND",
    "Outcome",
    "EdgeDiagnostics",
    "edge_diagnostics",
    "window_average",
    "oscillation_amplitude",
    "oscillation_variance",
    "DistanceComparison",
    "distance_comparison",
    "parting_time",
    "SharpnessComparison",
    "sharpness_comparison",
    "GFSSharpness",
    "gfs_sharpness",
]

WINDOW = 8
HOVER_BAND = 0.1


class Outcome(str, Enum):
    CONVERGED = "converged_below_edge"  # L - L_floor <= loss_tol with S < 2/eta at the end
    AT_EDGE = "at_edge"  # at t_max, the higher of the last two S within band of 2/eta, not converged
    ABOVE_EDGE = "above_edge"  # ... above the band: GD swings past the edge (a period-2 cycle), not converged
    BELOW_EDGE = "below_edge"  # ... below the band, not converged (e.g. on a plateau)
    DIVERGED = "diverged"  # the run diverged or its loss is not finite

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class EdgeDiagnostics:
    """One GD series against its edge 2/eta. t_edge: the first recorded time with S >= 2/eta (None:
    never); hover_share: the share of the points from t_edge on with |S - 2/eta| <= band 2/eta;
    median_ratio: the median of S / (2/eta) from t_edge on, each point averaged with the next (the
    period-2 oscillation's two phases together; the points must be an odd number of steps apart);
    final_sharpness and previous_sharpness: S at the last point and the one before (None: one point)."""

    lr: float
    threshold: float
    band: float
    t_edge: float | None
    hover_share: float | None
    median_ratio: float | None
    final_sharpness: float
    final_loss: float
    outcome: Outcome
    previous_sharpness: float | None = None


def edge_diagnostics(
    t: Tensor,
    sharpness: Tensor,
    loss: Tensor,
    lr: float,
    *,
    loss_floor: float = 0.0,
    diverged: bool = False,
    band: float = HOVER_BAND,
    loss_tol: float = 1e-10,
) -> EdgeDiagnostics:
    """The edge-of-stability summary of a GD series (t, sharpness, loss: (T,), T >= 1)."""
    if not (t.shape == sharpness.shape == loss.shape) or t.ndim != 1 or t.numel() < 1:
        raise ArgumentError("t", f"t, sharpness and loss must be 1-D of one length >= 1, got {tuple(t.shape)}, "
                            f"{tuple(sharpness.shape)}, {tuple(loss.shape)}")  # fmt: skip
    thr = 2.0 / lr
    reached = torch.nonzero(sharpness >= thr)
    t_edge = share = median = None
    if reached.numel():
        k = int(reached[0])
        after = sharpness[k:]
        t_edge = float(t[k])
        share = float(((after - thr).abs() <= band * thr).double().mean())
        # on the edge S alternates between a high and a low phase step to step (period 2): the median of
        # the points themselves is one phase's or the other's as their count is odd or even, so each
        # point is averaged with the next first (consecutive points are an odd number of steps apart)
        pairs = (after[:-1] + after[1:]) / 2 if after.numel() > 1 else after
        median = float(torch.quantile(pairs, 0.5)) / thr
    s_end, l_end = float(sharpness[-1]), float(loss[-1])
    s_prev = float(sharpness[-2]) if sharpness.numel() > 1 else None
    # the higher of the last two points: on the edge S alternates step to step, and the last point alone
    # is one phase or the other by the parity of the step count (a cycle at 0.77 / 1.26 x 2/eta read
    # below_edge or at_edge by it); a phase more than band above 2/eta is GD swinging past the edge
    s_top = s_end if s_prev is None or not math.isfinite(s_prev) else max(s_end, s_prev)
    if diverged or not (math.isfinite(l_end) and math.isfinite(s_end)):
        outcome = Outcome.DIVERGED
    elif l_end - loss_floor <= loss_tol and s_end < thr:
        outcome = Outcome.CONVERGED
    elif s_top > (1 + band) * thr:
        outcome = Outcome.ABOVE_EDGE
    elif s_top >= (1 - band) * thr:
        outcome = Outcome.AT_EDGE
    else:
        outcome = Outcome.BELOW_EDGE
    return EdgeDiagnostics(lr, thr, band, t_edge, share, median, s_end, l_end, outcome, s_prev)


def _check_window(window: int, n: int) -> int:
    if isinstance(window, bool) or not isinstance(window, int) or window < 2 or window % 2:
        raise ArgumentError("window", f"must be an even integer >= 2 (steps), got {window!r}")
    return window


def window_average(values: Tensor, window: int = WINDOW) -> Tensor:
    """The centred trapezoid average over ``window`` steps along the first axis of values (T, ...);
    NaN within window/2 steps of either end (see the module docstring)."""
    half = _check_window(window, values.shape[0]) // 2
    out = torch.full_like(values, math.nan)
    n = values.shape[0]
    if n <= 2 * half:
        return out
    weights = values.new_ones(2 * half + 1)
    weights[0] = weights[-1] = 0.5
    # (n - window, ..., window + 1) windows as a view; a NaN spoils only the windows that hold it
    out[half : n - half] = values.unfold(0, 2 * half + 1, 1) @ (weights / window)
    return out


def oscillation_amplitude(thetas: Tensor, top_vectors: Tensor) -> Tensor:
    """a_k = |<theta_{k+1} - 2 theta_k + theta_{k-1}, u_k>| / 4 (T,): the amplitude of a period-2
    oscillation theta_k = c + (-1)^k a u + (linear drift) along the top eigenvector; NaN at both ends."""
    out = thetas.new_full((thetas.shape[0],), math.nan)
    if thetas.shape[0] >= 3:
        second = thetas[2:] - 2 * thetas[1:-1] + thetas[:-2]
        out[1:-1] = (second * top_vectors[1:-1]).sum(-1).abs() / 4
    return out


def oscillation_variance(thetas: Tensor, top_vectors: Tensor, window: int = WINDOW) -> Tensor:
    """GD's measured variance along the top eigenvector (T,): the window average of <theta_k - avg_k,
    u_k>^2, avg the window average of theta (to compare with the central flow's u_1^T Sigma u_1)."""
    dev = ((thetas - window_average(thetas, window)) * top_vectors).sum(-1)
    return window_average(dev * dev, window)


@dataclass(frozen=True)
class DistanceComparison:
    """||avg - central|| and ||avg - flow|| at the times t (T,), and their ratio (NaN where undefined)."""

    t: Tensor
    to_central: Tensor
    to_flow: Tensor

    @property
    def ratio(self) -> Tensor:
        return self.to_central / self.to_flow


def distance_comparison(t: Tensor, averaged: Tensor, central: Tensor, flow: Tensor) -> DistanceComparison:
    """Distances of GD's averaged iterates (T, p) to the central flow and to the gradient flow at the
    same times (both (T, p))."""
    if not (averaged.shape == central.shape == flow.shape) or averaged.shape[0] != t.shape[0]:
        raise ArgumentError("averaged", f"averaged {tuple(averaged.shape)}, central {tuple(central.shape)}, "
                            f"flow {tuple(flow.shape)} and t {tuple(t.shape)} must agree")  # fmt: skip
    return DistanceComparison(t, (averaged - central).norm(dim=-1), (averaged - flow).norm(dim=-1))


def parting_time(t: Tensor, a: Tensor, b: Tensor, factor: float = 2.0) -> float | None:
    """The first time from which a / b stays outside [1/factor, factor] to the end (a, b > 0, (T,));
    NaN points are skipped. None if the last point is within the band."""
    ok = torch.isfinite(a) & torch.isfinite(b)
    t, ratio = t[ok], (a[ok] / b[ok]).log().abs()
    outside = ratio > math.log(factor)
    if not outside.numel() or not bool(outside[-1]):
        return None
    inside = torch.nonzero(~outside)
    return float(t[int(inside[-1]) + 1]) if inside.numel() else float(t[0])


@dataclass(frozen=True)
class SharpnessComparison:
    """GD's final sharpness against the flow limit's, the balanced minimum's (h m_1^(2-2/h) for
    whitened data, the flattest global minimum; else computed there) and GD's edge 2/eta."""

    gd_final: float
    flow_limit: float
    balanced: float
    threshold: float


def sharpness_comparison(
    problem: RegressionProblem, dims: Layout | Sequence[int], gd_theta: Tensor, flow_theta: Tensor, lr: float
) -> SharpnessComparison:
    layout = as_layout(dims)
    return SharpnessComparison(
        gd_final=top_eigenpairs(problem, gd_theta, layout, 1).sharpness,
        flow_limit=top_eigenpairs(problem, flow_theta, layout, 1).sharpness,
        balanced=balanced_minimum_sharpness(problem, layout),
        threshold=2.0 / lr,
    )


@dataclass(frozen=True)
class GFSSharpness:
    """The sharpness of the gradient flow's limit started from GD's iterate at the times t (K,)
    ("GFS sharpness", Kreisler et al. 2023); converged: the flow met its convergence event (else the
    sharpness is where it stood at t_max, not at its limit)."""

    t: Tensor
    sharpness: Tensor
    converged: Tensor

    def non_increasing(self, rtol: float = 1e-6) -> bool:
        """Whether the limits' sharpness never rises, over the points whose flow converged."""
        s = self.sharpness[self.converged]
        return bool((s[1:] <= s[:-1] * (1 + rtol)).all())


def gfs_sharpness(
    problem: RegressionProblem,
    dims: Layout | Sequence[int],
    t: Tensor,
    thetas: Tensor,
    *,
    t_max: float = 1000.0,
    grad_tol: float = 1e-9,
    solver: Solver = Solver(),  # noqa: B008 (frozen)
) -> GFSSharpness:
    """For each row of thetas (K, p) (GD's iterates at the times t (K,)), the top Hessian eigenvalue
    where the gradient flow from it stops: at its convergence event (||grad L|| <= grad_tol and L
    within 1e-12 of the attainable minimum) or at t_max."""
    layout = as_layout(dims)
    grid = torch.tensor([0.0, float(t_max)], dtype=torch.float64)
    event = Convergence(grad_tol=grad_tol, loss_tol=1e-12)
    values, done = [], []
    for theta in thetas:
        traj = integrate(problem, layout, theta, grid, solver, events=[event])
        end = traj.theta_event if traj.theta_event is not None else traj.theta[-1]
        values.append(top_eigenpairs(problem, end, layout, 1).sharpness)
        done.append(traj.event is not None)
    return GFSSharpness(t.clone(), torch.tensor(values, dtype=torch.float64), torch.tensor(done))
