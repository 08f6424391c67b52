"""A plateau's saddle in summary.json, typed: ``series.<name>.plateaus[i].evidence`` and ``.escape``, the
reading side of the core's classification (``dlnlab.saddles``: ``analyze._classification_fields`` writes
them from :class:`~dlnlab.saddles.SaddleClassification` and :class:`~dlnlab.saddles.EscapeDirections`).
The record that holds them: ``_part_records.PlateauEntry``; the machinery: ``_record_base``.

Each has several shapes, so no key is required where one shape lacks it: ``{}`` (not classified), an
evidence of one key ``error`` (the classification failed), an escape of ``exit_mode`` and
``next_mode_agrees`` alone (no escape directions at the critical point), a branch measured or not (no
free channel). The fields are in the order the core writes the keys, so that ``to_dict`` writes the
dicts it read back byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlnlab.lab.results._record_base import Record, key

__all__ = ["PartialProductRanks", "ClosestEvidence", "NearestCriticalEntry", "SaddleEvidence", "EscapeBranch", "EscapeEntry"]  # fmt: skip


@dataclass
class PartialProductRanks(Record):
    """``evidence.partial_product_ranks``: the ranks of the partial products at the critical point."""

    prefix: list[int] = key("rank P_{j:1} = W_j ... W_1, j = 1 .. h-1", required=True)
    suffix: list[int] = key("rank W_h ... W_j, j = 2 .. h", required=True)


@dataclass
class ClosestEvidence(Record):
    """``evidence.closest``: the series' own point, before it was snapped to the critical point."""

    grad_norm: float = key("||grad L|| there", required=True)
    lambda_min: float | None = key(
        "the Hessian's smallest eigenvalue (null: the gradient not finite)", required=True
    )
    lambda_max: float | None = key("its largest", required=True)
    product_distance: float = key("||(P - P_S) Sxx^{1/2}||", required=True)
    ranks: list[int] | None = key("the ranks of W_1 .. W_h (null: the gradient not finite)", required=True)


@dataclass
class NearestCriticalEntry(Record):
    """``evidence.nearest_critical`` (``dlnlab.saddles``' NearestCritical): the critical point that
    Levenberg-Marquardt reaches from the series' own point, and whether its curvature decides the label."""

    reached: bool = key("LM reached a critical point", required=True)
    distance: float = key("how far from the series' point", required=True)
    max_distance: float = key(
        "||H|| / K: beyond it no critical point has the curvature to decide", required=True
    )
    grad_norm: float = key("||grad L|| where LM stopped", required=True)
    product_distance: float = key("||(P - P_S) Sxx^{1/2}|| there", required=True)
    iterations: int = key("LM's steps", required=True)
    lambda_min: float | None = key(
        "the Hessian's smallest eigenvalue there (null: not reached)", required=True
    )
    n_negative_eigenvalues: int | None = key(
        "eigenvalues below the tolerance (null: not dense, or not reached)", required=True
    )
    lipschitz: float | None = key(
        "K, how fast lambda_min changes per unit distance (null: not reached)", required=True
    )
    threshold: float | None = key("lambda tolerance + 2 K distance (null: not reached)", required=True)
    strict: bool = key("reached and lambda_min < -threshold: it decides strict", required=True)


