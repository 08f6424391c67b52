"""summary.json's small parts, typed: what the entries and the summary hold in lists and maps (a
plateau, a plateau exit, a mode's exit spread, an ensemble's spread, a resume, an order's pair, the
SME's spread ratios and exit rows). The records that hold them: ``_records`` (the series' entries) and
``_summary_record`` (the run's); the machinery: ``_record_base``.

A key that older summaries lack is not required (it reads as ABSENT). The fields are in the order the
run writes the keys, so that ``to_dict`` writes the dicts it read back byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlnlab.lab.results._record_base import Record, key
from dlnlab.lab.results._saddle_records import EscapeEntry, SaddleEvidence
from dlnlab.status import Status

__all__ = [
    "Spread",
    "PlateauEntry",
    "PlateauExitEntry",
    "ModeExitSpread",
    "ResumeEntry",
    "ResumeCheck",
    "OrderPair",
    "RatioSpread",
    "SpreadRatios",
    "ExitSpreadRow",
]


@dataclass
class Spread(Record):
    """Of the finite values across an ensemble's members."""

    mean: float = key("mean", required=True)
    std: float | None = key("standard deviation (ddof 1; null for one value: unknown, not 0)", required=True)
    min: float = key("smallest", required=True)
    median: float = key("median", required=True)
    max: float = key("largest", required=True)
    n: int = key("how many values were finite", required=True)


@dataclass(kw_only=True)  # its keys in the order they are written, the optional ones among the required
class PlateauEntry(Record):
    """``series.<name>.plateaus[i]`` (dlnlab.saddles' ``Plateau.to_dict``) and a member's
    ``members[i].plateaus[j]`` (its six required keys only): one saddle plateau, modes 0-based."""

    t_start: float = key("where its bands start to hold", required=True)
    t_end: float = key("where they stop", required=True)
    duration: float = key("t_end - t_start (a series' plateau)")
    level: float = key("the critical value L(P_S) it sits at", required=True)
    level_index: int | None = key("r when the modes learnt are 0 .. r-1 (the top level L*_r), else null")
    is_top_set: bool = key("the modes learnt are 0 .. r-1")
    modes_learnt: list[int] = key("the modes learnt on it (0-based, sorted)", required=True)
    grad_norm_min: float = key("the smallest ||grad L|| on it")
    t_grad_norm_min: float = key("... where")
    level_gap: float = key("the loss there minus the level")
    exit_mode: int | None = key(
        "the mode learnt on leaving it, 0-based as modes_learnt (the console's mode k is k - 1 here; null: the "
        "series ends on it)",
        required=True,
    )
    t_exit: float | None = key("when that mode's strength crosses m_k / 2 (null: no exit)", required=True)
    i_start: int = key("t_start's row in the series' arrays")
    i_end: int = key("t_end's row")
    i_grad_norm_min: int = key("t_grad_norm_min's row")
    label: str | None = key("its saddle: strict, non-strict or inconclusive (null: not classified)")
    lambda_min: float | None = key("the Hessian's smallest eigenvalue at the snapped critical point")
    evidence: SaddleEvidence = key(
        "the classification's evidence (SaddleClassification's fields; {}: none)", record=SaddleEvidence
    )
    escape: EscapeEntry = key(
        "the escape directions (EscapeDirections' fields; {}: none)", record=EscapeEntry
    )
    t_closest: float | None = key(
        "the time of the series' row the critical point was snapped from (null: constructed)"
    )


@dataclass
class PlateauExitEntry(Record):
    """``series.<name>.plateau_exits_vs_flow[i]`` (dlnlab.saddles' ``PlateauExit.to_dict``): when a series
    leaves the plateau the flow leaves by ``mode``."""

    mode: int = key("the mode the flow's exit learns (0-based)", required=True)
    t_exit_flow: float = key("the flow's exit time", required=True)
    t_exit: float | None = key("the series' first exit by the mode (null: none)", required=True)
    delay: float | None = key("t_exit - t_exit_flow", required=True)
    delay_over_lr: float | None = key(
        "delay / eta (GD: O(1)); null for a series without a learning rate", required=True
    )


@dataclass
class ModeExitSpread(Record):
    """``series.<name>.ensemble.plateau_exits[i]``: one mode's exits across the members."""

    mode: int = key("the mode (0-based)", required=True)
    t_exit: Spread = key("the members' first exit times by it", required=True, record=Spread)
    delay_vs_flow: Spread | None = key(
        "their delays behind the flow's exit (null: none)", required=True, record=Spread
    )


@dataclass
class ResumeEntry(Record):
    """``resumed[i]``: one resume of the run."""

    at: str = key("when it started (UTC, ISO 8601)", required=True)
    stage: str | None = key("the stage the run it resumed stopped in", required=True)
    status: str | None = key("that run's status", required=True)
    interrupted: str | None = key("the signal that had stopped it, or null", required=True)
    series: dict[str, str] = key(
        "per series what the resume did (kept, continued, run again, ...)", required=True
    )


@dataclass
class ResumeCheck(Record):
    """``series.flow.resume_check`` (and a modified flow's): a resume recomputed the finished flow and
    compared it with its file (``max_abs_diff``, ``of``, ``tolerance``), or the recomputation stopped
    (``status``, ``message``: the recorded series is kept)."""

    max_abs_diff: float = key("the largest difference between the recomputed flow and its file")
    of: str = key("what was compared: theta, or the loss where theta was not saved")
    tolerance: float = key(
        "10 x the solver's tolerance (the loss: 100 x); further off, the resume is refused"
    )
    status: Status = key("the recomputation stopped: its status", record=Status)
    message: str | None = key("... and why")


@dataclass
class OrderPair(Record):
    """``convergence_order_detail.pairwise[i]``: the order between two neighbouring learning rates."""

    lrs: list[float] = key("the two learning rates, the smaller first", required=True)
    order: float = key("log of their distances' ratio over log of their ratio", required=True)


@dataclass
class RatioSpread(Record):
    """A ratio of the SGD ensemble's variance over the SME's along the grid (points after t = 0)."""

    median: float = key("median over the grid points", required=True)
    p10: float = key("10 % quantile", required=True)
    p90: float = key("90 % quantile", required=True)


@dataclass
class SpreadRatios(Record):
    """``sgd_limit.sme.spread_ratio.<lr>``: the SGD ensemble's spread over the SME's at one learning rate
    (null: no finite ratio)."""

    var_loss: RatioSpread | None = key("Var L(t)", required=True, record=RatioSpread)
    var_theta: RatioSpread | None = key(
        "the total variance of theta(t) (the trace of its covariance)", record=RatioSpread
    )


@dataclass
class ExitSpreadRow(Record):
    """``sgd_limit.sme.exit_spread.<lr>[i]``: one mode's plateau exit times, SGD's against the SME's."""

    mode: int = key("the mode (0-based)", required=True)
    sgd_mean: float = key("the SGD members' mean exit time", required=True)
    sme_mean: float = key("the SME members'", required=True)
    sgd_std: float = key("the SGD members' standard deviation (ddof 1)", required=True)
    sme_std: float = key("the SME members'", required=True)
    n_sgd: int = key("SGD members that left by the mode", required=True)
    n_sme: int = key("SME members that did", required=True)
    std_ratio: float = key("sgd_std / sme_std", required=True)
    sampling_error: float = key(
        "the ratio's sampling error, sqrt(1 / (2 (n_sgd - 1)) + 1 / (2 (n_sme - 1)))", required=True
    )
