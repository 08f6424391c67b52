"""summary.json's series entries, typed: one dataclass per part, one field per key, with what it means.

The run builds its series' entries as dicts while the series run (recorders, the analysis and the
ensembles fill them in stages); :meth:`dlnlab.lab.results.RunState.typed_summary` reads them into
these records (the run's parts: ``_summary_record``; the machinery: ``_record_base``), and summary.json is ``Summary.to_dict``. A field that holds :data:`ABSENT` is a
key the JSON leaves out (e.g. ``members`` outside an ensemble); every other field is written, null
included. ``from_dict`` refuses a key no field names (``UnknownKeys``) and a dict lacking a required
one (``MissingKeys``), so the contract lives here once: docs/results.md's key tables are generated from these fields (:func:`render_tables`, checked
by tests/test_docs.py), and the tests compare real summaries with them key by key.

A kind of series whose entry has keys of its own adds its record class here and its series' prefix
to :data:`ENTRY_RECORDS`; a kind without one gets :class:`SeriesEntry`, which keeps its other keys in
``extra``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dlnlab.lab.results._part_records import (
    ModeExitSpread,
    PlateauEntry,
    PlateauExitEntry,
    ResumeCheck,
    Spread,
)
from dlnlab.lab.results._record_base import ABSENT, MissingKeys, Record, UnknownKeys, given, key
from dlnlab.lab.results._run_records import MemberSeeds
from dlnlab.rundir import (
    CENTRAL_PREFIX,
    EDGE_PREFIX,
    FLOW,
    MODIFIED_PREFIX,
    SGD_PREFIX,
    SME_PREFIX,
    parse_series_name,
)
from dlnlab.status import Status

__all__ = [
    "ABSENT", "UnknownKeys", "MissingKeys", "Spread", "EnsembleSpread", "MemberEntry", "SeriesEntry",
    "FlowEntry", "SGDEntry", "SMEEntry", "CentralFlowEntry", "CentralEntry", "EdgeEntry", "PredictionEntry",
    "EdgeSeriesEntry", "ENTRY_RECORDS", "entry_record", "given", "key", "Record",
]  # fmt: skip


@dataclass
class EnsembleSpread(Record):
    """``series.<name>.ensemble``: the members' spread."""

    size: int = key("members", required=True)
    final_loss: Spread | None = key(
        "the final losses of the members that did not diverge (a flow: those at the last grid time)",
        record=Spread,
    )
    max_dist_to_flow: Spread | None = key(
        "the non-diverged members' largest distances to the flow (null for a flow)", record=Spread
    )
    statuses: dict[str, int] = key("members per status")
    plateau_exits: list[ModeExitSpread] = key(
        "per mode: the members' plateau exit times (``t_exit``: a spread; each member's first exit by the mode), after the analysis",
        record=ModeExitSpread,
        container="list",
    )


@dataclass
class MemberEntry(Record):
    """``series.<name>.members[i]``: one member of an ensemble."""

    status: Status = key(
        "its status (a flow member at t_max when interrupted: ok)", required=True, record=Status
    )
    diverged: bool = key("it diverged")
    t_stop: float | None = key("its last time (a flow's member: of its last finite point; null: none)")
    step_stop: int | None = key("its last step")
    final_loss: float | None = key("L at its last point (null: none)")
    max_dist_to_flow: float | None = key("largest ||theta - theta_flow|| at the exact times (null: under 2)")
    dist_to_flow_until: float | None = key("the last time its distance to the flow is known (null: none)")
    message: str = key("why it stopped, or empty")
    seeds: MemberSeeds = key("its seeds (data, init, sgd)", record=MemberSeeds)
    plateaus: list[PlateauEntry] = key(
        "its plateaus (Plateau.to_dict), after the analysis", record=PlateauEntry, container="list"
    )
    plateau_exits_vs_flow: list[PlateauExitEntry] = key(
        "per mode: its exit time against the flow's", record=PlateauExitEntry, container="list"
    )


