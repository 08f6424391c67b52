"""summary.json as a whole, typed: the run's records (the convergence fits, the limit report, the
summary itself) beside the series' entries (``_records``, where the mechanism is described), and the
docs' key tables made from them (and from the aggregate's records, ``_aggregate_records``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from dlnlab.errors import ArgumentError
from dlnlab.lab.results._aggregate_records import AGGREGATE_RECORDS
from dlnlab.lab.results._part_records import (
    ExitSpreadRow,
    ModeExitSpread,
    OrderPair,
    PlateauEntry,
    PlateauExitEntry,
    RatioSpread,
    ResumeCheck,
    ResumeEntry,
    SpreadRatios,
)
from dlnlab.lab.results._record_base import NotAnObject
from dlnlab.lab.results._records import (
    CentralEntry,
    CentralFlowEntry,
    EdgeEntry,
    EdgeSeriesEntry,
    EnsembleSpread,
    FlowEntry,
    MemberEntry,
    MissingKeys,
    PredictionEntry,
    Record,
    SeriesEntry,
    SGDEntry,
    SMEEntry,
    Spread,
    UnknownKeys,
    entry_record,
    key,
)
from dlnlab.lab.results._run_records import (
    AnalysisEntry,
    EdgeWorkEntry,
    ErrorEntry,
    EstimatesEntry,
    FlowChoiceEntry,
    GridEntry,
    MemberSeeds,
    ProcessEntry,
    RunSeeds,
)
from dlnlab.lab.results._saddle_records import (
    ClosestEvidence,
    EscapeBranch,
    EscapeEntry,
    NearestCriticalEntry,
    PartialProductRanks,
    SaddleEvidence,
)
from dlnlab.rundir import json_kind, read_summary_object

__all__ = [
    "OrderFit", "ErrorOrder", "Stretch", "Escapes", "SMESpread", "LimitReport", "RunStatus", "Summary",
    "RECORDS", "render_tables", "with_tables", "read_entries",
]  # fmt: skip


class RunStatus(str, Enum):
    """summary.json's ``status``: the run as a whole."""

    RUNNING = "running"  # a process works on it (``process``); exit_code is null until it ends
    FINISHED = "finished"  # it ended; exit_code says how (0, or 3 when a series failed)
    INTERRUPTED = "interrupted"  # SIGINT / SIGTERM ended it (exit code 130 / 143); resume finishes it
    CRASHED = "crashed"  # an unexpected error outside any series ended it (exit code 1); ``error`` says which

    def __str__(self) -> str:
        return self.value


@dataclass
class OrderFit(Record):
    """``convergence_order_detail`` (and ``_modified_detail``): the slope of log distance against log eta."""

    order: float | None = key("the fitted order (null with too few learning rates)", required=True)
    lrs_used: list[float] = key(
        "the learning rates fitted: the sgd.order_fit smallest usable with a distance (without an order: "
        "those with one)",
        required=True,
    )
    pairwise: list[OrderPair] = key(
        "the order between each pair of neighbouring learning rates",
        required=True,
        record=OrderPair,
        container="list",
    )
    message: str = key("why there is no order, or empty", required=True)


@dataclass
class ErrorOrder(Record):
    """One error (strong, weak_theta, weak_loss) over one window of time."""

    max: list[float | None] = key("per learning rate: the largest error of the mean curve", required=True)
    max_ci90: list = key("per learning rate: its 90 % bootstrap interval", required=True)
    order: float | None = key(
        "the order in eta: the slope over the sgd.order_fit smallest rates with an error (null with fewer)",
        required=True,
    )
    ci90: list[float] | None = key("the order's 90 % bootstrap interval", required=True)
    constant: float | None = key("the error constant C = error / eta^expected order", required=True)
    lrs_used: list[float] = key("the learning rates fitted (without an order: those with an error)")
    message: str = key("why there is no order, or empty")
    growth: float | None = key("a stretch: its constant over the previous stretch's")


@dataclass
class Stretch(Record):
    """The time between two of the flow's saddle escapes."""

    t_start: float = key("start", required=True)
    t_end: float | None = key("end (null: the horizon)", required=True)
    escapes_before: int = key("escapes before it", required=True)
    strong: ErrorOrder = key("strong error over the stretch", record=ErrorOrder)
    weak_theta: ErrorOrder = key("weak error in theta over the stretch", record=ErrorOrder)
    weak_loss: ErrorOrder = key("weak error in the loss over the stretch", record=ErrorOrder)


@dataclass
class Escapes(Record):
    """The flow's saddle escapes and the errors between them."""

    t_exit: list[float] = key("the flow's plateau exit times", required=True)
    exit_mode: list[int] = key("the mode each exit learns (0-based)", required=True)
    expected_order: dict[str, float] = key("the expected order of each error", required=True)
    stretches: list[Stretch] = key(
        "the stretches between escapes", required=True, record=Stretch, container="list"
    )


