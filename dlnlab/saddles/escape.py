"""How a trajectory escapes a saddle (:func:`escape_directions`).

The next mode, the unstable direction (the Hessian's lowest eigenvector at a strict saddle, the
sign-rule branch of the next mode where the Hessian is blind) and, for every unlearnt mode, the
unstable and stable branches of docs/theory.md section 4 built in a free channel: along
(a f_1 v_k^T, a f_2 f_1^T, ..., a u_k f_{h-1}^T) the product gains +a^h u_k v_k^T and the loss falls by
m_k a^h (the unstable branch); with the first layer's sign flipped it rises by as much (the stable
branch). For h = 2 these are the Hessian eigendirections with eigenvalues -m_k and +m_k; for h >= 3
the Hessian is zero on them and only the sign rule separates the branches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dlnlab.network import as_layout, pack, prefix_products, product, unpack
from dlnlab.problem import RegressionProblem
from dlnlab.saddles.critical import ClassifyTolerances, _as_theta, _suffix_products
from dlnlab.saddles.plateaus import _modes_np, _s1
from dlnlab.saddles.snap import _hessian, _lambda_extremes

__all__ = ["EscapeDirections", "escape_directions"]


@dataclass
class EscapeDirections:
    """How a trajectory leaves a saddle.

    next_mode: the mode learnt next (the largest unlearnt one with a free channel); free_channel: a
    channel is free for it; unstable_kind: ``hessian`` (a negative eigenvalue: exponential escape),
    ``sign_rule`` (degenerate Hessian: algebraic escape of order ``unstable_order``) or None;
    unstable_rate, unstable_mode: the rate and mode of the unstable direction; escape: exponential or
    algebraic; hessian_degenerate; lambda_min; n_negative_eigenvalues; branches: per unlearnt mode its
    stable and unstable branches with their measured and predicted loss changes (each signed,
    L(theta + delta) - L(theta): the unstable branch's negative, the stable's positive); unstable_direction:
    (p,) the direction (not stored in summaries).
    """

    next_mode: int | None
    free_channel: bool
    unstable_kind: str | None
    unstable_rate: float | None
    unstable_mode: int | None
    unstable_order: int | None
    escape: str | None
    hessian_degenerate: bool
    lambda_min: float
    n_negative_eigenvalues: int | None
    branches: list[dict] = field(default_factory=list)
    unstable_direction: Tensor | None = None

    def to_dict(self) -> dict:
        """JSON-able fields (the direction tensor left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "unstable_direction"}


def _free_channels(ws: Sequence[Tensor], s1: float, rtol: float) -> list[Tensor | None]:
    """For each hidden layer j = 1..h-1 an orthonormal basis (d_j, f_j) of the directions orthogonal
    to range(W_j) and to the row space of W_{j+1} (None when there are none)."""
    h = len(ws)
    out = []
    for j in range(1, h):
        a = torch.cat([ws[j - 1], ws[j].T], dim=1)
        u, sv, _ = torch.linalg.svd(a, full_matrices=True)
        k = int((sv > rtol * s1 ** (1.0 / h)).sum())
        out.append(u[:, k:] if k < u.shape[1] else None)
    return out


def _mode_content(
    problem: RegressionProblem, ws: Sequence[Tensor], direction_ws: Sequence[Tensor], unlearnt: list[int]
) -> int | None:
    """The unlearnt mode a direction (V_1..V_h, shaped like W_1..W_h) moves most: first-order
    dP = sum_j W_h..W_{j+1} V_j W_{j-1}..W_1 and the order-h chain V_h...V_1, in mode coordinates
    U^T X Sxx^{1/2} V."""
    if not unlearnt:
        return None
    h = len(ws)
    pre, suf = prefix_products(ws), _suffix_products(ws)
    dp = torch.zeros_like(problem.P_ls)
    for j in range(h):
        x = direction_ws[j]
        if j < h - 1:
            x = suf[h - 2 - j] @ x  # W_h ... W_{j+2} (1-based)
        if j > 0:
            x = x @ pre[j - 1]  # W_j ... W_1 (1-based)
        dp = dp + x
    chain = product(direction_ws)
    uu, vv = problem.mode_u, problem.mode_v

    def coords(x):
        xs = x if problem.whitened else x @ problem.sxx_sqrt
        return (uu.T @ xs @ vv).abs()

    c1, c2 = coords(dp), coords(chain)
    score = {k: float(c1[k, :].sum() + c1[:, k].sum() + c2[k, k]) for k in unlearnt}
    best = max(score, key=score.get)
    return best if score[best] > 0 else None