@dataclass
class SeriesEntry(Record):
    """``series.<name>``: what every series' entry has (the flow's, a modified flow's, an (S)GD or SME
    series' extend it); a kind without a record of its own keeps its other keys in ``extra``."""

    open: ClassVar[bool] = True
    lr: float | None = key("the (S)GD series' learning rate; null for every other kind", required=True)
    status: Status = key(
        "ok, diverged, unstable, solver_failed, interrupted or error", required=True, record=Status
    )
    message: str = key("why the series stopped or failed, or empty")
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class FlowEntry(Record):
    """``series.flow`` and ``series.modflow_lr_<lr>`` (flow.modified): a flow solved by the run's solver."""

    lr: None = key("null", required=True)
    method: str = key("the solver", required=True)
    rtol: float = key("its relative tolerance", required=True)
    atol: float = key("its absolute tolerance", required=True)
    status: Status = key("ok, solver_failed, interrupted or error", required=True, record=Status)
    modified_lr: float = key("a modified flow: GD's step eta it models")
    message: str = key("why the solver stopped, or empty")
    diverged: bool = key("false (a flow does not diverge)")
    t_stop: float = key(
        "the last grid time reached (an ensemble: its members' earliest; 0: one reached none)"
    )
    step_stop: None = key("null")
    final_loss: float | None = key(
        "L at the last grid point (an ensemble: the members' mean if every member got there, else null)"
    )
    nfe: int | None = key("the vector field's evaluations")
    njev: int | None = key("Jacobian evaluations (implicit solvers)")
    wall_time_s: float = key("seconds")
    max_dist_to_flow: float = key("0")
    plateaus: list[PlateauEntry] = key(
        "the plateaus found (Plateau.to_dict), after the analysis", record=PlateauEntry, container="list"
    )
    members: list[MemberEntry] = key("an ensemble: each member's flow", record=MemberEntry, container="list")
    ensemble: EnsembleSpread = key("an ensemble: the members' spread", record=EnsembleSpread)
    plateau_exits_vs_flow: list[PlateauExitEntry] = key(
        "a modified flow: per mode, its exit time against the flow's",
        record=PlateauExitEntry,
        container="list",
    )
    resume_check: ResumeCheck = key(
        "a resumed run: how the recomputed flow compared with its file", record=ResumeCheck
    )


@dataclass
class SGDEntry(Record):
    """``series.sgd_lr_<lr>``: (S)GD at one learning rate."""

    lr: float = key("the learning rate eta", required=True)
    momentum: float = key("heavy-ball momentum", required=True)
    time_per_step: float = key("tau = eta / (1 - momentum): flow time per step", required=True)
    status: Status = key(
        "ok, diverged, unstable, interrupted or error (an ensemble: ok if a member is, else diverged if one "
        "is, else unstable)", required=True, record=Status
    )  # fmt: skip
    message: str = key("why it stopped or failed, or empty")
    steps: int | None = key("steps taken (null when it failed before training)")
    members: list[MemberEntry] = key("an ensemble: each member", record=MemberEntry, container="list")
    ensemble: EnsembleSpread = key("an ensemble: the members' spread", record=EnsembleSpread)
    diverged: bool = key("its status is diverged (an ensemble: no member ok and one diverged, see status)")
    members_diverged: int = key("an ensemble: how many members diverged (the series can be ok with some)")
    t_stop: float = key("the last time reached")
    step_stop: int | None = key("the last step recorded")
    final_loss: float | None = key(
        "L at the last point (an ensemble: the mean over the members that did not diverge)"
    )
    max_dist_to_flow: float | None = key(
        "largest ||theta - theta_flow|| at the exact times k tau up to dist_to_flow_until (null: known at under "
        "2, e.g. t = 0 alone; an ensemble: the mean over the members that did not diverge)"
    )
    dist_to_flow_until: float | None = key(
        "the last time with a distance: t_stop, or where the flow or the series stopped (an ensemble: earliest)"
    )
    plateaus: list[PlateauEntry] = key(
        "the plateaus found, after the analysis", record=PlateauEntry, container="list"
    )
    max_dist_to_modified_flow: float | None = key(
        "flow.modified: largest distance to GD's modified flow (or null)"
    )
    wall_time_s: float = key("seconds")
    plateau_exits_vs_flow: list[PlateauExitEntry] = key(
        "per mode: t_exit_flow, t_exit, delay, delay_over_lr", record=PlateauExitEntry, container="list"
    )


@dataclass
class SMEEntry(Record):
    """``series.sme_lr_<lr>`` (sgd.sme): the SME ensemble at one learning rate."""

    lr: None = key("null", required=True)
    sme_lr: float = key("the learning rate eta it models", required=True)
    method: str = key("sme_euler", required=True)
    status: Status = key(
        "ok, diverged, unstable or error (from its members', as SGD's)", required=True, record=Status
    )
    message: str = key("the integrator's message, or why it failed")
    nfe: int = key("drift evaluations")
    wall_time_s: float = key("seconds")
    members: list[MemberEntry] = key("each member", record=MemberEntry, container="list")
    ensemble: EnsembleSpread = key("the members' spread", record=EnsembleSpread)
    final_loss: float | None = key("the mean final loss of the members that did not diverge")
    max_dist_to_flow: float | None = key("not computed: absent")
    t_stop: float = key("the last time reached")
    plateaus: list[PlateauEntry] = key(
        "[] (the members' plateaus are in members)", record=PlateauEntry, container="list"
    )
    diverged: bool = key("its status is diverged (no member ok and one diverged, as SGD's)")
    members_diverged: int = key("how many members diverged")
    plateau_exits_vs_flow: list[PlateauExitEntry] = key(
        "per mode: its exit time against the flow's", record=PlateauExitEntry, container="list"
    )


