"""An ensemble's flow in chunks of consecutive members: each chunk is a solve of its own (``integrate`` on
``theta0[chunk]``, in whatever process), and the chunks' trajectories are joined back into the
ensemble's.

The chunks depend only on the ensemble's size and the members per chunk, never on how many run at
once, so a chunked solve gives the same numbers however its chunks are scheduled. A member's numbers
depend on its chunk only where its solver couples the members of a batch: not at all for the methods
that solve member by member (scipy's, cvode), through rounding for radau_batch, bdf_batch and rk45
(each member takes its own steps; which members are evaluated together changes the last bits), through
the shared steps for torchdiffeq's one-system batches.

Joined: the rows every member reached (a chunk that failed or was interrupted ends its own members'
rows; the trajectory, one (T, B, p) array, keeps the rows all chunks reached), the worst status
(interrupted, then solver_failed, then ok), the first such chunk's message, the evaluations and
Jacobians summed over the chunks (each chunk's batched evaluations count once per call), the most
steps any chunk took, and each member's :class:`MemberStats` where every chunk has them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dlnlab.trajectory import MemberStats, Status, Trajectory

__all__ = ["member_chunks", "join_chunks", "not_started"]

_WORST = (Status.INTERRUPTED, Status.SOLVER_FAILED)


def member_chunks(n_members: int, chunk_members: int) -> list[slice]:
    """ceil(n_members / chunk_members) slices of consecutive members (the last may be shorter);
    ``chunk_members`` 0: one chunk of all."""
    if n_members < 1:
        raise ValueError(f"n_members must be >= 1, got {n_members}")
    if chunk_members < 0:
        raise ValueError(f"chunk_members must be >= 0 (0: one chunk), got {chunk_members}")
    size = chunk_members or n_members
    return [slice(a, min(a + size, n_members)) for a in range(0, n_members, size)]


def not_started(theta0: Tensor, t: Tensor, method: str, status: Status, message: str) -> Trajectory:
    """The trajectory of a chunk that never ran (a signal came first): its initial row only."""
    b = theta0.shape[0]
    zeros = torch.zeros(b, dtype=torch.int64)
    members = MemberStats(
        (status,) * b, torch.full((b,), float(t[0]), dtype=torch.float64), zeros, zeros, zeros, zeros, zeros
    )
    return Trajectory(
        t[:1].clone(), theta0.unsqueeze(0), status, message, method, 0, 0, 0, 0.0, members=members
    )


def join_chunks(
    parts: Sequence[Trajectory],
    chunks: Sequence[slice],
    t: Tensor,
    rows: Tensor | None = None,
    wall_time_s: float | None = None,
) -> Trajectory:
    """The ensemble's trajectory from its chunks' (``parts[i]`` solved ``theta0[chunks[i]]`` at ``t``).

    rows: (T, B, p) holding every chunk's rows (a buffer the chunks wrote into, as a run's workers do);
    None: the parts' own ``theta`` are concatenated. wall_time_s: the whole solve's (default: the
    longest chunk's)."""
    if not parts or len(parts) != len(chunks):
        raise ValueError(f"one trajectory per chunk: {len(parts)} for {len(chunks)} chunks")
    n = min(len(p.t) for p in parts)
    theta = rows[:n] if rows is not None else torch.cat([p.theta[:n] for p in parts], dim=1)
    worst = next(((s, i) for s in _WORST for i, p in enumerate(parts) if p.status == s), None)
    n_members = chunks[-1].stop
    if worst is None:
        status = Status.OK
        message = (
            f"reached t = {float(t[-1]):g} ({n} output points, {n_members} members in {len(parts)} chunks)"
        )
    else:
        status, i = worst
        others = sum(1 for p in parts if p.status != Status.OK) - 1
        more = f" (and {others} more chunk{'s' * (others > 1)} not ok)" if others else ""
        message = f"members {chunks[i].start}..{chunks[i].stop - 1}: {parts[i].message}{more}"
    stats = [p.members for p in parts]
    return Trajectory(
        t=t[:n].clone(),
        theta=theta,
        status=status,
        message=message,
        method=parts[0].method,
        nfe=sum(p.nfe for p in parts),
        njev=sum(p.njev for p in parts),
        n_steps=max(p.n_steps for p in parts),
        wall_time_s=max(p.wall_time_s for p in parts) if wall_time_s is None else wall_time_s,
        members=None if any(m is None for m in stats) else _join_members(stats),
    )


def _join_members(stats: Sequence[MemberStats]) -> MemberStats:
    return MemberStats(
        status=tuple(s for m in stats for s in m.status),
        t_reached=torch.cat([m.t_reached for m in stats]),
        nfe=torch.cat([m.nfe for m in stats]),
        njev=torch.cat([m.njev for m in stats]),
        nlu=torch.cat([m.nlu for m in stats]),
        n_steps=torch.cat([m.n_steps for m in stats]),
        n_rejected=torch.cat([m.n_rejected for m in stats]),
    )
