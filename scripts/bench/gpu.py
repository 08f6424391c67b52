"""GPU rows of ``python -m scripts.bench`` (``--device cuda``): wide nets at depth 4 in float64 and float32.

Per width and dtype: the gradient through the adjacency module (``problem.gradient(net.weights)``) on
the GPU against the same on the CPU (one thread), and a GD step of the core stepper on the GPU
(``GDStepper.advance``) against the bare matmuls the step needs: the 3 (h - 1) products of w x w
matrices of the closed form (h - 1 prefix products, two per layer in the backward sweep), timed alone on
preallocated tensors. GPU timings are bracketed by ``torch.cuda.synchronize()``. A width whose working
set would not fit in the free GPU memory is skipped with a line saying so.

An ensemble of ENSEMBLE = 1024 Figure 1 nets (``scripts.bench.common.figure1_ensemble``): GD steps of the
batched core stepper (``GDStepper`` on (1024, p)) and the batched flow (``integrate`` with dopri5,
per-member steps) over ENSEMBLE_T_MAX, on the GPU against the same calls on the CPU, and the largest
relative deviation of the GPU's weights from the CPU's (float64: rounding only).
"""

from __future__ import annotations

import time

import torch

from dlnlab.descent import GDStepper
from dlnlab.network import DeepLinearNetwork
from scripts.bench.common import best_of, fmt_s, md_table, teacher_setting

WIDTHS, DEPTH = (1024, 2048, 4096), 4
ENSEMBLE, ENSEMBLE_STEPS, ENSEMBLE_LR, ENSEMBLE_T_MAX = 1024, 500, 0.01, 5.0
CPU_MAX_S = 2.0  # a CPU gradient slower than this is timed once (no best-of)


def gradient_seconds(problem, dims, theta0, repeat: int, sync=None) -> float:
    net = DeepLinearNetwork.from_theta(dims, theta0)
    with torch.no_grad():
        t0 = time.perf_counter()
        problem.gradient(net.weights)
        (sync or (lambda: None))()
        once = time.perf_counter() - t0
        if once > CPU_MAX_S:
            return once
        return best_of({"g": lambda: problem.gradient(net.weights)}, repeat, sync=sync)["g"]


def gpu_row(width: int, dtype: torch.dtype, repeat: int, device: str = "cuda") -> dict:
    """One row (``device="cpu"`` runs the same code on the CPU: a check of the path without a GPU)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    problem, dims, theta0 = teacher_setting(width, DEPTH, dtype=dtype)
    cpu_s = gradient_seconds(problem, dims, theta0, repeat)
    gpu_problem, gpu_theta = problem.to(device), theta0.to(device)
    gpu_s = gradient_seconds(gpu_problem, dims, gpu_theta, repeat, sync=sync)
    stepper = GDStepper(gpu_problem, dims, gpu_theta, 1e-3)
    a, b, c = (torch.randn(width, width, dtype=dtype, device=device) for _ in range(3))
    n_mm = 3 * (DEPTH - 1)

    def bare() -> None:
        for _ in range(n_mm):
            torch.mm(a, b, out=c)

    with torch.no_grad():
        t = best_of({"step": lambda: stepper.advance(1), "bare": bare}, repeat, sync=sync)
    return {"width": width, "dtype": str(dtype).removeprefix("torch."), "cpu_s": cpu_s, "gpu_s": gpu_s,
            "step_s": t["step"], "bare_s": t["bare"], "n_mm": n_mm}  # fmt: skip


def ensemble_row(members: int = ENSEMBLE, device: str = "cuda", steps: int = ENSEMBLE_STEPS) -> dict:
    """``members`` Figure 1 nets: batched GD steps and the batched dopri5 flow, the device against the CPU
    (``device="cpu"`` runs the same code twice on the CPU: a check of the path without a GPU)."""
    from dlnlab.flow import Solver, integrate, time_grid
    from scripts.bench.common import DIMS, figure1_ensemble

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    problem, theta0 = figure1_ensemble(members)
    grid = time_grid(ENSEMBLE_T_MAX, dt=0.1)
    out: dict = {"members": members, "steps": steps, "t_max": ENSEMBLE_T_MAX}
    for where, prob, th in (("cpu", problem, theta0), ("dev", problem.to(device), theta0.to(device))):
        with torch.no_grad():
            stepper = GDStepper(prob, DIMS, th, ENSEMBLE_LR)
            sync()
            t0 = time.perf_counter()
            stepper.advance(steps)
            sync()
            out[f"gd_{where}_s"], out[f"gd_{where}"] = time.perf_counter() - t0, stepper.theta.cpu()
            res = integrate(prob, DIMS, th, grid.to(th.device), Solver("dopri5"))
            sync()
            out[f"flow_{where}_s"], out[f"flow_{where}"] = res.wall_time_s, res.theta.cpu()
            out[f"flow_{where}_status"] = str(res.status)
    for part in ("gd", "flow"):
        a, b = out.pop(f"{part}_dev"), out.pop(f"{part}_cpu")
        out[f"{part}_rel_dev"] = float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())
    return out


def fits(width: int, dtype: torch.dtype) -> bool:
    """Weights, gradient, prefix products and the stepper's copies: about 8 h w^2 numbers, with room."""
    need = 16 * DEPTH * width * width * torch.finfo(dtype).bits // 8
    free, _ = torch.cuda.mem_get_info()
    return need < 0.8 * free