@dataclass
class CentralFlowEntry(Record):
    """``series.cflow_lr_<lr>.central`` (flow.central): the central flow on the grid (docs/eos.md)."""

    lr: float = key("GD's learning rate eta", required=True)
    threshold: float = key("2/eta", required=True)
    t_edge: float | None = key("the first grid time with Sigma != 0 (null: never at the edge)", required=True)
    t_leave: float | None = key(
        "the last grid time with Sigma != 0 before Sigma = 0 to the end (null: on the edge at the end)",
        required=True,
    )
    edge_share: float = key("the share of grid points with Sigma != 0", required=True)
    sharpness_on_edge: float | None = key(
        "max abs(S - 2/eta) / (2/eta) where Sigma != 0, past each switch-on transient (t_edge_settled)",
        required=True,
    )
    max_excess: float | None = key(
        "max (S - 2/eta) / (2/eta) over the grid (<= 0: never past)", required=True
    )
    max_critical: int = key("the most critical eigenvalues at one point", required=True)
    final_sharpness: float | None = key("S at the last grid point", required=True)
    final_loss: float | None = key("L at the last grid point", required=True)
    final_predicted_loss: float | None = key("L + 1/2 <Sigma, H> at the last grid point", required=True)
    max_dist_to_flow_before_edge: float | None = key(
        "largest distance to the gradient flow at GD's exact times before t_edge", required=True
    )
    eig_iterations: int = key("LOBPCG iterations of its eigensolves (0: dense)", required=True)
    eig_unconverged: int = key("its eigensolves whose LOBPCG did not converge (their eigenpairs used anyway)")
    t_edge_settled: float | None = key(
        "the first grid time on the edge past the switch-on transient (abs(S - 2/eta) stops falling)"
    )
    sharpness_entering_edge: float | None = key(
        "max abs(S - 2/eta) / (2/eta) where Sigma != 0, transients included: S where Sigma switches on"
    )


@dataclass
class CentralEntry(Record):
    """``series.cflow_lr_<lr>`` (flow.central): GD's central flow at one learning rate."""

    lr: None = key("null", required=True)
    central_lr: float = key("the learning rate eta it models", required=True)
    method: str = key("rk45", required=True)
    rtol: float = key("flow.rtol", required=True)
    atol: float = key("flow.atol", required=True)
    status: Status = key("ok, solver_failed, interrupted or error", required=True, record=Status)
    message: str = key("why the solver stopped, or empty")
    t_stop: float = key("the last grid time reached")
    final_loss: float | None = key("L at the last grid point")
    nfe: int | None = key("the central flow's evaluations")
    wall_time_s: float = key("seconds")
    max_dist_to_flow: None = key("null (its distance to the flow: central.max_dist_to_flow_before_edge)")
    central: CentralFlowEntry | None = key("the central flow's edge numbers", record=CentralFlowEntry)
    plateaus: list[PlateauEntry] = key(
        "the plateaus found, after the analysis", record=PlateauEntry, container="list"
    )
    plateau_exits_vs_flow: list[PlateauExitEntry] = key(
        "per mode: its exit time against the flow's", record=PlateauExitEntry, container="list"
    )


