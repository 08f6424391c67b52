"""The figure that sums up how (S)GD approaches the gradient flow, on the Figure 1 net.

    python scripts/limit.py                      # about 5 minutes on 2 cores, into outputs/limit/<date>/<time>
    python scripts/limit.py --out docs/limit.png # the same, remaking the committed docs/limit.png
    python scripts/limit.py --members 64 --plateau-members 256 --out /tmp/limit.png --runs /tmp/limit_runs
    python scripts/limit.py --runs /tmp/limit_runs --replot     # redraw from the runs of an earlier call

The three runs go under ``--runs`` (new or empty; default a new ``outputs/limit/<date>/<time>``, the
console says which) and the figure to ``--out`` (default ``limit.png`` there; an explicit ``--out``
replaces an existing file). Every argument and the three runs' configs are checked before the first
run starts: exit code 2 with one line on a bad one; 3 when a run fails or lacks what the figure
needs; 130 / 143 when interrupted.

Three lab runs (``dlnlab.lab.runner._driver.run``), then one figure of four panels:

(a) GD at eta = 0.01, 0.005, 0.0025 over the whole Figure 1 horizon (``flow.modified=true``): the largest
    distance to the plain flow (order 1) and to GD's modified flow (order 2); minibatch SGD (batches of
    10 of the 110 samples) at eta = 0.02, 0.01, 0.005, an ensemble sharing its init
    (``ensemble.vary=sgd``) over t <= 5, on the first plateau: the strong error E||theta - theta_flow||
    (order 1/2) and the weak error ||E theta - theta_flow|| (order 1), with 90% bootstrap bars;
(b) the same SGD ensembles over t <= 8, through the first saddle escape: the error constants
    e(t) / eta^p against time (they collapse where the order holds, and grow on the plateau as the
    unstable direction amplifies the noise);
(c) the loss through that escape at eta = 0.01: the SGD ensemble's band, the SME ensemble's band
    (``sgd.sme=true``) and the flow;
(d) the SGD ensemble's spread over the SME's against eta: the variance of the loss and of theta along
    the trajectory and the spread of the exit time, with the ensembles' sampling error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dlnlab.lab.script_args import (
    FIGURE_SUFFIXES,
    ScriptParser,
    cannot_create,
    checked_config,
    existing_dir,
    fresh_dir,
    integer,
    output_dir,
    output_file,
    run_script,
    stamped,
)

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["log.progress=never", "log.figures=false", "logger=none"]
GD = ["flow.modified=true", *QUIET]
SGD = [
    "sgd.batch_size=10", "ensemble.vary=sgd", "sgd.lrs=[0.02,0.01,0.005]", "log.analysis_points=0", *QUIET,
]  # fmt: skip
RUNS = {  # name: overrides
    "gd": GD,
    "plateau": [*SGD, "flow.t_max=5"],
    "escape": [*SGD, "flow.t_max=8", "sgd.sme=true"],
}


def _slope_line(ax, xs, ys, order, **kw) -> None:
    import numpy as np

    x = np.log(xs)
    c = float(np.mean(np.log(ys) - order * x))
    grid = np.exp(np.linspace(x.min() - 0.2, x.max() + 0.2, 10))
    ax.plot(grid, np.exp(c) * grid**order, **kw)


def _orders_panel(ax, gd: dict, sgd: dict) -> None:
    """GD's largest distance to the flow and to its modified flow over the whole horizon; SGD's strong and
    weak errors before the first saddle escape, with 90% bootstrap bars."""
    import numpy as np

    from dlnlab.ensemble_errors import order_undetermined

    lrs = sorted(e["lr"] for e in gd["series"].values() if e.get("lr") is not None)
    plain = [gd["series"][f"sgd_lr_{lr!r}"]["max_dist_to_flow"] for lr in lrs]
    mod = [gd["series"][f"sgd_lr_{lr!r}"]["max_dist_to_modified_flow"] for lr in lrs]
    for ys, order, marker, label in (
        (plain, gd["convergence_order"], "o", "GD to the flow"),
        (mod, gd["convergence_order_modified"], "s", "GD to its modified flow"),
    ):
        mfc = "k" if marker == "o" else "none"
        ax.plot(lrs, ys, marker, color="k", mfc=mfc, ms=4, label=f"{label}: slope {order:.2f}")
        _slope_line(ax, lrs, ys, order, color="k", lw=0.8, ls="-" if marker == "o" else "--")
    lim = sgd["sgd_limit"]
    for key, color, marker, label in (
        ("strong", "C3", "D", "SGD strong E||.||"),
        ("weak_theta", "C0", "v", "SGD weak ||E.||"),
    ):
        e = lim[key]
        vals = np.asarray([np.nan if v is None else v for v in e["max"]], dtype=np.float64)
        bars = np.asarray([b or [v, v] for b, v in zip(e["max_ci90"], vals)], dtype=np.float64)
        err = np.abs(bars.T - vals)
        if e["order"] is None:  # fewer rates with an error than sgd.order_fit
            text = f"{label}: no slope ({e.get('message') or 'too few learning rates'})"
        elif order_undetermined(e["order"], e["ci90"]):  # its interval does not fix a slope
            text = f"{label}: slope undetermined at {lim['members']} members [{e['ci90'][0]:.2f}, {e['ci90'][1]:.2f}]"
        else:
            lo, hi = e["ci90"] or (np.nan, np.nan)
            text = f"{label}: slope {e['order']:.2f} [{lo:.2f}, {hi:.2f}]"
            used = [lim["lrs"].index(lr) for lr in e.get("lrs_used") or lim["lrs"]]
            _slope_line(ax, np.asarray(lim["lrs"])[used], vals[used], e["order"], color=color, lw=0.8)
        ax.errorbar(lim["lrs"], vals, yerr=err, fmt=marker, color=color, ms=4, capsize=2, lw=0.8, label=text)
    from dlnlab.plots import bars_floor, lr_axis

    lr_axis(ax, [*lrs, *lim["lrs"]])
    # a weak error's bars can reach 0 with a few members (debiased, floored at 0): they run off the bottom
    bars_floor(ax, [*plain, *mod, *(v for e in ("strong", "weak_theta") for v in lim[e]["max"])])
    ax.set_xlabel("learning rate $\\eta$")
    ax.set_ylabel("largest distance to the flow")
    t_max = sgd["grid"]["t_max"]
    ax.set_title(f"(a) GD over t <= 300; SGD ({lim['members']} runs) over t <= {t_max:g}", fontsize=8)
    ax.legend(fontsize=5.5, loc="lower right")


def _constants_panel(ax, run_dir: Path) -> None:
    """e(t) / eta^p per learning rate from the run's own figure code (dlnlab.plots.ensemble)."""
    from dlnlab.plots.ensemble import draw_error_constants
    from dlnlab.rundir import load_run

    run = load_run(run_dir)
    draw_error_constants(ax, run, run.summary["sgd_limit"]["escapes"])
    ax.set_title("(b) error constants through the first escape (dotted)", fontsize=8)


