"""The size axis of ``python -m scripts.bench``: what one gradient, one SGD step, the flow and the curvature cost
from width 4 to 512 and depth 2 to 10, each against a plain torch baseline measured beside it.

Every row is one net ``[w] * (h + 1)`` on whitened teacher data (singular values [4, 3, 2, 1], d_x = d_y
= w, N = max(110, w)) from a gaussian init of scale 1 / sqrt(w), float64, one thread. Compared variants
are interleaved and the best of ``repeat`` (at least 5 for the gradient and SGD) is kept. The columns:

* gradient: ``problem.gradient(net.weights)`` on a :class:`DeepLinearNetwork` (the views of A's blocks
  made on each call) against a plain list of contiguous matrices with the same closed form written out
  (``plain_gradient``); also the module's views made once and held (as the core stepper holds them) and
  the flow's right-hand side ``problem.gradient_theta`` (unpack theta, gradient, pack).
* SGD: steps/s of ``GDStepper.advance`` (the core stepper the lab's Lightning module runs) against a bare
  loop of ``plain_gradient`` and in-place updates on the plain matrices.
* flow: seconds per unit of t of the method ``flow.method=auto`` picks for the default horizon (t_max
  300) against the best alternative that fits in memory (lsoda only when p <= 5000, cvode, dopri5), all
  integrated over the same short horizon (default tolerances).
* curvature: one ``hessian_extremes`` point (dense eigvalsh up to 1500 weights, Lanczos above, warm-started
  from the previous point as the lab does), in gradients, and its share of a default run (the points
  ``choose_analysis`` keeps, 2 series, against the measured flow over t_max 300 and 30,000 GD steps).
* peak memory: the rise of the process's peak RSS (``resource.getrusage`` ru_maxrss after resetting the
  high-water mark through /proc/self/clear_refs) over one picked-flow solve, one curvature point and 10
  GD steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import resource
import time
from types import SimpleNamespace as NS

import torch

from dlnlab.analysis import balanced_sharpness, hessian_extremes
from dlnlab.descent import GDStepper
from dlnlab.flow import Solver, integrate
from dlnlab.lab.config import SCIPY_MAX_WEIGHTS, choose_analysis, choose_flow, estimated_run_seconds
from dlnlab.network import DeepLinearNetwork
from dlnlab.status import Status
from scripts.bench.common import best_of, fmt_s, md_table, teacher_setting

FULL_SIZES = [(w, 4) for w in (4, 16, 64, 128, 256, 512)] + [(64, h) for h in (2, 6, 8, 10)]
QUICK_SIZES = [(4, 4), (16, 4), (64, 4), (128, 4), (64, 2), (64, 8)]
CHEAP_REPEAT = 5  # the gradient and SGD columns are timed best of at least this many
MIN_HD3 = 4e6  # the exponent is fitted above this h d^3 (width 128 and up at depth 4)
DEFAULT_T_MAX, DEFAULT_LR, DEFAULT_POINTS = 300.0, 0.01, 100  # the lab's defaults (one lr)


def plain_gradient(ws: list, p_ls: torch.Tensor) -> list:
    """The closed form on a plain list of matrices (whitened data: dL/dP = P - P_ls)."""
    pre = [ws[0]]
    for w in ws[1:]:
        pre.append(w @ pre[-1])
    t, out = pre[-1] - p_ls, [None] * len(ws)
    for j in range(len(ws) - 1, 0, -1):
        out[j] = t @ pre[j - 1].T
        t = ws[j].T @ t
    out[0] = t
    return out


def plain_steps(ws: list, p_ls: torch.Tensor, lr: float, n: int) -> None:
    for _ in range(n):
        for w, g in zip(ws, plain_gradient(ws, p_ls)):
            w.sub_(g, alpha=lr)


def reset_peak() -> str:
    """Give freed heap back to the system (else a new tensor reuses it unseen) and reset the peak-RSS
    high-water mark; say how the peak is measured."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return (
            "rise of ru_maxrss after malloc_trim and a reset of the high-water mark (/proc/self/clear_refs)"
        )
    except OSError:
        return "ru_maxrss delta (no reset: a rise below the earlier peak reads 0)"


