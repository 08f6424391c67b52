"""scipy's stiff methods (LSODA, BDF, Radau) through ``scipy.integrate.solve_ivp``, exact Jacobian.

The Jacobian of -grad L is -Hessian(theta) (dense p x p, in closed form, on theta only). Everything
that must stop the solve with the trajectory so far goes through a terminal event of solve_ivp,
checked after every step, because anything raised inside ``solve_ivp`` loses its outputs: the
evaluation budget (``max_nfe``), an interrupt (the caller's ``stop()``, or Ctrl+C, which this module
turns into a stop while it runs) and the user's events (located by solve_ivp's own root finding on
the step's dense output). The same watch event counts the accepted steps, which solve_ivp does not
report.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

import numpy as np
import scipy.integrate
import torch

from dlnlab.flow._run import Run
from dlnlab.status import Status
from dlnlab.trajectory import Interrupted, Trajectory

__all__ = ["integrate_scipy", "SCIPY_NAMES"]

SCIPY_NAMES = {"bdf": "BDF", "radau": "Radau", "lsoda": "LSODA"}


@contextlib.contextmanager
def _ctrl_c_as_stop(flag: list) -> Iterator[None]:
    """While solving, Python's own Ctrl+C (SIGINT with its default handler) sets ``flag`` instead of
    raising inside solve_ivp, so the solve stops at the next step end with its outputs kept."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: flag.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def integrate_scipy(run: Run, stop: Callable[[], bool] | None = None) -> Trajectory:
    problem, layout, theta0, t, solver = run.problem, run.layout, run.outputs[0][0], run.t, run.solver
    early = run.settled_at_start()
    if early is not None:
        return early
    counter, t_end, t0 = run.counter, run.t_end, float(t[0])
    every, next_progress = (t_end - t0) / 100, [t0]
    ctrl_c: list = []

    def fun(tt, y):
        counter.nfe += 1
        if run.progress is not None and tt >= next_progress[0]:
            run.progress(float(tt), t_end)
            next_progress[0] = float(tt) + every
        return run.field(tt, torch.from_numpy(y)).numpy()

    def jac(tt, y):
        run.njev += 1
        return run.field.jacobian(torch.from_numpy(y)).numpy()

    fired: list[float] = []

    def watch(tt, y) -> float:
        """1 while the solve goes on; when it must stop at a step's end t_s, t_s - t from then on, so
        that solve_ivp's root finding on the step lands on t_s itself."""
        if fired:
            return fired[0] - tt
        counter.n_steps += 1
        counter.t_reached = float(tt)
        over = solver.max_nfe is not None and counter.nfe >= solver.max_nfe
        if over or ctrl_c or (stop is not None and stop()):
            fired.append(float(tt))
            return 0.0
        return 1.0

    watch.terminal = True
    user = []
    for ev in run.events:

        def value(tt, y, ev=ev) -> float:
            return float(ev(problem, layout, torch.from_numpy(y)))

        value.terminal, value.direction = True, -1.0  # from > 0 before the event to <= 0 at it
        user.append(value)
    with _ctrl_c_as_stop(ctrl_c):
        sol = scipy.integrate.solve_ivp(
            fun, (t0, t_end), theta0.numpy().astype(np.float64, copy=True), method=SCIPY_NAMES[solver.method],
            t_eval=t.numpy(), rtol=solver.rtol, atol=solver.atol, jac=jac, events=[watch, *user], **solver.options,
        )  # fmt: skip
    counter.n_steps -= 1  # solve_ivp evaluates the events once at t0 too
    if sol.t.size > 1:
        run.add(torch.from_numpy(np.ascontiguousarray(sol.y[:, 1:].T)).to(theta0.dtype))
    if sol.status == -1:
        raise run.fail(f"scipy {SCIPY_NAMES[solver.method]}: {sol.message}", counter.t_reached)
    if sol.status == 1 and sol.t_events[0].size:
        t_stop = float(sol.t_events[0][0])
        if solver.max_nfe is not None and counter.nfe >= solver.max_nfe:
            raise run.fail(f"budget of {solver.max_nfe} right-hand-side evaluations exhausted", t_stop)
        msg = f"interrupted at t = {t_stop:.6g}; output kept up to t = {float(t[run.n_out - 1]):.6g}"
        raise Interrupted(run.result(Status.INTERRUPTED, msg))
    if sol.status == 1:
        i = next(k for k, te in enumerate(sol.t_events[1:]) if te.size)
        y_event = torch.from_numpy(np.array(sol.y_events[i + 1][0], dtype=np.float64))
        return run.event_result(i, float(sol.t_events[i + 1][0]), y_event)
    if run.progress is not None:
        run.progress(t_end, t_end)
    msg = f"reached t = {t_end:g} ({len(t)} output points); scipy {SCIPY_NAMES[solver.method]}"
    return run.result(Status.OK, msg)
