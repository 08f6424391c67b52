"""Aggregate runs across seeds: a sweep's jobs, an ensemble's members, or both, setting by setting.

A *setting* is a run's overrides without the seeds (``seed``, ``data.seed``, ``init.seed``,
``sgd.seed``): the runs of one setting differ only in their seeds, and so do the members of an
ensemble, so every member of every run of a setting is one *sample*. Per setting and series:

* the curves across the samples against time: the mean, std and the 10/25/50/75/90% quantiles of the
  loss, the singular values of P, and the distances to the flow and to GD's modified flow
  (``<out>/<setting>/<series>.npz``);
* the plateau exit times of each mode (mean, std, min, max, n);
* the convergence order of each sample (the slope of its largest distance to the flow against the
  learning rate) with the mean and a 90% interval across samples, and the same against the modified
  flows; the order of the samples' mean distance;
* one table row (``aggregate.csv``, ``aggregate.json``) and figures with bands around the flow.

Runs that are missing (a job that never wrote its summary), and series that failed, are skipped and
listed. Reads only the run directories' files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlnlab.lab.rundir import load_run
from dlnlab.metrics import member_arrays, members_of

__all__ = ["Setting", "collect", "aggregate", "SEED_KEYS", "CURVES"]

SEED_KEYS = ("seed", "data.seed", "init.seed", "sgd.seed")
CURVES = ("loss", "sv", "dist_to_flow", "dist_to_modified")
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
USABLE = ("ok", "unstable")


@dataclass
class Setting:
    """The samples of one setting: per series, each sample's arrays and its summary entry."""

    key: str
    runs: list[str] = field(default_factory=list)
    samples: dict[str, list[tuple[dict, dict]]] = field(default_factory=dict)  # series -> [(arrays, entry)]
    skipped: list[str] = field(default_factory=list)


def _setting_key(overrides: list[str]) -> str:
    keep = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in SEED_KEYS]
    return " ".join(sorted(keep)) or "(defaults)"


def _overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [line.strip()[2:] for line in path.read_text().splitlines() if line.strip().startswith("- ")]


def collect(roots: list[Path]) -> tuple[dict[str, Setting], list[str]]:
    """The settings under ``roots`` (run directories or folders holding them) and what was skipped."""
    runs = sorted({p.parent for root in roots for p in Path(root).rglob("summary.json")})
    skipped = []
    for job in sorted({p.parent for root in roots for p in Path(root).rglob("job.json")} - set(runs)):
        rec = json.loads((job / "job.json").read_text())
        skipped.append(f"{job}: no run (exit {rec.get('exit_code')}: {rec.get('message')})")
    settings: dict[str, Setting] = {}
    for run_dir in runs:
        run = load_run(run_dir)
        st = settings.setdefault(
            _setting_key(_overrides(run_dir)), Setting(_setting_key(_overrides(run_dir)))
        )
        st.runs.append(str(run_dir))
        for name, series in run.series.items():
            entry = series.entry
            if str(entry.get("status", "ok")) not in USABLE:
                st.skipped.append(f"{run_dir} {name}: {entry.get('status')}: {entry.get('message', '')}")
                continue
            full = series.members if series.members is not None else series.arrays
            members = entry.get("members") or [entry]
            for e in range(members_of(full) or 1):
                arrays = member_arrays(full, e) if members_of(full) else full
                sub = members[e] if e < len(members) else {}
                if str(sub.get("status", "ok")) in USABLE and arrays:
                    st.samples.setdefault(name, []).append((arrays, {**entry, **sub}))
    return settings, skipped


def _stats(curves: list[np.ndarray]) -> dict[str, np.ndarray]:
    import warnings

    n = min(len(c) for c in curves)
    x = np.stack([np.asarray(c[:n], dtype=np.float64) for c in curves])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (a series past its failure)
        out = {
            "mean": np.nanmean(x, axis=0),
            "std": np.nanstd(x, axis=0, ddof=1) if len(x) > 1 else np.zeros(x.shape[1:]),
        }
        for q in QUANTILES:
            out[f"q{int(q * 100)}"] = np.nanquantile(x, q, axis=0)
    return out


def _spread(values) -> dict | None:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return None
    lo, hi = (np.quantile(v, 0.05), np.quantile(v, 0.95)) if len(v) > 1 else (v[0], v[0])
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "min": float(v.min()),
            "max": float(v.max()), "ci90": [float(lo), float(hi)], "n": int(len(v))}  # fmt: skip


