"""``bdf_batch``: a variable-order BDF for a batch of initial states (B, p), each member with its own step
size, order, Newton iteration and Jacobian: the stiff flow of an ensemble in one solve.

The method is scipy's ``BDF``: the NDF formulas of orders 1 to 5 in Shampine and Reichelt's
quasi-constant step form (a differences array per member, rescaled when its step changes), scipy's
error estimate, step-size and order rules and initial step, output at ``t_eval`` from each step's
interpolating polynomial. It is vectorised over the members: every array operation acts on all of them
(numpy: its per-call cost is a fraction of torch's on these small arrays), every right-hand side is one
evaluation of the batch, and each member accepts, rejects, changes its order and refreshes its Jacobian
on its own. With the same Newton settings it reproduces scipy's BDF evaluation counts member for member
(tested). What differs, each measured on the Figure 1 net (docs/performance.md, "Batched stiff flows"):

* The Newton matrix. The Jacobian of the flow, -H(theta), is symmetric, so it is kept as its
  eigendecomposition Q diag(lam) Q^T (one ``eigh`` per member and Jacobian) instead of an LU of
  I - c J: (I - c J)^(-1) = I + Q diag(c lam / (1 - c lam)) Q^T for every c = h / alpha_order, so a new
  step size or order needs no new factorisation (on one Figure 1 member over t = 300 scipy's BDF
  factorised 336 times for 8 Jacobians; LSODA 99 times). A solve uses only the eigenpairs with
  c |lam| > ``NEGLECT`` (the others would change it by less than that fraction; 36 to 80 of 198 on
  Figure 1), in float32 (it only steers the iteration, whose residuals are float64): it reads
  k x p numbers per member instead of a p x p factor, and that memory traffic is its cost.
* The Jacobian is evaluated again (the closed-form Hessian of the batch) only for a member whose Newton
  iteration failed with an older one, as in scipy's BDF: about 5 per member over t = 300.
* The Newton iteration stops when the estimated remaining correction is below ``NEWTON_TOL`` = 0.03 of
  the error tolerance (Hairer and Wanner's fnewt; scipy's BDF tightens it to sqrt(rtol), 3e-5 at
  rtol 1e-9: 2.9 evaluations a step instead of 1.7, the same accuracy), and, as in LSODA, after its
  first correction when the member's convergence rate, measured recently at a similar c, says so.

A member's numbers depend on the others only through the width k of the float32 solve, which moves
their rounding (1e-14 relative on Figure 1), not their accuracy. A failure (step size underflow; the
``max_nfe`` budget, which counts batched evaluations) stops the whole batch with the output rows every
member reached, as rk45 does; ``Trajectory.members`` has each member's status and counts. No events.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dlnlab.flow._members import field_values, jacobian_eigen, output_rows, solve_members
from dlnlab.flow._run import Run
from dlnlab.trajectory import Trajectory

__all__ = ["integrate_bdf", "NEGLECT", "NEWTON_TOL"]

MAX_ORDER = 5
NEWTON_MAXITER = 4
MIN_FACTOR, MAX_FACTOR = 0.2, 10.0
NEWTON_TOL = 0.03  # the remaining Newton correction, in units of the error tolerance
FIRST_RATE = 0.7  # LSODA's convergence rate before any is measured
RATE_AGE = 20  # a rate measured more attempts ago than this, or at a c more than
RATE_C_CHANGE = 0.3  # this fraction away, is not trusted to end the iteration after one correction
NEGLECT = 0.01  # eigenpairs with c |lam| at most this are left out of a solve
ROWS = MAX_ORDER + 3  # the differences D^0 y ... D^(order + 2) y

_KAPPA = np.array([0, -0.1850, -1 / 9, -0.0823, -0.0415, 0])
GAMMA = np.hstack((0, np.cumsum(1 / np.arange(1, MAX_ORDER + 1))))
ALPHA = (1 - _KAPPA) * GAMMA
ERROR_CONST = np.append(_KAPPA * GAMMA + 1 / np.arange(1, MAX_ORDER + 2), 0.0)  # [order], order 0..6


def _compute_r(order: np.ndarray, factor: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """scipy's compute_R(order, factor) for each member, (n, 6, 6), zero outside its (order + 1)^2 block
    (the rows and columns above a member's order are not its: leaving them in would mix them in)."""
    i = np.arange(1, MAX_ORDER + 1)[:, None]
    m = np.zeros((len(order), MAX_ORDER + 1, MAX_ORDER + 1))
    m[:, 1:, 1:] = (i - 1 - factor[:, None, None] * i.T) / i
    m[:, 0] = 1.0
    return np.cumprod(m, axis=1) * inside[order]


def _tables() -> tuple[np.ndarray, ...]:
    """Per order: the predictor's and psi's weights on D (2, ROWS), scipy's U = compute_R(order, 1) and
    the (order + 1)^2 block a member's step change acts on."""
    k = np.arange(ROWS)
    predict = np.zeros((MAX_ORDER + 1, 2, ROWS))
    inside = np.zeros((MAX_ORDER + 1, MAX_ORDER + 1, MAX_ORDER + 1), dtype=bool)
    for o in range(MAX_ORDER + 1):
        predict[o, 0] = k <= o
        if o:
            predict[o, 1] = np.where((k >= 1) & (k <= o), np.append(GAMMA, [0.0, 0.0]), 0.0) / ALPHA[o]
        inside[o, : o + 1, : o + 1] = True
    u = _compute_r(np.arange(MAX_ORDER + 1), np.ones(MAX_ORDER + 1), inside)
    return predict, u, inside


PREDICT, U, INSIDE = _tables()
EYE6, EYE_ROWS = np.eye(MAX_ORDER + 1), np.eye(ROWS)


def _rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", x, x) / x.shape[-1])


class _Members:
    """Every member's state: differences D (B, ROWS, p), time, step, order, Jacobian (eigenvalues by
    decreasing size and eigenvectors as the rows of ``qt``), convergence rate and counts."""

    def __init__(self, run: Run, theta0: np.ndarray) -> None:
        self.run, self.field, self.solver = run, run.field, run.solver
        self.b, self.p = theta0.shape
        b, p = self.b, self.p
        self.rtol, self.atol, self.t_end = self.solver.rtol, self.solver.atol, run.t_end
        self.max_step = float(self.solver.options.get("max_step", np.inf))
        self.t = np.full(b, float(run.t[0]))
        self.order = np.ones(b, dtype=np.int64)
        self.n_equal = np.zeros(b, dtype=np.int64)
        self.rate = np.full(b, FIRST_RATE)  # the last measured convergence rate of the Newton iteration,
        self.rate_c = np.ones(b)  # at this c,
        self.rate_age = np.full(b, RATE_AGE)  # this many attempts ago
        self.jac_current = np.zeros(b, dtype=bool)
        self.counts = {k: np.zeros(b, dtype=np.int64) for k in ("nfe", "njev", "n_steps", "n_rejected")}
        self.lam, self.abs_lam, self.qt = (
            np.zeros((b, p)),
            np.zeros((b, p)),
            np.zeros((b, p, p), dtype=np.float32),
        )
        self.D = np.zeros((b, ROWS, p))
        self.D[:, 0] = theta0
        everyone = np.ones(b, dtype=bool)
        f0 = self.f(theta0, everyone)
        self.h = self.initial_steps(theta0, f0)
        self.D[:, 1] = f0 * self.h[:, None]
        self.refresh(np.arange(b), theta0)
        self.tt = run.t.numpy().astype(np.float64)
        self.out = np.full((len(run.t), b, p), np.nan)
        self.out[0] = theta0
        self.out_idx = np.ones(b, dtype=np.int64)

    def f(self, y: np.ndarray, members: np.ndarray) -> np.ndarray:
        """The right-hand side at y (n, p), the states of ``members`` (indices or a mask; their counts):
        one batched evaluation."""
        self.run.counter.check_budget()
        self.counts["nfe"][members] += 1
        return field_values(self.field, y)

    def initial_steps(self, y0: np.ndarray, f0: np.ndarray) -> np.ndarray:
        """scipy's select_initial_step for a method of order 1, per member (or the first_step option)."""
        span = min(self.t_end - float(self.t[0]), self.max_step)
        if "first_step" in self.solver.options:
            return np.full(self.b, min(float(self.solver.options["first_step"]), span))
        scale = self.atol + self.rtol * np.abs(y0)
        d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
        h0 = np.minimum(np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / np.maximum(d1, 1e-300)), span)
        f1 = self.f(y0 + h0[:, None] * f0, np.ones(self.b, dtype=bool))
        big = np.maximum(d1, _rms((f1 - f0) / scale) / h0)
        h1 = np.where(big <= 1e-15, np.maximum(1e-6, h0 * 1e-3), (0.01 / np.maximum(big, 1e-300)) ** 0.5)
        return np.minimum(np.minimum(100 * h0, h1), span)

    def refresh(self, members: np.ndarray, y: np.ndarray) -> None:
        """The Jacobian of ``members`` at their states y (n, p), as its eigendecomposition (in float32:
        it only steers the Newton iteration, whose residuals are float64)."""
        if not np.isfinite(y).all():
            raise self.run.fail("non-finite state", float(self.t[members].min()))
        self.lam[members], self.qt[members] = jacobian_eigen(self.field, y)
        self.abs_lam[members] = np.abs(self.lam[members])
        self.counts["njev"][members] += 1
        self.jac_current[members] = True
        self.rate[members], self.rate_age[members] = FIRST_RATE, RATE_AGE

    def change_steps(self, members: np.ndarray, factor: np.ndarray) -> None:
        """Steps h -> h * factor for ``members``: their D re-expressed for the new step (scipy's change_D)."""
        if len(members) == 0:
            return
        order = self.order[members]
        ru = np.matmul(_compute_r(order, factor, INSIDE), U[order])
        t = np.broadcast_to(EYE_ROWS, (len(members), ROWS, ROWS)).copy()
        t[:, : MAX_ORDER + 1, : MAX_ORDER + 1] = np.where(INSIDE[order], ru.transpose(0, 2, 1), EYE6)
        self.D[members] = np.matmul(t, self.D[members])
        self.h[members] *= factor
        self.n_equal[members] = 0

    def coefficients(self, c: np.ndarray) -> np.ndarray:
        """The solve's coefficients c lam / (1 - c lam) on the eigenpairs each member needs, (B, k)."""
        keep = self.abs_lam > (NEGLECT / c)[:, None]
        k = max(1, int(keep.sum(axis=1).max()))
        cl = c[:, None] * self.lam[:, :k]
        return np.where(keep[:, :k], cl / (1 - cl), 0.0).astype(np.float32)

    def solve(self, members: np.ndarray | None, coef: np.ndarray, r: np.ndarray) -> np.ndarray:
        """(I - c J)^(-1) r = r + Q diag(coef) Q^T r for ``members`` (None: all, a view of Q, no copy);
        the correction in float32, the memory traffic that bounds the solve halved."""
        k = coef.shape[1]
        qt = self.qt[:, :k] if members is None else self.qt[members, :k]
        proj = np.matmul(qt, r.astype(np.float32)[:, :, None])[..., 0]
        return r + np.matmul((proj * coef)[:, None, :], qt)[:, 0]


