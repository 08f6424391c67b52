"""The exact gradient flow dtheta/dt = -grad L(theta) on the packed masked weights theta.

Four families of integrators, chosen explicitly by a :class:`Solver` (diffrax style):

* torchdiffeq (``TORCHDIFFEQ_ADAPTIVE``, ``TORCHDIFFEQ_FIXED``): ``torchdiffeq.odeint`` called in chunks
  of ``CHUNK_POINTS`` output points, each chunk continuing from the last state (and, for adaptive
  methods, from the last accepted step size). A failure keeps every output point the solver passed
  (finished chunks, plus a replay of the failed chunk up to the failure).
* scipy stiff (``SCIPY_STIFF``): ``scipy.integrate.solve_ivp`` (BDF, Radau, LSODA) with the exact
  Jacobian -Hessian(theta) (dense p x p, on theta only) and ``t_eval``.
* SUNDIALS (``SUNDIALS``: ``cvode``): CVODE's BDF with GMRES on exact Hessian-vector products, the
  stiff path without a p x p matrix (``_sundials.py``).
* dlnlab's own (``NATIVE``): ``rk45``, Dormand-Prince 5(4) with contiguous stages, for wide nets where
  torchdiffeq's per-step vector work costs more than the gradients (``_rk45.py``); ``radau_batch`` and
  ``bdf_batch``, Radau IIA (order 5) and a variable-order BDF for a batch (B, p) (an ensemble's stiff
  flow) in which every member takes its own steps with its own Jacobian, kept as an eigendecomposition
  of the symmetric -H (``_radau.py``, ``_bdf.py``; radau_batch holds each member within a few rtol of
  its exact flow, bdf_batch is faster and about 2,000 times less accurate; a single theta works too,
  but one member is cheaper with lsoda). On the CPU here; no events.

A batch of initial states (B, p) keeps each member under its own error control (``_batch.py``):
dopri5 through torchode (per-member steps), the other adaptive torchdiffeq methods as one system
with a per-member norm, scipy's and SUNDIALS' stiff methods member by member, rk45, radau_batch and
bdf_batch as one batch with per-member steps. A batch may also be solved in chunks of consecutive members,
each an ``integrate`` of its own, joined by :func:`join_chunks` (``_chunks.py``: a run spreads an
ensemble's flow over its worker processes so).

Events are continuous functions ``f(problem, dims, theta) -> float`` that are > 0 before the event and
<= 0 at it (:class:`LossLevel`, :class:`Convergence`, or any callable with that signature, an optional
``name`` (else its ``__name__``) and an optional ``batched = True`` when it also maps states (K, p) to
values (K,)). The first event to fire stops the solve; its time is located by root finding (torchdiffeq's
event bisection or solve_ivp's on the step's dense output), not just at output points. An event is
already fired if it is <= 0 at t_eval[0]. A sign change that reverts between two checks is missed
(checks: every output point for torchdiffeq, every step end for scipy).

Everything runs in the problem's dtype (float64), under ``torch.no_grad()``, with one torch thread and
one BLAS thread (``threadpoolctl``; restored afterwards).

Names are imported on first use (``dlnlab._lazy``): ``from dlnlab.flow import DEFAULT_RTOL`` reads
``solver.py`` alone (numpy), so the lab's config schema refuses a bad value before torch is imported.
"""

from dlnlab._lazy import lazy_exports

_EXPORTS = {
    "._integrate": ["integrate"],
    ".solver": [
        "TORCHDIFFEQ_ADAPTIVE", "TORCHDIFFEQ_FIXED", "SCIPY_STIFF", "SUNDIALS", "NATIVE", "METHODS", "DEFAULT_METHOD",
        "DEFAULT_RTOL", "DEFAULT_ATOL", "CHUNK_POINTS", "CHUNK_POINTS_EVENTS", "EXPLICIT_ADAMS_MAX_ORDER", "Solver",
        "as_solver",
    ],
    ".field": ["GradientFlow", "ModifiedFlow", "check_problem_dims", "time_grid", "vector_field"],
    ".events": ["LossLevel", "Convergence"],
    "._run": ["FlowResult", "FlowSolverError", "FlowInterrupted"],
    "._chunks": ["member_chunks", "join_chunks", "not_started"],
    "dlnlab.trajectory": ["Trajectory"],
}  # fmt: skip

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