def _bands_panel(ax, run_dir: Path, lr: float, lrs: list[float], t_from: float) -> None:
    """The flow and the SGD and SME ensembles' loss at ``lr`` (one of the run's ``lrs``) from ``t_from``,
    in the lab's colours: the flow's, and the learning rate's for both ensembles (the SME's dashed, as
    every figure draws a rate's SME), as in panel (b). The SGD band filled, the SME's between dashed edges:
    one colour, two bands that overlap and stay apart."""
    import numpy as np

    from dlnlab.plots import FLOW_COLOR, series_colors

    color = series_colors(lrs)[lr]
    flow = np.load(run_dir / "series" / "flow.npz")
    keep = flow["t"] >= t_from
    handles = ax.plot(
        flow["t"][keep], flow["loss"][keep], color=FLOW_COLOR, lw=1.4, label="gradient flow", zorder=3
    )
    for name, sme, label in (
        (f"sgd_lr_{lr!r}", False, "SGD ensemble: median, 5-95% band"),
        (f"sme_lr_{lr!r}", True, "SME ensemble: median, 5-95% band"),
    ):
        arr = np.load(run_dir / "series" / f"{name}.npz")
        keep = arr["t"] >= t_from
        loss = arr["loss"][:, keep]
        # a member that stopped (diverged: NaN after) leaves each later point's quantiles to the others;
        # np.quantile made them NaN, and the band and the line ended where it stopped
        q5, med, q95 = np.nanquantile(loss, [0.05, 0.5, 0.95], axis=0)
        if sme:
            band = [
                ax.plot(arr["t"][keep], edge, color=color, lw=0.6, ls=(0, (3, 2)))[0] for edge in (q5, q95)
            ]
        else:
            band = [ax.fill_between(arr["t"][keep], q5, q95, color=color, alpha=0.22, lw=0)]
        stopped = int(np.isnan(loss).any(axis=1).sum())
        note = f" ({stopped} of {len(loss)} members stopped early)" if stopped else ""
        (median,) = ax.plot(
            arr["t"][keep], med, color=color, lw=0.9, ls="--" if sme else "-", label=f"{label}{note}"
        )
        handles.append((band[0], median))  # the legend shows the band under its median
    ax.set_xlabel("time $t$")
    ax.set_ylabel("loss $L$")
    ax.set_title(
        f"(c) the first saddle escape at $\\eta$ = {lr}:\nSGD's spread, the SME's, the flow's none",
        fontsize=8,
    )
    # lower left: an escape falls from the plateau (top left) to the next level (bottom right), so that
    # corner stays empty; upper right hid the start of the fall and the bands' tops (docs/limit.png)
    ax.legend(handles, [h.get_label() if not isinstance(h, tuple) else h[1].get_label() for h in handles],
              fontsize=5.5, loc="lower left")  # fmt: skip