def _orders(st: Setting, key: str) -> dict:
    """Each sample's slope of log max distance against log lr, across the SGD series; and the mean's."""
    by_lr = {}
    for name, samples in st.samples.items():
        if name.startswith("sgd_lr_"):
            by_lr[float(name[len("sgd_lr_") :])] = [s[1].get(key) for s in samples]
    lrs = sorted(by_lr)
    if len(lrs) < 2:
        return {"per_sample": None, "of_the_mean": None}
    n = min(len(by_lr[lr]) for lr in lrs)
    slopes = []
    for i in range(n):
        d = [by_lr[lr][i] for lr in lrs]
        if all(v is not None and v > 0 for v in d):
            slopes.append(float(np.polyfit(np.log(lrs), np.log(d), 1)[0]))
    have = [[v for v in by_lr[lr] if v is not None] for lr in lrs]
    if not all(have):
        return {"per_sample": _spread(slopes), "of_the_mean": None, "lrs": lrs}
    means = [float(np.mean(v)) for v in have]
    of_mean = float(np.polyfit(np.log(lrs), np.log(means), 1)[0]) if all(m > 0 for m in means) else None
    return {"per_sample": _spread(slopes), "of_the_mean": of_mean, "lrs": lrs}


def _exits(samples: list[tuple[dict, dict]]) -> list[dict]:
    times: dict[int, list] = {}
    for _, entry in samples:
        for p in entry.get("plateaus") or []:
            if p.get("exit_mode") is not None and p.get("t_exit") is not None:
                times.setdefault(int(p["exit_mode"]), []).append(p["t_exit"])
    return [{"mode": k, "t_exit": _spread(v)} for k, v in sorted(times.items())]


def _slug(key: str) -> str:
    return "".join(c if c.isalnum() or c in "._=-" else "_" for c in key)[:120] or "setting"


def aggregate(settings: dict[str, Setting], out: Path) -> list[dict]:
    """Write the curves, the table and the figures of every setting under ``out``; returns the rows."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for key, st in settings.items():
        folder = out / _slug(key)
        folder.mkdir(exist_ok=True)
        curves_of = {}
        for name, samples in sorted(st.samples.items()):
            curves = {"t": np.asarray(samples[0][0]["t"], dtype=np.float64)}
            for c in CURVES:
                have = [a[c] for a, _ in samples if c in a]
                if have:
                    for stat, v in _stats(have).items():
                        curves[f"{c}_{stat}"] = v
            curves["t"] = curves["t"][: len(curves.get("loss_mean", curves["t"]))]
            np.savez(folder / f"{name}.npz", **curves)
            curves_of[name] = curves
            entries = [e for _, e in samples]
            sgd = name.startswith("sgd_lr_")
            rows.append({
                "setting": key, "series": name, "samples": len(samples), "runs": len(st.runs),
                "final_loss": _spread([e.get("final_loss") for e in entries]),
                "max_dist_to_flow": _spread([e.get("max_dist_to_flow") for e in entries]) if sgd else None,
                "max_dist_to_modified_flow": _spread([e.get("max_dist_to_modified_flow") for e in entries]) if sgd else None,
                "plateau_exits": _exits(samples),
            })  # fmt: skip
        orders = {
            "to_flow": _orders(st, "max_dist_to_flow"),
            "to_modified_flow": _orders(st, "max_dist_to_modified_flow"),
        }
        for row in rows:
            if row["setting"] == key:
                row["orders"] = orders if row["series"].startswith("sgd_lr_") else None
        (folder / "setting.json").write_text(json.dumps({"setting": key, "runs": st.runs, "skipped": st.skipped,
                                                          "orders": orders}, indent=2))  # fmt: skip
        _figure(folder, key, curves_of)
    return rows


def _figure(folder: Path, key: str, curves_of: dict) -> None:
    """The loss of each series across the samples: the median with the quartile band, the flow's too."""
    from dlnlab.plots._style import new_figure, style

    with style():
        fig = new_figure((5.0, 3.4))
        ax = fig.add_subplot()
        for i, (name, c) in enumerate(curves_of.items()):
            if "loss_q50" not in c:
                continue
            color = "k" if name == "flow" else f"C{i % 10}"
            ax.fill_between(c["t"], c["loss_q25"], c["loss_q75"], color=color, alpha=0.2, lw=0)
            ax.plot(c["t"], c["loss_q50"], color=color, lw=1.0, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("time $t$")
        ax.set_ylabel("loss: median, quartile band")
        ax.set_title(key[:90], fontsize=6)
        ax.legend(fontsize=6)
        fig.savefig(folder / "loss.png", dpi=150)
