"""GD at the edge of stability (``sgd.edge=true``, on with ``flow.central``): one series per learning
rate, ``edge_lr_<lr>``, GD recomputed at every step through its crossing of 2/eta.

The (S)GD series records GD on the grid (every dt of time), which at a large learning rate holds one
point in several steps and so aliases the period-2 oscillation. This kind runs full-batch GD again
with the core's :func:`dlnlab.descent.gd` (the same float64 update from the same theta0; no
minibatches, no momentum, so it is the same trajectory to rounding) and records:

* the *run*: ``EDGE_STEPS`` points evenly spaced in steps over the whole run (every step when the run
  has at most ``EDGE_STEPS`` steps), with GD's top ``log.top_eigs`` Hessian eigenvalues
  (``run_step``, ``run_t``, ``run_loss``, ``run_top_eigs`` in ``series/edge_lr_<lr>.npz``);
* the *window*: every step of the stretch around the first crossing, ``EDGE_STEPS`` steps centred on the
  first sampled point with S >= 2/eta (the whole run when it has at most ``EDGE_STEPS`` steps; none when
  the run never reaches 2/eta): ``step``, ``t``, ``loss``, ``top_eigs``, ``amplitude`` (the period-2
  amplitude along the top eigenvector);
* with ``flow.central``, over the window: both flows at GD's step times (the ``cflow_lr`` and ``flow``
  series' states where those hold them, else solved alike: ``_flows_in_window``), GD's window average (``WINDOW`` steps) and the predictions: ``avg_loss``,
  ``predicted_loss``, ``flow_loss``, ``central_sharpness``, ``dist_avg_central``, ``dist_avg_flow``,
  ``measured_variance``, ``predicted_variance``;
* the GFS sharpness at ``GFS_POINTS`` run points (``gfs_t``, ``gfs_sharpness``).

Every number comes from ``dlnlab.eos``' functions; the summary entry holds an
:class:`~dlnlab.lab.results._eos.EdgeEntry` (``edge``) and a
:class:`~dlnlab.lab.results._eos.PredictionEntry` (``predictions``, flow.central). The window's
curves go to the GD series' TensorBoard run (``edge/...``).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings

import torch

from dlnlab.descent import gd
from dlnlab.eos import (
    WINDOW,
    CentralFlow,
    describe_central,
    distance_comparison,
    edge_diagnostics,
    gfs_sharpness,
    oscillation_amplitude,
    oscillation_variance,
    parting_time,
    sharpness_along,
    window_average,
)
from dlnlab.errors import SeriesWarning
from dlnlab.flow import integrate
from dlnlab.lab.config import EDGE_STEPS
from dlnlab.lab.record import Thinner, log10_positive, log_text
from dlnlab.lab.results import EdgeEntry, PredictionEntry, edge_lines, settled_on_edge
from dlnlab.lab.runner._central import central_solver
from dlnlab.lab.runner._context import SeriesContext
from dlnlab.lab.runner._kind import Resume, SeriesDone, SeriesKind, SeriesTask
from dlnlab.lab.runner._sgd import blowup_norm
from dlnlab.network import unpack
from dlnlab.rundir import EDGE_PREFIX, save_npz, series_name, signals
from dlnlab.status import Status
from dlnlab.trajectory import Trajectory

__all__ = ["EdgeKind", "GFS_POINTS", "odd_stride"]

GFS_POINTS = 6  # run points whose gradient-flow limit is solved (evenly spaced)


class EdgeKind(SeriesKind):
    """GD at every step through the crossing of 2/eta, its edge diagnostics and (flow.central) the
    central flow's predictions against it."""

    # the flow's and the central flow's states at this lr's exact times: reused in the window (_predictions)
    key, prefix, needs, resume = "edge", EDGE_PREFIX, ("flow", "central"), Resume.RERUN

    def enabled(self, plan) -> bool:
        return bool(plan.cfg.sgd.edge or plan.cfg.flow.central)

    def run(self, ctx: SeriesContext, task: SeriesTask) -> SeriesDone:
        lr = float(task.lr)
        entry: dict = {
            "lr": None,
            "edge_lr": lr,
            "status": Status.OK,
            "message": "",
            "max_dist_to_flow": None,
        }
        ctx.progress.start(task.name, float(ctx.plan.cfg.flow.t_max))
        t0 = time.perf_counter()
        arrays: dict = {}
        try:
            with signals.deferred(raise_at_end=False):
                arrays = _edge(ctx, task, entry)
                save_npz(ctx.out / "series" / f"{task.name}.npz", **arrays)
                _log_edge(ctx, lr, arrays, entry)
        except Exception as err:  # noqa: BLE001 - this series' failure only
            entry.update(status=Status.ERROR, message=f"{type(err).__name__}: {err}")
            warnings.warn(f"{task.name}: {entry['message']}", SeriesWarning, stacklevel=2)
        entry["wall_time_s"] = time.perf_counter() - t0
        ctx.progress.done(f"{entry['status']}: {entry.get('steps')} steps, {entry['wall_time_s']:.2f} s")
        # the arrays stay in their file only: they are not a grid series (no saddle analysis, no figures of
        # the run's series), and dlnlab.plots' eos figure reads them from there
        return SeriesDone(entry)