def _spread_panel(ax, sgd: dict) -> None:
    """The SGD ensemble's spread over the SME's against eta: Var L and Var theta along the trajectory,
    and the std of the plateau exit time, with the sampling error band around 1. ``sgd``: the escape
    run's summary, its ``sgd_limit`` read through its record (LimitReport: SMESpread, SpreadRatios, ExitSpreadRow)."""
    from dlnlab.lab.results import LimitReport

    limit = LimitReport.from_dict(sgd["sgd_limit"])
    sme, lrs = limit.sme, limit.lrs
    keys = [repr(float(lr)) for lr in lrs]
    for what, marker, color, label in (
        ("var_loss", "o", "C2", "Var L (median over t)"),
        ("var_theta", "s", "C4", "Var theta (median over t)"),
    ):
        ax.plot(lrs, [getattr(sme.spread_ratio[k], what).median for k in keys], marker + "-", color=color,
                ms=4, lw=0.8, label=label)  # fmt: skip
    exits = [(lr, sme.exit_spread[k][0]) for lr, k in zip(lrs, keys) if sme.exit_spread.get(k)]
    if exits:
        ax.errorbar([lr for lr, _ in exits], [r.std_ratio for _, r in exits],
                    yerr=[r.sampling_error for _, r in exits], fmt="^-", color="C1", ms=4, lw=0.8,
                    capsize=2, label="std of the exit time")  # fmt: skip
    err = sme.sampling_error
    ax.axhspan(1 - err, 1 + err, color="0.85", lw=0, label=f"1 +- sampling error {err:.2f}")
    ax.axhline(1.0, color="k", lw=0.6)
    from dlnlab.plots import lr_axis

    lr_axis(ax, lrs)
    ax.set_xlabel("learning rate $\\eta$")
    ax.set_yscale("linear")
    ax.set_ylabel("SGD's spread / the SME's")
    ax.set_title("(d) the SME's spread against SGD's", fontsize=8)
    ax.legend(fontsize=5.5, loc="lower left")


REQUIRED = {  # what the panels read from each run's summary.json
    "gd": ["convergence_order", "convergence_order_modified"],
    "plateau": [f"sgd_limit.{e}.{k}" for e in ("strong", "weak_theta") for k in ("max", "max_ci90", "ci90", "order")]
    + ["sgd_limit.lrs", "sgd_limit.members", "grid.t_max"],
    "escape": ["sgd_limit.lrs", "sgd_limit.escapes.t_exit", "sgd_limit.sme.spread_ratio",
               "sgd_limit.sme.exit_spread", "sgd_limit.sme.sampling_error"],
}  # fmt: skip
ESCAPE_FILES = ("flow.npz", "sgd_lr_0.01.npz", "sme_lr_0.01.npz")  # panel (c)


def _lacks(run_dir: Path, name: str) -> str | None:
    """Why ``run_dir`` cannot be drawn as this script's run ``name``, or None."""
    from dlnlab.rundir import read_summary_object, run_damage

    why = run_damage(run_dir)
    if why:
        return why
    summary, why = read_summary_object(run_dir / "summary.json")
    if summary is None:
        return why
    for path in REQUIRED[name]:
        node = summary
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return f"summary.json has no {path}"
    if name == "gd":
        done = [
            e
            for e in summary.get("series", {}).values()
            if isinstance(e.get("max_dist_to_modified_flow"), float)
        ]
        if len(done) < 2:
            return "summary.json has fewer than two GD series with both distances"
    for file in ESCAPE_FILES if name == "escape" else ():
        if not (run_dir / "series" / file).is_file():
            return f"series/{file} is missing"
    return None