def _next_mode(s: list[int], unlearnt: list[int], r_max: int) -> int | None:
    """The mode learnt next: the largest unlearnt one while a channel is free, else (full rank) a larger
    unlearnt mode that swaps in for the smallest learnt one; None at the minimum."""
    if len(s) < r_max and unlearnt:
        return unlearnt[0]
    if unlearnt and s and unlearnt[0] < max(s):
        return unlearnt[0]  # a swap: the larger unlearnt mode replaces the smallest learnt one
    return None


def _branch(
    problem: RegressionProblem,
    layout,
    th: Tensor,
    k: int,
    free: list[Tensor | None],
    amplitude: float,
    loss0: float,
    curvature: Callable[[Tensor], float],
) -> tuple[dict[str, Any], Tensor]:
    """Mode k's branches in the first free channel: the entry's measured and predicted loss changes and
    curvatures, and the unstable branch's unit direction (p,)."""
    m_k = _modes_np(problem)[k]
    h = layout.depth
    a = (amplitude * m_k) ** (1.0 / h)
    w_in = problem.sxx_pinv_sqrt @ problem.mode_v[:, k]
    fs = [w_in] + [f[:, 0] for f in free] + [problem.mode_u[:, k]]
    plus = [a * torch.outer(fs[j + 1], fs[j]) for j in range(h)]
    minus = [-plus[0]] + plus[1:]
    dplus, dminus = pack(plus), pack(minus)
    lp = float(problem.loss(unpack(th + dplus, layout))) - loss0
    lm = float(problem.loss(unpack(th + dminus, layout))) - loss0
    entry = dict(
        free_channel=True,
        amplitude=a,
        unstable_loss_change=lp,
        stable_loss_change=lm,
        # the leading order, signed as the measured changes, L(theta + delta) - L(theta)
        predicted_unstable_loss_change=-float(m_k * a**h),
        predicted_stable_loss_change=float(m_k * a**h),
        unstable_curvature=curvature(dplus),
        stable_curvature=curvature(dminus),
        sign_rule_ok=bool(lp < 0 < lm),
    )
    return entry, dplus / dplus.norm()


def _lowest_curvature(
    problem: RegressionProblem, th: Tensor, layout, hess: Tensor | None, lam_tol: float
) -> tuple[float, Tensor, int | None]:
    """(lambda_min, its eigenvector (p,), the number of eigenvalues below -lam_tol (dense only))."""
    lam_min, _, v_min, evals = _lambda_extremes(problem, th, layout, hess)
    n_neg = int((evals < -lam_tol).sum()) if evals is not None else None
    return lam_min, v_min, n_neg


def _trajectory_strength(problem: RegressionProblem, layout, trajectory_theta) -> np.ndarray | None:
    """The trajectory's own mode strengths (q,) at trajectory_theta (p,), or None without it."""
    if trajectory_theta is None:
        return None
    tt = _as_theta(trajectory_theta, layout, problem.X.dtype)
    return problem.mode_strength(product(unpack(tt, layout))).numpy()


def _branch_entry(k: int, m_k: float, h: int, traj_strength: np.ndarray | None) -> dict[str, Any]:
    """Mode k's branch entry before the measurement: which branch the trajectory is on (the sign of
    its own u_k)."""
    entry: dict[str, Any] = {"mode": k, "m_k": m_k, "order": h}
    if traj_strength is not None and k < traj_strength.size:
        u_k = float(traj_strength[k])
        entry["trajectory_strength"] = u_k
        entry["trajectory_branch"] = "unstable" if u_k > 0 else ("stable" if u_k < 0 else "dead")
    return entry


def _branches(
    problem: RegressionProblem,
    layout,
    th: Tensor,
    unlearnt: list[int],
    free: list[Tensor | None] | None,
    amplitude: float,
    curvature: Callable[[Tensor], float],
    traj_strength: np.ndarray | None,
) -> tuple[list[dict[str, Any]], dict[int, Tensor]]:
    """Every unlearnt mode's branch entry, measured where there is a free channel (``free`` not None,
    h > 1), and the unstable branches' unit directions by mode."""
    m = _modes_np(problem)
    h = layout.depth
    loss0 = float(problem.loss(unpack(th, layout)))
    branches = []
    branch_dirs = {}
    for k in unlearnt:
        entry = _branch_entry(k, float(m[k]), h, traj_strength)
        if free is None or h == 1:
            entry["free_channel"] = False
        else:
            measured, branch_dirs[k] = _branch(problem, layout, th, k, free, amplitude, loss0, curvature)
            entry.update(measured)
        branches.append(entry)
    return branches, branch_dirs


