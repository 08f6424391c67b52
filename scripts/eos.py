"""GD at the edge of stability against its central flow and the gradient flow (``dlnlab.eos``).

    python scripts/eos.py                                 # the 4-4-4-3 net of docs/eos.md, seed 5 (~1 min)
    python scripts/eos.py --seed 15 --factor 0.97 --t-max 40 --window 8 --out /tmp/eos.json
    python scripts/eos.py --lookahead 0.1 0.025           # the central flow's sensitivity to its lookahead

The net: widths 4-4-4-3, teacher singular values [2, 1, 0.5], whitened inputs (N = 20), Gaussian
init with entries of standard deviation 0.4, data and init from ``--seed``. The learning rate is
eta = 2 / (factor x S_gf), S_gf the sharpness of the gradient flow's limit, so GD cannot follow the
flow to its end when factor < 1. Prints GD's sharpness against 2/eta, the central flow's, the losses
(GD's, GD's window average, the central flow's prediction L + 1/2 <Sigma, H>, the flow's) and the
distances of GD's window average to both flows over time; ``--out`` writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time

from dlnlab.lab.script_args import ScriptParser, integer, output_file, positive, run_script

DIMS = (4, 4, 4, 3)
TEACHER = (2.0, 1.0, 0.5)


def _factor(text: str) -> float:
    factor = positive("eta = 2 / (factor S_gf)")(text)
    if factor > 2:  # eta below 1 / S_gf: far inside the stable range, nothing near the edge to see
        raise argparse.ArgumentTypeError(
            f"expected a number in (0, 2] (eta = 2 / (factor S_gf)), got {text!r}"
        )
    return factor


def parse(argv: list[str] | None):
    """The arguments, every one checked before any work: one line and exit code 2 on a bad one."""
    ap = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=5, help="data and init seed (default 5)")
    ap.add_argument(
        "--factor", type=_factor, default=0.97, help="eta = 2 / (factor S_gf), in (0, 2] (default 0.97)"
    )
    ap.add_argument(
        "--t-max",
        type=positive("the horizon in flow time"),
        default=40.0,
        help="horizon in flow time (default 40)",
    )
    ap.add_argument(
        "--window",
        type=integer(2, 10**6, "even"),
        default=None,
        help="GD's averaging window, even steps (default: dlnlab.eos.WINDOW, 8)",
    )
    ap.add_argument(
        "--lookahead",
        type=positive("the central flow's delta / eta"),
        nargs="+",
        default=[0.1],
        help="central flow's delta / eta",
    )
    ap.add_argument("--out", type=output_file([".json"]), help="write the numbers here as JSON (replaced)")
    args = ap.parse_args(argv)
    if args.window is not None and args.window % 2:
        ap.refuse(
            "--window", f"expected an even integer from 2 (GD's zigzag has period 2), got {args.window}"
        )
    return args


def _g(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def _table(rep, times) -> list[dict]:
    rows = []
    for want in times:
        i = int((rep.t - want).abs().argmin())
        rows.append({
            "t": float(rep.t[i]), "S_gd": float(rep.gd_spectrum.sharpness[i]), "S_central": float(rep.central.sharpness[i]),
            "loss_gd": float(rep.gd_loss[i]), "loss_gd_avg": float(rep.gd_avg_loss[i]),
            "loss_central_predicted": float(rep.central.predicted_loss[i]), "loss_flow": float(rep.flow_loss[i]),
            "dist_avg_central": float(rep.distances.to_central[i]), "dist_avg_flow": float(rep.distances.to_flow[i]),
            "ratio": float(rep.distances.ratio[i]), "amplitude2": float(rep.amplitude[i]) ** 2,
            "var_gd": float(rep.measured_variance[i]), "var_central": float(rep.central.top_variance[i]),
        })  # fmt: skip
    return rows


def _median_ratio(a, b, where) -> float | None:
    r = a[where] / b[where]
    r = r[r.isfinite()]
    return float(r.quantile(0.5)) if r.numel() else None


def _restarted(cmp) -> dict | None:
    """Both flows from GD's average after the edge: distances at a few times after the restart."""
    if cmp is None:
        return None
    t0, out = float(cmp.t[0]), {"t_start": float(cmp.t[0]), "rows": []}
    for dt in (1, 2, 5, 10, 15, 20, 30):
        i = int((cmp.t - t0 - dt).abs().argmin())
        if abs(float(cmp.t[i]) - t0 - dt) < 0.5:
            out["rows"].append({"t": float(cmp.t[i]), "dist_avg_central": float(cmp.to_central[i]),
                                "dist_avg_flow": float(cmp.to_flow[i]), "ratio": float(cmp.ratio[i])})  # fmt: skip
    finite = cmp.ratio[1:].isfinite()
    out["ratio_median"] = float(cmp.ratio[1:][finite].quantile(0.5)) if bool(finite.any()) else None
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # torch and the core after the arguments: a refusal takes 0.1 s, not torch's 1.4 s of imports
    import torch

    from dlnlab import init
    from dlnlab.eos import WINDOW, edge_report, gfs_sharpness
    from dlnlab.network import pack
    from dlnlab.problem import RegressionProblem
    from dlnlab.rundir import write_text

    args.window = args.window or WINDOW
    torch.set_num_threads(1)
    problem = RegressionProblem.teacher(
        list(TEACHER), d_x=DIMS[0], d_y=DIMS[-1], n_samples=20, seed=args.seed
    )
    theta0 = pack(init.gaussian(DIMS, 0.4, seed=args.seed))
    s_gf = float(gfs_sharpness(problem, DIMS, torch.zeros(1), theta0[None]).sharpness[0])
    lr = 2.0 / (args.factor * s_gf)
    steps = int(round(args.t_max / lr))
    print(f"seed {args.seed}: S_gf = {s_gf:.4f}, eta = {lr:.6g}, 2/eta = {2 / lr:.6g}, {steps} steps")
    start = time.perf_counter()
    reports = [
        edge_report(problem, DIMS, theta0, lr, steps, window=args.window, lookahead=la)
        for la in args.lookahead
    ]
    rep = reports[0]
    d, c = rep.diagnostics, rep.central
    t_edge = d.t_edge if d.t_edge is not None else 0.0
    times = sorted(
        {0.0, t_edge, t_edge + 1, t_edge + 2, 5.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 35.0, args.t_max}
    )
    rows = _table(rep, [x for x in times if x <= args.t_max])
    cols = list(rows[0])
    print(" ".join(f"{k:>11.11}" for k in cols))
    for r in rows:
        print(" ".join(f"{_g(r[k]):>11}" for k in cols))
    early = (rep.t >= t_edge) & (rep.t <= t_edge + 10) & torch.isfinite(rep.distances.ratio)
    summary = {
        "seed": args.seed, "S_gf": s_gf, "lr": lr, "threshold": 2 / lr, "steps": steps, "window": args.window,
        "gd_t_edge": d.t_edge, "gd_hover_share": d.hover_share, "gd_median_S_over_threshold": d.median_ratio,
        "gd_outcome": str(d.outcome), "gd_final_loss": d.final_loss,
        "central_edge_intervals": c.edge_intervals, "central_max_excess": c.max_excess,
        "central_pinned_S": float(c.sharpness[c.sigma_trace > 0].quantile(0.5)) if bool((c.sigma_trace > 0).any()) else None,
        "central_nfe": c.trajectory.nfe, "central_final_loss": float(c.loss[-1]), "flow_final_loss": float(rep.flow_loss[-1]),
        "sharpness_gd_final": rep.sharpness.gd_final, "sharpness_flow_limit": rep.sharpness.flow_limit,
        "sharpness_balanced": rep.sharpness.balanced, "central_final_S": float(c.sharpness[-1]),
        "gfs_t": rep.gfs.t.tolist(), "gfs_sharpness": rep.gfs.sharpness.tolist(),
        "gfs_converged": rep.gfs.converged.tolist(), "gfs_non_increasing": rep.gfs.non_increasing(),
        "ratio_median_early_edge": float(rep.distances.ratio[early].quantile(0.5)) if bool(early.any()) else None,
        "ratio_max_early_edge": float(rep.distances.ratio[early].max()) if bool(early.any()) else None,
        "ratio_final": float(rep.distances.ratio[torch.isfinite(rep.distances.ratio)][-1]),
        "loss_parting_time": rep.loss_parting, "amplitude_median_after_edge": float(rep.amplitude[rep.t >= t_edge].nanquantile(0.5)),
        "lookahead": {str(la): {"max_dist_to_first": float((r.central.theta - rep.central.theta).norm(dim=-1).max()),
                                "nfe": r.central.trajectory.nfe} for la, r in zip(args.lookahead, reports)},
        "variance_ratio_gd_over_central_early_edge": _median_ratio(rep.measured_variance, c.top_variance, early),
        "restarted": _restarted(rep.restarted),
        "wall_time_s": time.perf_counter() - start, "rows": rows,
    }  # fmt: skip
    for key, value in summary.items():
        if key != "rows":
            print(f"{key}: {value}")
    if args.out is not None:
        write_text(args.out, json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    run_script(main)
