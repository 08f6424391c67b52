"""The central flow of GD at step eta (Cohen, Damian et al., ICLR 2025) on deep linear networks.

    dtheta/dt = -(grad L + 1/2 grad_theta <Sigma, H(theta)>),   Sigma = U X U^T,

on the lab's time axis t = k eta. U holds the critical eigenvectors of H (eigenvalues >= ``fraction`` x
2/eta), X >= 0 solves the complementarity problem of ``_sigma`` (docs/theory.md section 11): no
critical eigenvalue may rise past 2/eta, and X acts only on those that would. Where no eigenvalue
would cross, X = 0 and the field is -grad L exactly, the gradient flow.

Entering and leaving the edge need no event: the complementarity looks ``lookahead`` x eta ahead
(2/eta - lambda - delta d lambda/dt >= 0, delta = lookahead eta), so X switches on continuously when
an eigenvalue rising at rate r comes within delta r of 2/eta, and off continuously when the flow
turns it down by itself. On the edge the same term pulls an eigenvalue that drifted above 2/eta
(integration error) back at rate 1/delta (a Baumgarte stabilisation: the continuous form of a
projection back onto S = 2/eta), so S <= 2/eta holds to the integrator's tolerance. As delta -> 0
this is the central flow with the eigenvalue pinned at exactly 2/eta; the price of delta > 0 is a
braking over a time of order delta before the edge, and a stiffness 1/delta that caps an explicit
solver's step at about 3 delta.

Cost of one evaluation: the top eigenpairs (dense eigh for p <= 1500; above, LOBPCG started from the
previous evaluation's block, so every Runge-Kutta stage starts from its predecessor's eigenvectors), one
gradient, and one third-derivative pass of m (m + 1) / 2 directions (about 6.5 gradients for m = 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from dlnlab.analysis import DENSE_HESSIAN_MAX
from dlnlab.eos._curvature import pair_curvature_gradients
from dlnlab.eos._sigma import SigmaMethod, solve_sigma
from dlnlab.eos._spectrum import DEFAULT_K, DEFAULT_TOL, SpectrumTracker
from dlnlab.errors import ArgumentError
from dlnlab.flow import Solver, integrate
from dlnlab.flow.field import check_problem_dims
from dlnlab.flow.solver import positive_float
from dlnlab.network import Layout, as_layout, unpack
from dlnlab.problem import RegressionProblem
from dlnlab.trajectory import Trajectory

__all__ = [
    "CRITICAL_FRACTION",
    "LOOKAHEAD",
    "CENTRAL_SOLVER",
    "CentralPoint",
    "CentralFlow",
    "CentralFlowResult",
    "describe_central",
    "integrate_central",
]

CRITICAL_FRACTION = 0.95  # eigenvalues >= 0.95 x 2/eta enter the complementarity problem
LOOKAHEAD = 0.1  # delta = 0.1 eta
CENTRAL_SOLVER = Solver("rk45", rtol=1e-9, atol=1e-12)


@dataclass(frozen=True)
class CentralPoint:
    """The central flow at one theta. eigenvalues (m,) and vectors (p, m): the critical eigenpairs,
    descending; X (m, m) >= 0 with Sigma = U X U^T; velocity (p,) dtheta/dt; gradient (p,) grad L;
    pair_gradients K (m, m, p), K_ab = grad_theta (u_a^T H u_b) (K_aa = grad lambda_a); shift: 0 where
    X was solved at theta itself, else the length of the step onto the edge where
    :meth:`CentralFlow.recorded_point` solved it (everything else is at theta)."""

    loss: float
    sharpness: float
    eigenvalues: Tensor
    vectors: Tensor
    X: Tensor
    method: SigmaMethod
    residual: float
    velocity: Tensor
    gradient: Tensor
    pair_gradients: Tensor
    shift: float = 0.0

    @property
    def n_critical(self) -> int:
        return int(self.eigenvalues.numel())

    @property
    def sigma_trace(self) -> float:
        """tr Sigma = tr X (sigma^2 for one critical eigenvalue)."""
        return float(torch.trace(self.X)) if self.n_critical else 0.0

    @property
    def top_variance(self) -> float:
        """u_1^T Sigma u_1: the predicted variance of GD's oscillation along the top eigenvector."""
        return float(self.X[0, 0]) if self.n_critical else 0.0

    @property
    def curvature_term(self) -> float:
        """1/2 <Sigma, H> = 1/2 sum_a lambda_a X_aa (= tr Sigma / eta on the edge)."""
        return 0.5 * float(self.eigenvalues @ torch.diagonal(self.X)) if self.n_critical else 0.0

    @property
    def predicted_loss(self) -> float:
        """GD's predicted time-averaged loss L + 1/2 <Sigma, H> (docs/theory.md section 11)."""
        return self.loss + self.curvature_term

    @property
    def at_edge(self) -> bool:
        return self.sigma_trace > 0.0