def peak_rise_mb(fn) -> float:
    """MB by which ``fn`` raises the process's peak RSS."""
    reset_peak()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the current RSS after a reset
    fn()
    return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


# ---------------------------------------------------------------------------------------------
# One row
def lab_cfg(dims: list[int]) -> NS:
    """The fields of a default config that the lab's choices read (flow.method=auto, one lr)."""
    return NS(
        flow=NS(method=NS(name="auto"), t_max=DEFAULT_T_MAX, step_size=None),
        model=NS(dims=list(dims)),
        sgd=NS(lrs=[DEFAULT_LR], momentum=0.0),
        log=NS(analysis_points=DEFAULT_POINTS, hessian_dense_max=1500),
        device="cpu",
        ensemble=None,
    )


def gradient_cols(problem, dims, theta0, repeat: int) -> dict:
    net = DeepLinearNetwork.from_theta(dims, theta0)
    plain = [w.detach().clone().contiguous() for w in net.weights]
    held = net.weights
    p_ls = problem.P_ls
    with torch.no_grad():
        t = best_of(
            {
                "plain": lambda: plain_gradient(plain, p_ls),
                "module": lambda: problem.gradient(net.weights),
                "held": lambda: problem.gradient(held),
                "theta": lambda: problem.gradient_theta(theta0, dims),
            },
            repeat,
        )
        ref, got = plain_gradient(plain, p_ls), problem.gradient(net.weights)
    diff = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-300)) for a, b in zip(got, ref))
    return {"grad_plain_s": t["plain"], "grad_module_s": t["module"], "grad_held_s": t["held"],
            "grad_theta_s": t["theta"], "grad_rel_diff": diff}  # fmt: skip


def sgd_cols(problem, dims, theta0, grad_s: float, repeat: int, budget_s: float) -> dict:
    n = int(min(2000, max(5, budget_s / max(grad_s, 1e-7))))
    stepper = GDStepper(problem, dims, theta0, DEFAULT_LR)
    plain = [w.clone().contiguous() for w in stepper.views]
    with torch.no_grad():
        t = best_of(
            {
                "plain": lambda: plain_steps(plain, problem.P_ls, DEFAULT_LR, n),
                "lab": lambda: stepper.advance(n),
            },
            repeat,
            min_s=0.0,
        )
    return {
        "sgd_steps": n,
        "sgd_plain_s": t["plain"] / n,
        "sgd_lab_s": t["lab"] / n,
        "theta_after": stepper.theta,
    }


def flow_candidates(p: int) -> list[str]:
    return (["lsoda"] if p <= SCIPY_MAX_WEIGHTS else []) + ["cvode", "rk45", "dopri5"]


def flow_horizon(p: int, quick: bool = False) -> float:
    """The short horizon of a row's flows: longer where the solves are cheap (and lsoda's Jacobians,
    which a short start-up stretch undercounts, are among the candidates)."""
    if p <= SCIPY_MAX_WEIGHTS:
        return 1.0 if quick else 5.0
    return 0.25 if quick or p > 300_000 else 1.0


def flow_cols(problem, dims, theta0, horizon: float, repeat: int) -> dict:
    """Every candidate over [0, horizon], interleaved; a solve of over 2 s is run once."""
    lam = balanced_sharpness(float(problem.modes[0]), len(dims) - 1)
    picked = choose_flow(lab_cfg(dims), lam).method
    methods = flow_candidates(theta0.numel())
    t = torch.tensor([0.0, horizon / 2, horizon])
    best, nfe = dict.fromkeys(methods, math.inf), {}
    for rep in range(repeat):
        for m in methods:
            if rep and best[m] > 2.0:
                continue
            res = integrate(problem, dims, theta0, t, Solver(m))
            assert res.status == Status.OK, (m, res.message)
            best[m], nfe[m] = min(best[m], res.wall_time_s), res.nfe
    alt = min((m for m in methods if m != picked), key=best.get)
    return {"flow_horizon": horizon, "flow_picked": picked, "flow_picked_s_per_t": best[picked] / horizon,
            "flow_picked_nfe": nfe[picked], "flow_alt": alt, "flow_alt_s_per_t": best[alt] / horizon,
            "flow_s_per_t": {m: best[m] / horizon for m in methods}, "lam_max": lam}  # fmt: skip


