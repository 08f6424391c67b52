"""The saddle analysis of one series: its plateaus, each saddle classified, and its exits against a
reference's (the flow's).

A series is a mapping of the arrays of ``series/<name>.npz``: t (T,), loss (T,), grad_norm (T,),
mode_strength (T, q), optionally theta (T, p) and grid_index (T,). Everything here returns typed
results (:class:`Plateau`, :class:`PlateauExit`) and raises :class:`~dlnlab.errors.ArgumentError` on
bad input; what a run makes of them (summary entries, warnings) is the lab's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from dlnlab._util import jsonable
from dlnlab.errors import ArgumentError
from dlnlab.metrics import SeriesMetrics, theta_rows
from dlnlab.network import as_layout, pack, product, unpack
from dlnlab.problem import RegressionProblem
from dlnlab.saddles.classify import ClassifyTolerances, SaddleClassification, classify_saddle
from dlnlab.saddles.critical import critical_point
from dlnlab.saddles.plateaus import (
    Plateau,
    PlateauThresholds,
    _first_crossing,
    _modes_np,
    detect_plateaus,
)
from dlnlab.trajectory import Trajectory

__all__ = ["analyze_series", "analyze_trajectory", "exits_vs_reference", "PlateauExit", "SERIES_KEYS"]

SERIES_KEYS = ("t", "loss", "mode_strength", "grad_norm")  # what a series needs for its plateaus


# ------------------------------------------------------------------------------------------------
# One series


def analyze_series(
    problem: RegressionProblem,
    dims,
    arrays: Mapping[str, np.ndarray],
    *,
    thresholds: PlateauThresholds | None = None,
    tolerances: ClassifyTolerances | None = None,
    classify: bool = True,
) -> list[Plateau]:
    """Plateaus of one recorded series (the arrays of ``series/<name>.npz``), each classified.

    The saddle of a plateau is classified from the point of the plateau closest to P_S (``theta``
    rows (T, p)), snapped to the critical point; without ``theta`` from the balanced critical point of
    the learnt modes (evidence ``source`` = ``constructed``). Returns :class:`Plateau` objects with
    label, lambda_min, evidence and escape and t_closest filled (``classify=False``: as
    :func:`detect_plateaus` gives them); a plateau whose classification fails numerically is labelled
    ``inconclusive`` with the error as its evidence. Raises ArgumentError when ``arrays`` lack one of
    :data:`SERIES_KEYS`, or hold arrays that are not a series (see :func:`detect_plateaus`), or a
    ``theta`` that is not (T, p) for these dims.
    """
    layout = as_layout(dims)
    missing = [k for k in SERIES_KEYS if arrays.get(k) is None]
    if missing:
        raise ArgumentError(
            "arrays", f"a series needs {', '.join(SERIES_KEYS)}; missing {', '.join(missing)}"
        )
    t = arrays["t"]
    plats = detect_plateaus(
        t, arrays["loss"], arrays["mode_strength"], arrays["grad_norm"], problem, layout.r_max,
        depth=layout.depth, thresholds=thresholds,
    )  # fmt: skip
    if not classify:
        return plats
    have, theta = theta_rows(arrays)  # theta row for row, or on a sub-grid (big nets)
    theta = None if theta is None else np.asarray(theta, dtype=np.float64)
    if theta is not None and (theta.ndim != 2 or theta.shape[1] != layout.n_weights):
        raise ArgumentError(
            "arrays",
            f"theta: expected (T, {layout.n_weights}) for dims {list(layout.dims)}, got {theta.shape}",
        )
    return [_classified(p, problem, layout, t, have, theta, tolerances) for p in plats]


def analyze_trajectory(
    problem: RegressionProblem,
    dims,
    trajectory: Trajectory,
    *,
    thresholds: PlateauThresholds | None = None,
    tolerances: ClassifyTolerances | None = None,
    classify: bool = True,
) -> list[Plateau]:
    """Plateaus of a core trajectory (``dlnlab.integrate`` or ``dlnlab.gd``, one net), each classified:
    the loss, gradient norm and mode strengths it needs are computed here from ``trajectory.theta``
    (:class:`dlnlab.metrics.SeriesMetrics`, as the lab records them), then :func:`analyze_series`."""
    theta = trajectory.theta.detach().to(torch.float64).cpu()
    if theta.ndim != 2:
        raise ArgumentError(
            "trajectory",
            f"trajectory.theta: one net's (T, p) states expected, got shape {tuple(theta.shape)}",
        )
    metrics = SeriesMetrics(problem, dims, theta[0], save_theta=True)
    arrays = metrics.compute(
        list(range(len(theta))), trajectory.t.to(torch.float64).cpu(), theta, [None] * len(theta)
    )
    return analyze_series(
        problem, dims, arrays, thresholds=thresholds, tolerances=tolerances, classify=classify
    )


def _classified(p: Plateau, problem, layout, t, have, theta, tolerances) -> Plateau:
    """The plateau p with its saddle classified (label inconclusive and the error as evidence if it fails)."""
    s = p.modes_learnt
    chosen: dict = {}  # classified_from and t_closest, once the point is chosen
    try:
        ps = problem.critical_product(s)
        idx = None
        if theta is not None:
            sel = np.flatnonzero((have >= p.i_start) & (have <= p.i_end))
            sel = sel[np.isfinite(theta[sel]).all(axis=1)] if sel.size else sel
            if sel.size:
                ths = torch.from_numpy(theta[sel])
                dist = problem.product_distance(product(unpack(ths, layout)), ps)
                idx = int(sel[int(torch.argmin(dist))])
        if idx is not None:
            res = classify_saddle(problem, layout, torch.from_numpy(theta[idx]), s, tolerances=tolerances)
            chosen = {"classified_from": "trajectory", "t_closest": float(np.asarray(t)[have[idx]])}
        else:
            res = classify_saddle(
                problem, layout, pack(critical_point(problem, layout, s)), s, tolerances=tolerances
            )
            chosen = {"classified_from": "constructed", "t_closest": None}
        return replace(p, **chosen, **_classification_fields(p, res, chosen["classified_from"]))
    except Exception as err:  # noqa: BLE001 - one plateau's classification must not lose the rest
        return replace(p, **chosen, label="inconclusive", evidence={"error": f"{type(err).__name__}: {err}"})


_EVIDENCE_KEYS = (
    "ranks",
    "partial_product_ranks",
    "rank_P",
    "optimal_rank_r",
    "three_rank_r_layers",
    "n_rank_r_layers",
    "partial_product_rule",
    "theory",
    "numeric",
    "lambda_max",
    "lambda_tolerance",
    "n_negative_eigenvalues",
    "n_zero_eigenvalues",
    "snap",
    "snap_grad_norm",
    "snap_distance",
    "snap_iterations",
    "product_distance",
    "reasons",
    "closest",
)


def _classification_fields(p: Plateau, res: SaddleClassification, source: str) -> dict:
    """The fields of plateau p that a :func:`classify_saddle` result sets (label, lambda_min, evidence,
    escape), JSON-able."""
    esc = res.escape.to_dict() if res.escape is not None else {}
    esc["exit_mode"] = p.exit_mode
    esc["next_mode_agrees"] = (
        None if p.exit_mode is None or esc.get("next_mode") is None else esc["next_mode"] == p.exit_mode
    )
    return {
        "label": res.label,
        "lambda_min": jsonable(res.lambda_min),
        "evidence": jsonable(
            {
                "source": source,
                **{k: getattr(res, k) for k in _EVIDENCE_KEYS},
                "nearest_critical": None if res.nearest_critical is None else res.nearest_critical.to_dict(),
            }
        ),
        "escape": jsonable(esc),
    }


@dataclass(frozen=True)
class PlateauExit:
    """When a series leaves the plateau the reference (the flow) leaves by ``mode``: ``t_exit`` (None
    when it never does), its ``delay`` behind the reference and ``delay / lr`` (GD: O(eta))."""

    mode: int
    t_exit_flow: float
    t_exit: float | None
    delay: float | None
    delay_over_lr: float | None

    def to_dict(self) -> dict:
        """The summary.json entry (``plateau_exits_vs_flow``): JSON-able, null for a missing number."""
        return jsonable(asdict(self))


def exits_vs_reference(
    ref_plateaus: Sequence[Plateau],
    plateaus: Sequence[Plateau],
    problem: RegressionProblem,
    arrays: Mapping[str, np.ndarray] | None = None,
    lr: float | None = None,
) -> list[PlateauExit]:
    """Plateau exits of a series against a reference (the flow), matched by exit mode: one
    :class:`PlateauExit` per exit of the reference (the series' first exit by its mode). When the series
    has no plateau leaving by that mode, its t_exit is the first time the mode's strength crosses m_k/2
    (``arrays``' mode_strength)."""
    m = _modes_np(problem)
    out = []
    # a series that leaves by one mode twice (SGD back onto a plateau): its first exit, as the aggregate's
    own = {p.exit_mode: p.t_exit for p in reversed(plateaus) if p.exit_mode is not None}
    for p in ref_plateaus:
        k = p.exit_mode
        if k is None or p.t_exit is None:
            continue
        te = own.get(k)
        if te is None and arrays is not None and arrays.get("mode_strength") is not None:
            ms = np.asarray(arrays["mode_strength"], dtype=np.float64)
            if ms.ndim == 2 and k < ms.shape[1]:
                te = _first_crossing(np.asarray(arrays["t"], dtype=np.float64), ms[:, k], 0.5 * m[k])
        delay = None if te is None else float(te - p.t_exit)
        out.append(
            PlateauExit(
                mode=int(k),
                t_exit_flow=float(p.t_exit),
                t_exit=None if te is None else float(te),
                delay=delay,
                delay_over_lr=delay / lr if (delay is not None and lr) else None,
            )  # fmt: skip
        )
    return out