class CentralFlow:
    """The central flow's vector field at learning rate ``lr`` (an object like
    :class:`~dlnlab.flow.GradientFlow`, for :func:`dlnlab.integrate`'s ``field``).

    k: eigenpairs tracked (more are taken when the k-th is still critical); fraction: eigenvalues >=
    fraction x 2/lr are critical; lookahead: delta / lr (0: no lookahead, only for :meth:`point`).
    """

    def __init__(
        self,
        problem: RegressionProblem,
        dims: Layout | Sequence[int],
        lr: float,
        *,
        k: int = DEFAULT_K,
        fraction: float = CRITICAL_FRACTION,
        lookahead: float = LOOKAHEAD,
        dense_max: int = DENSE_HESSIAN_MAX,
        eig_tol: float = DEFAULT_TOL,
    ) -> None:
        self.problem, self.layout = problem, as_layout(dims)
        check_problem_dims(problem, self.layout)
        self.lr = positive_float("lr", lr)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ArgumentError("fraction", f"must be in (0, 1], got {fraction!r}")
        if (
            isinstance(lookahead, bool)
            or not isinstance(lookahead, (int, float))
            or not (math.isfinite(lookahead) and lookahead >= 0)
        ):
            raise ArgumentError("lookahead", f"must be finite and >= 0 (a multiple of lr), got {lookahead!r}")
        self.threshold = 2.0 / self.lr
        self.fraction, self.lookahead = float(fraction), float(lookahead)
        self.inv_delta = 0.0 if self.lookahead == 0 else 1.0 / (self.lookahead * self.lr)
        self.tracker = SpectrumTracker(problem, self.layout, k, dense_max=dense_max, tol=eig_tol)

    def point(self, theta: Tensor) -> CentralPoint:
        """Sigma, the velocity and the quantities derived from them at theta (p,)."""
        eig = self.tracker(theta, at_least=self.fraction * self.threshold)
        crit = eig.values >= self.fraction * self.threshold
        lam, vecs = eig.values[crit], eig.vectors[:, crit]
        loss, grads = self.problem.loss_and_gradient(unpack(theta, self.layout))
        g = torch.cat([w.reshape(-1) for w in grads])
        if lam.numel() == 0:
            pairs = g.new_zeros(0, 0, g.numel())
            sol = solve_sigma(pairs, g, lam)
            velocity = -g
        else:
            pairs = pair_curvature_gradients(self.problem, theta, self.layout, vecs)
            sol = solve_sigma(pairs, g, self.threshold - lam, self.inv_delta)
            velocity = -(g + 0.5 * torch.einsum("abp,ab->p", pairs, sol.X))
        return CentralPoint(
            float(loss), eig.sharpness, lam, vecs, sol.X, sol.method, sol.residual, velocity, g, pairs
        )

    def recorded_point(self, theta: Tensor, rtol: float, atol: float) -> CentralPoint:
        """:meth:`point` at theta, a state of a solve at tolerances rtol / atol, with X (Sigma, and so
        the predicted loss and variance) solved on the edge wherever theta is on it to that accuracy.

        On the edge the lookahead term makes X depend on 2/eta - lambda_a through 1/delta: a state
        error e moves X_aa by about 2 <grad lambda_a, e> / (delta ||grad lambda_a||^2), which near a
        minimum, where the true X falls like ||grad L||, outgrows X and switches it on and off from one
        output point to the next. A critical eigenvalue whose gap |2/eta - lambda_a| is within
        sum_i |d lambda_a / d theta_i| (atol + rtol |theta_i|), the most a state error within one
        step's tolerance moves it, is taken as on the edge: X is solved one Newton step away, at the
        nearest theta with those eigenvalues exactly at 2/eta (to second order in the gap). The
        sharpness, the loss, the velocity and the vectors stay theta's."""
        here = self.point(theta)
        if here.n_critical == 0:
            return here
        grads = torch.diagonal(here.pair_gradients).T  # (m, p): grad lambda_a
        gaps = self.threshold - here.eigenvalues
        band = grads.abs() @ (atol + rtol * theta.abs())
        near = gaps.abs() <= band
        if not bool(near.any()):
            return here
        # the least-norm step with <grad lambda_a, step> = gap_a for the eigenvalues on the edge
        step = torch.linalg.lstsq(grads[near], gaps[near].unsqueeze(-1), driver="gelsd").solution[:, 0]
        there = self.point(theta + step)
        if there.n_critical != here.n_critical:  # an eigenvalue crossed fraction x 2/eta: keep theta's
            return here
        return replace(
            here, X=there.X, method=there.method, residual=there.residual, shift=float(step.norm())
        )

    def __call__(self, t, theta: Tensor) -> Tensor:
        return self.point(theta).velocity

    def into(self, theta: Tensor, out: Tensor) -> Tensor:
        return out.copy_(self.point(theta).velocity)


