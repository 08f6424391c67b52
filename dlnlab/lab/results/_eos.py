"""The edge of stability in a run's summary: the central flow's entry, GD's edge diagnostics and the
central flow's predictions against GD, typed, with their console lines.

The numbers come from ``dlnlab.eos`` (its functions compute every one of them); these dataclasses only
say which of them a run reports and how they go to JSON (``to_dict``) and to the console.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from dlnlab._util import fmt

__all__ = ["CentralFlowEntry", "EdgeEntry", "PredictionEntry", "edge_lines"]


def _num(x) -> float | None:
    """A finite float, else None (JSON has no NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class CentralFlowEntry:
    """summary.json's ``series.cflow_lr_<lr>.central``: the central flow at one learning rate, on the
    grid. t_edge / t_leave: the first and last grid time with Sigma != 0 (None: never at the edge);
    edge_share: the share of grid points with Sigma != 0; sharpness_on_edge: max |S - 2/eta| / (2/eta)
    over those points (how tightly it is pinned); max_excess: max (S - 2/eta) / (2/eta) over the grid
    (<= 0: never past the edge); max_dist_to_flow_before_edge: its distance to the gradient flow at
    GD's exact times before t_edge (0 to the solvers' tolerances: below the edge it is the flow)."""

    lr: float
    threshold: float
    t_edge: float | None
    t_leave: float | None
    edge_share: float
    sharpness_on_edge: float | None
    max_excess: float | None
    max_critical: int
    final_sharpness: float | None
    final_loss: float | None
    final_predicted_loss: float | None
    max_dist_to_flow_before_edge: float | None
    eig_iterations: int

    @classmethod
    def of(cls, lr: float, t, sharpness, sigma_trace, n_critical, loss, predicted, dist, iterations: int):
        """From the grid's arrays (NaN past a failure) and the distance to the flow (NaN where none)."""
        thr = 2.0 / lr
        ok = np.isfinite(sharpness)
        on = ok & (np.nan_to_num(sigma_trace) > 0)
        t_on = t[on]
        before = np.isfinite(dist) & (t < t_on[0] if len(t_on) else np.isfinite(dist))
        last = np.flatnonzero(ok)[-1] if ok.any() else None
        return cls(
            lr=float(lr), threshold=thr,
            t_edge=float(t_on[0]) if len(t_on) else None, t_leave=float(t_on[-1]) if len(t_on) else None,
            edge_share=float(on.sum() / max(ok.sum(), 1)),
            sharpness_on_edge=_num(np.max(np.abs(sharpness[on] - thr)) / thr) if on.any() else None,
            max_excess=_num(np.max((sharpness[ok] - thr) / thr)) if ok.any() else None,
            max_critical=int(np.nanmax(n_critical)) if ok.any() else 0,
            final_sharpness=None if last is None else _num(sharpness[last]),
            final_loss=None if last is None else _num(loss[last]),
            final_predicted_loss=None if last is None else _num(predicted[last]),
            max_dist_to_flow_before_edge=_num(np.max(dist[before])) if before.any() else None,
            eig_iterations=int(iterations),
        )  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EdgeEntry:
    """summary.json's ``series.edge_lr_<lr>.edge``: GD at one learning rate against its edge 2/eta
    (``dlnlab.eos.edge_diagnostics`` and friends, on GD recomputed at every step, docs/eos.md).

    t_edge: the first step time with S >= 2/eta (None: never); hover_share: the share of the points
    after it with |S - 2/eta| <= band 2/eta; median_ratio: median S / (2/eta) after it; amplitude_*:
    the period-2 amplitude along the top eigenvector after t_edge (median, largest); outcome:
    converged_below_edge, at_edge, below_edge or diverged at t_max; gfs_*: the sharpness of the
    gradient flow's limit from GD's iterate at a few times (non-increasing: Kreisler et al. 2023);
    final / flow_limit / balanced: GD's final sharpness against the flow's limit and h m_1^(2-2/h).
    every_step: the steps [first, last] recorded at every step; stride: the steps between the other
    points (1: the whole run at every step)."""

    lr: float
    threshold: float
    band: float
    t_edge: float | None
    hover_share: float | None
    median_ratio: float | None
    amplitude_median: float | None
    amplitude_max: float | None
    outcome: str
    final_sharpness: float | None
    final_loss: float | None
    flow_limit_sharpness: float | None
    balanced_sharpness: float
    gfs_t: list[float]
    gfs_sharpness: list[float]
    gfs_non_increasing: bool
    every_step: list[int]
    stride: int
    steps: int
    spectrum_method: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PredictionEntry:
    """summary.json's ``series.edge_lr_<lr>.predictions``: the central flow's predictions against GD over
    the every-step stretch (flow.central). window: GD's average over that many steps (trapezoid,
    centred); ratio_*: ||avg - central|| / ||avg - flow|| (median, largest, last; < 1: GD's average is
    nearer the central flow); loss_rel_*: (predicted - averaged) / averaged loss; loss_parting: the
    time from which they differ by more than a factor 2 to the end (None: they do not part);
    variance_ratio_median: GD's measured variance along u_1 over the predicted u_1^T Sigma u_1, median
    where the prediction is > 0; central_pinned: max |S - 2/eta| / (2/eta) of the central flow where
    Sigma != 0."""

    window: int
    t_first: float | None
    t_last: float | None
    ratio_median: float | None
    ratio_max: float | None
    ratio_last: float | None
    loss_rel_median: float | None
    loss_parting: float | None
    variance_ratio_median: float | None
    central_pinned: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def edge_lines(summary: dict) -> list[str]:
    """The console's edge-of-stability block: one line per GD series (and its central flow)."""
    lines = []
    for e in summary["series"].values():
        if "edge" in e and e["edge"]:
            d = e["edge"]
            lr = d["lr"]
            gfs = ", ".join(f"{s:.4g}" for s in d["gfs_sharpness"])
            crossing = (
                f"S reaches 2/eta at t = {fmt(d['t_edge'])}, within {100 * d['band']:g} % of it "
                f"{fmt_share(d['hover_share'])} of the time after (median S = {fmt(d['median_ratio'])} x 2/eta), "
                f"period-2 amplitude {fmt(d['amplitude_median'])} (median)"
                if d["t_edge"] is not None
                else "S never reaches 2/eta"
            )
            lines.append(
                f"  lr {lr:g} (2/eta = {d['threshold']:.5g}): {d['outcome']}; {crossing}; S at the end "
                f"{fmt(d['final_sharpness'])} against the flow limit's {fmt(d['flow_limit_sharpness'])} and the "
                f"balanced minimum's {d['balanced_sharpness']:.4g}; GFS sharpness {gfs} "
                f"({'non-increasing' if d['gfs_non_increasing'] else 'rises'})"
            )
            p = e.get("predictions")
            if p:
                lines.append(
                    f"    central flow: S within {fmt(p['central_pinned'])} x 2/eta of 2/eta where Sigma != 0; GD's {p['window']}-step "
                    f"average over t = {fmt(p['t_first'])}..{fmt(p['t_last'])}: distance ratio central/flow "
                    f"{fmt(p['ratio_median'])} (median), {fmt(p['ratio_last'])} at the end; predicted/averaged "
                    f"loss - 1 = {fmt(p['loss_rel_median'])} (median), parting at t = {fmt(p['loss_parting'])}; "
                    f"GD's variance along u_1 / predicted = {fmt(p['variance_ratio_median'])} (median)"
                )
    return (["edge of stability (GD recomputed at every step, docs/eos.md):", *lines]) if lines else []


def fmt_share(x: float | None) -> str:
    return "(never)" if x is None else f"{100 * x:.0f} %"
