"""SUNDIALS CVODE (through scikit-sundae): BDF with a matrix-free Newton-Krylov solver.

The stiff path for nets too big for a dense p x p Jacobian. CVODE's Newton iterations solve
(I - gamma J) x = r by GMRES, and GMRES only needs products J v = -H(theta) v: the closed-form
Hessian-vector product, about 2.5 gradients, never a p x p matrix. A learnt mode makes the flow stiff
through a few clusters of large Hessian eigenvalues (about h m_k^(2-2/h)), which GMRES resolves in a
few iterations, so the steps follow the dynamics instead of the stability bound of an explicit method.
Measured (docs/scale.md): width 64, depth 5, t = 100: 1.5 s against 12.6 s for dopri5 at
the same tolerances, the two agreeing to 1.7e-9; on the Figure 1 net LSODA with the dense Jacobian
stays faster (0.57 s against 1.2 s), so ``flow.method=auto`` takes CVODE only where its cost model
says so.

The solve is advanced one output time at a time (``step(t_k)``, CVODE's own interpolation), so the
trajectory so far is kept when the budget, an interrupt or an error stops it; events are CVODE's
root finding. CVODE's error test is less conservative than LSODA's at equal tolerances (on the
Figure 1 net: 6e-6 against 6e-7 at rtol 1e-9; 9e-7 at rtol 1e-10).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dlnlab.flow._run import BudgetExceeded, Run
from dlnlab.status import Status
from dlnlab.trajectory import Interrupted, Trajectory

__all__ = ["integrate_cvode", "KRYLOV_DIM"]

KRYLOV_DIM = 20  # GMRES basis: 10 and 20 took the same steps on the Figure 1 net, 5 needed 15% more


def integrate_cvode(run: Run, stop: Callable[[], bool] | None = None) -> Trajectory:
    import sksundae

    problem, layout, theta0, t, solver = run.problem, run.layout, run.outputs[0][0], run.t, run.solver
    early = run.settled_at_start()
    if early is not None:
        return early
    counter = run.counter
    last_t = [float(t[0])]

    def as_theta(y) -> torch.Tensor:  # CVODE's arrays are read-only views: copy once into torch
        return torch.from_numpy(np.array(y, dtype=np.float64))

    def rhs(tt, y, yp) -> None:
        counter.check_budget()
        if tt != last_t[0]:  # a new time: a step attempted (Newton iterations revisit the same time)
            counter.n_steps += 1
            last_t[0] = tt
        yp[:] = run.field(tt, as_theta(y)).numpy()

    def jac_times(tt, y, yp, v, jv) -> None:
        run.njev += 1
        jv[:] = run.field.jvp(as_theta(y), as_theta(v)).numpy()

    options = {"krylov_dim": KRYLOV_DIM, "max_num_steps": 1_000_000, **solver.options}
    events = {}
    if run.events:

        def events_fn(tt, y, out) -> None:
            theta = as_theta(y)
            out[:] = [float(ev(problem, layout, theta)) for ev in run.events]

        events_fn.terminal = [True] * len(run.events)
        events_fn.direction = [-1] * len(run.events)  # from > 0 before the event to <= 0 at it
        events = {"eventsfn": events_fn, "num_events": len(run.events)}
    cvode = sksundae.cvode.CVODE(
        rhs, method="BDF", rtol=solver.rtol, atol=solver.atol, linsolver="gmres",
        jactimes=sksundae.cvode.CVODEJacTimes(None, jac_times), **events, **options,
    )  # fmt: skip
    cvode.init_step(float(t[0]), theta0.numpy().astype(np.float64, copy=True))
    every, next_progress = max(1, (len(t) - 1) // 100), 0
    for k in range(1, len(t)):
        try:
            res = cvode.step(float(t[k]), tstop=run.t_end)
        except BudgetExceeded as exc:
            raise run.fail(str(exc), last_t[0]) from exc
        t_now, y_now = float(np.atleast_1d(res.t)[-1]), np.atleast_2d(res.y)[-1]
        if not res.success:
            raise run.fail(f"sundials CVODE: {res.message} (status {res.status})", t_now)
        if res.t_events is not None and len(res.t_events) and t_now < float(t[k]):
            index = int(np.flatnonzero(np.atleast_2d(res.i_events)[-1])[0])
            t_event = float(np.atleast_1d(res.t_events)[-1])
            return run.event_result(index, t_event, torch.from_numpy(np.array(y_now, dtype=np.float64)))
        run.add(torch.from_numpy(np.array(y_now[None], dtype=np.float64)))
        counter.t_reached = float(t[k])
        if run.progress is not None and k >= next_progress:
            run.progress(float(t[k]), run.t_end)
            next_progress = k + every
        if stop is not None and stop():
            msg = f"interrupted at t = {float(t[k]):.6g}; output kept up to t = {float(t[k]):.6g}"
            raise Interrupted(run.result(Status.INTERRUPTED, msg))
    if run.progress is not None:
        run.progress(run.t_end, run.t_end)
    msg = f"reached t = {run.t_end:g} ({len(t)} output points); sundials CVODE (BDF, GMRES)"
    return run.result(Status.OK, msg)