@dataclass
class SMESpread(Record):
    """``sgd_limit.sme`` (sgd.sme): the SGD ensemble's spread over the SME ensemble's."""

    spread_ratio: dict[str, SpreadRatios] = key(
        "per lr: var_loss and var_theta ratios (median, p10, p90)",
        required=True,
        record=SpreadRatios,
        container="dict",
    )
    sampling_error: float = key("a variance ratio's sampling error, 2 / sqrt(E - 1)", required=True)
    exit_spread: dict[str, list[ExitSpreadRow]] = key(
        "per lr and mode: the plateau exit times' std ratio, after the analysis",
        record=ExitSpreadRow,
        container="dict of lists",
    )


@dataclass
class LimitReport(Record):
    """``sgd_limit`` (an ensemble with ensemble.vary=sgd): SGD as a stochastic flow."""

    members: int = key("ensemble members", required=True)
    bootstrap: int = key("bootstrap resamples", required=True)
    lrs: list[float] = key("the learning rates measured", required=True)
    fit_lrs: list[float] = key(
        "the sgd.order_fit smallest; an order takes the next rate where one has no error (its lrs_used)",
        required=True,
    )
    members_used: list[int] = key(
        "per learning rate: the members averaged, those that did not diverge (a diverged member's arrays are its blow-up)"
    )
    strong: ErrorOrder = key("E ||theta_sgd - theta_flow|| over the horizon (order 1/2)", record=ErrorOrder)
    weak_theta: ErrorOrder = key("||E theta_sgd - theta_flow|| over the horizon (order 1)", record=ErrorOrder)
    weak_loss: ErrorOrder = key("|E L_sgd - L_flow| over the horizon (order 1)", record=ErrorOrder)
    escapes: Escapes = key("the errors between the flow's saddle escapes", record=Escapes)
    sme: SMESpread = key("sgd.sme: the spreads against the SME ensemble's", record=SMESpread)


@dataclass
class Summary(Record):
    """summary.json: written at the start of a run and after every stage, atomically."""

    series: dict[str, Record] = key(
        "per series, its entry (FlowEntry, SGDEntry, SMEEntry, ...)", required=True
    )
    not_run: list[str] = key("the (S)GD series not run (yet)", required=True)
    stage: str = key("the stage the run is in or stopped in (done at the end)", required=True)
    interrupted: str | None = key("null, or the signal that stopped the run (SIGINT, SIGTERM)", required=True)
    resumed: list[ResumeEntry] = key(
        "one record per resume: at, stage, status, interrupted, per series what it did",
        required=True,
        record=ResumeEntry,
        container="list",
    )
    critical_values: list[float] = key("the plateau levels L*_r, r = 0 .. min(dims)", required=True)
    modes: list[float] = key("the data's modes m_k", required=True)
    L_min: float = key("the loss' minimum over all products", required=True)
    convergence_order: float | None = key("max dist to flow against eta: the fitted slope", required=True)
    convergence_order_detail: OrderFit = key("the fit", required=True, record=OrderFit)
    convergence_order_modified: float | None = key(
        "flow.modified: the slope against GD's modified flows", required=True
    )
    convergence_order_modified_detail: OrderFit | None = key(
        "flow.modified: the fit", required=True, record=OrderFit
    )
    sgd_limit: LimitReport | None = key(
        "ensemble.vary=sgd: the strong and weak errors", required=True, record=LimitReport
    )
    gd_stability_threshold: float | None = key(
        "2 / S_bal, S_bal the balanced minimum's sharpness (h m_1^(2-2/h) for whitened data: no global "
        "minimum is stable above)",
        required=True,
    )
    seeds: RunSeeds = key("every seed the run used", required=True, record=RunSeeds)
    versions: dict[str, str | None] = key("python and the packages' versions", required=True)
    config: dict = key("the resolved config", required=True)
    grid: GridEntry = key("dt, n_grid, t_max", required=True, record=GridEntry)
    estimates: EstimatesEntry = key(
        "peak_memory_bytes, series_file_bytes (the preflight's estimates)",
        required=True,
        record=EstimatesEntry,
    )
    flow_choice: FlowChoiceEntry | None = key(
        "flow.method=auto: the candidates and the choice; the flow's chunk_members and chunks",
        required=True,
        record=FlowChoiceEntry,
    )
    analysis: AnalysisEntry | None = key(
        "the analysis budget's decision (points, saddles)", required=True, record=AnalysisEntry
    )
    theta_every: int | None = key("theta is saved every this many grid points", required=True)
    wall_time_s: float = key("seconds since the run started", required=True)
    status: RunStatus = key("running, finished, interrupted or crashed", required=True, record=RunStatus)
    exit_code: int | None = key("null while running, else the exit code (docs/cli.md)", required=True)
    error: ErrorEntry | None = key(
        "a crash: type, message, stage, traceback", required=True, record=ErrorEntry
    )
    logging_error: str | None = key("the loggers failed to take the results: why", required=True)
    process: ProcessEntry = key(
        "pid, host, started: who runs it; flow_ahead: the flow was solved in a process of its own while "
        "Lightning was imported; workers, workers_why: how many series worker processes (run.workers) and why; "
        "flow_workers: the chunks of an ensemble's flow solved at once",
        required=True,
        record=ProcessEntry,
    )
    run_dir: str = key("the run directory", required=True)
    figures_error: str | None = key("drawing the figures failed: why (null: drawn, or log.figures=false)")
    killed: list[str] = key(
        "the series whose worker process ended before reporting (SIGKILL, out of memory): status error; "
        "resume runs them again"
    )

    @classmethod
    def read(cls, run_dir: str | Path, strict: bool = True) -> Summary:
        """A run directory's ``summary.json`` as typed records (``strict`` as :meth:`from_dict`); a
        directory without a usable one is an ArgumentError naming ``run_dir`` and why."""
        path = Path(run_dir) / "summary.json"
        if not path.exists():
            raise ArgumentError("run_dir", f"{run_dir} holds no summary.json (a run writes it as it starts)")
        data, why = read_summary_object(path)
        if data is None:
            raise ArgumentError("run_dir", f"{run_dir}: {why}")
        try:
            return cls.from_dict(data, strict)
        except (MissingKeys, UnknownKeys) as err:  # the file, not the dict, is what the caller gave
            what = err.message if isinstance(err, MissingKeys) else str(err)
            raise ArgumentError("run_dir", f"{path}: {what} (damaged, or another dlnlab's)") from None

    @classmethod
    def from_dict(cls, data: dict, strict: bool = True) -> Summary:
        """``strict=False``: an entry with a key its record lacks is read as an open SeriesEntry (nothing
        lost; the run's own summary, so that an unforeseen key never stops a run). A key missing
        anywhere, or a value that is not a dict where a record's dict belongs (``"flow": null``):
        :class:`MissingKeys`, naming where."""
        if not isinstance(data, dict):
            raise NotAnObject(cls.__name__, json_kind(data))
        series = data.get("series")
        if series is not None and not isinstance(series, dict):
            raise NotAnObject("the series' entries", json_kind(series), "series")
        rest = {k: v for k, v in data.items() if k != "series"}
        made = super().from_dict(rest if series is None else rest | {"series": {}})  # None: MissingKeys
        made.series = read_entries(series, strict)
        return made