def gpu_section(repeat: int, widths=WIDTHS, log=print) -> list[str]:
    if not torch.cuda.is_available():
        return ["GPU rows skipped: torch.cuda.is_available() is False on this machine (no CUDA device)."]
    rows, skipped = [], []
    for dtype in (torch.float64, torch.float32):
        for w in widths:
            if not fits(w, dtype):
                skipped.append(f"width {w} {dtype}: not enough free GPU memory")
                continue
            t0 = time.perf_counter()
            rows.append(gpu_row(w, dtype, repeat))
            log(f"  gpu w={w} {dtype}: {time.perf_counter() - t0:.1f} s")
    name = torch.cuda.get_device_name()
    body = [
        [r["width"], DEPTH, r["dtype"], fmt_s(r["cpu_s"]), fmt_s(r["gpu_s"]), f"{r['cpu_s'] / r['gpu_s']:.1f}x",
         fmt_s(r["step_s"]), f"{fmt_s(r['bare_s'])} ({r['n_mm']} matmuls)", f"{r['step_s'] / r['bare_s']:.2f}"]
        for r in rows
    ]  # fmt: skip
    header = ["w", "h", "dtype", "gradient CPU (1 thread)", "gradient GPU", "CPU / GPU", "GD step GPU",
              "bare matmuls GPU", "step / bare"]  # fmt: skip
    lines = [
        f"GPU: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}.",
        "",
        *md_table(header, body),
    ]
    lines += [f"Skipped: {s}." for s in skipped]
    log(f"  gpu ensemble of {ENSEMBLE} Figure 1 nets ...")
    e = ensemble_row()
    lines += [
        "",
        f"An ensemble of {e['members']} Figure 1 nets (float64), the GPU against the CPU (one thread):",
        "",
        *md_table(
            ["work", "CPU", "GPU", "CPU / GPU", "largest rel. deviation"],
            [[f"{e['steps']} batched GD steps (lr {ENSEMBLE_LR})", fmt_s(e["gd_cpu_s"]), fmt_s(e["gd_dev_s"]),
              f"{e['gd_cpu_s'] / e['gd_dev_s']:.1f}x", f"{e['gd_rel_dev']:.1e}"],
             [f"batched dopri5 flow to t = {e['t_max']:g} ({e['flow_cpu_status']} / {e['flow_dev_status']})",
              fmt_s(e["flow_cpu_s"]), fmt_s(e["flow_dev_s"]), f"{e['flow_cpu_s'] / e['flow_dev_s']:.1f}x",
              f"{e['flow_rel_dev']:.1e}"]],
        ),
    ]  # fmt: skip
    return lines