@dataclass
class SaddleEvidence(Record):
    """``series.<name>.plateaus[i].evidence``: why the saddle has its label (SaddleClassification's fields;
    ``{}``: not classified; ``error`` alone: the classification failed)."""

    error: str = key("the classification failed: the exception and its message")
    source: str = key("the point classified: trajectory (the series' closest row, snapped) or constructed")
    ranks: list[int] = key("the ranks of W_1 .. W_h at the critical point")
    partial_product_ranks: PartialProductRanks = key(
        "the partial products' ranks", record=PartialProductRanks
    )
    rank_P: int = key("the rank of the end-to-end map P")
    optimal_rank_r: bool = key("P is P*_r, the optimal rank-r map")
    three_rank_r_layers: bool = key("three layers of rank r: the sufficient condition for non-strict")
    n_rank_r_layers: int = key("the layers of rank r")
    partial_product_rule: str | None = key("docs/theory.md section 4's refinement: what it says")
    theory: str | None = key("what the literature says of the saddle")
    numeric: str = key("what lambda_min says")
    lambda_max: float = key("the Hessian's largest eigenvalue at the critical point")
    lambda_tolerance: float = key("what counts as a zero eigenvalue")
    n_negative_eigenvalues: int | None = key("eigenvalues below -lambda_tolerance (null: not dense)")
    n_zero_eigenvalues: int | None = key("eigenvalues within it (null: not dense)")
    snap: str = key("how the critical point was found: none, nearest or project")
    snap_grad_norm: float = key("||grad L|| at the critical point")
    snap_distance: float = key("||theta* - theta||: how far the snap moved")
    snap_iterations: int = key("the snap's LM steps")
    product_distance: float = key("||(P - P_S) Sxx^{1/2}|| at the critical point")
    reasons: list[str] = key("why the label, one line a reason")
    closest: ClosestEvidence = key("the series' own point, before the snap", record=ClosestEvidence)
    nearest_critical: NearestCriticalEntry | None = key(
        "the nearest critical point LM found from the series' point (null: not looked for)",
        record=NearestCriticalEntry,
    )


@dataclass(kw_only=True)  # its keys in the order they are written, the optional ones among the required
class EscapeBranch(Record):
    """``escape.branches[i]``: an unlearnt mode's stable and unstable branches in a free channel (the loss
    changes signed L(theta + delta) - L(theta); the measured ones absent without a free channel)."""

    mode: int = key("the mode (0-based)", required=True)
    m_k: float = key("its strength m_k", required=True)
    order: int = key("the depth h: the loss changes are of order a^h", required=True)
    trajectory_strength: float = key("the series' own u_k at the point")
    trajectory_branch: str = key("the branch the series is on: unstable, stable or dead (u_k = 0)")
    free_channel: bool = key("a free channel holds the branches", required=True)
    amplitude: float = key("a, the branches' amplitude per layer")
    unstable_loss_change: float = key("measured along the unstable branch")
    stable_loss_change: float = key("measured along the stable branch")
    predicted_unstable_loss_change: float = key("-m_k a^h")
    predicted_stable_loss_change: float = key("m_k a^h")
    unstable_curvature: float = key("the Hessian's curvature along the unstable branch")
    stable_curvature: float = key("along the stable branch")
    sign_rule_ok: bool = key("the unstable branch lowers the loss and the stable one raises it")


@dataclass
class EscapeEntry(Record):
    """``series.<name>.plateaus[i].escape``: how the series leaves the saddle (EscapeDirections' fields
    and the exit seen; ``{}``: not classified; ``exit_mode`` and ``next_mode_agrees`` alone: no escape
    directions at the critical point)."""

    next_mode: int | None = key("the mode learnt next: the largest unlearnt one with a free channel")
    free_channel: bool = key("a channel is free for it")
    unstable_kind: str | None = key("hessian (a negative eigenvalue), sign_rule (degenerate Hessian) or null")
    unstable_rate: float | None = key("the unstable direction's rate (hessian)")
    unstable_mode: int | None = key("its mode")
    unstable_order: int | None = key("the algebraic escape's order (sign_rule)")
    escape: str | None = key("exponential or algebraic")
    hessian_degenerate: bool = key("the Hessian has no negative eigenvalue")
    lambda_min: float = key("the Hessian's smallest eigenvalue")
    n_negative_eigenvalues: int | None = key("its negative eigenvalues (null: not dense)")
    branches: list[EscapeBranch] = key(
        "per unlearnt mode its branches", record=EscapeBranch, container="list"
    )
    exit_mode: int | None = key("the mode the series left by (null: none)")
    next_mode_agrees: bool | None = key("next_mode is exit_mode (null: either unknown)")