def _hessian_escape(
    problem: RegressionProblem,
    ws: Sequence[Tensor],
    layout,
    lam_min: float,
    v_min: Tensor,
    unlearnt: list[int],
) -> tuple[str, Tensor, float, int | None, int]:
    """(kind, unit direction (p,), rate, mode, order) of the exponential escape along the lowest
    Hessian eigenvector (lambda_min < 0); the mode is the unlearnt one it moves most."""
    direction = v_min / v_min.norm()
    return "hessian", direction, -lam_min, _mode_content(problem, ws, unpack(direction, layout), unlearnt), 2


def escape_directions(
    problem: RegressionProblem,
    dims,
    theta,
    modes_learnt: Iterable[int],
    *,
    trajectory_theta=None,
    amplitude: float = 1e-3,
    _hess: Tensor | None = None,
    _lam: tuple | None = None,
    _tol: ClassifyTolerances | None = None,
) -> EscapeDirections:
    """How a trajectory leaves the critical point theta (p,) (learnt set S): next mode, unstable
    direction, and the stable / unstable branches of every unlearnt mode (docs/theory.md section 4's sign rule).

    For each unlearnt mode k with a free channel (a unit f_j in every hidden layer orthogonal to
    range(W_j) and to the row space of W_{j+1}) the branch directions are
    delta^+ = (a f_1 w_k^T, a f_2 f_1^T, ..., a u_k f_{h-1}^T) and delta^- (first layer negated), with
    w_k = Sxx^{+1/2} v_k and a^h = ``amplitude`` * m_k. Along delta^+ the product gains +a^h u_k w_k^T
    and the loss changes by -m_k a^h + O(a^2h) (unstable branch, u_k grows to m_k); along delta^- by
    +m_k a^h (stable branch, u_k decays). Reported: the measured loss changes
    ``unstable_loss_change`` and ``stable_loss_change``, L(theta + delta) - L(theta), and their leading
    orders ``predicted_unstable_loss_change`` = -m_k a^h and ``predicted_stable_loss_change`` = +m_k a^h
    (signed alike: negative where the loss falls), the curvatures delta^T H delta / |delta|^2 (-m_k and +m_k for h = 2; 0 for h >= 3,
    where the Hessian is degenerate and the order-h sign rule decides), and, with
    ``trajectory_theta`` (p,), the sign of the trajectory's own mode strength (which branch it is on).

    The unstable direction is the lowest Hessian eigenvector when lambda_min < 0 (exponential escape,
    rate -lambda_min), else the unstable branch of the next mode (algebraic escape, order h).
    Returned tensors: ``unstable_direction`` (p,), unit norm, or None.
    """
    tol = _tol or ClassifyTolerances()
    layout = as_layout(dims)
    h = layout.depth
    th = _as_theta(theta, layout, problem.X.dtype)
    ws = unpack(th, layout)
    s = sorted(set(int(k) for k in modes_learnt))
    m = _modes_np(problem)
    s1 = _s1(problem)
    hscale = h * s1 ** (2.0 - 2.0 / h)
    lam_tol = tol.lam_rtol * hscale
    unlearnt = [k for k in range(m.size) if k not in s]
    next_mode = _next_mode(s, unlearnt, layout.r_max)
    hess = _hess if _hess is not None else _hessian(problem, th, layout, tol.dense_max)
    lam_min, v_min, n_neg = (
        _lam if _lam is not None else _lowest_curvature(problem, th, layout, hess, lam_tol)
    )

    def curvature(v: Tensor) -> float:
        hv = hess @ v if hess is not None else problem.hvp_theta(th, v, layout)
        return float(v @ hv / (v @ v))

    traj_strength = _trajectory_strength(problem, layout, trajectory_theta)
    free = _free_channels(ws, s1, tol.rank_rtol) if h > 1 else []
    has_free = all(f is not None for f in free)
    branches, branch_dirs = _branches(
        problem, layout, th, unlearnt, free if has_free else None, amplitude, curvature, traj_strength
    )

    if lam_min < -lam_tol and v_min is not None:
        kind, direction, rate, mode, order = _hessian_escape(problem, ws, layout, lam_min, v_min, unlearnt)
    elif next_mode is not None and next_mode in branch_dirs:
        kind, direction, rate, mode, order = "sign_rule", branch_dirs[next_mode], None, next_mode, h
    else:
        kind, direction, rate, mode, order = None, None, None, None, None
    return EscapeDirections(
        next_mode=next_mode,
        free_channel=bool(has_free),
        unstable_kind=kind,
        unstable_rate=rate,
        unstable_mode=mode,
        unstable_order=order,
        escape=None if kind is None else ("exponential" if kind == "hessian" else "algebraic"),
        hessian_degenerate=bool(lam_min >= -lam_tol),
        lambda_min=lam_min,
        n_negative_eigenvalues=n_neg,
        branches=branches,
        unstable_direction=direction,
    )
