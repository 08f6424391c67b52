"""The stiff_ensemble rows of ``scripts/bench.py``: the batched stiff flow (``bdf_batch``) of B Figure 1
nets against one-by-one LSODA solves (the single run's default there) and against the batched rk45.

Figure 1 net [11, 6, 6, 6, 6, 4], whitened teacher [4, 3, 2, 1] with N = 110 (data seed 0), member e from
gaussian(0.1) with init seed 1 + e, t_max 300 on the log grid dt 0.1, default tolerances (rtol 1e-9,
atol 1e-11). Each repeat times the three side by side in one process (wall and CPU seconds); the LSODA
solves of the first ``sample`` members are scaled to B. Deviations are relative, max over the output
times of ||theta(t) - theta_ref(t)|| / ||theta_ref(t)||, in units of rtol: each member against its own
LSODA solve and its own Radau solve (same tolerances; Radau meets them globally here, so it is the
reference for accuracy), for the first ``radau_sample`` members.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from bench_ensemble import DIMS, figure1_ensemble
from bench_size import fmt_s, md_table

from dlnlab.flow import DEFAULT_RTOL, Solver, integrate, time_grid


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def _deviation(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max over t of ||a(t) - ref(t)|| / ||ref(t)||, in units of rtol."""
    return float(((a - ref).norm(dim=-1) / ref.norm(dim=-1)).max()) / DEFAULT_RTOL


def stiff_rows(members: int, t_max: float, repeat: int, sample: int, radau_sample: int, log=print) -> dict:
    """Timings per repeat, the batched solve's per-member counts, and the deviations."""
    problem, theta0 = figure1_ensemble(members)
    t = time_grid(t_max, dt=0.1)
    sample = min(sample, members)
    runs, batch = [], None
    for r in range(repeat):
        batch, bw, bc = _timed(lambda: integrate(problem, DIMS, theta0, t, Solver("bdf_batch")))
        rk, rw, rc = _timed(lambda: integrate(problem, DIMS, theta0, t, Solver("rk45")))
        alone, lw, lc = _timed(
            lambda: [integrate(problem, DIMS, th, t, Solver("lsoda")) for th in theta0[:sample]]
        )
        scale = members / sample
        runs.append({"bdf_w": bw, "bdf_c": bc, "rk45_w": rw, "rk45_c": rc, "lsoda_w": lw * scale, "lsoda_c": lc * scale,
                     "rk45_nfe": rk.nfe})  # fmt: skip
        log(
            f"  stiff ensemble repeat {r + 1}: bdf_batch {bw:.1f} s, rk45 {rw:.1f} s, lsoda x {members} {lw * scale:.1f} s"
        )
    lsoda = torch.stack([a.theta for a in alone], dim=1)
    dev = {
        "vs_lsoda": [_deviation(batch.theta[:, k], lsoda[:, k]) for k in range(sample)],
        "rk45_vs_lsoda": [_deviation(rk.theta[:, k], lsoda[:, k]) for k in range(sample)],
    }
    radau = [integrate(problem, DIMS, th, t, Solver("radau")).theta for th in theta0[:radau_sample]]
    dev["vs_radau"] = [_deviation(batch.theta[:, k], ref) for k, ref in enumerate(radau)]
    dev["lsoda_vs_radau"] = [_deviation(lsoda[:, k], ref) for k, ref in enumerate(radau)]
    dev["rk45_vs_radau"] = [_deviation(rk.theta[:, k], ref) for k, ref in enumerate(radau)]
    m = batch.members
    counts = {
        "batch_nfe": batch.nfe,
        "attempts": int((m.n_steps + m.n_rejected).max()),
        **{k: (float(v.double().mean()), int(v.max())) for k, v in
           (("nfe", m.nfe), ("njev", m.njev), ("n_steps", m.n_steps), ("n_rejected", m.n_rejected))},
        "lsoda_nfe": sum(a.nfe for a in alone) / sample, "lsoda_njev": sum(a.njev for a in alone) / sample,
        "lsoda_steps": sum(a.n_steps for a in alone) / sample,
    }  # fmt: skip
    return {"members": members, "t_max": t_max, "points": len(t), "sample": sample, "radau_sample": radau_sample,
            "runs": runs, "dev": dev, "counts": counts}  # fmt: skip


