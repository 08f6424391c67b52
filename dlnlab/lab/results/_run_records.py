"""summary.json's parts that describe the run itself, typed: its seeds (and each ensemble member's), its
grid, the preflight's estimates, the choices made from the net's size (``flow_choice``, ``analysis``:
the reading side of ``dlnlab.lab.config._choose``'s FlowChoice and AnalysisChoice ``to_dict``), a crash's
``error`` and the ``process`` that runs it. The records that hold them: ``_summary_record`` (the run's)
and ``_records`` (a member's seeds); the machinery: ``_record_base``.

A key that summaries written before it existed lack is not required (it reads as ABSENT); the fields
are in the order the run writes the keys, so that ``to_dict`` writes the dicts it read back byte for
byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlnlab.lab.results._record_base import Record, key

__all__ = [
    "MemberSeeds",
    "RunSeeds",
    "GridEntry",
    "EstimatesEntry",
    "FlowChoiceEntry",
    "EdgeWorkEntry",
    "AnalysisEntry",
    "ErrorEntry",
    "ProcessEntry",
]


@dataclass
class MemberSeeds(Record):
    """``series.<name>.members[i].seeds`` and ``seeds.members[i]``: an ensemble member's seeds (member 0's
    are the run's; ``init.seed=<init> sgd.seed=<sgd>`` reruns a member alone)."""

    data: int | None = key("the data's (null: data from a file)", required=True)
    init: int | None = key("the initial weights' (null: weights from a file)", required=True)
    sgd: int = key("the minibatches'", required=True)


@dataclass
class RunSeeds(Record):
    """``seeds``: every seed the run used, derived from ``seed`` where the config leaves them null."""

    seed: int = key("the config's seed, the others' root", required=True)
    data: int | None = key("the data's (null: data from a file)", required=True)
    init: int | None = key("the initial weights' (null: weights from a file)", required=True)
    sgd: int = key("the minibatches'", required=True)
    members: list[MemberSeeds] = key(
        "an ensemble: each member's ([]: no ensemble)", record=MemberSeeds, container="list"
    )


@dataclass
class GridEntry(Record):
    """``grid``: the grid t_m = m dt the series are recorded on."""

    dt: float = key("log.dt", required=True)
    n_grid: int = key("its points, t = 0 included", required=True)
    t_max: float = key("flow.t_max, its last time", required=True)


@dataclass
class EstimatesEntry(Record):
    """``estimates``: the preflight's estimates (docs/cli.md's memory and disk checks)."""

    peak_memory_bytes: float = key("the run's peak memory", required=True)
    series_file_bytes: float = key("one series' npz file", required=True)


@dataclass
class FlowChoiceEntry(Record):
    """``flow_choice`` (``dlnlab.lab.config._choose``'s FlowChoice): the flow's method and its chunks."""

    asked: str = key("flow.method as configured (auto: chosen by the cost model)", required=True)
    method: str = key("the method the flow ran with", required=True)
    why: str = key("why that method", required=True)
    estimates_s: dict[str, float] = key(
        "flow.method=auto: each candidate's nominal seconds ({}: chosen in the config)", required=True
    )
    chunk_members: int = key("members per chunk of an ensemble's flow (flow.chunk_members, or by method)")
    chunks: int = key("the flow's chunks: ceil(members / chunk_members)")


@dataclass
class EdgeWorkEntry(Record):
    """``analysis.edge`` (``dlnlab.lab.config._choose``'s EdgeWork): the nominal work of sgd.edge and
    flow.central, all learning rates."""

    spectra: int = key("top-k spectra at GD's steps", required=True)
    gd_steps: float = key("GD's steps, recomputed by the edge series", required=True)
    central_evals: float = key("the central flow's evaluations", required=True)
    seconds: float = key("their nominal seconds", required=True)


@dataclass
class AnalysisEntry(Record):
    """``analysis`` (``dlnlab.lab.config._choose``'s AnalysisChoice): the curvature analysis' budget."""

    asked: int = key("log.analysis_points", required=True)
    points: int = key("the points analysed per series", required=True)
    kind: str = key("dense (eigvalsh) or lanczos (warm-started, Hessian-vector products)", required=True)
    seconds_per_point: float = key("nominal seconds per point", required=True)
    why: str = key("why that many points", required=True)
    saddles: str = key("whose plateaus are classified: all, flow (the flow's only) or none", required=True)
    saddles_why: str = key("why", required=True)
    edge: EdgeWorkEntry | None = key(
        "sgd.edge / flow.central: their nominal work (null: neither)", record=EdgeWorkEntry
    )


@dataclass
class ErrorEntry(Record):
    """``error``: the unexpected error outside any series that crashed the run."""

    type: str = key("the exception's class", required=True)
    message: str = key("its message", required=True)
    stage: str = key("the stage the run was in", required=True)
    traceback: str = key("where it was raised", required=True)


@dataclass
class ProcessEntry(Record):
    """``process``: who runs the run (a reader that finds status running while no such process lives on
    that host knows it was killed) and how it spread its work."""

    pid: int = key("the run's process id", required=True)
    host: str = key("its host", required=True)
    started: str = key("when it started (UTC, ISO 8601)", required=True)
    flow_ahead: bool = key("the flow was solved in a process of its own while Lightning was imported")
    workers: int = key("the series' worker processes (run.workers)")
    workers_why: str = key("why that many")
    flow_workers: int = key("the chunks of an ensemble's flow solved at once")