def read_entries(series: dict, strict: bool = True) -> dict[str, Record]:
    """summary.json's ``series``, each entry read by its kind's record (``strict`` as
    :meth:`Summary.from_dict`)."""
    return {name: _entry(name, e, strict) for name, e in series.items()}


def _entry(name: str, data: dict, strict: bool) -> Record:
    try:
        try:
            return entry_record(name).from_dict(data)
        except UnknownKeys:
            if strict:
                raise
            return SeriesEntry.from_dict(data)
    except (UnknownKeys, MissingKeys) as err:
        raise err.inside(f"series.{name}") from None


RECORDS: tuple[type[Record], ...] = (
    Summary, RunSeeds, MemberSeeds, GridEntry, EstimatesEntry, FlowChoiceEntry, AnalysisEntry, EdgeWorkEntry,
    ErrorEntry, ProcessEntry, ResumeEntry, FlowEntry, ResumeCheck, SGDEntry, SMEEntry, SeriesEntry,
    MemberEntry, PlateauEntry, SaddleEvidence, PartialProductRanks, ClosestEvidence, NearestCriticalEntry,
    EscapeEntry, EscapeBranch, PlateauExitEntry, EnsembleSpread, Spread, ModeExitSpread, OrderFit, OrderPair,
    LimitReport, ErrorOrder, Stretch, Escapes, SMESpread, SpreadRatios, RatioSpread, ExitSpreadRow,
    CentralEntry, CentralFlowEntry, EdgeSeriesEntry, EdgeEntry, PredictionEntry,
)  # fmt: skip


def _type_name(tp: Any) -> str:
    return str(tp).replace("|", "\\|")


def render_tables(records: tuple[type[Record], ...] = RECORDS) -> str:
    """docs/results.md's key tables: one per record, its keys, types and meanings."""
    out = []
    for rec in records:
        out += [f"### `{rec.__name__}`", "", " ".join((rec.__doc__ or "").split()), ""]
        out += ["| key | type | meaning |", "|---|---|---|"]
        for f in dataclasses.fields(rec):
            if f.name == "extra":
                continue
            when = "" if f.default is dataclasses.MISSING else " (not always written)"
            out.append(f"| `{f.name}` | `{_type_name(f.type)}` | {f.metadata['doc']}{when} |")
        out.append("")
    return "\n".join(out)


BEGIN, END = "<!-- summary tables: begin -->", "<!-- summary tables: end -->"
AGGREGATE_BEGIN, AGGREGATE_END = "<!-- aggregate tables: begin -->", "<!-- aggregate tables: end -->"


def _with_section(page: str, begin: str, end: str, text: str) -> str:
    head, rest = page.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n\n{text}\n{end}{tail}"


def with_tables(page: str) -> str:
    """docs/results.md with its generated sections made from the records now: summary.json's keys
    (between BEGIN and END) and aggregate.json's (between AGGREGATE_BEGIN and AGGREGATE_END)."""
    page = _with_section(page, BEGIN, END, render_tables())
    return _with_section(page, AGGREGATE_BEGIN, AGGREGATE_END, render_tables(AGGREGATE_RECORDS))