class _Step:
    """One attempted step of every member (the finished ones compute along, masked: no copies)."""

    def __init__(self, s: _Members) -> None:
        self.s = s
        self.act = act = s.t < s.t_end
        room = s.t_end - s.t
        h = np.minimum(np.minimum(s.h, room), s.max_step)
        clip = np.flatnonzero(act & (h < s.h))
        if len(clip):
            s.change_steps(clip, h[clip] / s.h[clip])
            s.h[clip] = h[clip]
        if bool((act & (s.h < 10 * np.spacing(s.t))).any()):
            raise s.run.fail("step size underflow", float(s.t[act].min()))
        self.h = np.where(act, s.h, 1.0)
        self.t_new = np.where(self.h == room, s.t_end, s.t + self.h)
        both = np.matmul(PREDICT[s.order], s.D)
        self.y_pred, self.psi = both[:, 0], both[:, 1]
        self.c = self.h / ALPHA[s.order]
        self.scale = s.atol + s.rtol * np.abs(self.y_pred)
        self.coef = s.coefficients(self.c)

    def newton(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The modified Newton iteration of every member: (converged, iterations, y, d). The first
        correction is computed for all; later ones only for the members still iterating."""
        s, act = self.s, self.act
        f = s.f(self.y_pred, act)
        d = s.solve(None, self.coef, self.c[:, None] * f - self.psi)
        dy_norm = _rms(d / self.scale)
        trusted = (s.rate_age < RATE_AGE) & (np.abs(self.c / s.rate_c - 1) < RATE_C_CHANGE)
        est = dy_norm * np.where(trusted, np.minimum(1.0, 1.5 * s.rate), 1.0)
        s.rate_age += act
        finite = np.isfinite(dy_norm)
        converged = act & finite & ((dy_norm == 0) | (est < NEWTON_TOL))
        n_iter = np.ones(s.b, dtype=np.int64)
        y = self.y_pred + d
        it = np.flatnonzero(act & finite & ~converged)
        if len(it):
            self.iterate(it, y, d, dy_norm, converged, n_iter)
        return converged, n_iter, y, d

    def iterate(self, it, y, d, norm_old, converged, n_iter) -> None:
        """Newton corrections 2.. of members ``it`` (scipy's solve_bdf_system from its second pass)."""
        s = self.s
        for k in range(1, NEWTON_MAXITER):
            if 2 * len(it) > s.b:  # most members: the whole batch, no copies of their Q (measured faster)
                r = self.c[:, None] * s.f(y, it) - self.psi - d
                dy = s.solve(None, self.coef, r)[it]
            else:
                r = self.c[it, None] * s.f(y[it], it) - self.psi[it] - d[it]
                dy = s.solve(it, self.coef[it], r)
            dy_norm = _rms(dy / self.scale[it])
            rate = dy_norm / norm_old[it]
            bad = ~np.isfinite(dy_norm) | (rate >= 1)
            bad |= rate ** (NEWTON_MAXITER - k) / (1 - rate) * dy_norm > NEWTON_TOL
            seen = it[~bad]
            s.rate[seen] = np.maximum(0.2 * s.rate[seen], rate[~bad])
            s.rate_c[seen], s.rate_age[seen] = self.c[seen], 0
            y[seen] += dy[~bad]
            d[seen] += dy[~bad]
            n_iter[it] = k + 1
            done = ~bad & ((dy_norm == 0) | (rate / (1 - rate) * dy_norm < NEWTON_TOL))
            converged[it[done]] = True
            norm_old[it] = dy_norm
            it = it[~bad & ~done]
            if len(it) == 0:
                return


def _attempt(s: _Members) -> None:
    """One step attempt of every unfinished member: Newton, then per member a new Jacobian (a failure
    with an older one; the step is tried again), half the step (a failure with a current one), a
    rejection by the error estimate, or an accepted step; the step changes of all of them at once."""
    step = _Step(s)
    converged, n_iter, y, d = step.newton()
    failed, stale = step.act & ~converged, ~s.jac_current
    again = np.flatnonzero(failed & stale)
    if len(again):
        s.refresh(again, step.y_pred[again])
    factor = np.where(failed & ~stale, 0.5, 1.0)
    safety = 0.9 * (2 * NEWTON_MAXITER + 1) / (2 * NEWTON_MAXITER + n_iter)
    scale = s.atol + s.rtol * np.abs(y)
    error = _rms(ERROR_CONST[s.order][:, None] * d / scale)
    rejected = converged & (error > 1)
    factor = np.where(rejected, np.maximum(MIN_FACTOR, safety * error ** (-1.0 / (s.order + 1))), factor)
    s.counts["n_rejected"] += factor < 1.0
    accept = converged & (error <= 1)
    if accept.any():
        g, factor_g = _accept(s, step, accept, d, scale, safety)
        factor[g] = factor_g
    change = np.flatnonzero(factor != 1.0)
    s.change_steps(change, factor[change])


def _accept(s: _Members, step: _Step, accept: np.ndarray, d, scale, safety) -> tuple[np.ndarray, np.ndarray]:
    """Accepted steps: D updated (D[0] becomes the new state), output rows written, then a new order for
    the members whose last order + 1 steps had the same size; returns them and their step factors."""
    m = np.flatnonzero(accept)
    order = s.order
    om = order[m]
    s.D[m, om + 2] = d[m] - s.D[m, om + 1]
    s.D[m, om + 1] = d[m]
    upto = np.where(accept, order, -1)
    for i in range(MAX_ORDER, -1, -1):  # scipy's D[i] += D[i + 1] for i = order .. 0, in place
        np.add(s.D[:, i], s.D[:, i + 1], out=s.D[:, i], where=(upto >= i)[:, None])
    s.t[m] = step.t_new[m]
    s.counts["n_steps"][m] += 1
    s.n_equal[m] += 1
    s.jac_current[m] = False
    _dense(s, m, step.h[m], om)
    g = m[s.n_equal[m] >= om + 1]
    if len(g) == 0:
        return g, np.ones(0)
    o, sc = order[g], scale[g]
    e_minus = np.where(o > 1, _rms(ERROR_CONST[o - 1][:, None] * s.D[g, o] / sc), np.inf)
    e_same = _rms(ERROR_CONST[o][:, None] * d[g] / sc)
    e_plus = np.where(o < MAX_ORDER, _rms(ERROR_CONST[o + 1][:, None] * s.D[g, o + 2] / sc), np.inf)
    factors = np.stack([e_minus, e_same, e_plus], axis=1) ** (-1.0 / (o[:, None] + np.arange(3)))
    s.order[g] = o + np.argmax(factors, axis=1) - 1
    s.n_equal[g] = 0
    return g, np.minimum(MAX_FACTOR, safety[g] * factors.max(axis=1))


def _dense(s: _Members, m: np.ndarray, h: np.ndarray, order: np.ndarray) -> None:
    """The output rows of members m inside the steps they just took: scipy's BdfDenseOutput."""
    t_new = s.t[m]
    found = output_rows(s, m, t_new)
    if found is None:
        return
    who, rows, last = found
    j = np.arange(MAX_ORDER)
    hw = h[who, None]
    x = (s.tt[rows][:, None] - (t_new[who, None] - hw * j)) / (hw * (1 + j))
    weights = np.cumprod(x, axis=1) * (j < order[who, None])
    dm = s.D[m[who], : MAX_ORDER + 1]
    s.out[rows, m[who]] = dm[:, 0] + np.matmul(weights[:, None, :], dm[:, 1:])[:, 0]
    s.out_idx[m] = last


def integrate_bdf(run: Run, stop: Callable[[], bool] | None = None) -> Trajectory:
    return solve_members(run, stop, _Members, _attempt, "bdf_batch")
