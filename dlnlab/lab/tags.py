"""What a series logs: the tag names of a block of metrics, the thinning of long series, and the
TensorBoard Custom Scalars layout.

Steps: TensorBoard's x axis is an integer step; every series logs at step = grid index m = t / dt,
so all series overlay and t is read off as m * dt (the charts' titles say the dt). Up to
``log.tb_max_points`` grid points each is written; above, :class:`Thinner` keeps each bucket's minimum
and maximum of every tag, so each curve's extremes in TensorBoard are those of the series npz. An
ensemble logs the members' mean under every tag and its spread as ``<tag>@min``, ``@q25``,
``@median``, ``@q75``, ``@max`` (:data:`ENSEMBLE_STATS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["series_tags", "Thinner", "tensorboard_layout", "ENSEMBLE_STATS", "ENSEMBLE_BANDS"]


def _log10(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(np.abs(np.asarray(x, dtype=np.float64)))


ENSEMBLE_STATS = {"min": 0.0, "q25": 0.25, "median": 0.5, "q75": 0.75, "max": 1.0}


def series_tags(
    block: Mapping[str, np.ndarray], sgd: bool, lr: float | None = None, members: int | None = None
) -> list[dict[str, float]]:
    """One {tag: value} per row of a metrics block (the same tag names in every series).

    Quantities that span many decades also go in as ``log10/<name>`` (log10 of the absolute value),
    so that their charts read on a log scale. An ensemble's block ((K, E, ...) arrays) gives, per tag,
    the members' mean under the tag's own name and its spread as ``<tag>@min``, ``@q25``, ``@median``,
    ``@q75``, ``@max`` (the charts overlay them; members that are not finite are left out).
    """
    if members:
        return _ensemble_tags(block, sgd, lr, members)
    tags, table = _tag_table(block, sgd, lr)
    return [{t: v for t, v in zip(tags, row) if math.isfinite(v)} for row in table.tolist()]


def _ensemble_tags(block: Mapping[str, np.ndarray], sgd: bool, lr: float | None, members: int):
    k = len(block["t"])
    flat = {
        key: np.repeat(v, members, axis=0)
        if key in ("t", "grid_index", "step")
        else v.reshape(k * members, *v.shape[2:])
        for key, v in block.items()
        if key not in ("theta", "theta_sub", "theta_grid_index")
    }
    tags, table = _tag_table(flat, sgd, lr)
    table = table.reshape(k, members, len(tags))
    stats = {"": _nanmean(table)} | {f"@{name}": v for name, v in zip(ENSEMBLE_STATS, _nanquantiles(table))}
    rows = []
    for i in range(k):
        row = {}
        for suffix, values in stats.items():
            row |= {t + suffix: v for t, v in zip(tags, values[i].tolist()) if math.isfinite(v)}
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


def _tag_table(block: Mapping[str, np.ndarray], sgd: bool, lr: float | None) -> tuple[list[str], np.ndarray]:
    """The tag names and their values, one row per grid point."""
    cols: list[tuple[str, np.ndarray]] = [("loss", block["loss"]), ("time", block["t"])]
    cols += [(f"sv_P/{k}", block["sv"][:, k]) for k in range(block["sv"].shape[1])]
    cols += [(f"sv_A/{k}", block["sv_A"][:, k]) for k in range(block["sv_A"].shape[1])]
    cols += [
        (f"mode_strength/{k}", block["mode_strength"][:, k]) for k in range(block["mode_strength"].shape[1])
    ]
    cols += [
        ("saddle/grad_norm", block["grad_norm"]),
        ("saddle/level", block["level_index"]),
        ("saddle/level_gap", block["level_gap"]),
        ("saddle/dist_best_rank", block["dist_best_rank"]),
        ("curvature/lambda_min", block["lambda_min"]),
        ("curvature/sharpness", block["sharpness"]),
        ("log10/loss", _log10(block["loss"])),
        ("log10/grad_norm", _log10(block["grad_norm"])),
        ("log10/level_gap", _log10(block["level_gap"])),
    ]
    drift = block["cons_drift"]
    for j in range(drift.shape[1]):
        cols += [(f"conservation/drift_{j + 1}", drift[:, j]), (f"log10/drift_{j + 1}", _log10(drift[:, j]))]
    if sgd:
        cols += [
            ("sgd/dist_to_flow", block["dist_to_flow"]),
            ("log10/dist_to_flow", _log10(block["dist_to_flow"])),
            ("sgd/step", block["step"]),
        ]
        if "dist_to_modified" in block:  # flow.modified: GD's distance to its modified flow
            cols += [
                ("sgd/dist_to_modified", block["dist_to_modified"]),
                ("log10/dist_to_modified", _log10(block["dist_to_modified"])),
            ]
        if lr is not None:  # 2/eta beside the sharpness, on the analysis grid only
            cols.append(("sgd/two_over_lr", np.where(np.isfinite(block["sharpness"]), 2.0 / lr, np.nan)))
    tags = [c[0] for c in cols]
    return tags, np.stack([np.asarray(c[1], dtype=np.float64) for c in cols], axis=1)


class Thinner:
    """Which rows of a series go to the logger: all of them up to ``max_points``; above, grid buckets of
    ``ceil(n_grid / (max_points / 2))`` points, of which each tag keeps its minimum and its maximum (and
    the first and the last point of the series keep every tag)."""

    def __init__(self, n_grid: int, max_points: int) -> None:
        self.n_grid = n_grid
        self.bucket = 1 if n_grid <= max_points else math.ceil(n_grid / max(1, max_points // 2))
        self._rows: list[tuple[int, dict[str, float]]] = []
        self._bucket_id: int | None = None

    def add(self, m: int, tags: dict[str, float]) -> list[tuple[int, dict[str, float]]]:
        """Buffer row m; returns the rows (step, tags) ready to log."""
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


ENSEMBLE_BANDS = {  # the ensemble's charts: its median with the quartile band, and with the range band
    "log10 loss": "log10/loss",
    "log10 ||grad L||": "log10/grad_norm",
    "nearest plateau level r": "saddle/level",
    "log10 distance to the flow": "log10/dist_to_flow",
    "log10 conservation-law drift (j = 1)": "log10/drift_1",
    "Hessian lambda_min": "curvature/lambda_min",
}


def tensorboard_layout(dt: float, ensemble: bool = False) -> dict:
    """Custom-scalars layout: one chart per quantity with every series in it (runs merge in the plugin).

    An ensemble's charts show the members' mean; a category of its own shows, for the main quantities,
    the median with the quartiles and with the range as bands (TensorBoard's Margin charts)."""
    x = f"x: grid index m = t / {dt:g}"

    def chart(*tags: str) -> list:
        return ["Multiline", [f"^{t}$" for t in tags]]

    layout = _layout(x, chart)
    if ensemble:
        bands = {}
        for title, tag in ENSEMBLE_BANDS.items():
            bands[f"{title}: median, quartiles"] = ["Margin", [f"{tag}@median", f"{tag}@q25", f"{tag}@q75"]]
            bands[f"{title}: median, range"] = ["Margin", [f"{tag}@median", f"{tag}@min", f"{tag}@max"]]
        layout = {f"dlnlab ensemble: the members' spread ({x})": bands, **layout}  # first: what to look at
    return layout


def _layout(x: str, chart) -> dict:
    return {
        f"dlnlab ({x})": {
            "log10 loss": chart("log10/loss"),
            "loss": chart("loss"),
            "singular values of P": chart("sv_P/[0-9]+"),
            "singular values of A (top 8)": chart("sv_A/[0-7]"),
            "mode strengths u_k^T P v_k": chart("mode_strength/[0-9]+"),
            "log10 ||grad L||": chart("log10/grad_norm"),
            "log10 |L - L*_r| (nearest plateau level)": chart("log10/level_gap"),
            "nearest plateau level r": chart("saddle/level"),
            "modes learnt": chart("saddle/modes_learnt"),
            "saddle label (0 none, 1 strict, 2 non-strict, 3 inconclusive)": chart("saddle/label"),
            "distance to the best rank-r map": chart("saddle/dist_best_rank"),
            "Hessian lambda_min": chart("curvature/lambda_min"),
            "sharpness vs 2/eta": chart("curvature/sharpness", "sgd/two_over_lr"),
            "log10 conservation-law drift": chart("log10/drift_[0-9]+"),
            "log10 distance to the flow": chart("log10/dist_to_flow"),
            "log10 distance to GD's modified flow (flow.modified)": chart("log10/dist_to_modified"),
            "log10 strong error E||theta - theta_flow|| (ensemble.vary=sgd)": chart("log10/limit_strong"),
            "log10 weak error ||E theta - theta_flow|| (ensemble.vary=sgd)": chart("log10/limit_weak_theta"),
            "log10 weak error |E L - L_flow| (ensemble.vary=sgd)": chart("log10/limit_weak_loss"),
            "distance to the flow": chart("sgd/dist_to_flow"),
            "time t": chart("time"),
        },
        "dlnlab plateaus (x: mode index k)": {
            "plateau exit time t_exit (x: mode k)": chart("saddle/exit_time"),
            "plateau exit delay vs the flow (x: mode k)": chart("saddle/exit_delay"),
        },
        "dlnlab run": {
            "convergence order (slope of log max distance vs log lr)": chart("run/convergence_order"),
            "convergence order against GD's modified flows": chart("run/convergence_order_modified"),
            "GD stability threshold 2 / (h m_1^(2-2/h))": chart("run/gd_stability_threshold"),
        },
    }
