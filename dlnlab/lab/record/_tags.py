"""What a series logs to TensorBoard: its tags, their x axis, the thinning of long series, the layout.

TensorBoard is read at its defaults (docs/tensorboard.md), so what is logged is chosen so that the
defaults cannot mislead:

* **x is the flow time.** A scalar's x axis is an integer step; every series logs at
  step = round(1000 t) (:func:`step_scale`; 10^6 t for grids finer than 0.001), which TensorBoard
  labels 50k for t = 50: the same step is the same t in every run, whatever its ``log.dt``.
* **Every point is kept.** TensorBoard keeps 1000 points per tag by default (a reservoir sample); a
  series logs at most ``log.tb_max_points`` (default 1000) per tag: every grid point up to that, and
  above it each bucket's minimum and maximum (:class:`Thinner`), so peaks survive.
* **"Ignore outliers" cannot hide an extreme.** It scales a chart to the 5-95 % quantiles of all the
  points drawn. Where an extreme is the reading (the distance to the flow's maximum, the number the
  convergence order is fitted to; lambda_min's range), the series also logs that extreme as a
  constant line over the whole horizon (:func:`extreme_lines`); the loss chart carries the plateau
  levels L*_r the same way. A constant line holds 1000 points, so the extreme is inside the range.
* **Log axes by tag**: quantities that span decades are logged as log10 (``.../log10_*``) where they
  are positive (:func:`log10_positive`); the one signed quantity among them, the next top Hessian
  eigenvalues, is also logged as it is, in a chart of its own.
* **Smoothing** (0.6 by default) only touches dense curves here: categorical and per-mode numbers
  are tables (Text) and single numbers are HParams columns, never charts.

An ensemble logs the members' mean under every tag; for the loss and the distance to the flow also
its median and quartiles, under tags of the series' own (``spread/<series>/...``), so that each
series gets a band chart of its own instead of every band stacked in one chart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "TagPlan",
    "Thinner",
    "series_tags",
    "extreme_lines",
    "note_extremes",
    "step_scale",
    "tensorboard_layout",
    "x_label",
    "RunCharts",
    "ENSEMBLE_STATS",
    "SPREAD_TAGS",
    "log10_positive",
]

ENSEMBLE_STATS = {"min": 0.0, "q25": 0.25, "median": 0.5, "q75": 0.75, "max": 1.0}
SPREAD_STATS = ("q25", "median", "q75")  # the band charts: median and quartiles
SPREAD_TAGS = {"loss/log10": "log10 loss", "dist/log10_flow": "log10 distance to the flow"}


def step_scale(dt: float) -> float:
    """Steps per grid index: step = round(m * step_scale(dt)) = round(t * 1000^n), the smallest n >= 1
    with dt * 1000^n >= 1, so that distinct grid points get distinct steps."""
    scale = 1000.0
    while dt * scale < 1.0:
        scale *= 1000.0
    return dt * scale


def x_label(dt: float) -> str:
    """How to read the x axis: 'x: 1000 t (1k is t = 1)'."""
    n = round(step_scale(dt) / dt)
    unit = {1000: "k", 10**6: "M", 10**9: "G"}.get(n, "k")
    return f"x: {n} t, so 1{unit} is t = 1"


def log10_positive(x) -> np.ndarray:
    """log10 of the positive values; NaN (a point not drawn) at 0, below and where not finite. Never
    log10 |x|: a Hessian eigenvalue of -2 would read as +2, a positive curvature (the 2nd eigenvalue at
    a strict saddle). Of the logged quantities only the next top eigenvalues can be negative (the
    sharpness cannot: L is a convex quadratic in each W_j alone, so each diagonal block of H is positive
    semi-definite and tr H >= 0); they are also logged signed (``curvature/eig_<i>``)."""
    a = np.asarray(x, dtype=np.float64)
    pos = a > 0  # NaN compares False
    return np.where(pos, np.log10(np.where(pos, a, 1.0)), np.nan)


@dataclass(frozen=True)
class TagPlan:
    """What one series logs, fixed once for the run.

    series: its name; lr: its learning rate (None for the flow); levels, modes: the plateau levels L*_r
    and the data's modes m_k drawn as constant lines (the flow only: they also keep TensorBoard's
    "ignore outliers" scaling from cutting a curve's top where it jumps in a few points); curvature: whether the run computes lambda_min and the
    sharpness; members: the ensemble size (None for a single net); step_per_grid: steps per grid index.
    """

    series: str
    step_per_grid: float
    lr: float | None = None
    levels: tuple[float, ...] = ()
    modes: tuple[float, ...] = ()
    curvature: bool = True
    members: int | None = None
    extremes: dict[str, str] = field(default_factory=dict)  # extreme lines: tag -> "max" or "min"

    def step(self, m: int) -> int:
        return int(round(m * self.step_per_grid))


def _columns(block: Mapping[str, np.ndarray], plan: TagPlan) -> list[tuple[str, np.ndarray]]:
    """(tag, values per row) of a block of metrics; the same tag names in every series."""
    n = len(block["t"])
    cols = [
        ("loss/loss", np.asarray(block["loss"], dtype=np.float64)),
        ("loss/log10", log10_positive(block["loss"])),
    ]
    cols += [(f"loss/level_{r}", np.full(n, lv)) for r, lv in enumerate(plan.levels)]
    strength = block["mode_strength"]
    cols += [(f"modes/strength_{k + 1}", strength[:, k]) for k in range(strength.shape[1])]
    cols += [(f"modes/m_{k + 1}", np.full(n, m)) for k, m in enumerate(plan.modes)]
    cols += [
        ("saddle/log10_grad_norm", log10_positive(block["grad_norm"])),
        ("saddle/log10_dist_best_rank", log10_positive(block["dist_best_rank"])),
    ]
    drift = np.asarray(block["cons_drift"])
    if drift.shape[1]:
        with np.errstate(invalid="ignore"):
            cols.append(("conservation/log10_drift", log10_positive(np.max(drift, axis=1))))
    if plan.curvature:
        cols += [
            ("curvature/lambda_min", block["lambda_min"]),
            ("curvature/log10_sharpness", log10_positive(block["sharpness"])),
        ]
        top = block.get("top_eigs")  # the 2nd, 3rd, ... eigenvalues (the 1st is the sharpness)
        if top is not None and np.ndim(top) == 2:
            for i in range(1, top.shape[1]):
                cols += [
                    (f"curvature/log10_eig_{i + 1}", log10_positive(top[:, i])),
                    (f"curvature/eig_{i + 1}", top[:, i]),
                ]
        if plan.lr is not None:
            cols.append(("curvature/log10_two_over_lr", np.full(n, math.log10(2.0 / plan.lr))))
    if "dist_to_flow" in block:
        cols.append(("dist/log10_flow", log10_positive(block["dist_to_flow"])))
    if "dist_to_modified" in block:
        cols.append(("dist/log10_modified", log10_positive(block["dist_to_modified"])))
    return cols


def series_tags(block: Mapping[str, np.ndarray], plan: TagPlan) -> list[dict[str, float]]:
    """One {tag: value} per row of a block of metrics (finite values only).

    An ensemble's block ((K, E, ...) arrays) gives the members' mean under every tag, and for
    :data:`SPREAD_TAGS` the median and quartiles under ``spread/<series>/<tag>@<stat>``.
    """
    if plan.members:
        return _ensemble_tags(block, plan)
    cols = _columns(block, plan)
    table = np.stack([np.asarray(c, dtype=np.float64) for _, c in cols], axis=1)
    tags = [t for t, _ in cols]
    return [{t: v for t, v in zip(tags, row) if math.isfinite(v)} for row in table.tolist()]


def _ensemble_tags(block: Mapping[str, np.ndarray], plan: TagPlan) -> list[dict[str, float]]:
    k, members = len(block["t"]), plan.members
    flat = {
        key: np.repeat(v, members, axis=0)
        if key in ("t", "grid_index", "step")
        else v.reshape(k * members, *v.shape[2:])
        for key, v in block.items()
        if key not in ("theta", "theta_sub", "theta_grid_index")
    }
    cols = _columns(flat, plan)
    tags = [t for t, _ in cols]
    table = np.stack([np.asarray(c, dtype=np.float64) for _, c in cols], axis=1).reshape(k, members, -1)
    mean = _nanmean(table)
    spread = [(i, t) for i, t in enumerate(tags) if t in SPREAD_TAGS]
    quantiles = dict(zip(ENSEMBLE_STATS, _nanquantiles(table[:, :, [i for i, _ in spread]])))
    rows = []
    for r in range(k):
        row = {t: v for t, v in zip(tags, mean[r].tolist()) if math.isfinite(v)}
        for stat in SPREAD_STATS:
            for j, (_, tag) in enumerate(spread):
                v = float(quantiles[stat][r, j])
                if math.isfinite(v):
                    row[f"spread/{plan.series}/{tag}@{stat}"] = v
        rows.append(row)
    return rows


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of the finite entries (NaN where there are none)."""
    ok = np.isfinite(x)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, x, 0.0).sum(axis=1) / n, np.nan)


