"""The edge of stability in a run's summary: the central flow's entry from its grid arrays, and the
console's lines of GD's edge diagnostics and the central flow's predictions, each within ``EDGE_LINE_WIDTH``
characters (a line that numbers of extreme size push past it is broken at a space).

The numbers come from ``dlnlab.eos`` (its functions compute every one of them); their records
(``CentralFlowEntry``, ``EdgeEntry``, ``PredictionEntry``, and the series' ``CentralEntry`` and
``EdgeSeriesEntry``) live with the other entries in ``_records``.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np

from dlnlab._util import fmt
from dlnlab.eos import Outcome
from dlnlab.lab.results._records import CentralFlowEntry, EdgeEntry, PredictionEntry, given

__all__ = [
    "CentralFlowEntry",
    "EdgeEntry",
    "PredictionEntry",
    "central_entry",
    "edge_lines",
    "settled_on_edge",
    "EDGE_LINE_WIDTH",
]

EDGE_LINE_WIDTH = 120  # the console's edge-of-stability lines, at most (docs/eos.md)


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
    """The console's edge-of-stability block: for each GD series (and its central flow) a verdict, then
    its numbers, each line saying in a few words what it means. Sharpness at 2/eta, a loss that stays up
    and an oscillation larger than predicted read as alarms to whoever expects GD's classical stability;
    on the edge they are what is expected, and the lines say so (docs/eos.md explains every number)."""
    lines = []
    for e in summary["series"].values():  # the run's entries are dicts: each block reads its records
        if e.get("edge"):
            lines += _gd_lines(EdgeEntry.from_dict(e["edge"]))
            if e.get("predictions"):
                lines += _central_lines(PredictionEntry.from_dict(e["predictions"]))
    head = "edge of stability (GD recomputed at every step; docs/eos.md explains each number):"
    return [part for line in ([head, *lines] if lines else []) for part in _fit(line)]


def _fit(line: str) -> list[str]:
    """``line`` within EDGE_LINE_WIDTH: as it is, or broken at spaces, its continuation indented two more
    (the wording keeps the usual numbers within it: what breaks is an eta of 1e-7, or six GFS values of
    1e+4; tests/test_eos_console.py)."""
    if len(line) <= EDGE_LINE_WIDTH:
        return [line]
    indent = " " * (len(line) - len(line.lstrip()) + 2)
    return textwrap.wrap(
        line, EDGE_LINE_WIDTH, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def _verdict(d: EdgeEntry) -> str:
    """The outcome in words: at the edge is no failure, and expected where the flow's limit is sharper
    than 2/eta (GD cannot converge where the flow does, docs/eos.md)."""
    outcome, limit, eta = Outcome(d.outcome), d.flow_limit_sharpness, f"eta = {d.lr:g}"
    if outcome is Outcome.AT_EDGE and limit is not None and limit > d.threshold:
        return f"{outcome}, as expected at {eta}: 2/eta is below the flow limit's S = {fmt(limit)}"
    meaning = {
        Outcome.AT_EDGE: f"S ends within {100 * d.band:g} % of 2/eta, on the edge of stability",
        Outcome.ABOVE_EDGE: f"S ends swinging over {100 * d.band:g} % past 2/eta (a period-2 cycle), "
        "not converged",
        Outcome.CONVERGED: "GD converged, at a minimum flatter than 2/eta",
        Outcome.BELOW_EDGE: "S ends below 2/eta, not converged (a plateau, or too short a run)",
        Outcome.DIVERGED: f"GD's loss left every bound at {eta}",
    }
    return f"{outcome}: {meaning[outcome]}"


# what GD's zigzag along the top eigenvector is, by the outcome (its amplitude is the median after t_edge)
ZIGZAG = {
    Outcome.AT_EDGE: "GD zigzags along the top eigenvector, as on the edge",
    Outcome.ABOVE_EDGE: "GD cycles along the top eigenvector past the edge, not hovering on it",
    Outcome.CONVERGED: "GD zigzagged along the top eigenvector at 2/eta, then converged",
    Outcome.BELOW_EDGE: "GD zigzagged along the top eigenvector at 2/eta, until S fell below it",
    Outcome.DIVERGED: "GD zigzagged along the top eigenvector up to its divergence",
}


def _crossing(d: EdgeEntry) -> str:
    """When S first stood at or above 2/eta and what it did after: on the edge it stays; converged or below
    the edge it ended below 2/eta (a GD that touched 2/eta, then converged flatter, read "and stays" under
    its verdict "converged"). GD's first point is theta0 at t = 0 (dlnlab.lab.runner's edge series), so
    t_edge = 0 is an S above 2/eta from the start, which "reaches 2/eta at t = 0" misread."""
    outcome = Outcome(d.outcome)
    if d.t_edge == 0.0:
        start, after = (
            "S starts above 2/eta",
            {
                Outcome.AT_EDGE: " and settles at it",
                Outcome.ABOVE_EDGE: ", swings across it",
                Outcome.CONVERGED: ", ends below it",
                Outcome.BELOW_EDGE: ", ends below it",
            },
        )
    else:
        start, after = (
            f"S reaches 2/eta at t = {fmt(d.t_edge)}",
            {
                Outcome.AT_EDGE: " and stays",
                Outcome.ABOVE_EDGE: ", swings past",
                Outcome.CONVERGED: ", ends below",
                Outcome.BELOW_EDGE: ", ends below",
            },
        )
    return start + (f"{after[outcome]} (no divergence)" if outcome in after else "")


def _gd_lines(d: EdgeEntry) -> list[str]:
    converged = d.gfs_converged or [True] * len(d.gfs_sharpness)  # absent from older summaries
    gfs = ", ".join(f"{s:.4g}{'' if c else '*'}" for s, c in zip(d.gfs_sharpness, converged))
    gfs += ": non-increasing, GD heads for flatter minima" if d.gfs_non_increasing else " (rises)"
    stars = [] if all(converged) else ["      *: not converged by t = 1000, S where that flow stood"]
    if d.t_edge is None:
        crossing = ["    S never reaches 2/eta"]
    else:  # two lines: one held 121 - 123 characters for a t_edge below 1, 100 % hovering, a median below 1
        crossing = [
            f"    {_crossing(d)}",
            f"    within {100 * d.band:g} % of 2/eta {fmt_share(d.hover_share)} of the time from then "
            f"on, median {fmt(d.median_ratio)} x 2/eta",
            f"    period-2 amplitude {fmt(d.amplitude_median)} (median): {ZIGZAG[Outcome(d.outcome)]}",
        ]
    if d.spectrum_unconverged:  # ABSENT (older summaries) is falsy
        crossing[0] += f" ({d.spectrum_unconverged} of GD's spectra: LOBPCG did not converge)"
    previous = given(d.previous_sharpness)  # absent from summaries written before it
    end = (
        f"S at the end {fmt(d.final_sharpness)}"
        if previous is None
        else f"S at the last two steps {fmt(previous)}, {fmt(d.final_sharpness)}"
    )
    balanced = d.balanced_sharpness
    # above 2/S_bal no minimum near the balanced one is stable for GD (for whitened data none at all is):
    # GD cannot converge, whatever the outcome says about where its sharpness ended
    unstable = (
        [f"    2/eta is below the balanced minimum's S = {fmt(balanced)}: not stable at eta = {d.lr:g} "
         "(whitened data: no minimum is)"]
        if balanced is not None and d.threshold < balanced and Outcome(d.outcome) is not Outcome.CONVERGED
        else []
    )  # fmt: skip
    return [
        f"  eta = {d.lr:g} (2/eta = {d.threshold:.5g}): {_verdict(d)}",
        *unstable,
        *crossing,
        f"    {end} against the flow limit's {fmt(d.flow_limit_sharpness)} and the balanced minimum's "
        f"{fmt(balanced)}",
        f"    GFS sharpness {gfs}",
        *stars,
    ]


def _central_lines(p: PredictionEntry) -> list[str]:
    """The central flow against GD. Where the losses part or GD's variance is off the prediction by more
    than 2x, the lines say which way and that it is the gap docs/eos.md describes: GD's oscillation lags
    the central flow's Sigma (smaller early, larger late), which the central flow leaves out."""
    ratio, rel, var = p.ratio_median, p.loss_rel_median, p.variance_ratio_median
    # Sigma never on in the window (a GD that never reaches 2/eta): the central flow moves as the gradient
    # flow, so the two are one (ratio 1), and what parts GD from the prediction is no gap of the central flow
    never_on = p.central_pinned is None and given(p.central_entering) is None
    nearer = (
        "" if ratio is None or never_on else f" is nearer the {'central' if ratio < 1 else 'gradient'} flow"
    )
    loss = f"    predicted/averaged loss - 1 = {fmt(rel)} (median), "
    if p.loss_parting is None:
        loss += "never parting"
    else:
        loss += f"parting at t = {fmt(p.loss_parting)}"
        loss += (
            "" if rel is None else f": GD's averaged loss {'stays above' if rel < 0 else 'falls below'} it"
        )
    variance = f"    GD's variance along u_1 / predicted = {fmt(var)} (median)"
    off = var is not None and not 0.5 <= var <= 2.0
    if off:
        variance += f": GD oscillates {'more' if var > 1 else 'less'} than predicted"
    lines = [
        "    central flow: never on the edge here (Sigma = 0): it moves as the gradient flow"
        if never_on
        else f"    central flow: S within {fmt(p.central_pinned)} x 2/eta of 2/eta past its switch-on (pinned, "
        "as built)",
        f"    GD's {p.window}-step average over t = {fmt(p.t_first)}..{fmt(p.t_last)}{nearer}:",
        f"      distance ratio central/flow {fmt(ratio)} (median), {fmt(p.ratio_last)} at the end",
        *_distance_line(p),
        loss,
        variance,
    ]
    if p.loss_parting is not None or off:
        lines.append(
            "      GD against the gradient flow (no edge here), not a gap of the central flow"
            if never_on
            else '      a known gap of the central flow, not a fault ("What the central flow leaves out")'
        )
    return lines


def _distance_line(p: PredictionEntry) -> list[str]:
    """The distances themselves, in theta's Euclidean norm (absent from summaries written before them)."""
    if given(p.dist_central_last) is None:
        return []
    return [
        f"      ||avg - central|| {fmt(p.dist_central_median)} (median), {fmt(p.dist_central_last)} at the end, "
        f"against ||avg - flow|| {fmt(p.dist_flow_last)} (norms in theta)"
    ]


def fmt_share(x: float | None) -> str:
    return "(never)" if x is None else f"{100 * x:.0f} %"
