"""What several benchmark sections share: timing best of n, the markdown table and seconds' format, the
size rows' teacher setting and the Figure 1 ensemble (the ensemble and stiff_ensemble sections compare the
same 64 nets). Kept here so that no section imports another's internals."""

from __future__ import annotations

import math
import time

import torch

from dlnlab.init import gaussian
from dlnlab.network import pack
from dlnlab.problem import RegressionProblem

TEACHER = [4.0, 3.0, 2.0, 1.0]
DIMS = [11, 6, 6, 6, 6, 4]  # the Figure 1 net
MEMBERS = 64  # the Figure 1 ensemble's size


def best_of(fns: dict, repeat: int, min_s: float = 0.02, sync=None) -> dict[str, float]:
    """Seconds per call of each fn, interleaved, best of ``repeat``; calls are looped so that one timing
    lasts about ``min_s`` (``sync``: called before reading the clock, e.g. torch.cuda.synchronize)."""
    sync = sync or (lambda: None)
    inner = {}
    for k, fn in fns.items():  # warm-up, and the loop count
        t0 = time.perf_counter()
        fn()
        sync()
        inner[k] = max(1, int(min_s / max(time.perf_counter() - t0, 1e-7)))
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeat):
        for k, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(inner[k]):
                fn()
            sync()
            best[k] = min(best[k], (time.perf_counter() - t0) / inner[k])
    return best


def md_table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def fmt_s(s: float) -> str:
    if not math.isfinite(s):
        return "—"
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def teacher_setting(width: int, depth: int, dtype=torch.float64, device="cpu"):
    """(problem, dims, theta0) of a size row."""
    dims = [width] * (depth + 1)
    problem = RegressionProblem.teacher(TEACHER[:width], width, width, max(110, width), seed=0, dtype=dtype)
    theta0 = pack(gaussian(dims, 1.0 / math.sqrt(width), seed=1, dtype=dtype))
    return problem.to(device), dims, theta0.to(device)


def figure1_ensemble(members: int = MEMBERS):
    """The Figure 1 problem (whitened teacher [4, 3, 2, 1], N = 110, data seed 0) and ``members`` starts
    (members, p), member e from gaussian(0.1) with init seed 1 + e."""
    problem = RegressionProblem.teacher([4, 3, 2, 1], 11, 4, 110, seed=0)
    theta0 = torch.stack([pack(gaussian(DIMS, 0.1, seed=1 + e)) for e in range(members)])
    return problem, theta0
