"""The one result type of the flow and of (S)GD: a trajectory on a requested grid, with its status.

``dlnlab.integrate`` and ``dlnlab.gd`` both return a :class:`Trajectory`: times, states, a
:class:`~dlnlab.status.Status` (a str enum: ``traj.status == Status.OK``), a message and the statistics
of the work done. An interrupted solve or run raises :class:`Interrupted` (a KeyboardInterrupt) that
carries the trajectory up to the point reached.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from dlnlab.status import Status

__all__ = ["Status", "SolveStats", "MemberStats", "Trajectory", "Interrupted"]


@dataclass(frozen=True)
class SolveStats:
    """The work of one solve or (S)GD run (:attr:`Trajectory.stats`): ``nfe`` gradient evaluations (a batch
    counts once per call), ``njev`` Jacobians (scipy's and SUNDIALS' stiff methods; 0 otherwise),
    ``n_steps`` accepted solver steps or (S)GD steps, ``wall_time_s`` seconds of wall time."""

    nfe: int
    njev: int
    n_steps: int
    wall_time_s: float

    def __str__(self) -> str:
        return f"nfe {self.nfe}, njev {self.njev}, {self.n_steps} steps, {self.wall_time_s:.3g} s"


@dataclass(frozen=True)
class MemberStats:
    """The work of each member of a batch (B, p) solved with its own steps (``bdf_batch``,
    ``radau_batch``), (B,) each.

    status: OK for a member that reached the end of the grid; a member that did not has the solve's
    status (solver_failed, interrupted), and ``t_reached`` says how far it got. nfe: right-hand-side
    evaluations at the member's states; njev: its Jacobians; nlu: their factorisations (here: one
    eigendecomposition per Jacobian, valid for every step size); n_steps, n_rejected: its accepted and
    rejected steps.
    """

    status: tuple[Status, ...]
    t_reached: Tensor
    nfe: Tensor
    njev: Tensor
    nlu: Tensor
    n_steps: Tensor
    n_rejected: Tensor


@dataclass
class Trajectory:
    """A trajectory on the requested grid.

    t (T,): the times reached (a prefix of the requested grid; a flow stopped by an event ends at
    the last grid time before it). theta (T, p), or (T, B, p) for a batch of initial states.
    steps (T,): the step index of each row (gd) or None (flow). method: the integrator, or ``gd``,
    ``sgd`` (minibatches), ``gd_heavy_ball``, ``sgd_heavy_ball`` (with momentum). nfe: gradient evaluations (a batch counts once per call); njev: Jacobian
    evaluations (scipy's stiff methods); n_steps: accepted solver steps, or (S)GD steps taken (a batch
    with per-member steps: the most any member took). members: each member's own status and counts, for
    the batched solvers that keep them (:class:`MemberStats`), else None.
    """

    t: Tensor
    theta: Tensor
    status: Status
    message: str
    method: str
    nfe: int
    njev: int
    n_steps: int
    wall_time_s: float
    steps: Tensor | None = None
    event: str | None = None
    t_event: float | None = None
    theta_event: Tensor | None = None
    members: MemberStats | None = None

    @property
    def stats(self) -> SolveStats:
        """The work done: evaluations, Jacobians, steps and wall time (printed on one line)."""
        return SolveStats(self.nfe, self.njev, self.n_steps, self.wall_time_s)


class Interrupted(KeyboardInterrupt):
    """A solve or a run was interrupted; ``result`` is the trajectory up to the point reached."""

    def __init__(self, result: Trajectory) -> None:
        super().__init__(result.message)
        self.result = result
