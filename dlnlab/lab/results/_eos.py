"""The edge of stability in a run's summary: the central flow's entry from its grid arrays, and the
console's lines of GD's edge diagnostics and the central flow's predictions.

The numbers come from ``dlnlab.eos`` (its functions compute every one of them); their records
(``CentralFlowEntry``, ``EdgeEntry``, ``PredictionEntry``, and the series' ``CentralEntry`` and
``EdgeSeriesEntry``) live with the other entries in ``_records``.
"""

from __future__ import annotations

import math

import numpy as np

from dlnlab._util import fmt
from dlnlab.lab.results._records import CentralFlowEntry, EdgeEntry, PredictionEntry

__all__ = [
    "CentralFlowEntry",
    "EdgeEntry",
    "PredictionEntry",
    "central_entry",
    "edge_lines",
    "settled_on_edge",
]


def _num(x) -> float | None:
    """A finite float, else None (JSON has no NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


def settled_on_edge(deviation: np.ndarray, on: np.ndarray) -> np.ndarray:
    """The points of ``on`` past each switch-on transient. Where Sigma switches on, S is still closing
    on 2/eta: the lookahead delta = 0.1 eta (dlnlab.eos' LOOKAHEAD) brings it in like exp(-t/delta),
    tenfold per 0.05 of t at eta = 0.2163, from 1.5e-3 x 2/eta at the first grid point on the edge of
    experiment=eos to the solver's accuracy (1e-9) five points later. Each stretch of ``on`` is cut
    where ``deviation`` (|S - 2/eta| / (2/eta)) first stops falling: that point and the rest are
    settled; a stretch that falls to its end keeps its last point."""
    settled = np.zeros(len(on), dtype=bool)
    idx = np.flatnonzero(on)
    for run in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if len(idx) else []:
        stops = np.flatnonzero(np.diff(deviation[run]) >= 0)
        settled[run[stops[0] if len(stops) else len(run) - 1 :]] = True
    return settled


def central_entry(
    lr: float,
    t,
    sharpness,
    sigma_trace,
    n_critical,
    loss,
    predicted,
    dist,
    iterations: int,
    unconverged: int = 0,
):
    """A :class:`CentralFlowEntry` from the grid's arrays (NaN past a failure) and the distance to the
    flow (NaN where none)."""
    thr = 2.0 / lr
    ok = np.isfinite(sharpness)
    on = ok & (np.nan_to_num(sigma_trace) > 0)
    t_on = t[on]
    deviation = np.abs(sharpness - thr) / thr
    settled = settled_on_edge(deviation, on)
    before = np.isfinite(dist) & (t < t_on[0] if len(t_on) else np.isfinite(dist))
    last = np.flatnonzero(ok)[-1] if ok.any() else None
    return CentralFlowEntry(
        lr=float(lr), threshold=thr,
        t_edge=float(t_on[0]) if len(t_on) else None,
        t_leave=float(t_on[-1]) if len(t_on) and last is not None and not on[last] else None,
        edge_share=float(on.sum() / max(ok.sum(), 1)),
        sharpness_on_edge=_num(np.max(deviation[settled])) if settled.any() else None,
        max_excess=_num(np.max((sharpness[ok] - thr) / thr)) if ok.any() else None,
        max_critical=int(np.nanmax(n_critical)) if ok.any() else 0,
        final_sharpness=None if last is None else _num(sharpness[last]),
        final_loss=None if last is None else _num(loss[last]),
        final_predicted_loss=None if last is None else _num(predicted[last]),
        max_dist_to_flow_before_edge=_num(np.max(dist[before])) if before.any() else None,
        eig_iterations=int(iterations),
        eig_unconverged=int(unconverged),
        t_edge_settled=float(t[settled][0]) if settled.any() else None,
        sharpness_entering_edge=_num(np.max(deviation[on])) if on.any() else None,
    )  # fmt: skip


def edge_lines(summary: dict) -> list[str]:
    """The console's edge-of-stability block: one line per GD series (and its central flow)."""
    lines = []
    for e in summary["series"].values():
        if "edge" in e and e["edge"]:
            d = e["edge"]
            lr = d["lr"]
            converged = d.get("gfs_converged") or [True] * len(d["gfs_sharpness"])
            gfs = ", ".join(f"{s:.4g}{'' if c else '*'}" for s, c in zip(d["gfs_sharpness"], converged))
            if not all(converged):
                gfs += " (*: not converged by t = 1000, S where that flow stood)"
            crossing = (
                f"S reaches 2/eta at t = {fmt(d['t_edge'])}, within {100 * d['band']:g} % of it "
                f"{fmt_share(d['hover_share'])} of the time after (median S = {fmt(d['median_ratio'])} x 2/eta), "
                f"period-2 amplitude {fmt(d['amplitude_median'])} (median)"
                if d["t_edge"] is not None
                else "S never reaches 2/eta"
            )
            if d.get("spectrum_unconverged"):
                crossing += f" ({d['spectrum_unconverged']} of GD's spectra: LOBPCG did not converge)"
            lines.append(
                f"  lr {lr:g} (2/eta = {d['threshold']:.5g}): {d['outcome']}; {crossing}; S at the end "
                f"{fmt(d['final_sharpness'])} against the flow limit's {fmt(d['flow_limit_sharpness'])} and the "
                f"balanced minimum's {d['balanced_sharpness']:.4g}; GFS sharpness {gfs} "
                f"({'non-increasing' if d['gfs_non_increasing'] else 'rises'})"
            )
            p = e.get("predictions")
            if p:
                lines.append(
                    f"    central flow: S within {fmt(p['central_pinned'])} x 2/eta of 2/eta on the edge (past its switch-on); GD's {p['window']}-step "
                    f"average over t = {fmt(p['t_first'])}..{fmt(p['t_last'])}: distance ratio central/flow "
                    f"{fmt(p['ratio_median'])} (median), {fmt(p['ratio_last'])} at the end; predicted/averaged "
                    f"loss - 1 = {fmt(p['loss_rel_median'])} (median), parting at t = {fmt(p['loss_parting'])}; "
                    f"GD's variance along u_1 / predicted = {fmt(p['variance_ratio_median'])} (median)"
                )
    return (["edge of stability (GD recomputed at every step, docs/eos.md):", *lines]) if lines else []


def fmt_share(x: float | None) -> str:
    return "(never)" if x is None else f"{100 * x:.0f} %"