def stiff_section(
    members: int, t_max: float, repeat: int, sample: int, radau_sample: int, log=print
) -> list[str]:
    res = stiff_rows(members, t_max, repeat, sample, radau_sample, log)
    b, c, d = res["members"], res["counts"], res["dev"]
    rows = []
    for i, r in enumerate(res["runs"]):
        rows.append([
            i + 1, f"{fmt_s(r['bdf_w'])} ({fmt_s(r['bdf_c'])})", f"{fmt_s(r['rk45_w'])} ({fmt_s(r['rk45_c'])})",
            f"{fmt_s(r['lsoda_w'])} ({fmt_s(r['lsoda_c'])})", _ratio(r["lsoda_w"] / r["bdf_w"], 20),
            f"{r['lsoda_c'] / r['bdf_c']:.1f}x", f"{r['rk45_w'] / r['bdf_w']:.1f}x",
        ])  # fmt: skip
    lines = [
        f"B = {b} Figure 1 nets (gaussian 0.1, init seeds 1..{b}), t_max {res['t_max']:g}, {res['points']} output "
        f"points (dt 0.1), rtol 1e-9, atol 1e-11. Wall seconds (CPU seconds in brackets), side by side in one "
        f"process per repeat; {b} lsoda: {res['sample']} solved one by one, scaled to {b}.",
        "",
        *md_table(
            [
                "repeat",
                "bdf_batch (B, p)",
                "rk45 (B, p)",
                f"{b} lsoda one by one",
                "lsoda / bdf_batch, wall (target >= 20)",
                "same, CPU",
                "rk45 / bdf_batch",
            ],
            rows,
        ),  # fmt: skip
        "",
        f"Work: bdf_batch made {c['batch_nfe']:,} batched evaluations in {c['attempts']:,} step attempts (the "
        f"busiest member's); per member, mean (max): {c['nfe'][0]:,.0f} ({c['nfe'][1]:,}) evaluations, "
        f"{c['n_steps'][0]:,.0f} ({c['n_steps'][1]:,}) steps, {c['n_rejected'][0]:.0f} ({c['n_rejected'][1]}) "
        f"rejected, {c['njev'][0]:.1f} ({c['njev'][1]}) Jacobians (one eigendecomposition each). One lsoda "
        f"solve: {c['lsoda_nfe']:,.0f} evaluations, {c['lsoda_steps']:,.0f} steps, {c['lsoda_njev']:.0f} "
        f"Jacobians and LU factorisations. rk45: {res['runs'][-1]['rk45_nfe']:,} batched evaluations.",
        "",
        "Deviation, in units of rtol: max over the output times of ||theta(t) - theta_ref(t)|| / ||theta_ref(t)||, "
        "largest and median over the members compared.",
        "",
        *md_table(
            ["solve", "reference", "members", "largest / rtol", "median / rtol"],
            [
                ["bdf_batch", "own lsoda", res["sample"], *_spread(d["vs_lsoda"])],
                ["rk45 (B, p)", "own lsoda", res["sample"], *_spread(d["rk45_vs_lsoda"])],
                ["bdf_batch", "own radau", res["radau_sample"], *_spread(d["vs_radau"])],
                ["lsoda", "own radau", res["radau_sample"], *_spread(d["lsoda_vs_radau"])],
                ["rk45 (B, p)", "own radau", res["radau_sample"], *_spread(d["rk45_vs_radau"])],
            ],
        ),  # fmt: skip
    ]
    return lines


def _spread(values: list[float]) -> list[str]:
    return [f"{max(values):.3g}", f"{statistics.median(values):.3g}"] if values else ["—", "—"]


def _ratio(x: float, target: float) -> str:
    return f"{x:.1f}x" + ("" if x >= target else " (missed)") if math.isfinite(x) else "—"