def parse(argv: list[str] | None):
    ap = ScriptParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--members",
        type=integer(2, 100_000, "ensemble members"),
        help="the escape run's SGD and SME ensembles (default 256)",
    )
    ap.add_argument(
        "--plateau-members",
        type=integer(2, 100_000, "ensemble members"),
        help="the plateau run's SGD ensemble (default 4096)",
    )
    ap.add_argument(
        "--out",
        type=output_file(FIGURE_SUFFIXES),
        help="the figure, replaced if it exists (default: <runs>/limit.png)",
    )
    ap.add_argument(
        "--runs",
        help="where the three run directories go: new or empty (default: a new "
        "outputs/limit/<date>/<time>); with --replot, those of an earlier call",
    )
    ap.add_argument("--replot", action="store_true", help="only redraw the figure from --runs")
    args = ap.parse_args(argv)
    if args.replot:
        if args.runs is None:
            ap.refuse(
                "--replot", "needs --runs, the directory of an earlier call (it holds gd/, plateau/, escape/)"
            )
        given = [
            a for a, v in (("--members", args.members), ("--plateau-members", args.plateau_members)) if v
        ]
        if given:
            ap.refuse(given[0], "sizes the runs, and --replot runs nothing; leave it out")
        args.runs = ap.check("--runs", existing_dir, args.runs)
        for name in RUNS:
            why = _lacks(args.runs / name, name)
            if why:
                ap.refuse(
                    "--runs", f"{args.runs / name}: {why} (not a run of an earlier call of this script)"
                )
        return args
    args.members = args.members or 256
    args.plateau_members = args.plateau_members or 4096
    if args.runs is not None:
        args.runs = ap.check("--runs", output_dir, args.runs)
    else:
        why = cannot_create(stamped(Path("outputs") / "limit"))
        if why:
            ap.refuse("--runs", f"not given, and the default {why}; give --runs <new directory>")
    args.configs = _configs(ap, args)
    return args


def _overrides(args) -> dict[str, list[str]]:
    size = {
        "gd": [],
        "plateau": [f"ensemble.size={args.plateau_members}"],
        "escape": [f"ensemble.size={args.members}"],
    }
    return {name: [*over, *size[name]] for name, over in RUNS.items()}


def _configs(ap: ScriptParser, args) -> dict:
    """The three runs' configs, through the lab's own checks (sizes, budgets) before the first run starts."""
    cfgs = {}
    for name, overrides in _overrides(args).items():
        cfgs[name], why = checked_config(ROOT / "conf", overrides)
        if why:
            arg = {"plateau": "--plateau-members", "escape": "--members"}.get(name, "--runs")
            ap.refuse(arg, f"the {name} run is refused: {why}")
    return cfgs


def _draw(runs: Path, res: dict, out: Path) -> None:
    from dlnlab.plots import new_figure, style
    from dlnlab.rundir import atomic_path

    with style():
        fig = new_figure((8.0, 6.4))
        (a, b), (c, d) = fig.subplots(2, 2)
        _orders_panel(a, res["gd"], res["plateau"])
        _constants_panel(b, runs / "escape")
        t_exit = res["escape"]["sgd_limit"]["escapes"]["t_exit"]
        lrs = res["escape"]["sgd_limit"]["lrs"]
        _bands_panel(c, runs / "escape", 0.01, lrs, max(0.0, t_exit[0] - 2.0) if t_exit else 0.0)
        _spread_panel(d, res["escape"])
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=200, format=out.suffix.lstrip("."))


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    runs = args.runs or fresh_dir(stamped(Path("outputs") / "limit"))
    if args.replot:
        res = {name: json.loads((runs / name / "summary.json").read_text()) for name in RUNS}
    else:
        print(f"writing under {runs}", flush=True)
        from dlnlab.lab.runner import run

        res = {}
        for name, cfg in args.configs.items():
            res[name] = run(cfg, output_dir=runs / name)
            if res[name].exit_code in (130, 143):
                return res[name].exit_code
            why = f"exit code {res[name].exit_code}" if res[name].exit_code else _lacks(runs / name, name)
            if why:
                print(
                    f"error: the {name} run ({runs / name}): {why}; the figure is not drawn", file=sys.stderr
                )
                return 3
    out = args.out or runs / "limit.png"
    _draw(runs, res, out)
    gd = res["gd"]
    print(
        f"GD: order {gd['convergence_order']:.3f} to the flow, {gd['convergence_order_modified']:.3f} to the modified flow"
    )
    from dlnlab.lab.results import limit_lines

    for name in ("plateau", "escape"):
        print(f"SGD, {name} run:")
        print("\n".join(limit_lines(res[name])))
    print(f"wrote {out} (runs in {runs})")
    return 0


if __name__ == "__main__":
    run_script(main)
