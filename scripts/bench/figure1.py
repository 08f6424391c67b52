"""The Figure 1 section of ``python -m scripts.bench``: the SGD hot loop, the lab's Lightning path against a
plain torch loop with the same closed-form gradient (RegressionProblem.gradient) and in-place update
A_j -= eta * G_j on the Figure 1 net, each lr's variants interleaved, best of ``repeat``."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import torch

from dlnlab.flow import time_grid
from dlnlab.init import gaussian
from dlnlab.lab.record import SeriesRecorder, TagPlan, TensorBoardLogger, open_recorder, step_scale
from dlnlab.metrics import SeriesMetrics
from dlnlab.network import pack, unpack
from dlnlab.problem import RegressionProblem
from dlnlab.status import Status


def plain_loop(problem, dims, theta0, lr, n_steps, snapshot=None):
    theta = theta0.clone()
    views = unpack(theta, dims)
    ks = snapshot[0] if snapshot else []
    j = 0
    with torch.no_grad():
        for k in range(1, n_steps + 1):
            grads = problem.gradient(views)
            for w, g in zip(views, grads):
                w.sub_(g, alpha=lr)
            if snapshot:
                while j < len(ks) and ks[j] == k:
                    snapshot[1](j, k, theta)
                    j += 1
    return theta


def figure1_rows(args) -> tuple[list[int], list]:
    """(dims, rows): per lr, the best seconds of plain, plain+recorder and lightning, interleaved."""
    from dlnlab.lab.runner import series_grid, train_series  # imports Lightning

    dims = [11, 6, 6, 6, 6, 4]
    problem = RegressionProblem.teacher([4, 3, 2, 1], 11, 4, 110, seed=0)
    theta0 = pack(gaussian(dims, 0.1, seed=1))
    n_grid = len(time_grid(args.t_max, dt=args.dt))
    analysis_every = max(1, math.ceil(n_grid / args.analysis_points)) if args.analysis_points else 0

    def metrics(lr: float) -> SeriesMetrics:  # the lab's default logging: every metric, TensorBoard
        return SeriesMetrics(problem, dims, theta0, sgd=True, analysis_every=analysis_every)

    def tags(name: str, lr: float) -> TagPlan:  # what the lab's SGD series logs (ctx.tags in a run)
        return TagPlan(series=name, step_per_grid=step_scale(args.dt), lr=lr, curvature=bool(analysis_every))

    def tb(tmp: str, name: str) -> TensorBoardLogger:
        return TensorBoardLogger(Path(tmp) / "tensorboard", version=name)

    rows = []
    for lr in args.lrs:
        n_steps = series_grid(n_grid, args.dt, lr)[1][-1]  # the lab's last grid step
        best = {"plain": math.inf, "plain+recorder": math.inf, "lightning": math.inf}
        finals = {}
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                finals["plain"] = plain_loop(problem, dims, theta0, lr, n_steps)
                best["plain"] = min(best["plain"], time.perf_counter() - t0)

                rec = SeriesRecorder("p", metrics(lr), n_grid, tmp, logger=tb(tmp, "p"), tags=tags("p", lr))
                _, ks = series_grid(n_grid, args.dt, lr)
                t0 = time.perf_counter()
                rec.record(0, 0.0, theta0, step=0)
                snap = (ks[1:], lambda j, k, th, rec=rec, lr=lr: rec.record(j + 1, k * lr, th, step=k))
                plain_loop(problem, dims, theta0, lr, n_steps, snapshot=snap)
                rec.close()
                best["plain+recorder"] = min(best["plain+recorder"], time.perf_counter() - t0)

                t0 = time.perf_counter()  # as the lab runs it: the recorder in a worker process
                logger = tb(tmp, "l")
                rec = open_recorder(
                    "l", metrics(lr), n_grid, tmp, logger=logger, tags=tags("l", lr), worker=True
                )
                out = train_series(problem, dims, theta0, lr, args.dt, n_grid, rec, logger=logger)
                arrays = rec.close()
                best["lightning"] = min(best["lightning"], time.perf_counter() - t0)
                finals["lightning"] = torch.as_tensor(arrays["theta"][-1])
                assert out.status == Status.OK, out
        same = float((finals["plain"] - finals["lightning"]).abs().max())
        rows.append((lr, n_steps, best, same))
    return dims, rows


def figure1_section(args) -> list[str]:
    dims, rows = figure1_rows(args)
    n_grid = len(time_grid(args.t_max, dt=args.dt))
    lines = [
        f"Figure 1 net {dims}, teacher [4,3,2,1] whitened N=110, gaussian init 0.1, t_max={args.t_max}, "
        f"log dt={args.dt} ({n_grid} grid points), curvature on {args.analysis_points} points, "
        f"best of {args.repeat}.",
        "",
        "| lr | steps | plain steps/s | plain+recorder steps/s | lightning steps/s | lightning / plain | "
        "lightning / (plain+recorder) | target lightning >= 0.8 x plain | max abs diff of final theta |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lr, n, b, same in rows:
        lines.append(
            f"| {lr:g} | {n} | {n / b['plain']:,.0f} | {n / b['plain+recorder']:,.0f} | {n / b['lightning']:,.0f} "
            f"| {b['plain'] / b['lightning']:.2f} | {b['plain+recorder'] / b['lightning']:.2f} "
            f"| {'met' if b['plain'] / b['lightning'] >= 0.8 else 'NOT met'} | {same:.1e} |"
        )
    return lines
