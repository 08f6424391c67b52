"""``radau_batch``: the 3-stage Radau IIA method (order 5) for a batch of initial states (B, p), each
member with its own step size, Newton iteration and Jacobian: the stiff flow of an ensemble in one solve.

The method is scipy's ``Radau`` (Hairer and Wanner, Solving ODEs II, IV.8): the collocation system
solved by a simplified Newton iteration in the variables W = T^(-1) Z that split it into one real and
one complex linear system, the embedded error estimate of order 3 (filtered through the real system),
Gustafsson's predictive step-size controller, the last step's collocation polynomial as the predictor
of the next stages and as the dense output. Vectorised over the members (numpy), every right-hand side
one evaluation of the batch (the three stages of all members at once). With scipy's settings it makes
scipy's evaluations and Jacobians member for member (tested). What differs, each measured on the
Figure 1 net (docs/performance.md, "Batched stiff flows"):

* The linear systems (``_radau_linalg.py``). The Jacobian -H(theta) is symmetric: kept as
  Q diag(lam) Q^T (one ``eigh`` per member and Jacobian), (mu / h I - J)^(-1) =
  (h / mu) (I + Q diag(c lam / (1 - c lam)) Q^T) with c = h / mu, for the real mu and the complex one
  alike: no factorisation for a new step size (scipy's
  Radau factorises two p x p matrices, one complex, whenever h changes). A solve keeps only the
  eigenpairs with |c lam| > ``NEGLECT`` (the others change it by less than that fraction), in float32:
  it only steers the iteration, whose residuals are float64.
* The asked rtol is the trajectory's accuracy: the controller holds the order-3 estimate to RADAU5's
  transformation of it (``controller_tolerances``), the Newton iteration stops at 1e-3 rtol
  (``newton_tolerance``); RADAU5's convergence-rate memory (``faccon``) may end it after one correction
  (scipy always makes two).
* The step size changes whenever the controller says (scipy keeps it within [1, 1.2) to spare an LU).
* A new Jacobian only where the Newton iteration failed with an older one (scipy also after every step
  whose iteration contracted slower than 1e-3): a Hessian and an eigendecomposition cost about 3 ms a
  member, 170 Newton iterations' worth (64 Figure 1 nets); refreshing after steps with rates above 0.1
  took 9 Jacobians per member instead of 6 and was no faster.

A member's numbers depend on the others only through the width k of the float32 solve. A failure
(step size underflow; the ``max_nfe`` budget, which counts batched evaluations) stops the whole batch
with the output rows every member reached, as rk45 and bdf_batch do. No events.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from dlnlab.flow._members import field_values, jacobian_eigen, output_rows, solve_members
from dlnlab.flow._radau_linalg import MU_COMPLEX, MU_REAL, EigenbasisSolve
from dlnlab.flow._run import Run
from dlnlab.trajectory import Trajectory

__all__ = ["integrate_radau"]

S6 = 6**0.5
C = np.array([(4 - S6) / 10, (4 + S6) / 10, 1.0])  # the stage times
E = np.array([-13 - 7 * S6, -13 + 7 * S6, -1.0]) / 3  # the error estimate's weights on Z
T = np.array([
    [0.09443876248897524, -0.14125529502095421, 0.03002919410514742],
    [0.25021312296533332, 0.20412935229379994, -0.38294211275726192],
    [1.0, 1.0, 0.0],
])  # fmt: skip
TI = np.array([
    [4.17871859155190428, 0.32768282076106237, 0.52337644549944951],
    [-4.17871859155190428, -0.32768282076106237, 0.47662355450055044],
    [0.50287263494578682, -2.57192694985560522, 0.59603920482822492],
])  # fmt: skip
# the collocation polynomial of a step: y(t + x h) = y + sum_j (P^T Z)_j x^(j + 1)
P = np.array([
    [13 / 3 + 7 * S6 / 3, -23 / 3 - 22 * S6 / 3, 10 / 3 + 5 * S6],
    [13 / 3 - 7 * S6 / 3, -23 / 3 + 22 * S6 / 3, 10 / 3 - 5 * S6],
    [1 / 3, -8 / 3, 10 / 3],
])  # fmt: skip
# h times the W system's matrix, real form: row 0 mu_r W0, rows 1, 2 the parts of mu_c (W1 + i W2)
MU, MV = MU_COMPLEX.real, MU_COMPLEX.imag
M_W = np.array([[MU_REAL, 0, 0], [0, MU, -MV], [0, MV, MU]])

NEWTON_MAXITER = 6
MIN_FACTOR, MAX_FACTOR = 0.2, 10.0
# The tolerances the controller holds its error estimate to: RADAU5's transformation
# rtol' = TOL_SCALE rtol^TOL_EXPONENT, atol' = atol rtol' / rtol (Hairer and Wanner use 0.1; 0.03 measured
# here: see controller_tolerances)
TOL_SCALE, TOL_EXPONENT = 0.03, 2 / 3
NEWTON_FRACTION = 1e-3  # the Newton iteration stops at this fraction of rtol (see newton_tolerance)
JAC_RATE = math.inf  # a new Jacobian after a step whose Newton rate was above this (scipy: 1e-3; see above)
HOLD = (1.0, 1.0)  # a step-size factor in [HOLD[0], HOLD[1]) is not applied (scipy: [0, 1.2), to spare an LU)
EARLY = True  # RADAU5's faccon may end the iteration after one correction (scipy: never)
NEGLECT = 0.01  # eigenpairs with |c lam| at most this are left out of a solve (read per step)


def controller_tolerances(rtol: float, atol: float) -> tuple[float, float]:
    """The tolerances the step-size controller holds the embedded error estimate to, for the accuracy
    (rtol, atol) asked of the trajectory. The estimate is of order 3 and the method of order 5, so the
    steps are far more accurate than the estimate says: held to rtol itself, Figure 1 members ended
    0.04 - 0.2 rtol from their tight solves at rtol 1e-9, in 2,460 steps where 1,100 do. RADAU5 maps rtol
    to 0.1 rtol^(2/3) for this; with 0.1 (1e-7 at rtol 1e-9) the members ended 4 - 11 rtol off, with
    0.03 (30 rtol at 1e-9, 3 rtol at 1e-6) within 3 rtol (docs/performance.md)."""
    tight = TOL_SCALE * rtol**TOL_EXPONENT
    return tight, atol * tight / rtol


def newton_tolerance(rtol: float, controller_rtol: float) -> float:
    """The Newton iteration's tolerance in units of the controller's: NEWTON_FRACTION of the asked rtol.
    The remaining correction is a systematic error of every step (the predictor's error, left by the
    same contraction each time), so it adds up along the trajectory: with the controller at 30 rtol,
    stopping at 3e-4 of its tolerance left Figure 1 members up to 19 rtol off, at 1e-4 up to 7, at
    3.3e-5 (1e-3 rtol) within 3 (RADAU5's 0.03, at the controller's rtol = rtol: 23 rtol). Never below
    10 eps of the state, which rounding would not let the iteration reach (scipy's floor)."""
    floor = 10 * np.finfo(float).eps / controller_rtol
    return max(floor, min(0.03, NEWTON_FRACTION * rtol / controller_rtol))


def _rms(x: np.ndarray) -> np.ndarray:
    """RMS per member of x (n, p), or of the stages x (3, n, p) together."""
    if x.ndim == 2:
        return np.sqrt(np.einsum("np,np->n", x, x) / x.shape[1])
    return np.sqrt(np.einsum("inp,inp->n", x, x) / (3 * x.shape[2]))


def _mix(m: np.ndarray, x: np.ndarray) -> np.ndarray:
    """sum_j m[i, j] x[j] for the stages x (3, n, p): one matrix product."""
    return np.matmul(m, x.reshape(3, -1)).reshape(x.shape)


class _Members:
    """Every member's state: y, f(y), time, step, the last step's collocation polynomial, the
    Jacobian (eigenvalues by decreasing size, eigenvectors as the rows of ``qt``), the controller's
    memory and the counts."""

    def __init__(self, run: Run, y0: np.ndarray) -> None:
        self.run, self.field, self.solver = run, run.field, run.solver
        self.b, self.p = b, p = y0.shape
        self.rtol, self.atol = controller_tolerances(self.solver.rtol, self.solver.atol)
        self.newton_tol = newton_tolerance(self.solver.rtol, self.rtol)
        self.t_end = run.t_end
        self.max_step = float(self.solver.options.get("max_step", np.inf))
        self.t = np.full(b, float(run.t[0]))
        self.y = y0.copy()
        self.counts = {k: np.zeros(b, dtype=np.int64) for k in ("nfe", "njev", "n_steps", "n_rejected")}
        self.f = self.evaluate(self.y, slice(None))
        self.h = self.initial_steps()
        self.h_start = self.h.copy()  # the step proposed when the present one began (scipy's h_abs_old)
        self.h_old, self.err_old = np.full(b, np.nan), np.full(b, np.nan)
        self.rejected = np.zeros(b, dtype=bool)  # the present step was rejected at least once
        self.faccon = np.ones(b)  # RADAU5's theta / (1 - theta) of the last Newton iteration
        self.poly = np.zeros((3, b, p))  # the last step's polynomial (P^T Z): y_old + sum_j x^(j+1) poly[j]
        self.dy_last = np.zeros((b, p))  # its y - y_old
        self.h_last = np.ones(b)  # its length
        self.lam, self.abs_lam = np.zeros((b, p)), np.zeros((b, p))
        self.qt = np.zeros((b, p, p), dtype=np.float32)
        self.jac_current = np.zeros(b, dtype=bool)
        self.refresh(np.arange(b), self.y)
        self.tt = run.t.numpy().astype(np.float64)
        # the output rows, handed out once every member has written them; torch's allocation (the result
        # is this buffer): numpy's asks for huge pages, whose first touch cost 0.35 - 0.6 s here (304 MB)
        self.out = torch.empty((len(run.t), b, p), dtype=torch.float64).numpy()
        self.out[0] = y0
        self.out_idx = np.ones(b, dtype=np.int64)

    def evaluate(self, y: np.ndarray, members, per_member: int = 1) -> np.ndarray:
        """The right-hand side at y (n, p) or (3, n, p), the states of ``members`` (indices, a mask or a
        slice; ``per_member`` evaluations each): one batched evaluation."""
        self.run.counter.check_budget()
        self.counts["nfe"][members] += per_member
        return field_values(self.field, y)

    def initial_steps(self) -> np.ndarray:
        """scipy's select_initial_step for an error estimator of order 3, per member (or first_step)."""
        span = min(self.t_end - float(self.t[0]), self.max_step)
        if "first_step" in self.solver.options:
            return np.full(self.b, min(float(self.solver.options["first_step"]), span))
        y0, f0 = self.y, self.f
        scale = self.atol + self.rtol * np.abs(y0)
        d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
        h0 = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / np.maximum(d1, 1e-300))
        h0 = np.minimum(h0, self.t_end - float(self.t[0]))
        f1 = self.evaluate(y0 + h0[:, None] * f0, slice(None))
        d2 = _rms((f1 - f0) / scale) / h0
        big = np.maximum(d1, d2)
        h1 = np.where(big <= 1e-15, np.maximum(1e-6, h0 * 1e-3), (0.01 / np.maximum(big, 1e-300)) ** 0.25)
        return np.minimum(np.minimum(100 * h0, h1), span)

    def refresh(self, members: np.ndarray, y: np.ndarray) -> None:
        """The Jacobian of ``members`` at their states y (n, p), as its eigendecomposition (float32: it
        only steers the Newton iteration and filters the error estimate)."""
        if not np.isfinite(y).all():
            raise self.run.fail("non-finite state", float(self.t[members].min()))
        self.lam[members], self.qt[members] = jacobian_eigen(self.field, y)
        self.abs_lam[members] = np.abs(self.lam[members])
        self.counts["njev"][members] += 1
        self.jac_current[members] = True


