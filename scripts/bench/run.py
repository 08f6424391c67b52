"""Whole lab runs against plain torch (a section of ``python -m scripts.bench``).

* wide: the width-256, depth-8 net (t_max 5, one learning rate) run by the lab with its defaults, and
  with the curvature analysis and theta off, against a plain torch loop doing the same GD steps and the
  same number of flow evaluations of the closed-form gradient (the targets: defaults <= 1.5x the run
  without analysis and theta, and that <= 1.5x the plain loop). The runs are ``dlnlab.lab.runner._driver.run``
  in this process, timed by their summary's wall time (from the start of the flow to the written run
  directory; the imports and the config check before it are the same for any size).
* ensemble: ``ensemble.size=64`` on the Figure 1 net against one run of member 0 alone, times 64 (the
  members' one-by-one runs cost the same: the same net, the same steps), per series and for the run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from dlnlab.lab.results import RunResult

WIDE = [
    "model.dims=[256,256,256,256,256,256,256,256,256]", "flow.t_max=5", "sgd.lrs=[0.01]",
    "data.n_samples=256", "init.scale=0.03", "log.progress=never",
]  # fmt: skip
OFF = ["log.analysis_points=0", "log.save_theta=false"]


def _run(overrides: list[str], out: Path) -> RunResult:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dlnlab.lab.config import TrainConfig  # noqa: F401 - imports the schema, which registers itself
    from dlnlab.lab.runner import run

    GlobalHydra.instance().clear()
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        cfg = compose(config_name="train", overrides=overrides)
    return run(cfg, output_dir=out)


def _plain(dims, nfe: int, steps: int, lr: float, scale: float, seed: int) -> float:
    """Seconds of nfe closed-form gradients on theta (what the flow evaluates) and GD steps on the blocks."""
    import dlnlab

    problem = dlnlab.RegressionProblem.teacher([4, 3, 2, 1], d_x=dims[0], d_y=dims[-1], n_samples=256, seed=0)
    theta = dlnlab.pack(dlnlab.gaussian(dims, scale=scale, seed=seed))
    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(nfe):
            problem.gradient_theta(theta, dims)
        ws = dlnlab.unpack(theta.clone(), dims)
        for _ in range(steps):
            for w, g in zip(ws, problem.gradient(ws)):
                w.sub_(g, alpha=lr)
        return time.perf_counter() - t0


def wide_section(log=print) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        log("wide: the lab with its defaults ...")
        full = _run(WIDE, Path(tmp) / "defaults")
        log("wide: the lab without curvature and theta ...")
        off = _run([*WIDE, *OFF], Path(tmp) / "off")
    flow, sgd = off["series"]["flow"], off["series"]["sgd_lr_0.01"]
    plain = _plain([256] * 9, int(flow["nfe"]), int(sgd["steps"]), 0.01, 0.03, off.summary.seeds.init)
    a, b = full["wall_time_s"], off["wall_time_s"]
    return [
        f"`{' '.join(WIDE[:-1])}` (p = 524,288): flow `{flow['method']}` ({flow['nfe']} evaluations), "
        f"{sgd['steps']} GD steps; {full.summary.analysis.why}; saddles: {full.summary.analysis.saddles}.",
        "",
        "| run | wall s | ratio | target |",
        "|---|---|---|---|",
        f"| lab, defaults | {a:.1f} | {a / b:.2f} x the next row | <= 1.5 {'met' if a / b <= 1.5 else 'NOT met'} |",
        f"| lab, `{' '.join(OFF)}` | {b:.1f} | {b / plain:.2f} x plain | <= 1.5 {'met' if b / plain <= 1.5 else 'NOT met'} |",
        f"| plain torch: {flow['nfe']} gradients + {sgd['steps']} GD steps | {plain:.1f} | 1 | |",
    ]  # fmt: skip


def ensemble_run_section(log=print) -> list[str]:
    base = ["flow.t_max=20", "log.progress=never", "log.figures=false"]
    with tempfile.TemporaryDirectory() as tmp:
        log("ensemble: 64 members in one run ...")
        ens = _run([*base, "ensemble.size=64"], Path(tmp) / "ens")
        log("ensemble: member 0 alone ...")
        one = _run(base, Path(tmp) / "one")
    lines = [
        "The Figure 1 net, t_max 20 (two saddle escapes), the lab's defaults: one run of `ensemble.size=64` "
        f"(flow: {ens['series']['flow']['method']}) against member 0 run alone (flow: "
        f"{one['series']['flow']['method']}) times 64.",
        "",
        "| series | ensemble s | 64 one by one s | speedup |",
        "|---|---|---|---|",
    ]
    for name, e in ens["series"].items():
        alone = 64 * one["series"][name]["wall_time_s"]
        lines.append(f"| {name} | {e['wall_time_s']:.1f} | {alone:.1f} | {alone / e['wall_time_s']:.1f}x |")
    alone = 64 * one["wall_time_s"]
    lines.append(
        f"| whole run | {ens['wall_time_s']:.1f} | {alone:.1f} | {alone / ens['wall_time_s']:.1f}x |"
    )
    return lines