@dataclass
class EdgeEntry(Record):
    """``series.edge_lr_<lr>.edge``: GD against its edge 2/eta (dlnlab.eos' diagnostics, docs/eos.md)."""

    lr: float = key("the learning rate eta", required=True)
    threshold: float = key("2/eta", required=True)
    band: float = key("hovering: abs(S - 2/eta) <= band 2/eta", required=True)
    t_edge: float | None = key("the first step time with S >= 2/eta (null: never)", required=True)
    hover_share: float | None = key("the share of the run's points after t_edge that hover", required=True)
    median_ratio: float | None = key(
        "median S / (2/eta) after t_edge, each point averaged with the next (both phases of the period 2)",
        required=True,
    )
    amplitude_median: float | None = key(
        "the period-2 amplitude along u_1 after t_edge: median", required=True
    )
    amplitude_max: float | None = key("... and largest (over the window)", required=True)
    outcome: str = key(
        "converged_below_edge, at_edge, above_edge, below_edge or diverged (the higher of S's last two steps "
        "within, above or below the band)",
        required=True,
    )
    final_sharpness: float | None = key("GD's S at its last step", required=True)
    final_loss: float | None = key("GD's L at its last step", required=True)
    flow_limit_sharpness: float | None = key(
        "S where the gradient flow from theta0 converges (null: not by t = 1000)", required=True
    )
    balanced_sharpness: float = key(
        "the balanced minimum's: h m_1^(2-2/h) for whitened data (the flattest global minimum's), else computed",
        required=True,
    )
    gfs_t: list[float] = key("the times of the GFS sharpness", required=True)
    gfs_sharpness: list[float] = key("S where the gradient flow from GD's iterate ends", required=True)
    gfs_non_increasing: bool = key(
        "the GFS sharpness of the converged flows never rises (rtol 1e-6)", required=True
    )
    every_step: list[int] = key("[first, last] step recorded at every step (empty: none)", required=True)
    stride: int = key("the steps between the run's other points (1: every step)", required=True)
    steps: int = key("GD's steps to t_max", required=True)
    spectrum_method: str = key("dense or lobpcg", required=True)
    gfs_converged: list[bool] = key("whether each GFS flow converged by t = 1000 (else S where it stood)")
    spectrum_unconverged: int = key("GD's spectra whose LOBPCG did not converge (0 when dense)")
    previous_sharpness: float | None = key(
        "GD's S at the point before its last (with final_sharpness: both phases of the period-2 oscillation)"
    )


@dataclass
class PredictionEntry(Record):
    """``series.edge_lr_<lr>.predictions`` (flow.central): the central flow's predictions against GD
    over the window (docs/eos.md)."""

    window: int = key("GD's average: over this many steps (centred trapezoid)", required=True)
    t_first: float | None = key("the first time with an average", required=True)
    t_last: float | None = key("the last time with an average", required=True)
    ratio_median: float | None = key("||avg - central|| / ||avg - flow||: median", required=True)
    ratio_max: float | None = key("... largest", required=True)
    ratio_last: float | None = key("... at the last average", required=True)
    loss_rel_median: float | None = key("predicted / averaged loss - 1: median", required=True)
    loss_parting: float | None = key(
        "from when they differ by more than 2x to the end (null: never)", required=True
    )
    variance_ratio_median: float | None = key(
        "GD's variance along u_1 / u_1^T Sigma u_1: median", required=True
    )
    central_pinned: float | None = key(
        "max abs(S - 2/eta) / (2/eta) of the central flow at GD's step times where "
        "Sigma != 0, past each switch-on transient",
        required=True,
    )
    central_entering: float | None = key("the same, transients included: S where Sigma switches on")
    dist_central_last: float | None = key("||avg - central|| at the last average (Euclidean, in theta)")
    dist_central_median: float | None = key("... median over the window")
    dist_flow_last: float | None = key("||avg - flow|| at the last average")
    flows_reused: bool = key(
        "both flows at GD's step times taken from the cflow_lr and flow series (lr >= log.dt: "
        "every step is one of their times), not solved again"
    )


@dataclass
class EdgeSeriesEntry(Record):
    """``series.edge_lr_<lr>`` (sgd.edge, flow.central): GD again at every step through its crossing."""

    lr: None = key("null", required=True)
    edge_lr: float = key("the learning rate eta", required=True)
    status: Status = key("ok or error", required=True, record=Status)
    message: str = key("why it failed, or empty")
    max_dist_to_flow: None = key("null")
    edge: EdgeEntry = key("the edge diagnostics", record=EdgeEntry)
    steps: int = key("GD's steps to t_max")
    final_loss: float | None = key("GD's L at its last step")
    t_stop: float = key("the last step's time")
    predictions: PredictionEntry | None = key(
        "flow.central: against the central flow", record=PredictionEntry
    )
    wall_time_s: float = key("seconds")


# the record of each kind's entry, by its series' prefix (rundir's names); another kind: SeriesEntry
ENTRY_RECORDS: dict[str, type[Record]] = {
    FLOW: FlowEntry,
    MODIFIED_PREFIX: FlowEntry,
    SGD_PREFIX: SGDEntry,
    SME_PREFIX: SMEEntry,
    CENTRAL_PREFIX: CentralEntry,
    EDGE_PREFIX: EdgeSeriesEntry,
}


def entry_record(name: str) -> type[Record]:
    """The record class of series ``name``'s entry."""
    parsed = parse_series_name(name)
    return ENTRY_RECORDS.get(parsed[0], SeriesEntry) if parsed else SeriesEntry