class _Step:
    """One attempted step of every unfinished member: the predictor, the Newton iteration, the error."""

    def __init__(self, s: _Members) -> None:
        self.s = s
        self.act = act = s.t < s.t_end
        room = s.t_end - s.t
        s.h = np.where(act, np.minimum(np.minimum(s.h, room), s.max_step), s.h)
        if bool((act & (s.h < 10 * np.spacing(s.t))).any()):
            raise s.run.fail("step size underflow", float(s.t[act].min()))
        self.h = h = np.where(act, s.h, 1.0)
        self.t_new = np.where(h == room, s.t_end, s.t + h)
        self.inv_scale = 1.0 / (s.atol + s.rtol * np.abs(s.y))
        # the stage times on the last step's polynomial, (B, 3); a finished member's stages stay at its
        # state (it is evaluated along in the whole batch's evaluations: no extrapolation far out)
        x = 1 + (np.where(act, h, 0.0) / s.h_last)[:, None] * C
        z = np.empty((3, s.b, s.p))
        for i in range(3):  # scipy's Z0 = sol(t + h C) - y
            xi = x[:, i, None]
            np.multiply(xi, s.poly[0], out=z[i])
            z[i] += xi * xi * s.poly[1] + xi**3 * s.poly[2] - s.dy_last
        self.z = z
        self.solve = EigenbasisSolve(s.lam, s.abs_lam, s.qt, h, NEGLECT)

    def newton(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The simplified Newton iteration of every member on W = TI Z: (converged, iterations, rate);
        self.z holds the stages. Later corrections only for the members still iterating (the whole
        batch while they are more than half of it: no copies, the others idle along)."""
        s, z, h = self.s, self.z, self.h
        w = _mix(TI, z)
        converged = np.zeros(s.b, dtype=bool)
        n_iter, rate, norm_old = np.zeros(s.b, dtype=np.int64), np.full(s.b, np.nan), np.full(s.b, np.nan)
        s.faccon = np.maximum(s.faccon, np.finfo(float).eps) ** 0.8
        it = np.flatnonzero(self.act)
        for k in range(NEWTON_MAXITER):
            whole = 2 * len(it) > s.b
            rows = slice(None) if whole else it
            zr, wr = (z, w) if whole else (z[:, it], w[:, it])
            f = s.evaluate(s.y[rows] + zr, it, 3)
            r = _mix(TI, f)
            r -= _mix(M_W, wr) / h[rows, None]
            dw = self.solve.both(r, rows)
            if whole:
                dw = dw[:, it]
            norm = _rms(dw * self.inv_scale[it])
            n_iter[it] = k + 1
            if k:
                rate[it] = norm / norm_old[it]
            rt = rate[it]
            bad = ~np.isfinite(norm)
            if k:
                bad |= (rt >= 1) | (rt ** (NEWTON_MAXITER - k) / (1 - rt) * norm > s.newton_tol)
                s.faccon[it[~bad]] = rt[~bad] / (1 - rt[~bad])
            good = it[~bad]
            if len(good) == s.b:
                w += dw
                z = _mix(T, w)
            else:
                w[:, good] += dw[:, ~bad]
                z[:, good] = _mix(T, w[:, good])
            done = ~bad & ((norm == 0) | (((k > 0) | EARLY) & (s.faccon[it] * norm < s.newton_tol)))
            converged[it[done]] = True
            norm_old[it] = norm
            it = it[~bad & ~done]
            if len(it) == 0:
                break
        self.z = z
        return converged, n_iter, rate

    def error(self, converged: np.ndarray) -> np.ndarray:
        """The embedded error estimate's norm for the ``converged`` members (inf for the others); a member
        whose step was rejected before gets the estimate through one more evaluation (scipy's Radau).
        Most members converged: the whole batch (no copies of their eigenvectors), the others idle along."""
        s, m = self.s, np.flatnonzero(converged)
        rows = slice(None) if 2 * len(m) > s.b else m
        z, h = self.z[:, rows], self.h[rows]
        ze = (E[0] * z[0] + E[1] * z[1] + E[2] * z[2]) / h[:, None]
        inv_scale = 1.0 / (s.atol + s.rtol * np.maximum(np.abs(s.y[rows]), np.abs(s.y[rows] + z[2])))
        err = np.full(s.b, np.inf)
        err_vec = self.solve.real(s.f[rows] + ze, rows)
        err[rows] = _rms(err_vec * inv_scale)
        err[~converged] = np.inf
        again = np.flatnonzero(converged & s.rejected & (err > 1))
        if len(again):
            at = again if isinstance(rows, slice) else np.searchsorted(m, again)  # their rows above
            f = s.evaluate(s.y[again] + err_vec[at], again)
            err[again] = _rms(self.solve.real(f + ze[at], again) * inv_scale[at])
        return err


def _predict_factor(h, h_old, err, err_old) -> np.ndarray:
    """Gustafsson's predictive controller (scipy's predict_factor), per member."""
    with np.errstate(divide="ignore"):
        two_step = np.isfinite(h_old) & np.isfinite(err_old) & (err > 0)
        multiplier = np.where(two_step, h / h_old * (err_old / np.where(err > 0, err, 1.0)) ** 0.25, 1.0)
        return np.minimum(1.0, multiplier) * err**-0.25


def _attempt(s: _Members) -> None:
    """One step attempt of every unfinished member: Newton, then per member a new Jacobian (a failure
    with an older one; the step is tried again), half the step (a failure with a current one), a
    rejection by the error estimate, or an accepted step."""
    step = _Step(s)
    converged, n_iter, rate = step.newton()
    failed = step.act & ~converged
    again = np.flatnonzero(failed & ~s.jac_current)
    if len(again):
        s.refresh(again, s.y[again])
    halve = failed & s.jac_current
    halve[again] = False
    s.h[halve] *= 0.5
    err = step.error(converged)
    safety = 0.9 * (2 * NEWTON_MAXITER + 1) / (2 * NEWTON_MAXITER + n_iter)
    factor = safety * _predict_factor(step.h, s.h_old, err, s.err_old)
    rejected = converged & (err > 1)
    s.h[rejected] *= np.maximum(MIN_FACTOR, factor[rejected])
    s.rejected |= rejected
    s.counts["n_rejected"] += halve | rejected
    accept = np.flatnonzero(converged & (err <= 1))
    if len(accept):
        _accept(s, step, accept, np.minimum(MAX_FACTOR, factor[accept]), err[accept], n_iter, rate)


def _accept(s: _Members, step: _Step, m: np.ndarray, factor, err, n_iter, rate) -> None:
    """Accepted steps of members m: the output rows inside them, the new state and f, the next step
    size, a new Jacobian where the Newton iteration contracted slowly."""
    all_of_them = len(m) == s.b
    z, h = (step.z if all_of_them else step.z[:, m]), step.h[m]
    poly = _mix(P.T, z)
    _dense(s, m, poly, h, step.t_new[m])
    if 2 * len(m) > s.b:  # the whole batch: no copies
        y_next = s.y.copy()
        y_next[m] += z[2]
        f_new = s.evaluate(y_next, m)
        y_new, f_new = (y_next, f_new) if all_of_them else (y_next[m], f_new[m])
    else:
        y_new = s.y[m] + z[2]
        f_new = s.evaluate(y_new, m)
    recompute = (n_iter[m] > 2) & (rate[m] > JAC_RATE)
    factor = np.where(~recompute & (factor >= HOLD[0]) & (factor < HOLD[1]), 1.0, factor)
    s.poly[:, m], s.dy_last[m], s.h_last[m] = poly, z[2], h
    s.t[m], s.y[m], s.f[m] = step.t_new[m], y_new, f_new
    s.h_old[m], s.err_old[m] = s.h_start[m], err
    s.h[m] = h * factor
    s.h_start[m] = s.h[m]
    s.rejected[m] = False
    s.counts["n_steps"][m] += 1
    s.jac_current[m] = False
    if recompute.any():
        s.refresh(m[recompute], y_new[recompute])


def _dense(s: _Members, m: np.ndarray, poly: np.ndarray, h: np.ndarray, t_new: np.ndarray) -> None:
    """The output rows of members m inside the steps they are taking: the collocation polynomial."""
    found = output_rows(s, m, t_new)
    if found is None:
        return
    who, rows, last = found
    x = ((s.tt[rows] - s.t[m[who]]) / h[who])[:, None]
    values = poly[2, who]  # Horner, in place
    for j in (1, 0):
        values *= x
        values += poly[j, who]
    values *= x
    values += s.y[m[who]]
    s.out[rows, m[who]] = values
    s.out_idx[m] = last


def integrate_radau(run: Run, stop: Callable[[], bool] | None = None) -> Trajectory:
    return solve_members(run, stop, _Members, _attempt, "radau_batch")
