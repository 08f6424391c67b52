"""Ensemble rows of ``python -m scripts.bench``: B = 64 Figure 1 nets stepped as one batch against 64 one-by-one runs.

Figure 1 net [11, 6, 6, 6, 6, 4], whitened teacher [4, 3, 2, 1] with N = 110 (data seed 0), member e
starting from gaussian(0.1) with init seed 1 + e. SGD: full-batch GD at lr 0.01 over t <= 5 (500 steps),
``GDStepper`` on (64, p) against 64 ``GDStepper`` runs on (p,). The flow: ``integrate`` with theta0
(64, p) and ``Solver("dopri5")`` (torchode, per-member steps) against 64 dopri5 solves and 64 lsoda
solves one by one (default tolerances rtol 1e-9, atol 1e-11), on the log grid dt = 0.1. Deviations:
SGD the largest relative ||theta_batch - theta_alone|| / ||theta_alone|| over the members; the flow the
largest ||theta_batch(t) - theta_alone(t)||_2 over the grid and the members.
"""

from __future__ import annotations

import math
import time

import torch

from dlnlab.descent import GDStepper
from dlnlab.flow import Solver, integrate, time_grid
from dlnlab.status import Status
from scripts.bench.common import DIMS, MEMBERS, figure1_ensemble, fmt_s, md_table

LR, SGD_T = 0.01, 5.0


def sgd_ensemble(problem, theta0, repeat: int) -> dict:
    n = round(SGD_T / LR)
    best, out = {"batch": math.inf, "alone": math.inf}, {}
    for _ in range(repeat):  # interleaved
        t0 = time.perf_counter()
        batch = GDStepper(problem, DIMS, theta0, LR)
        batch.advance(n)
        best["batch"] = min(best["batch"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        alone = []
        for th in theta0:
            s = GDStepper(problem, DIMS, th, LR)
            s.advance(n)
            alone.append(s.theta)
        best["alone"] = min(best["alone"], time.perf_counter() - t0)
        out["batch"], out["alone"] = batch.theta, torch.stack(alone)
    dev = float(((out["batch"] - out["alone"]).norm(dim=-1) / out["alone"].norm(dim=-1)).max())
    return {"steps": n, "batch_s": best["batch"], "alone_s": best["alone"], "dev": dev}


def flow_ensemble(problem, theta0, t_max: float, repeat: int, sample: int | None = None) -> dict:
    """The batched dopri5 solve against one-by-one dopri5 and lsoda solves of the first ``sample``
    members (all by default), their time scaled to the whole ensemble."""
    t = time_grid(t_max, dt=0.1)
    b, k = len(theta0), min(sample or len(theta0), len(theta0))
    best = {"batch": math.inf, "dopri5": math.inf, "lsoda": math.inf}
    theta, nfe = {}, {}
    for _ in range(repeat):
        res = integrate(problem, DIMS, theta0, t, Solver("dopri5"))
        assert res.status == Status.OK, res.message
        best["batch"], theta["batch"], nfe["batch"] = min(best["batch"], res.wall_time_s), res.theta, res.nfe
        for m in ("dopri5", "lsoda"):
            t0, alone = time.perf_counter(), []
            for th in theta0[:k]:
                r = integrate(problem, DIMS, th, t, Solver(m))
                assert r.status == Status.OK, r.message
                alone.append(r.theta)
            best[m] = min(best[m], (time.perf_counter() - t0) * b / k)
            theta[m] = torch.stack(alone, dim=1)  # (T, k, p)
    dev = {m: float((theta["batch"][:, :k] - theta[m]).norm(dim=-1).max()) for m in ("dopri5", "lsoda")}
    return {"t_max": t_max, "points": len(t), "sample": k, "batch_nfe": nfe["batch"], **{f"{m}_s": best[m] for m in best},
            "dev_dopri5": dev["dopri5"], "dev_lsoda": dev["lsoda"]}  # fmt: skip


def ensemble_section(repeat: int, full_horizon: bool, sample: int = 16, log=print) -> list[str]:
    problem, theta0 = figure1_ensemble()
    t0 = time.perf_counter()
    sgd = sgd_ensemble(problem, theta0, repeat)
    log(f"  ensemble SGD: {time.perf_counter() - t0:.1f} s")
    flows = []
    for t_max, rep, k in [(5.0, repeat, None)] + ([(300.0, 1, sample)] if full_horizon else []):
        t0 = time.perf_counter()
        flows.append(flow_ensemble(problem, theta0, t_max, rep, k))
        log(f"  ensemble flow t_max {t_max:g}: {time.perf_counter() - t0:.1f} s")
    lines = [
        f"SGD: full-batch GD at lr {LR}, t <= {SGD_T:g} ({sgd['steps']} steps), best of {repeat}; deviation: the "
        "largest relative ||theta_batch - theta_alone|| over the members (target 1e-12).",
        "",
        *md_table(
            ["B", "steps", "batch (64, p)", "64 one by one", "speedup (>= 10)", "largest rel. deviation"],
            [
                [
                    MEMBERS,
                    sgd["steps"],
                    fmt_s(sgd["batch_s"]),
                    fmt_s(sgd["alone_s"]),
                    _speedup(sgd["alone_s"] / sgd["batch_s"]),
                    f"{sgd['dev']:.1e}",
                ]
            ],  # fmt: skip
        ),
        "",
        "Flow: torchode dopri5 on (64, p) (per-member steps) against one-by-one solves (rtol 1e-9, atol 1e-11, "
        "output grid dt 0.1); deviation: the largest ||theta_batch(t) - theta_alone(t)||_2 over the grid and "
        "the members.",
        "",
    ]
    rows = []
    for f in flows:
        note = "" if f["sample"] == MEMBERS else f" ({f['sample']} solved, x {MEMBERS / f['sample']:g})"
        rows.append([
            f"{f['t_max']:g}", f["points"], f"{fmt_s(f['batch_s'])} ({f['batch_nfe']:,} evals)",
            fmt_s(f["dopri5_s"]) + note, _speedup(f["dopri5_s"] / f["batch_s"]), f"{f['dev_dopri5']:.1e}",
            fmt_s(f["lsoda_s"]) + note, _speedup(f["lsoda_s"] / f["batch_s"]), f"{f['dev_lsoda']:.1e}",
        ])  # fmt: skip
    header = ["t_max", "grid points", "batch dopri5 (64, p)", "64 dopri5 one by one", "speedup (>= 10)",
              "deviation", "64 lsoda one by one", "speedup", "deviation"]  # fmt: skip
    return lines + md_table(header, rows)


def _speedup(x: float) -> str:
    return f"{x:.1f}x{'' if x >= 10 else ' (missed)'}"
