"""A kind of series: the interface every series of a run implements, and what goes in and out of one.

A run is a set of series. Each kind of series is one :class:`SeriesKind` subclass in its own module,
listed once in :data:`dlnlab.lab.runner._registry.KINDS` (their order is the order they run in). The
driver (:func:`dlnlab.lab.runner._series.run_series`) does the rest the same way for every kind:

* it asks :meth:`SeriesKind.enabled` whether the run's config wants the kind;
* it makes one :class:`SeriesTask` per learning rate of ``sgd.lrs`` (``per_lr``; the flow: one task,
  ``lr`` None), stops between tasks when a signal came, and records each task's stage in summary.json;
* on a resume it applies the kind's :class:`Resume` policy (keep a finished series, or compute it
  again and check it, or run it again) and writes the resume record (``resumed[-1].series``);
* it stores what :meth:`SeriesKind.run` returns (:class:`SeriesDone`): the entry under
  ``summary.json``'s ``series.<name>``, the arrays (written to ``series/<name>.npz`` by the kind's
  recorder) at once or, through ``finish``, after the last series (the recorder's worker computes the
  metrics meanwhile), and ``states``, which later kinds at the same learning rate receive.

Writing a kind: subclass :class:`SeriesKind`, set the class attributes, write :meth:`~SeriesKind.run`
(record through :func:`dlnlab.lab.record.open_recorder` with ``ctx.logger(name)`` and
``ctx.tags(name, lr)`` so the series file, TensorBoard and the user's callbacks work as for the other
kinds), and add one line to the registry. A per-lr kind's entry has ``"lr": None`` and its learning
rate under its own key (``modified_lr``, ``sme_lr``), so that only the (S)GD series enter the
convergence order. For the run directory's readers (plots, aggregation) to parse its series names, its
prefix goes into :data:`dlnlab.rundir._names.PREFIXES`; for a typed entry (summary.json's records,
``dlnlab.lab.results._records``), its record class goes into ``ENTRY_RECORDS`` (else its entry is an
open ``SeriesEntry`` that keeps every key). docs/architecture.md has the kinds' table.

Independence (for running the per-lr tasks in worker processes): a task's inputs are explicit - the
run's context ``ctx`` (read only: the plan, the output directory, the metrics options, the loggers the
driver opened before the first series), the task itself (its name, learning rate, times, the flow's
entry, the states of the kinds it ``needs`` at the same learning rate, what a resume hands it) - and
its outputs are the returned :class:`SeriesDone`; a kind never reads or writes the run's state. Tasks
of different learning rates depend on nothing but the flow; at one learning rate a task depends on the
kinds named in its ``needs``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

import torch

from dlnlab.lab.runner._context import SeriesContext
from dlnlab.lab.runner._times import LrTimes
from dlnlab.rundir import FLOW, lr_series_name
from dlnlab.status import Status

if TYPE_CHECKING:
    from dlnlab.lab.config import Plan
    from dlnlab.lab.runner._resume import Continuation, Previous

__all__ = ["Resume", "LrTimes", "SeriesTask", "SeriesDone", "SeriesKind"]  # LrTimes: from _context


class Resume(Enum):
    """What a resumed run does with a series of this kind that the interrupted run had started."""

    KEEP = "keep"  # a finished series is read back, not run; an unfinished one may continue (continuation)
    RECOMPUTE = (
        "recompute"  # computed again (later kinds need its states); a finished one is checked, its file kept
    )
    RERUN = "rerun"  # run again from its start


@dataclass(frozen=True)
class SeriesTask:
    """One unit of work: a series of one kind (at one learning rate), with every input it takes."""

    kind: str  # the kind's key
    name: str  # the series' name: its file series/<name>.npz and its summary entry
    lr: float | None  # None for the flow
    grid: torch.Tensor  # the run's grid t_m = m dt
    solve_at: torch.Tensor  # every time the series must report (sorted): the grid and the exact times
    times: LrTimes | None = None  # the learning rate's exact times (None for the flow)
    flow: dict | None = None  # the flow's entry (read only), for a kind that compares with where the flow got
    given: Mapping[str, torch.Tensor] = field(default_factory=dict)  # {kind: states at this lr's grid points}
    recorded: tuple[dict, dict] | None = (
        None  # a resume, Resume.RECOMPUTE: the finished series' (entry, arrays)
    )
    continuation: Continuation | None = None  # a resume, Resume.KEEP: where an interrupted series continues


@dataclass
class SeriesDone:
    """What a task gives back."""

    entry: dict  # summary.json's series.<name> (``status`` a Status)
    arrays: dict | None = None  # the series file's arrays, when they are ready at the end of run()
    finish: Callable[[], dict] | None = (
        None  # else this waits for the recorder and returns them (called last)
    )
    states: torch.Tensor | None = None  # (len(states_at), ..., p): what the kinds that need this one receive
    states_at: torch.Tensor | None = None  # the times of states' rows


class SeriesKind(ABC):
    """A kind of series. The class attributes say what it is; :meth:`run` computes and records one."""

    key: ClassVar[str]  # the registry's name, and what other kinds list in ``needs``
    prefix: ClassVar[str]  # its series are named <prefix><repr(lr)> (the flow: "flow")
    per_lr: ClassVar[bool] = True  # one series per learning rate (False: one series, the flow)
    tensorboard_run: ClassVar[bool] = (
        False  # a TensorBoard run of its own (else shown in its (S)GD series' run)
    )
    needs: ClassVar[tuple[str, ...]] = ()  # kinds whose states at the same lr it takes (task.given), when run
    resume: ClassVar[Resume] = Resume.RERUN

    @abstractmethod
    def enabled(self, plan: Plan) -> bool:
        """Whether the run's config asks for this kind."""

    @abstractmethod
    def run(self, ctx: SeriesContext, task: SeriesTask) -> SeriesDone:
        """Compute and record the series. A failure of the series itself (a solver failure, an error, a
        signal) is recorded in the entry's status and message, never raised."""

    def series_name(self, lr: float | None) -> str:
        return FLOW if lr is None else lr_series_name(self.prefix, lr)

    def failed_entry(self, plan: Plan, lr: float | None, message: str) -> dict:
        """The entry of a series that never reported (its worker process was killed): status error, with
        the keys its kind's entry always has."""
        return {"lr": None, f"{self.key}_lr": lr, "status": Status.ERROR, "message": message}

    def continuation(self, previous: Previous, task: SeriesTask, plan: Plan) -> Continuation | None:
        """Resume.KEEP: where an unfinished series continues (None: from its start)."""
        return None