def analysis_cols(problem, dims, theta0, theta1, grad_s: float, step_s: float, flow_s_per_t: float) -> dict:
    """One curvature point at theta1, warm-started from the point at theta0 (as consecutive grid points)."""
    _, _, warm = hessian_extremes(problem, theta0, dims)
    t0 = time.perf_counter()
    hessian_extremes(problem, theta1, dims, warm=warm)
    point_s = time.perf_counter() - t0
    cfg = lab_cfg(dims)
    lam = balanced_sharpness(float(problem.modes[0]), len(dims) - 1)
    choice = choose_analysis(cfg, estimated_run_seconds(cfg, choose_flow(cfg, lam).method, lam))
    series = 1 + len(cfg.sgd.lrs)
    rest = flow_s_per_t * DEFAULT_T_MAX + DEFAULT_T_MAX / DEFAULT_LR * step_s
    spent = choice.points * series * point_s
    return {"analysis_kind": choice.kind, "analysis_point_s": point_s, "analysis_in_grads": point_s / grad_s,
            "analysis_points": choice.points, "analysis_share": spent / (spent + rest)}  # fmt: skip


def size_row(
    width: int, depth: int, repeat: int = 3, horizon: float = 1.0, sgd_budget_s: float = 0.3
) -> dict:
    """Every column of the size table for the net [width] * (depth + 1)."""
    problem, dims, theta0 = teacher_setting(width, depth)
    row = {"width": width, "depth": depth, "p": theta0.numel(), "hd3": depth * width**3}
    cheap = max(repeat, CHEAP_REPEAT)  # short timings: more tries against a shared machine's noise
    row |= gradient_cols(problem, dims, theta0, cheap)
    row |= sgd_cols(problem, dims, theta0, row["grad_module_s"], cheap, sgd_budget_s / CHEAP_REPEAT)
    theta1 = row.pop("theta_after")
    row |= flow_cols(problem, dims, theta0, horizon, repeat)
    row |= analysis_cols(problem, dims, theta0, theta1, row["grad_module_s"], row["sgd_lab_s"],
                         row["flow_picked_s_per_t"])  # fmt: skip
    t_mem = torch.tensor([0.0, min(horizon, 0.1)])

    def work() -> None:
        integrate(problem, dims, theta0, t_mem, Solver(row["flow_picked"]))
        hessian_extremes(problem, theta1, dims)
        GDStepper(problem, dims, theta0, DEFAULT_LR).advance(10)

    row["peak_mb"] = peak_rise_mb(work)
    return row


def size_table(
    sizes, repeat: int = 3, horizon=flow_horizon, sgd_budget_s: float = 0.3, log=print
) -> list[dict]:
    """The rows for ``sizes`` [(width, depth)]; ``horizon``: a number or a function of p."""
    rows = []
    for w, h in sizes:
        t0 = time.perf_counter()
        p = h * w * w
        hz = horizon(p) if callable(horizon) else horizon
        rows.append(size_row(w, h, repeat, hz, sgd_budget_s))
        log(f"  size w={w} h={h} p={p}: {time.perf_counter() - t0:.1f} s")
    return rows


def log_slope(pts: list[tuple[float, float]]) -> float:
    """Least-squares slope of log y against log x over the points (x, y)."""
    pts = [(math.log(x), math.log(y)) for x, y in pts]
    if len(pts) < 2:
        return math.nan
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx > 0 else math.nan


