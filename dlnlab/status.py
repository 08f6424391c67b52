"""The one status of a series, for the core and the lab alike.

The core's solvers and steppers set OK, EVENT, DIVERGED, SOLVER_FAILED and INTERRUPTED on the
:class:`~dlnlab.trajectory.Trajectory` they return; the lab adds UNSTABLE (a scientific outcome it reads
off the recorded loss and sharpness) and ERROR (a technical failure of one series: a logger, a user's
callback, a recorder). A str enum: JSON writes its value, so ``summary.json`` holds ``"ok"``.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Status", "FINISHED", "FAILED", "USABLE"]


class Status(str, Enum):
    """How a trajectory or a series ended (a str enum: ``traj.status == "ok"`` holds, ``str()`` is the
    value). The core sets OK, EVENT, DIVERGED, SOLVER_FAILED, INTERRUPTED; the lab adds UNSTABLE, ERROR."""

    OK = "ok"  # reached the end of the requested grid
    EVENT = "event"  # an event function fired (the core's flow)
    DIVERGED = "diverged"  # the weights blew up or became non-finite (a scientific outcome: exit code 0)
    UNSTABLE = "unstable"  # the loss stays up above the stability threshold (lab; scientific: exit code 0)
    SOLVER_FAILED = "solver_failed"  # the integrator failed or was inaccurate (exit code 3 in the lab)
    INTERRUPTED = "interrupted"  # KeyboardInterrupt, SIGINT / SIGTERM: kept up to the last point reached
    ERROR = "error"  # lab: a technical failure of this series (exit code 3); the other series still ran

    def __str__(self) -> str:
        return self.value


FINISHED = (Status.OK, Status.DIVERGED, Status.UNSTABLE)  # a series that ran to its end: its file is complete
FAILED = (Status.SOLVER_FAILED, Status.ERROR)  # technical failures (the run's exit code 3)
USABLE = (Status.OK, Status.UNSTABLE)  # series whose distances enter the convergence orders
