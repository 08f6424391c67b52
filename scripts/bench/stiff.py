"""The stiff_ensemble rows of ``python -m scripts.bench``: the batched stiff flows (``radau_batch``, ``bdf_batch``)
of B Figure 1 nets against one-by-one LSODA solves (the single run's default there) and the batched rk45.

Figure 1 net [11, 6, 6, 6, 6, 4], whitened teacher [4, 3, 2, 1] with N = 110 (data seed 0), member e from
gaussian(0.1) with init seed 1 + e, t_max 300 on the log grid dt 0.1, default tolerances (rtol 1e-9,
atol 1e-11). Each repeat times them side by side in one process (wall and CPU seconds); the LSODA solves
of the first ``sample`` members are scaled to B, and so are LSODA's at rtol 1e-12 (atol 1e-14), the
tolerance at which it is as accurate as radau_batch, for the first ``radau_sample`` members. Deviations
are relative, max over the output times of ||theta(t) - theta_ref(t)|| / ||theta_ref(t)||, in units of
the default rtol: each member against its own scipy Radau solve at rtol 1e-12 (atol 1e-14, the tight
reference) for the first ``radau_sample`` members, and against its own LSODA solve at the default rtol.
"""

from __future__ import annotations

import math
import resource
import statistics
import time

import torch

from dlnlab.flow import DEFAULT_RTOL, Solver, integrate, time_grid, vector_field
from dlnlab.lab.config import CHUNK_MEMBERS
from dlnlab.lab.runner import available_cores, solve_in_chunks
from scripts.bench.common import DIMS, figure1_ensemble, fmt_s, md_table

BATCHED = ("radau_batch", "bdf_batch", "rk45")
TIGHT = {"rtol": 1e-12, "atol": 1e-14}


def _cpu() -> float:
    """CPU seconds of this process and of its ended children (the chunks' workers)."""
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + child.ru_utime + child.ru_stime


def _timed(fn):
    w0, c0 = time.perf_counter(), _cpu()
    out = fn()
    return out, time.perf_counter() - w0, _cpu() - c0


def _chunked(problem, theta0, t, workers: int):
    """radau_batch in the run's chunks (flow.chunk_members=null), ``workers`` at once, as a run solves it."""
    field = vector_field(problem, DIMS, None)
    return solve_in_chunks(field, theta0, t, Solver("radau_batch"), CHUNK_MEMBERS["radau_batch"], workers)