def _nanquantiles(x: np.ndarray) -> list[np.ndarray]:
    """``ENSEMBLE_STATS`` quantiles over axis 1 of the finite entries, by one sort (np.nanquantile per
    quantile took 2.8 s for 201 points of 64 members and 62 tags; this takes a tenth of that)."""
    x = np.where(np.isfinite(x), x, np.nan)
    srt = np.sort(x, axis=1)  # NaN last
    n = np.isfinite(x).sum(axis=1)
    out = []
    for q in ENSEMBLE_STATS.values():
        pos = q * np.maximum(n - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        a = np.take_along_axis(srt, lo[:, None, :], axis=1)[:, 0]
        b = np.take_along_axis(srt, hi[:, None, :], axis=1)[:, 0]
        out.append(np.where(n > 0, a + (pos - lo) * (b - a), np.nan))
    return out


# The extremes drawn as lines: the distances' maxima (the number the order is fitted to), and the whole
# range of lambda_min and of the next top eigenvalues (their dips and rises at the saddle escapes are few
# points: without both lines the outlier trimming cuts them, with only one it cuts the rest of the curve;
# a chart of lambda_2, lambda_3 stopped at 1 of their 1.5 at the escape).
EXTREMES = {
    "dist/log10_flow": ("max",),
    "dist/log10_modified": ("max",),
    "curvature/lambda_min": ("min", "max"),
}
SIGNED_EIG = re.compile(r"curvature/eig_[0-9]+")


def note_extremes(extremes: dict[str, float], tags: Mapping[str, float]) -> None:
    """Update ``{<tag>_<kind>: value}`` with a row of tags."""
    for tag, value in tags.items():
        kinds = EXTREMES.get(tag) or (("min", "max") if SIGNED_EIG.fullmatch(tag) else ())
        for kind in kinds:
            key, pick = f"{tag}_{kind}", max if kind == "max" else min
            extremes[key] = pick(extremes.get(key, value), value)


def extreme_lines(extremes: Mapping[str, float], steps: list[int]) -> list[tuple[int, dict[str, float]]]:
    """Rows that draw each extreme (``{<tag>_<kind>: value}``, e.g. ``dist/log10_flow_max``) as a constant
    line at every logged step (see the module's docstring)."""
    row = {key: v for key, v in extremes.items() if math.isfinite(v)}
    return [(s, dict(row)) for s in steps] if row else []


class Thinner:
    """Which rows of a series go to the logger: all of them up to ``max_points``; above, grid buckets of
    which each tag keeps its minimum and its maximum, and the first and the last point keep every tag,
    so that no tag gets more than ``max_points`` points (TensorBoard's default keeps 1000 per tag and
    samples the rest away)."""

    def __init__(self, n_grid: int, max_points: int) -> None:
        self.n_grid = n_grid
        buckets = max(1, max_points // 2 - 1)  # two points each, plus the first and the last
        self.bucket = 1 if n_grid <= max_points else math.ceil(n_grid / buckets)
        self._rows: list[tuple[int, dict[str, float]]] = []
        self._bucket_id: int | None = None

    def add(self, m: int, tags: dict[str, float]) -> list[tuple[int, dict[str, float]]]:
        """Buffer row m; returns the rows (grid index, tags) ready to log."""
        if self.bucket == 1:
            return [(m, tags)]
        out = []
        if self._bucket_id is not None and m // self.bucket != self._bucket_id:
            out = self.flush()
        self._bucket_id = m // self.bucket
        self._rows.append((m, tags))
        return out

    def flush(self) -> list[tuple[int, dict[str, float]]]:
        rows, self._rows = self._rows, []
        if not rows:
            return []
        keep: dict[int, dict[str, float]] = {}
        by_m = dict(rows)
        for tag in {t for _, r in rows for t in r}:
            have = [(r[tag], m) for m, r in rows if tag in r]
            for _, m in (min(have), max(have)):
                keep.setdefault(m, {})[tag] = by_m[m][tag]
        for m, r in rows:
            if m in (0, self.n_grid - 1):
                keep[m] = dict(r)
        return sorted(keep.items())


@dataclass(frozen=True)
class RunCharts:
    """What a run computes, so that its layout has a chart for each computed quantity and no other.

    sgd: (S)GD series run; curvature: lambda_min and the sharpness on the analysis grid; top_eigs: the
    top Hessian eigenvalues each analysis point computes (log.top_eigs); modified: GD's
    modified flows; limit: the strong and weak errors (``ensemble.vary=sgd``); sme: the SME ensembles;
    spread: the series of an ensemble (each gets band charts of its own)."""

    dt: float
    sgd: bool = True
    curvature: bool = True
    top_eigs: int = 1
    modified: bool = False
    central: bool = False  # GD's central flows (flow.central) and edge-of-stability series (sgd.edge)
    limit: bool = False
    sme: bool = False
    spread: tuple[str, ...] = ()


def _chart(*tags: str) -> list:
    return ["Multiline", [f"^{t}$" for t in tags]]


def tensorboard_layout(run: RunCharts) -> dict:
    """The Custom Scalars layout: one chart per quantity, every series in it (the plugin merges runs)."""
    main = {
        "loss, and the plateau levels L*_r (the flow's lines)": _chart("loss/loss", "loss/level_[0-9]+"),
        "log10 loss": _chart("loss/log10"),
    }
    if run.sgd:
        title = "log10 distance to the flow, and its maximum (the line the order is fitted to)"
        if run.spread:  # an ensemble's tags are the members' means: of log10, so the line is no member's max
            title = (
                "log10 distance to the flow (the members' mean of log10) and its maximum as a line; the order "
                "is fitted to the mean of each member's maximum (hp/max_dist_to_flow)"
            )
        tags = ["dist/log10_flow", "dist/log10_flow_max"]
        if run.modified:
            title = "log10 distance to the flow and, lower, to GD's modified flow; each maximum as a line"
            tags += ["dist/log10_modified", "dist/log10_modified_max"]
        main[title] = _chart(*tags)
    main[
        "mode strengths u_k^T P Sxx^(1/2) v_k, k = 1, 2, ..., and the data's modes m_k (the flow's lines)"
    ] = _chart("modes/strength_[0-9]+", "modes/m_[0-9]+")
    if run.curvature:
        main["log10 sharpness (top Hessian eigenvalue), the next ones, and 2/eta"] = _chart(
            "curvature/log10_sharpness", "curvature/log10_eig_[0-9]+", "curvature/log10_two_over_lr"
        )
        main["Hessian lambda_min (< 0 near a strict saddle), and its range as lines"] = _chart(
            "curvature/lambda_min", "curvature/lambda_min_min", "curvature/lambda_min_max"
        )
        if run.top_eigs > 1:  # the log chart above leaves out their values <= 0
            main[
                "the next top Hessian eigenvalues lambda_2, ..., signed (< 0: not in the log10 chart), and their ranges as lines"
            ] = _chart("curvature/eig_[0-9]+", "curvature/eig_[0-9]+_min", "curvature/eig_[0-9]+_max")
    if run.central:
        main[  # linear, on the edge's own scale: in log10 the 2/eta line hid under GD's zigzag (0.96..0.97)
            "edge of stability: sharpness over 2/eta (1 = the edge) of GD, every step through the crossing, "
            "and of its central flow"
        ] = _chart("edge/sharpness_over_edge", "central/sharpness_over_edge")
        main[
            "edge of stability: log10 loss of GD, its window average, the central flow's prediction, the flow"
        ] = _chart(
            "edge/log10_loss",
            "edge/log10_avg_loss",
            "central/log10_predicted_loss",
            "central/log10_loss",
            "edge/log10_flow_loss",
        )
        main["edge of stability: ||GD's average - central flow|| / ||GD's average - flow||"] = _chart(
            "edge/dist_ratio"
        )
    main["log10 ||grad L|| (small on a plateau)"] = _chart("saddle/log10_grad_norm")
    main["log10 distance to the nearest critical map P*_r"] = _chart("saddle/log10_dist_best_rank")
    main["log10 conservation-law drift max_j ||C_j(t) - C_j(0)||"] = _chart("conservation/log10_drift")
    x = x_label(run.dt)
    layout = {f"dlnlab: the flow and each series ({x})": main}
    if run.limit:
        limit = {
            "log10 strong error E||theta - theta_flow||": _chart("limit/log10_strong"),
            "log10 weak error ||E theta - theta_flow||": _chart("limit/log10_weak_theta"),
            "log10 weak error |E L - L_flow|": _chart("limit/log10_weak_loss"),
        }
        if run.sme:
            limit["SGD's spread over the SME's: Var L and Var theta ratios (1: the SME is exact)"] = _chart(
                "sme/var_loss_ratio", "sme/var_theta_ratio"
            )
        layout[f"dlnlab: SGD as a stochastic flow ({x})"] = limit
    if run.spread:
        bands = {}
        for series in run.spread:
            for tag, what in SPREAD_TAGS.items():
                if tag.startswith("dist/") and series == "flow":
                    continue
                name = f"spread/{series}/{tag}"  # Margin charts take tag names, not patterns
                bands[f"{series}: {what}, members' median and quartiles"] = [
                    "Margin", [f"{name}@median", f"{name}@q25", f"{name}@q75"]
                ]  # fmt: skip
        layout[f"dlnlab: the ensemble's spread, one chart per series ({x})"] = bands
    return layout
