"""The stochastic modified equation as series of the run (``sgd.sme=true``): ``sme_lr_<lr>``.

For each learning rate the SME of minibatch SGD (``dlnlab.sme``: drift -grad L, diffusion
sqrt(eta) (c Sigma)^(1/2) from the exact per-sample gradients) is integrated for the run's ensemble,
every member from its own initial weights with its own Brownian motions, on the grid; it is recorded
like an ensemble's series (member axis, metrics, TensorBoard) so that its spread (the variance of the
loss and of theta along the trajectory, and the plateau exit times) can be compared with the SGD
ensemble's (``dlnlab/lab/results/_limit.py``).

A member diverges as an SGD member does (``||theta|| > sgd.blowup x (||theta0|| + ||theta||`` of a
balanced minimum), or non-finite, on the grid): its rows from there on are NaN (what the metrics skip),
its entry says diverged, and when every member diverged the series stops there, status diverged -
the SME at a learning rate above the GD threshold blows up like SGD does, a scientific outcome.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from dlnlab.errors import SeriesWarning
from dlnlab.lab.config import derive_seed
from dlnlab.lab.results import (
    MEMBER_KEYS,
    aggregate_members,
    finish_sgd_entry,
    settle_status,
)
from dlnlab.lab.runner._context import SeriesContext, close_recorder
from dlnlab.lab.runner._kind import SeriesDone, SeriesKind, SeriesTask
from dlnlab.lab.runner._sgd import blowup_norm
from dlnlab.metrics import SeriesMetrics, member_arrays, members_of
from dlnlab.network import Layout
from dlnlab.rundir import SME_PREFIX, signals
from dlnlab.status import Status

__all__ = ["SMEKind", "stop_diverged"]


class SMEKind(SeriesKind):
    """The SME ensemble at each learning rate (``sgd.sme=true``), run again on a resume."""

    key, prefix = "sme", SME_PREFIX

    def enabled(self, plan) -> bool:
        return bool(plan.cfg.sgd.sme)

    def failed_entry(self, plan, lr, message: str) -> dict:
        return {"lr": None, "sme_lr": lr, "method": "sme_euler", "status": Status.ERROR, "message": message}

    def run(self, ctx: SeriesContext, task: SeriesTask) -> SeriesDone:
        """Integrate the ensemble's SME and start its recorder; ``finish`` waits for it and fills the
        members' entries."""
        from dlnlab.lab.record import open_recorder
        from dlnlab.sme import integrate_sme

        plan, cfg, name, lr, grid = ctx.plan, ctx.plan.cfg, task.name, task.lr, task.grid
        entry = {"lr": None, "sme_lr": lr, "method": "sme_euler", "status": Status.OK, "message": ""}
        t0 = time.perf_counter()
        try:
            with signals.deferred(raise_at_end=False):  # a signal stops the run after this solve
                res = integrate_sme(
                    plan.problem, ctx.dims, plan.theta0, grid, lr, cfg.sgd.batch_size, cfg.sgd.sampling.name,
                    seed=derive_seed(plan.seeds.seed, f"sme/{lr!r}"),
                )  # fmt: skip
        except Exception as err:  # noqa: BLE001 - one failing series must not end the run
            entry.update(status=Status.ERROR, message=f"{type(err).__name__}: {err}")
            warnings.warn(f"{name}: {entry['message']}", SeriesWarning, stacklevel=2)
            return SeriesDone(entry)
        entry.update(nfe=res.nfe, wall_time_s=time.perf_counter() - t0, message=res.message)
        theta, diverged = stop_diverged(res.theta, grid, blowup_norm(plan))
        if diverged:
            _note_diverged(entry, diverged, len(plan.theta0), name)
        metrics = SeriesMetrics(plan.problem, ctx.dims, plan.theta0, **ctx.metric_kw)
        ms = list(range(len(theta)))
        rec = open_recorder(
            name, metrics, ctx.n_grid, ctx.out, logger=ctx.logger(name), tags=ctx.tags(name, lr),
            tb_max_points=cfg.log.tb_max_points, worker=True, preload=(ms, grid[: len(theta)].tolist(), theta),
        )  # fmt: skip
        return SeriesDone(entry, finish=_finisher(ctx, entry, name, rec, diverged))


