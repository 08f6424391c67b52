"""The loop shared by the batched stiff solvers (``bdf_batch``, ``radau_batch``): every unfinished member
attempts a step per pass; the output rows every member has written are handed out as they are reached,
the progress, ``stop()``, the evaluation budget and the per-member statistics handled alike.

A solver's state (``make_state(run, y0)``) keeps, per member (B,): ``t``, ``t_end``, ``counts`` (nfe,
njev, n_steps, n_rejected), and the output rows ``out`` (T, B, p) with ``out_idx``, the next row each
member will write; ``attempt(state)`` makes one step attempt of every unfinished member."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dlnlab.flow._run import BudgetExceeded, Run
from dlnlab.trajectory import Interrupted, MemberStats, Status, Trajectory

__all__ = ["solve_members", "output_rows", "field_values", "jacobian_eigen"]


def solve_members(run: Run, stop: Callable[[], bool] | None, make_state, attempt, name: str) -> Trajectory:
    theta0 = run.outputs[0][0]
    single = theta0.ndim == 1
    if (early := run.settled_at_start()) is not None:  # one output time (these methods take no events)
        return early
    y0 = np.ascontiguousarray(theta0.reshape(-1, theta0.shape[-1]).numpy(), dtype=np.float64)
    s, done = None, 1
    try:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            s = make_state(run, y0)
            run.members = lambda status: _member_stats(s, status)
            every, next_progress = (run.t_end - float(run.t[0])) / 100, float(run.t[0])
            while bool((s.t < s.t_end).any()):
                attempt(s)
                run.counter.t_reached = float(s.t.min())
                reached = int(s.out_idx.min())
                if reached > done:
                    run.add(_rows(s.out[done:reached], single))
                    done = reached
                if run.progress is not None and run.counter.t_reached >= next_progress:
                    run.progress(run.counter.t_reached, run.t_end)
                    next_progress = run.counter.t_reached + every
                if stop is not None and stop():
                    msg = f"interrupted at t = {run.counter.t_reached:.6g}"
                    raise Interrupted(run.result(Status.INTERRUPTED, msg))
    except BudgetExceeded as exc:
        raise run.fail(str(exc), run.counter.t_reached) from exc
    finally:
        if s is not None:
            reached = int(s.out_idx.min())
            if reached > done:
                run.add(_rows(s.out[done:reached], single))
            run.keep_rows(_rows(s.out, single))  # the rows handed out are views of s.out: no copy
            run.njev = int(s.counts["njev"].sum())
            run.counter.n_steps = int(s.counts["n_steps"].max())
    msg = f"reached t = {run.t_end:g} ({len(run.t)} output points, {s.b} members); dlnlab {name}"
    return run.result(Status.OK, msg)


def output_rows(s, m: np.ndarray, t_new: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The output rows that members m's steps, ending at t_new, pass: (who, rows, last), who[i] the index
    into m of row rows[i], last the members' next output index (the caller sets ``s.out_idx[m] = last``
    once the rows are written: an interrupt in between must not hand out unwritten rows). None if there
    are none."""
    first = s.out_idx[m]
    last = np.maximum(np.searchsorted(s.tt, t_new * (1 + 1e-14), side="right"), first)
    count = last - first
    total = int(count.sum())
    if total == 0:
        return None
    who = np.repeat(np.arange(len(m)), count)
    return who, np.arange(total) - np.repeat(np.cumsum(count) - count, count) + np.repeat(first, count), last


def _rows(block: np.ndarray, single: bool) -> torch.Tensor:
    rows = torch.from_numpy(np.ascontiguousarray(block))
    return rows[:, 0] if single else rows


def _member_stats(s, status: Status) -> MemberStats:
    reached = s.t >= s.t_end
    c = s.counts
    return MemberStats(
        status=tuple(Status.OK if r else status for r in reached),
        t_reached=torch.from_numpy(s.t.copy()),
        nfe=torch.from_numpy(c["nfe"].copy()),
        njev=torch.from_numpy(c["njev"].copy()),
        nlu=torch.from_numpy(c["njev"].copy()),  # one eigendecomposition per Jacobian, whatever the steps
        n_steps=torch.from_numpy(c["n_steps"].copy()),
        n_rejected=torch.from_numpy(c["n_rejected"].copy()),
    )


def field_values(field, y: np.ndarray) -> np.ndarray:
    """The field at the states y (..., p), one batched evaluation written into a fresh array: ``into``
    puts the sign on dL/dP (no pass to negate the result, 10 us of 237 for 3 x 64 Figure 1 nets)."""
    p = y.shape[-1]
    f = np.empty(y.shape)
    field.into(torch.from_numpy(np.ascontiguousarray(y).reshape(-1, p)), torch.from_numpy(f.reshape(-1, p)))
    return f


def jacobian_eigen(field, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eigendecomposition of the symmetrised Jacobian at the states y (n, p), eigenvalues by
    decreasing size and the eigenvectors as rows (float32: it only steers the Newton iteration and
    filters the error estimate; the residuals stay float64). Shared by bdf_batch and radau_batch."""
    jac = field.jacobian(torch.from_numpy(y))
    lam, vec = (a.numpy() for a in torch.linalg.eigh((0.5 * (jac + jac.mT)).float()))
    by_size = np.argsort(-np.abs(lam), axis=1)
    rows = np.take_along_axis(vec.transpose(0, 2, 1), by_size[:, :, None], axis=1)
    return np.take_along_axis(lam, by_size, axis=1), rows