def fit_exponent(rows: list[dict], key: str = "grad_module_s", min_hd3: float = MIN_HD3) -> tuple[float, int]:
    """The log-log slope of ``key`` against h d^3 over the rows with h d^3 >= min_hd3, and their count."""
    pts = [(r["hd3"], r[key]) for r in rows if r["hd3"] >= min_hd3]
    return log_slope(pts), len(pts)


def depth_exponent(rows: list[dict], key: str = "grad_module_s", width: int = 64) -> tuple[float, int]:
    """The log-log slope of ``key`` against the depth h at one width."""
    pts = [(r["depth"], r[key]) for r in rows if r["width"] == width]
    return log_slope(pts), len(pts)


def size_report(rows: list[dict], min_hd3: float = MIN_HD3) -> list[str]:
    """The size table and the fitted exponents, as markdown lines."""
    header = ["w", "h", "p", "grad plain", "grad module", "module / plain (<= 1.5)", "views held / plain",
              "flow rhs / plain", "SGD plain steps/s", "SGD lab steps/s", "lab / plain (>= 0.8)",
              "flow: auto picks", "its s per unit t", "best other", "its s per unit t", "picked / other",
              "curvature point", "in gradients", "lab's points", "share of run", "peak RSS rise"]  # fmt: skip
    body = []
    for r in rows:
        ratio, sgd = r["grad_module_s"] / r["grad_plain_s"], r["sgd_plain_s"] / r["sgd_lab_s"]
        body.append([
            r["width"], r["depth"], f"{r['p']:,}", fmt_s(r["grad_plain_s"]), fmt_s(r["grad_module_s"]),
            f"{ratio:.2f}{'' if ratio <= 1.5 else ' (missed)'}", f"{r['grad_held_s'] / r['grad_plain_s']:.2f}",
            f"{r['grad_theta_s'] / r['grad_plain_s']:.2f}", f"{1 / r['sgd_plain_s']:,.0f}",
            f"{1 / r['sgd_lab_s']:,.0f}", f"{sgd:.2f}{'' if sgd >= 0.8 else ' (missed)'}", r["flow_picked"],
            fmt_s(r["flow_picked_s_per_t"]), r["flow_alt"], fmt_s(r["flow_alt_s_per_t"]),
            f"{r['flow_picked_s_per_t'] / r['flow_alt_s_per_t']:.2f}",
            f"{fmt_s(r['analysis_point_s'])} ({r['analysis_kind']})", f"{r['analysis_in_grads']:.0f}",
            r["analysis_points"], f"{100 * r['analysis_share']:.0f}%", f"{r['peak_mb']:.1f} MB",
        ])  # fmt: skip
    lines = md_table(header, body)
    horizons = sorted({r["flow_horizon"] for r in rows})
    fits = {
        k: (fit_exponent(rows, k, min_hd3), depth_exponent(rows, k))
        for k in ("grad_module_s", "grad_plain_s", "sgd_lab_s")
    }
    (k_mod, n), (h_mod, n_h) = fits["grad_module_s"]
    big = ", ".join(f"{r['width']}x{r['depth']}" for r in rows if r["hd3"] >= min_hd3)
    lines += [
        "",
        f"Flow horizons: t in [0, {' or '.join(f'{h:g}' for h in horizons)}] (default tolerances; longer where the "
        "solves are cheap); the pick is `choose_flow`'s for the default horizon t_max 300. Peak RSS rise: over "
        "one picked-flow solve on [0, 0.1], one curvature point and 10 GD steps.",
        "",
        f"**Fitted exponent** of the time against h d^3 (log-log slope) over the {n} rows with h d^3 >= "
        f"{min_hd3:.0e} ({big}; below, the per-op overhead dominates): gradient through the module "
        f"**{k_mod:.2f}**, plain list {fits['grad_plain_s'][0][0]:.2f}, the lab's SGD step "
        f"{fits['sgd_lab_s'][0][0]:.2f}. Against the depth h at width 64 ({n_h} rows): module {h_mod:.2f}, "
        f"plain {fits['grad_plain_s'][1][0]:.2f}, SGD step {fits['sgd_lab_s'][1][0]:.2f} (1: cost like the math).",
    ]
    return lines