def stop_diverged(
    theta: torch.Tensor, grid: torch.Tensor, blowup: float
) -> tuple[torch.Tensor, dict[int, str]]:
    """theta (T, R, p) with each member's rows NaN from its first grid point where ||theta|| > blowup
    or theta is not finite, cut after the point where the last member diverged when all did; and
    {member: why}."""
    norms = torch.linalg.vector_norm(theta, dim=-1)  # (T, R): inf or NaN where theta is
    bad = ~(norms <= blowup)
    theta = theta.clone()
    why: dict[int, str] = {}
    for e in range(theta.shape[1]):
        hits = torch.nonzero(bad[:, e])
        if len(hits):
            m = int(hits[0])
            norm = float(norms[m, e])
            why[e] = (
                f"||theta|| = {norm:.3g} > {blowup:.3g} at t = {float(grid[m]):.6g}"
                if np.isfinite(norm)
                else f"non-finite weights at t = {float(grid[m]):.6g}"
            )
            theta[m:, e] = float("nan")
    if why and len(why) == theta.shape[1]:
        last = max(int(torch.nonzero(bad[:, e])[0]) for e in why)
        theta = theta[: last + 1]
    return theta, why


def _note_diverged(entry: dict, diverged: dict[int, str], members: int, name: str) -> None:
    first = min(diverged)
    if len(diverged) == members:
        entry.update(status=Status.DIVERGED, message=f"every member diverged: {diverged[first]}")
    warnings.warn(
        f"{name}: members {sorted(diverged)} diverged ({diverged[first]})", SeriesWarning, stacklevel=2
    )


def _finish_members(entry: dict, arrays: dict, plan, diverged: dict[int, str]) -> None:
    """Each member's entry as an SGD member's at the same learning rate (diverged, or unstable where the
    loss stays up above the GD threshold: :func:`dlnlab.lab.results._summary.finish_sgd_entry`), then the
    aggregate; the series' status from its members' as an SGD series' (:func:`settle_status`)."""
    lr = entry["sme_lr"]
    levels = plan.problem.plateau_levels(Layout(tuple(plan.cfg.model.dims)).r_max)
    members = []
    for e, seeds in enumerate(plan.seeds.members):
        sub = {"lr": lr, "momentum": 0.0, "status": Status.OK, "message": "", "steps": None}
        if e in diverged:
            sub.update(status=Status.DIVERGED, message=diverged[e])
        own = member_arrays(arrays, e)
        finish_sgd_entry(sub, own, lr, levels, plan.stability_threshold, None, plan.stability_threshold_name)
        finite = own["loss"][np.isfinite(own["loss"])]
        sub["final_loss"] = float(finite[-1]) if len(finite) else None
        members.append({**{k: sub.get(k) for k in MEMBER_KEYS}, "seeds": seeds})
    aggregate_members(entry, members)
    entry.update(t_stop=float(arrays["t"][-1]), plateaus=[])
    settle_status(entry, members, note=entry["message"])


def _finisher(ctx, entry: dict, name: str, rec, diverged: dict[int, str]) -> Callable[[], dict]:
    def finish() -> dict:
        try:
            arrays = close_recorder(rec, ctx.logger(name))
        except Exception as err:  # noqa: BLE001 - the recorder's failure is this series' failure only
            entry.update(status=Status.ERROR, message=f"recorder: {err}")
            warnings.warn(f"{name}: {entry['message']}", SeriesWarning, stacklevel=2)
            arrays = {}
        if members_of(arrays):
            _finish_members(entry, arrays, ctx.plan, diverged)
        return arrays

    return finish
