"""The stochastic modified equation as series of the run (``sgd.sme=true``): ``sme_lr_<lr>``.

For each learning rate the SME of minibatch SGD (``dlnlab.sme``: drift -grad L, diffusion
sqrt(eta) (c Sigma)^(1/2) from the exact per-sample gradients) is integrated for the run's ensemble,
every member from its own initial weights with its own Brownian motions, on the grid; it is recorded
like an ensemble's series (member axis, metrics, TensorBoard) so that its spread (the variance of the
loss and of theta along the trajectory, and the plateau exit times) can be compared with the SGD
ensemble's (``dlnlab/lab/limit.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dlnlab._util import warn
from dlnlab.lab import signals
from dlnlab.lab.ensemble import _aggregate
from dlnlab.lab.schema import derive_seed
from dlnlab.lab.summary import Status
from dlnlab.metrics import SeriesMetrics, members_of

__all__ = ["sme_name", "run_sme_series"]


def sme_name(lr: float) -> str:
    """``sme_lr_<repr(lr)>``."""
    return f"sme_lr_{float(lr)!r}"


def run_sme_series(state, ctx, grid) -> list[Callable[[], None]]:
    """Integrate and record the SME ensemble of every learning rate; returns the closers that wait for
    the recorders and store the arrays."""
    from dlnlab.lab.record import open_recorder
    from dlnlab.sme import integrate_sme

    plan, cfg = state.plan, state.plan.cfg
    closers = []
    for lr in plan.lrs:
        if state.interrupted:
            break
        name = sme_name(lr)
        state.stage = name
        state.write_summary()
        entry = {"lr": None, "sme_lr": lr, "method": "sme_euler", "status": Status.OK, "message": ""}
        state.series[name] = entry
        t0 = time.perf_counter()
        try:
            with signals.deferred(raise_at_end=False):  # a signal stops the run after this solve
                res = integrate_sme(
                    plan.problem, ctx.dims, plan.theta0, grid, lr, cfg.sgd.batch_size, cfg.sgd.sampling.name,
                    seed=derive_seed(plan.seeds.seed, f"sme/{lr!r}"),
                )  # fmt: skip
        except Exception as err:  # noqa: BLE001 - one failing series must not end the run
            entry.update(status=Status.ERROR, message=f"{type(err).__name__}: {err}")
            warn(f"{name}: {entry['message']}")
            continue
        entry.update(nfe=res.nfe, wall_time_s=time.perf_counter() - t0, message=res.message)
        metrics = SeriesMetrics(plan.problem, ctx.dims, plan.theta0, **ctx.metric_kw)
        ms = list(range(len(grid)))
        rec = open_recorder(
            name, metrics, ctx.n_grid, ctx.out, logger=ctx.logger(name), tags=ctx.tags(name, lr),
            tb_max_points=cfg.log.tb_max_points,
            worker=True, preload=(ms, grid.tolist(), res.theta),
        )  # fmt: skip
        closers.append(_closer(state, ctx, name, rec))
        state.interrupted |= signals.received() is not None
    return closers


def _closer(state, ctx, name: str, rec) -> Callable[[], None]:
    from dlnlab.lab.series import close_recorder

    def close() -> None:
        entry = state.series[name]
        try:
            arrays = close_recorder(rec, ctx.logger(name))
        except Exception as err:  # noqa: BLE001 - the recorder's failure is this series' failure only
            entry.update(status=Status.ERROR, message=f"recorder: {err}")
            warn(f"{name}: {entry['message']}")
            arrays = {}
        state.arrays[name] = arrays
        if members_of(arrays):
            t = arrays["t"]
            members = [
                {
                    "status": Status.OK,
                    "final_loss": float(arrays["loss"][e][-1]),
                    "message": "",
                    "seeds": seeds,
                }
                for e, seeds in enumerate(state.plan.seeds.members)
            ]
            _aggregate(entry, members)
            entry.update(t_stop=float(t[-1]), plateaus=[], diverged=False)

    return close
