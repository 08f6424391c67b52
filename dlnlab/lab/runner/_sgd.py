"""The (S)GD kind: one series per learning rate (``sgd_lr_<lr>``), trained in Lightning.

Each series runs against the flow at its own exact times k tau (``needs`` the flow, and with
``flow.modified`` GD's modified flow at its step). It has a TensorBoard run of its own, where the
modified flow and the SME ensemble at its learning rate are compared with it. A resumed run keeps a
finished series and continues an interrupted one from its Lightning checkpoint.
"""

from __future__ import annotations

import math
import signal
import time
import warnings

import torch

from dlnlab.descent import time_per_step
from dlnlab.errors import SeriesWarning
from dlnlab.lab.callbacks import CallbackFailed
from dlnlab.lab.config import Plan, series_grid
from dlnlab.lab.results import finish_sgd_entry, finish_sgd_members
from dlnlab.lab.runner._context import SeriesContext, close_recorder
from dlnlab.lab.runner._kind import Resume, SeriesDone, SeriesKind, SeriesTask
from dlnlab.metrics import SeriesMetrics
from dlnlab.network import Layout
from dlnlab.rundir import SGD_PREFIX, series_name, signals
from dlnlab.status import FINISHED, Status

__all__ = ["SGDKind", "run_sgd", "blowup_norm"]


class SGDKind(SeriesKind):
    """(S)GD at a learning rate, against the flow (and GD's modified flow) at its exact times."""

    key, prefix, tensorboard_run, needs, resume = "sgd", SGD_PREFIX, True, ("flow", "modified"), Resume.KEEP

    def enabled(self, plan) -> bool:
        return True

    def run(self, ctx: SeriesContext, task: SeriesTask) -> SeriesDone:
        flow = task.flow
        flow_final = flow["final_loss"] if flow["status"] == Status.OK else None
        if flow.get("members"):  # an ensemble: each member's SGD series against its own flow
            flow_final = [m["final_loss"] if m["status"] == Status.OK else None for m in flow["members"]]
        entry, arrays = run_sgd(
            ctx, task.lr, task.given["flow"], flow_final, initial=task.continuation,
            modified_theta=task.given.get("modified"),
        )  # fmt: skip
        return SeriesDone(entry, arrays=arrays)

    def failed_entry(self, plan: Plan, lr, message: str) -> dict:
        m = plan.cfg.sgd.momentum
        return {"lr": lr, "momentum": m, "time_per_step": time_per_step(lr, m), "status": Status.ERROR,
                "message": message, "steps": None}  # fmt: skip

    def continuation(self, previous, task: SeriesTask, plan: Plan):
        s = plan.cfg.sgd
        drawn = s.batch_size is not None and (
            s.batch_size < plan.problem.n_samples or s.sampling.name == "with_replacement"
        )
        sampling = s.sampling.name if drawn else None  # None: full batch, nothing drawn
        return previous.resumable(task.name, task.times.steps, plan.theta0.shape, sampling)


def blowup_norm(plan: Plan) -> float:
    """blowup x (||theta0|| + ||theta|| of a balanced global minimum, sqrt(h sum_k m_k^(2/h))); an
    ensemble: the largest member's ||theta0||."""
    lay = Layout(tuple(plan.cfg.model.dims))
    k = min(plan.problem.n_modes, lay.r_max)
    balanced = math.sqrt(lay.depth * sum(float(m) ** (2 / lay.depth) for m in plan.problem.modes[:k]))
    start = float(torch.linalg.vector_norm(plan.theta0, dim=-1).max())
    return plan.cfg.sgd.blowup * (start + balanced)