def _deviation(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max over t of ||a(t) - ref(t)|| / ||ref(t)||, in units of the default rtol."""
    return float(((a - ref).norm(dim=-1) / ref.norm(dim=-1)).max()) / DEFAULT_RTOL


def _one_by_one(problem, thetas, t, solver, scale: float) -> tuple[list, float, float]:
    out, wall, cpu = _timed(lambda: [integrate(problem, DIMS, th, t, solver) for th in thetas])
    return out, wall * scale, cpu * scale


def stiff_rows(members: int, t_max: float, repeat: int, sample: int, radau_sample: int, log=print) -> dict:
    """Timings per repeat, the batched solves' per-member counts, and the deviations."""
    problem, theta0 = figure1_ensemble(members)
    t = time_grid(t_max, dt=0.1)
    sample, radau_sample = min(sample, members), min(radau_sample, members)
    runs, batch = [], {}
    for r in range(repeat):
        row = {}
        for m in BATCHED:
            batch[m], row[f"{m}_w"], row[f"{m}_c"] = _timed(
                lambda m=m: integrate(problem, DIMS, theta0, t, Solver(m))
            )
        for key, workers in (("chunks_1", 1), ("chunks_w", available_cores())):
            chunked, row[f"{key}_w"], row[f"{key}_c"] = _timed(
                lambda w=workers: _chunked(problem, theta0, t, w)
            )
        row["workers"] = available_cores()
        alone, row["lsoda_w"], row["lsoda_c"] = _one_by_one(
            problem, theta0[:sample], t, Solver("lsoda"), members / sample
        )
        tight, row["tight_w"], row["tight_c"] = _one_by_one(
            problem, theta0[:radau_sample], t, Solver("lsoda", **TIGHT), members / radau_sample
        )
        runs.append(row)
        log(
            f"  stiff ensemble repeat {r + 1}: "
            + ", ".join(f"{m} {row[f'{m}_w']:.1f} s" for m in BATCHED)
            + f", chunked on 1 / {row['workers']} workers {row['chunks_1_w']:.1f} / {row['chunks_w_w']:.1f} s"
            + f", lsoda x {members} {row['lsoda_w']:.1f} s, at rtol 1e-12 {row['tight_w']:.1f} s"
        )
    lsoda = torch.stack([a.theta for a in alone], dim=1)
    lsoda_tight = torch.stack([a.theta for a in tight], dim=1)
    radau = [integrate(problem, DIMS, th, t, Solver("radau", **TIGHT)).theta for th in theta0[:radau_sample]]
    dev = {
        f"{m}_vs_lsoda": [_deviation(batch[m].theta[:, k], lsoda[:, k]) for k in range(sample)]
        for m in BATCHED
    }
    for m in BATCHED:
        dev[f"{m}_vs_radau"] = [_deviation(batch[m].theta[:, k], ref) for k, ref in enumerate(radau)]
    dev["lsoda_vs_radau"] = [_deviation(lsoda[:, k], ref) for k, ref in enumerate(radau)]
    dev["lsoda_tight_vs_radau"] = [_deviation(lsoda_tight[:, k], ref) for k, ref in enumerate(radau)]
    dev["chunks_vs_batch"] = [
        _deviation(chunked.theta[:, k], batch["radau_batch"].theta[:, k]) for k in range(members)
    ]
    counts = {m: _counts(batch[m]) for m in ("radau_batch", "bdf_batch")}
    counts["rk45_nfe"] = batch["rk45"].nfe
    counts["lsoda"] = {k: sum(getattr(a, k) for a in alone) / sample for k in ("nfe", "njev", "n_steps")}
    return {"members": members, "t_max": t_max, "points": len(t), "sample": sample, "radau_sample": radau_sample,
            "runs": runs, "dev": dev, "counts": counts}  # fmt: skip


def _counts(res) -> dict:
    m = res.members
    per_member = (("nfe", m.nfe), ("njev", m.njev), ("n_steps", m.n_steps), ("n_rejected", m.n_rejected))
    return {
        "batch_nfe": res.nfe,
        "attempts": int((m.n_steps + m.n_rejected).max()),
        **{k: (float(v.double().mean()), int(v.max())) for k, v in per_member},
    }


def stiff_section(
    members: int, t_max: float, repeat: int, sample: int, radau_sample: int, log=print
) -> list[str]:
    res = stiff_rows(members, t_max, repeat, sample, radau_sample, log)
    b, c, d = res["members"], res["counts"], res["dev"]
    rows = []
    for i, r in enumerate(res["runs"]):
        rows.append([
            i + 1, *(f"{fmt_s(r[f'{m}_w'])} ({fmt_s(r[f'{m}_c'])})" for m in (*BATCHED, "lsoda", "tight")),
            _ratio(r["lsoda_w"] / r["radau_batch_w"], 20), f"{r['lsoda_c'] / r['radau_batch_c']:.1f}x",
            f"{r['tight_c'] / r['radau_batch_c']:.1f}x", f"{r['rk45_c'] / r['radau_batch_c']:.2f}x",
            f"{r['bdf_batch_c'] / r['radau_batch_c']:.2f}x",
        ])  # fmt: skip
    rc, bc, lc = c["radau_batch"], c["bdf_batch"], c["lsoda"]
    lines = [
        f"B = {b} Figure 1 nets (gaussian 0.1, init seeds 1..{b}), t_max {res['t_max']:g}, {res['points']} output "
        f"points (dt 0.1), rtol 1e-9, atol 1e-11. Wall seconds (CPU seconds in brackets), side by side in one "
        f"process per repeat; {b} lsoda: {res['sample']} solved one by one, scaled to {b}; lsoda at rtol 1e-12 "
        f"(as accurate as radau_batch): {res['radau_sample']} solved, scaled.",
        "",
        *md_table(
            [
                "repeat",
                "radau_batch",
                "bdf_batch",
                "rk45 (B, p)",
                f"{b} lsoda",
                f"{b} lsoda at 1e-12",
                "lsoda / radau_batch, wall (target >= 20)",
                "same, CPU",
                "lsoda at 1e-12 / radau_batch, CPU",
                "rk45 / radau_batch, CPU",
                "bdf_batch / radau_batch, CPU",
            ],
            rows,
        ),  # fmt: skip
        "",
        *_chunk_lines(res),
        "",
        f"Work: radau_batch made {rc['batch_nfe']:,} batched evaluations (each of the three stages of the members "
        f"still iterating, or of f at the steps' ends) in {rc['attempts']:,} step attempts (the busiest member's); "
        f"per member, mean (max): {rc['nfe'][0]:,.0f} ({rc['nfe'][1]:,}) evaluations, {rc['n_steps'][0]:,.0f} "
        f"({rc['n_steps'][1]:,}) steps, {rc['n_rejected'][0]:.0f} ({rc['n_rejected'][1]}) rejected, "
        f"{rc['njev'][0]:.1f} ({rc['njev'][1]}) Jacobians (one eigendecomposition each). bdf_batch: "
        f"{bc['batch_nfe']:,} batched evaluations in {bc['attempts']:,} attempts, {bc['n_steps'][0]:,.0f} steps "
        f"and {bc['njev'][0]:.1f} Jacobians per member. One lsoda solve: {lc['nfe']:,.0f} evaluations, "
        f"{lc['n_steps']:,.0f} steps, {lc['njev']:.0f} Jacobians and LU factorisations. rk45: "
        f"{c['rk45_nfe']:,} batched evaluations.",
        "",
        "Deviation, in units of rtol 1e-9: max over the output times of ||theta(t) - theta_ref(t)|| / "
        "||theta_ref(t)||, largest and median over the members compared.",
        "",
        *md_table(
            ["solve", "reference", "members", "largest / rtol", "median / rtol"],
            [
                *(
                    [m, "own radau at 1e-12", res["radau_sample"], *_spread(d[f"{m}_vs_radau"])]
                    for m in BATCHED
                ),
                ["lsoda", "own radau at 1e-12", res["radau_sample"], *_spread(d["lsoda_vs_radau"])],
                [
                    "lsoda at 1e-12",
                    "own radau at 1e-12",
                    res["radau_sample"],
                    *_spread(d["lsoda_tight_vs_radau"]),
                ],
                *([m, "own lsoda", res["sample"], *_spread(d[f"{m}_vs_lsoda"])] for m in BATCHED),
            ],
        ),  # fmt: skip
    ]
    return lines


def _chunk_lines(res: dict) -> list[str]:
    """The run's chunks (flow.chunk_members=null): one process, and the run's workers at once."""
    b, size = res["members"], CHUNK_MEMBERS["radau_batch"]
    k, w = math.ceil(b / size), res["runs"][0]["workers"]
    rows = [
        [
            i + 1, f"{fmt_s(r['radau_batch_w'])} ({fmt_s(r['radau_batch_c'])})",
            f"{fmt_s(r['chunks_1_w'])} ({fmt_s(r['chunks_1_c'])})", f"{fmt_s(r['chunks_w_w'])} ({fmt_s(r['chunks_w_c'])})",
            f"{r['chunks_1_c'] / r['radau_batch_c']:.2f}x", f"{r['radau_batch_w'] / r['chunks_w_w']:.2f}x",
            f"{r['lsoda_w'] / r['chunks_w_w']:.1f}x",
        ]
        for i, r in enumerate(res["runs"])
    ]  # fmt: skip
    dev = res["dev"]["chunks_vs_batch"]
    return [
        f"radau_batch as a run solves it: {k} chunks of {size} members (flow.chunk_members=null), one after "
        f"another in one process and {min(w, k)} at once in forked workers (this machine's {w} cores); CPU "
        "seconds include the workers'. Each member of the chunked solve is within "
        f"{max(dev):.2g} rtol of its one-batch solve (rounding: the members a batch evaluates together).",
        "",
        *md_table(
            [
                "repeat",
                "radau_batch, one batch",
                f"{k} chunks, 1 process",
                f"{k} chunks, {min(w, k)} workers",
                "chunks / one batch, CPU (1 process)",
                "one batch / chunks on workers, wall",
                f"{b} lsoda / chunks on workers, wall",
            ],
            rows,
        ),  # fmt: skip
    ]


def _spread(values: list[float]) -> list[str]:
    return [f"{max(values):.3g}", f"{statistics.median(values):.3g}"] if values else ["—", "—"]


def _ratio(x: float, target: float) -> str:
    return f"{x:.1f}x" + ("" if x >= target else " (missed)") if math.isfinite(x) else "—"