def _gd(ctx: SeriesContext, lr: float, steps: int, record: list[int], k: int):
    """GD's iterates at ``record`` (run to its last) and their top-k spectrum (finite rows only)."""
    plan = ctx.plan
    run = gd(
        plan.problem, ctx.layout, plan.theta0, lr, max(record), record_steps=record, blowup=blowup_norm(plan)
    )
    ok = torch.isfinite(run.theta).all(dim=-1)
    theta, t = run.theta[ok], run.t[ok]
    spec = sharpness_along(plan.problem, ctx.layout, theta, k, dense_max=plan.cfg.log.hessian_dense_max)
    loss = plan.problem.loss(unpack(theta, ctx.layout))
    step = torch.as_tensor(record[: len(t)])
    return run, step, t, theta, loss, spec


def _edge(ctx: SeriesContext, task: SeriesTask, entry: dict) -> dict:
    """The series' arrays; fills ``entry``."""
    plan, k = ctx.plan, int(ctx.plan.cfg.log.top_eigs)
    lr, steps = float(task.lr), int(task.times.steps[-1])
    thr = 2.0 / lr
    stride = odd_stride(steps, EDGE_STEPS)
    record = run_record(steps, stride)
    run, r_step, r_t, r_theta, r_loss, r_spec = _gd(ctx, lr, steps, record, k)
    diverged = run.status == Status.DIVERGED or len(r_t) < len(record)
    levels = plan.problem.plateau_levels(ctx.layout.r_max)
    diag = edge_diagnostics(
        r_t, r_spec.sharpness, r_loss, lr, diverged=diverged, loss_floor=float(levels[-1])
    )
    arrays = {"run_step": r_step.numpy(), "run_t": r_t.numpy(), "run_loss": r_loss.numpy(),
              "run_top_eigs": r_spec.values.numpy()}  # fmt: skip
    window = None
    if stride == 1:
        window = (r_step, r_t, r_theta, r_loss, r_spec)
    elif diag.t_edge is not None:  # every step of EDGE_STEPS steps centred on the first crossing seen
        centre = int(r_step[int(torch.nonzero(r_spec.sharpness >= thr)[0])])
        first = max(0, min(centre - EDGE_STEPS // 2, steps - EDGE_STEPS))
        _, *window = _gd(ctx, lr, steps, list(range(first, min(steps, first + EDGE_STEPS) + 1)), k)
    amp = None
    if window is not None:
        w_step, w_t, w_theta, w_loss, w_spec = window
        amp = oscillation_amplitude(w_theta, w_spec.top_vectors)
        crossed = torch.nonzero(w_spec.sharpness >= thr)
        if len(crossed):  # the crossing to the step
            diag = dataclasses.replace(diag, t_edge=min(diag.t_edge or math.inf, float(w_t[int(crossed[0])])))
        arrays.update(step=w_step.numpy(), t=w_t.numpy(), loss=w_loss.numpy(), top_eigs=w_spec.values.numpy(),
                      amplitude=amp.numpy())  # fmt: skip
    picks = torch.linspace(0, len(r_t) - 1, min(GFS_POINTS, len(r_t))).round().long().unique()
    gfs = gfs_sharpness(plan.problem, ctx.layout, r_t[picks], r_theta[picks])
    arrays.update(gfs_t=gfs.t.numpy(), gfs_sharpness=gfs.sharpness.numpy())
    after = (
        None if amp is None or diag.t_edge is None else amp[(window[1] >= diag.t_edge) & torch.isfinite(amp)]
    )
    entry["edge"] = EdgeEntry(
        lr=lr, threshold=thr, band=diag.band, t_edge=diag.t_edge, hover_share=diag.hover_share,
        median_ratio=diag.median_ratio,
        amplitude_median=_median(after) if after is not None and len(after) else None,
        amplitude_max=float(after.max()) if after is not None and len(after) else None,
        outcome=str(diag.outcome), final_sharpness=_finite(diag.final_sharpness),
        previous_sharpness=None if diag.previous_sharpness is None else _finite(diag.previous_sharpness),
        final_loss=_finite(diag.final_loss),
        flow_limit_sharpness=float(gfs.sharpness[0]) if bool(gfs.converged[0]) else None,
        balanced_sharpness=plan.balanced_sharpness,  # computed once, by the plan
        gfs_t=gfs.t.tolist(), gfs_sharpness=gfs.sharpness.tolist(), gfs_converged=gfs.converged.tolist(),
        gfs_non_increasing=gfs.non_increasing(),
        every_step=[int(window[0][0]), int(window[0][-1])] if window is not None else [],
        stride=stride, steps=steps, spectrum_method=str(r_spec.method),
        spectrum_unconverged=int((~r_spec.converged).sum())
        + (int((~window[4].converged).sum()) if window is not None and stride > 1 else 0),  # (stride 1: the same)
    ).to_dict()  # fmt: skip
    entry.update(steps=steps, final_loss=_finite(diag.final_loss), t_stop=float(r_t[-1]))
    entry["predictions"] = None
    if plan.cfg.flow.central and window is not None and len(window[1]) > WINDOW:
        entry["predictions"] = _predictions(ctx, task, window, arrays).to_dict()
    return arrays


def odd_stride(steps: int, points: int) -> int:
    """The spacing in steps of at most ``points`` points over ``steps`` steps: 1, or an odd number, so
    that consecutive points fall on the two phases of GD's period-2 oscillation (an even stride sees
    one phase only: the median of S off by 1 - 3 % on the eos experiment, or the crossing missed)."""
    stride = max(1, math.ceil(steps / points))
    return stride + 1 if stride % 2 == 0 else stride


def run_record(steps: int, stride: int) -> list[int]:
    """The run's recorded steps: every ``stride``-th and the last, every two consecutive ones an odd
    number of steps apart. The outcome reads the last two points as the two phases of the period-2
    oscillation (``dlnlab.eos.edge_diagnostics``), the median pairs consecutive points: a last step an
    even number past the stride's last point (4004 steps, stride 3: 4002, 4004) gave one phase twice,
    so the step before the last is recorded too (4002, 4003, 4004)."""
    record = sorted({*range(0, steps + 1, stride), steps})
    if len(record) > 2 and (record[-1] - record[-2]) % 2 == 0:
        record.insert(-1, steps - 1)
    return record


def _median(x: torch.Tensor) -> float:
    """numpy's median (the mean of the two middle values of an even count; torch's is the lower one)."""
    return float(torch.quantile(x, 0.5))


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _at_steps(task: SeriesTask, key: str, steps: torch.Tensor) -> torch.Tensor | None:
    """The states of the kind ``key`` (``task.given``: on this lr's grid points, each at its exact time
    k eta) at GD's ``steps``, or None where a step is none of the exact times (lr below log.dt) or a
    state is missing (its series failed, or was not run)."""
    states = task.given.get(key)
    if states is None:
        return None
    row = {int(s): int(m) for s, m in zip(task.times.steps, task.times.ms.tolist())}
    if any(int(s) not in row for s in steps.tolist()):
        return None
    out = states[[row[int(s)] for s in steps.tolist()]]
    return out if bool(torch.isfinite(out).all()) else None


def _flows_in_window(ctx: SeriesContext, task: SeriesTask, step: torch.Tensor, t: torch.Tensor, k: int):
    """The central flow (CentralFlowResult), the gradient flow's states at GD's step times ``t``, and
    whether both came from the run's series.

    Where every step of the window is one of the lr's exact times (lr >= log.dt), the run's own
    ``cflow_lr`` and ``flow`` series already hold both there (rk45 reports at its output times without
    changing its steps): they are described again, not solved again (4.8 - 5.5 s of a 21 s
    ``experiment=eos`` run, measured). Else both are solved from theta0 at the window's times by the
    solvers of those series (rk45 at flow.rtol / flow.atol, the run's flow solver), so that the two ways
    give the same numbers to those tolerances whatever they are."""
    plan = ctx.plan
    field = CentralFlow(
        plan.problem, ctx.layout, float(task.lr), k=k, dense_max=plan.cfg.log.hessian_dense_max
    )
    c_theta, f_theta = _at_steps(task, "central", step), _at_steps(task, "flow", step)
    times = t if float(t[0]) == 0.0 else torch.cat([t.new_zeros(1), t])  # both flows start at theta0, t = 0
    cut = len(times) - len(t)
    solver = central_solver(plan.cfg)  # the cflow series'
    if c_theta is not None:
        traj = Trajectory(t, c_theta, Status.OK, "the cflow series' states", "rk45", 0, 0, 0, 0.0)
    else:
        traj = integrate(plan.problem, ctx.layout, plan.theta0, times, solver, field=field)
        traj = dataclasses.replace(traj, t=traj.t[cut:], theta=traj.theta[cut:])
    central = describe_central(field, traj, solver)
    reused = c_theta is not None and f_theta is not None
    if f_theta is None:
        f_theta = integrate(plan.problem, ctx.layout, plan.theta0, times, plan.solver).theta[cut:]
    return central, f_theta, reused


def _predictions(ctx: SeriesContext, task: SeriesTask, window, arrays: dict) -> PredictionEntry:
    """Both flows at the window's step times, against GD's window average there (arrays filled)."""
    plan, k, lr = ctx.plan, int(ctx.plan.cfg.log.top_eigs), float(task.lr)
    step, t, theta, loss, spec = window
    central, f_theta, reused = _flows_in_window(ctx, task, step, t, k)
    c_theta = central.theta
    avg_theta, avg_loss = window_average(theta, WINDOW), window_average(loss, WINDOW)
    predicted = central.predicted_loss
    dist = distance_comparison(t, avg_theta, c_theta, f_theta)
    measured = oscillation_variance(theta, spec.top_vectors, WINDOW)
    pred_var = central.top_variance
    arrays.update(
        avg_loss=avg_loss.numpy(), predicted_loss=predicted.numpy(), central_loss=central.loss.numpy(),
        flow_loss=plan.problem.loss(unpack(f_theta, ctx.layout)).numpy(),
        central_sharpness=central.sharpness.numpy(), sigma_trace=central.sigma_trace.numpy(),
        dist_avg_central=dist.to_central.numpy(), dist_avg_flow=dist.to_flow.numpy(),
        measured_variance=measured.numpy(), predicted_variance=pred_var.numpy(),
    )  # fmt: skip
    ratio = dist.ratio[torch.isfinite(dist.ratio)]
    rel = (predicted / avg_loss - 1)[torch.isfinite(avg_loss)]
    var_ok = torch.isfinite(measured) & (pred_var > 0)
    on = (central.sigma_trace > 0).numpy()
    gap = ((central.sharpness - 2 / lr).abs() * lr / 2).numpy()  # |S - 2/eta| / (2/eta)
    pinned = settled_on_edge(gap, on)  # past each switch-on transient, as the central entry's
    ok = torch.isfinite(avg_loss)
    return PredictionEntry(
        window=WINDOW, t_first=float(t[ok][0]) if ok.any() else None, t_last=float(t[ok][-1]) if ok.any() else None,
        ratio_median=_median(ratio) if len(ratio) else None,
        ratio_max=float(ratio.max()) if len(ratio) else None, ratio_last=float(ratio[-1]) if len(ratio) else None,
        loss_rel_median=_median(rel) if len(rel) else None,
        loss_parting=parting_time(t, predicted, avg_loss),
        variance_ratio_median=_median(measured[var_ok] / pred_var[var_ok]) if var_ok.any() else None,
        central_pinned=float(gap[pinned].max()) if pinned.any() else None,
        central_entering=float(gap[on].max()) if on.any() else None,
        flows_reused=reused, **_distances(dist),
    )  # fmt: skip


def _distances(dist) -> dict:
    """GD's average's own distances to both flows (the ratio alone hides how far it is from either)."""
    ok = torch.isfinite(dist.to_central) & torch.isfinite(dist.to_flow)
    if not ok.any():
        return {"dist_central_last": None, "dist_central_median": None, "dist_flow_last": None}
    central, flow = dist.to_central[ok], dist.to_flow[ok]
    return {"dist_central_last": float(central[-1]), "dist_central_median": _median(central),
            "dist_flow_last": float(flow[-1])}  # fmt: skip


def _log_edge(ctx: SeriesContext, lr: float, arrays: dict, entry: dict) -> None:
    """The window's curves (every step, thinned to log.tb_max_points keeping each bucket's extremes)
    and the diagnostics' text in the GD series' TensorBoard run."""
    gd_name = series_name(lr)
    logger = ctx.logger(gd_name)
    if logger is None:
        return
    log_text(logger, "edge of stability", "\n".join(edge_lines({"series": {"edge": entry}})))
    if "t" not in arrays:
        logger.save()
        return
    dt, tags = ctx.plan.cfg.log.dt, ctx.tags(gd_name, lr)
    columns = {"edge/sharpness_over_edge": arrays["top_eigs"][:, 0] * (lr / 2),
               "edge/log10_loss": log10_positive(arrays["loss"])}  # fmt: skip
    if "avg_loss" in arrays:
        columns.update({
            "edge/log10_avg_loss": log10_positive(arrays["avg_loss"]), "edge/log10_flow_loss": log10_positive(arrays["flow_loss"]),
            "edge/dist_ratio": arrays["dist_avg_central"] / arrays["dist_avg_flow"],
        })  # fmt: skip
    thin = Thinner(len(arrays["t"]), ctx.plan.cfg.log.tb_max_points)
    steps = [tags.step(t / dt) for t in arrays["t"].tolist()]  # GD's step times on the run's x axis
    rows = []
    for i in range(len(steps)):
        rows += thin.add(
            i, {tag: float(col[i]) for tag, col in columns.items() if math.isfinite(float(col[i]))}
        )
    for i, row in rows + thin.flush():
        logger.log_metrics(row, step=steps[i])
    logger.save()