def run_sgd(
    ctx: SeriesContext,
    lr: float,
    flow_theta: torch.Tensor,
    flow_final: float | None,
    initial=None,
    modified_theta: torch.Tensor | None = None,
) -> tuple[dict, dict]:
    """One (S)GD series in Lightning; its entry says ``interrupted`` if a signal stopped it.
    ``modified_theta`` (n_grid, p): GD's modified flow at the series' exact times (flow.modified).

    ``initial``: where an interrupted series continues (a resumed run, see
    :class:`~dlnlab.lab.runner._resume.Continuation`): from its checkpoint, ``checkpoints/<name>.ckpt``.
    """
    from dlnlab.lab.record import open_recorder
    from dlnlab.lab.runner._training import chunk_size, train_series

    plan, s = ctx.plan, ctx.plan.cfg.sgd
    name, tau = series_name(lr), time_per_step(lr, s.momentum)
    logger = ctx.logger(name)
    metrics = SeriesMetrics(
        plan.problem, ctx.dims, plan.theta0, sgd=True, flow_theta=flow_theta, modified_theta=modified_theta,
        **_metric_options(ctx, lr, tau),
    )  # fmt: skip
    with signals.deferred(raise_at_end=False):  # from its worker's start to the try: noted, not raised
        rec = open_recorder(
            name, metrics, ctx.n_grid, ctx.out, logger=logger, tags=ctx.tags(name, lr),
            tb_max_points=plan.cfg.log.tb_max_points, initial=initial and initial.kept, worker=True,
            preload=initial and initial.preload(), quiet_upto=initial.logged_upto if initial else -1,
        )  # fmt: skip
        ckpt = plan.cfg.checkpoint
        path = ctx.out / "checkpoints" / f"{name}.ckpt" if ckpt.enabled else None
        ctx.progress.start(name, plan.cfg.flow.t_max)
        t0 = time.perf_counter()
        entry: dict = {"lr": lr, "momentum": s.momentum, "time_per_step": tau}
        prev = signal.getsignal(signal.SIGINT)
        member_diverged: dict = {}
    try:
        outcome = train_series(
            plan.device_problem, ctx.dims, plan.theta0, lr, plan.cfg.log.dt, ctx.n_grid, rec,
            batch_size=s.batch_size, sampling=s.sampling.name, momentum=s.momentum,
            seed=plan.seeds.sgd_seeds if plan.seeds.members else plan.seeds.sgd,
            blowup_norm=blowup_norm(plan), progress=ctx.progress,
            chunk=chunk_size(plan.gradient_s), logger=logger, callbacks=ctx.callbacks, name=name,
            checkpoint=path, checkpoint_every_s=ckpt.every_s, resume=initial is not None, device=plan.device,
            reopened=(initial.position, initial.reopen) if initial else None,
        )  # fmt: skip
        entry.update(status=outcome.status, message=outcome.message, steps=outcome.steps)
        member_diverged = outcome.member_diverged
    except KeyboardInterrupt:
        entry.update(status=Status.INTERRUPTED, message="interrupted", steps=None)
    except Exception as err:  # noqa: BLE001 - one failing series must not end the run
        why = str(err) if isinstance(err, CallbackFailed) else f"{type(err).__name__}: {err}"
        entry.update(status=Status.ERROR, message=why, steps=None)
        warnings.warn(f"{name}: {entry['message']}", SeriesWarning, stacklevel=2)
    finally:
        signal.signal(signal.SIGINT, prev)  # Lightning leaves SIGINT ignored after an interrupt
    # A signal from here on only stops the next stage; one that came while the series ran its last chunk
    # left it ok (every step ran; its recorder closes below): the run stops before the next series.
    with signals.deferred(raise_at_end=False):
        try:
            arrays = close_recorder(rec, logger, lines=entry["status"] in FINISHED)  # else it may continue
        except Exception as err:  # noqa: BLE001 - the recorder's failure is this series' failure only
            arrays = {}
            entry.update(status=Status.ERROR, message=f"recorder: {err}")
            warnings.warn(f"{name}: {entry['message']}", SeriesWarning, stacklevel=2)
        _finish_entry(ctx, entry, arrays, tau, flow_final, member_diverged)
        entry["wall_time_s"] = time.perf_counter() - t0
    if entry["status"] in (Status.DIVERGED, Status.UNSTABLE):
        warnings.warn(f"{name}: {entry['status']}: {entry['message']}", SeriesWarning, stacklevel=2)
    ctx.progress.done(f"{entry['status']}: {entry.get('steps')} steps, {entry['wall_time_s']:.2f} s")
    return entry, arrays


def _finish_entry(
    ctx: SeriesContext, entry: dict, arrays: dict, tau: float, flow_final, member_diverged
) -> None:
    """The entry's numbers from the series' arrays: an ensemble's members, or the one series."""
    plan = ctx.plan
    levels, threshold = plan.problem.plateau_levels(ctx.layout.r_max), plan.stability_threshold
    named = plan.stability_threshold_name
    if plan.seeds.members and arrays:
        members = plan.seeds.members
        finals = flow_final if isinstance(flow_final, list) else [flow_final] * len(members)
        finish_sgd_members(entry, arrays, tau, levels, threshold, finals, member_diverged, members, named)
    else:
        finish_sgd_entry(entry, arrays, tau, levels, threshold, flow_final, named)


def _metric_options(ctx: SeriesContext, lr: float, tau: float) -> dict:
    """The run's metrics options with this series' own last point (a step coarser than the grid can
    end before the grid's last point: lr 0.3 on dt 0.05 to t = 4 ends at step 13, t = 3.9) and, for
    plain full-batch GD, ``next_step``: the sharpness one step past it, the period-2 zigzag's other
    phase where the recorded steps are all of one parity (``dlnlab.lab.results._unstable``)."""
    s = ctx.plan.cfg.sgd
    options = dict(ctx.metric_kw, last_m=series_grid(ctx.n_grid, ctx.plan.cfg.log.dt, tau)[0][-1])
    if not s.momentum and s.batch_size is None:
        options["next_step"] = lr
    return options