@dataclass(frozen=True)
class CentralFlowResult:
    """A central-flow solve: the trajectory and, at each of its T points, the sharpness, the number
    of critical eigenvalues, tr Sigma, the predicted oscillation variance along the top eigenvector,
    the loss and the predicted time-averaged loss L + 1/2 <Sigma, H>. edge_intervals: the stretches
    [t_a, t_b] of output points with Sigma != 0 (to the output grid's resolution)."""

    trajectory: Trajectory
    lr: float
    threshold: float
    sharpness: Tensor
    n_critical: Tensor
    sigma_trace: Tensor
    top_variance: Tensor
    loss: Tensor
    predicted_loss: Tensor
    edge_intervals: list[tuple[float, float]]
    eig_iterations: int

    @property
    def t(self) -> Tensor:
        return self.trajectory.t

    @property
    def theta(self) -> Tensor:
        return self.trajectory.theta

    @property
    def max_excess(self) -> float:
        """max_t (S - 2/eta) / (2/eta): how far the sharpness went past the edge (<= 0: never)."""
        return float(((self.sharpness - self.threshold) / self.threshold).max())


def _intervals(t: Tensor, active: Tensor) -> list[tuple[float, float]]:
    out, start = [], None
    for i, on in enumerate(active.tolist()):
        if on and start is None:
            start = i
        if not on and start is not None:
            out.append((float(t[start]), float(t[i - 1])))
            start = None
    if start is not None:
        out.append((float(t[start]), float(t[-1])))
    return out


def describe_central(
    field: CentralFlow, trajectory: Trajectory, solver: Solver = CENTRAL_SOLVER
) -> CentralFlowResult:
    """The per-point quantities of a central-flow trajectory solved by ``solver`` (one evaluation per
    output point, two on the edge: :meth:`CentralFlow.recorded_point`). A trajectory solved before (a
    run's ``cflow_lr`` series) is described again at the solver and tolerances it was solved with."""
    points = [field.recorded_point(th, solver.rtol, solver.atol) for th in trajectory.theta]

    def col(name: str) -> Tensor:
        return torch.tensor([getattr(pt, name) for pt in points], dtype=torch.float64)

    return CentralFlowResult(
        trajectory=trajectory, lr=field.lr, threshold=field.threshold, sharpness=col("sharpness"),
        n_critical=torch.tensor([pt.n_critical for pt in points]), sigma_trace=col("sigma_trace"),
        top_variance=col("top_variance"), loss=col("loss"), predicted_loss=col("predicted_loss"),
        edge_intervals=_intervals(trajectory.t, col("sigma_trace") > 0), eig_iterations=field.tracker.iterations,
    )  # fmt: skip


def integrate_central(
    problem: RegressionProblem,
    dims: Layout | Sequence[int],
    theta0: Tensor,
    t_eval: Tensor | Sequence[float],
    lr: float,
    *,
    solver: Solver = CENTRAL_SOLVER,
    k: int = DEFAULT_K,
    fraction: float = CRITICAL_FRACTION,
    lookahead: float = LOOKAHEAD,
    dense_max: int = DENSE_HESSIAN_MAX,
    progress: Callable[[float, float], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> CentralFlowResult:
    """Integrate the central flow at learning rate ``lr`` from theta0 (p,) at t_eval[0], output at t_eval.

    solver: an explicit method (rk45, the default, or a torchdiffeq one): the field has no Jacobian
    for the stiff methods. Raises what :func:`dlnlab.integrate` raises (FlowSolverError,
    FlowInterrupted with the partial trajectory)."""
    if solver.family in ("scipy", "sundials"):
        raise ArgumentError(
            "solver",
            f"{solver.method} needs the field's Jacobian, which the central flow lacks; use rk45 or dopri5",
        )
    if lookahead <= 0:
        raise ArgumentError(
            "lookahead", f"must be > 0 to integrate (it stabilises S <= 2/lr), got {lookahead!r}"
        )
    if not isinstance(theta0, Tensor) or theta0.ndim != 1:
        raise ArgumentError("theta0", "the central flow takes one net, theta0 of shape (p,)")
    field = CentralFlow(problem, dims, lr, k=k, fraction=fraction, lookahead=lookahead, dense_max=dense_max)
    traj = integrate(problem, field.layout, theta0, t_eval, solver, progress=progress, stop=stop, field=field)
    return describe_central(field, traj, solver)
