"""Benchmark of the SGD hot loop: the lab's Lightning path against a plain torch loop.

Both compute the same closed-form gradient (RegressionProblem.gradient) and apply the same in-place
update A_j -= eta * G_j on the Figure 1 net. Rows, measured side by side in one process and
interleaved (best of --repeat), single-threaded:

  plain            a bare torch loop, nothing recorded
  plain+recorder   the bare loop handing the grid snapshots to the same SeriesRecorder
  lightning        the lab's path (dlnlab.lab.training.train_series) with its default logging
                   (recorder on the log grid, curvature on ~100 points, TensorBoard, theta saved),
                   the recorder in a forked worker process as dlnlab.lab.experiment runs it

    python scripts/bench.py                 # lrs 0.01 0.005 0.0025, t_max 300
    python scripts/bench.py --t-max 60 --repeat 3 --out docs/benchmarks/sgd.md
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
import time
from pathlib import Path

import torch

from dlnlab.flow import time_grid
from dlnlab.init import gaussian
from dlnlab.lab.logging import TensorBoardLogger
from dlnlab.lab.record import SeriesRecorder, open_recorder
from dlnlab.metrics import SeriesMetrics
from dlnlab.network import pack, unpack
from dlnlab.problem import RegressionProblem


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.005, 0.0025])
    ap.add_argument("--t-max", type=float, default=300.0)
    ap.add_argument("--dt", type=float, default=0.1)
    ap.add_argument("--analysis-points", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks/sgd.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    from dlnlab.lab.training import series_grid, train_series  # imports Lightning

    dims = [11, 6, 6, 6, 6, 4]
    problem = RegressionProblem.teacher([4, 3, 2, 1], 11, 4, 110, seed=0)
    theta0 = pack(gaussian(dims, 0.1, seed=1))
    n_grid = len(time_grid(args.t_max, dt=args.dt))
    analysis_every = max(1, math.ceil(n_grid / args.analysis_points)) if args.analysis_points else 0

    def metrics(lr: float) -> SeriesMetrics:  # the lab's default logging: every metric, TensorBoard
        return SeriesMetrics(problem, dims, theta0, sgd=True, analysis_every=analysis_every)

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

                rec = SeriesRecorder("p", metrics(lr), n_grid, tmp, logger=tb(tmp, "p"), lr=lr)
                _, ks = series_grid(n_grid, args.dt, lr)
                t0 = time.perf_counter()
                rec.record(0, 0.0, theta0, step=0)
                plain_loop(
                    problem,
                    dims,
                    theta0,
                    lr,
                    n_steps,
                    snapshot=(ks[1:], lambda j, k, th, rec=rec, lr=lr: rec.record(j + 1, k * lr, th, step=k)),
                )
                rec.close()
                best["plain+recorder"] = min(best["plain+recorder"], time.perf_counter() - t0)

                t0 = time.perf_counter()  # as the lab runs it: the recorder in a worker process
                logger = tb(tmp, "l")
                rec = open_recorder("l", metrics(lr), n_grid, tmp, logger=logger, lr=lr, worker=True)
                out = train_series(problem, dims, theta0, lr, args.dt, n_grid, rec, logger=logger)
                arrays = rec.close()
                best["lightning"] = min(best["lightning"], time.perf_counter() - t0)
                finals["lightning"] = torch.as_tensor(arrays["theta"][-1])
                assert out.status == "ok", out
        same = float((finals["plain"] - finals["lightning"]).abs().max())
        rows.append((lr, n_steps, best, same))

    lines = [
        "# SGD hot loop: Lightning path vs a plain torch loop",
        "",
        f"Figure 1 net {dims}, teacher [4,3,2,1] whitened N=110, gaussian init 0.1, t_max={args.t_max}, "
        f"log dt={args.dt} ({n_grid} grid points), curvature on {args.analysis_points} points, "
        f"best of {args.repeat}, 1 thread, {platform.processor() or platform.machine()}, torch {torch.__version__}.",
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
    report = "\n".join(lines) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"report written to {args.out}")


if __name__ == "__main__":
    main()
