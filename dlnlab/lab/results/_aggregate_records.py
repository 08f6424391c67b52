"""The aggregate's results typed (:mod:`dlnlab.lab.results._aggregate`): a table row per setting and
series (:class:`AggregateRow`, ``aggregate.json``'s ``rows``), the spreads, exits and orders in it, and
a setting's curves' statistics (:class:`SeriesCurves`, the npz of each series) and its record
(:class:`SettingAggregate`, ``setting.json``).

The rows are :class:`~dlnlab.lab.results._record_base.Record`\\ s: ``to_dict()`` writes the JSON, keys in
field order, and ``from_dict`` reads it back (``aggregate.json`` read into the same records that wrote it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from dlnlab.lab.results._record_base import Record, key

__all__ = [
    "CURVES",
    "QUANTILES",
    "SampleSpread",
    "ModeExits",
    "SampleOrders",
    "Orders",
    "AggregateRow",
    "CurveStats",
    "SeriesCurves",
    "SettingAggregate",
    "AGGREGATE_RECORDS",
]

CURVES = ("loss", "sv", "dist_to_flow", "dist_to_modified")  # the series' arrays whose statistics are kept
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass
class SampleSpread(Record):
    """A quantity across a setting's samples (its seeds and ensemble members), of its finite values."""

    mean: float = key("mean", required=True)
    std: float | None = key("standard deviation (ddof 1; null for one value: unknown, not 0)", required=True)
    min: float = key("smallest", required=True)
    max: float = key("largest", required=True)
    q5_q95: list[float] = key(
        "the samples' 5% and 95% quantiles (linear interpolation): where the middle 90% fall, not a "
        "confidence interval of the mean; one value: itself twice",
        required=True,
    )
    n: int = key("how many values were finite", required=True)


@dataclass
class ModeExits(Record):
    """The samples' plateau exits by one mode: each sample's first exit by it."""

    mode: int = key(
        "the mode, from 0 (the summary's ``exit_mode``; the console numbers it from 1)", required=True
    )
    t_exit: SampleSpread | None = key(
        "the exit times of the samples that left a plateau by the mode (null: none did)",
        required=True,
        record=SampleSpread,
    )
    samples: int = key("the samples whose plateaus were analysed", required=True)
    without_exit: int = key(
        "of those, the samples that left no plateau by the mode (ended on a plateau, or learnt the mode "
        "without one)",
        required=True,
    )

    @property
    def exited(self) -> int:
        """The samples that left a plateau by the mode (``samples - without_exit``): the exit times' count."""
        return self.samples - self.without_exit


@dataclass
class SampleOrders(Record):
    """A setting's convergence orders to one reference (the flow or GD's modified flows), by each run's rule."""

    per_sample: SampleSpread | None = key(
        "the slopes of each sample's log max distance against log lr (a sample: one run's member, with a "
        "positive distance at every fitted rate); null without one",
        required=True,
        record=SampleSpread,
    )
    of_the_mean: float | None = key("the slope of those samples' mean distance", required=True)
    lrs: list[float] = key(
        "the learning rates fitted: the ``sgd.order_fit`` smallest of the setting's (S)GD series (all of "
        "them when fewer)",
        required=True,
    )
    message: str = key(
        'why there is no order: too few learning rates ("" otherwise; then ``per_sample`` is null only '
        "when no sample has a distance at every rate, as without ``flow.modified``)",
        required=True,
    )


@dataclass
class Orders(Record):
    """A setting's convergence orders (the same in each of its (S)GD series' rows)."""

    to_flow: SampleOrders = key("to the gradient flow", required=True, record=SampleOrders)
    to_modified_flow: SampleOrders = key(
        "to GD's modified flows (``flow.modified``; no order without them)",
        required=True,
        record=SampleOrders,
    )


@dataclass
class AggregateRow(Record):
    """``aggregate.json``'s ``rows``: one per setting and series, over the setting's samples."""

    setting: str = key(
        "the setting's name: its runs' overrides without the seeds where they share them, else the keys "
        "where its config differs from the defaults; ``(defaults)``: the defaults' config",
        required=True,
    )
    folder: str = key("the setting's folder in the output directory", required=True)
    series: str = key("the series' name (``flow``, ``sgd_lr_<lr>``, ...)", required=True)
    samples: int = key(
        "the samples of the series (every seed and ensemble member) that the numbers are over: each "
        "number's own ``n`` counts those of them with a finite value",
        required=True,
    )
    samples_left_out: int = key(
        "the series' members left out of every number and curve (diverged or failed in a series that "
        "did not: its ok and unstable members are the samples); the console's ``n`` is both together",
        required=True,
    )
    runs: int = key("the setting's runs", required=True)
    final_loss: SampleSpread | None = key("the samples' final losses", required=True, record=SampleSpread)
    max_dist_to_flow: SampleSpread | None = key(
        "the samples' largest distances to the flow (null but for (S)GD series)",
        required=True,
        record=SampleSpread,
    )
    max_dist_to_modified_flow: SampleSpread | None = key(
        "the samples' largest distances to GD's modified flow (null but for (S)GD series)",
        required=True,
        record=SampleSpread,
    )
    plateau_exits: list[ModeExits] = key(
        "per mode any sample of the setting left a plateau by, the samples' first exits by it",
        required=True,
        record=ModeExits,
        container="list",
    )
    curves_left_out: list[str] = key(
        "samples in the numbers above but not in the curves' npz (another time grid, another shape)",
        required=True,
    )
    orders: Orders | None = key(
        "the setting's orders ((S)GD series; null for the others)", required=True, record=Orders
    )

    @property
    def all_samples(self) -> int:
        """Every member of the series in the setting's runs: the samples and those left out."""
        return self.samples + self.samples_left_out

    @property
    def is_sgd(self) -> bool:
        return self.series.startswith("sgd_lr_")


AGGREGATE_RECORDS: tuple[type[Record], ...] = (AggregateRow, SampleSpread, ModeExits, Orders, SampleOrders)


@dataclass
class CurveStats:
    """One curve (the loss, the singular values, ...) across the samples, point by point: each array has
    the curve's shape per point; a sample that stopped early counts until it stopped."""

    mean: np.ndarray
    std: np.ndarray  # ddof 1; NaN where one sample has a value: unknown, not 0
    n: np.ndarray  # the samples with a value at each point: what the others are over
    q10: np.ndarray
    q25: np.ndarray
    q50: np.ndarray
    q75: np.ndarray
    q90: np.ndarray


_STATS = tuple(f.name for f in fields(CurveStats))  # the order of the npz's arrays


@dataclass
class SeriesCurves:
    """The curves' statistics of one series of a setting (``<folder>/<series>.npz``); a curve no sample
    holds (the distances of the flow) is None."""

    t: np.ndarray  # the longest sample's times
    loss: CurveStats | None = None
    sv: CurveStats | None = None
    dist_to_flow: CurveStats | None = None
    dist_to_modified: CurveStats | None = None

    def to_npz(self) -> dict[str, np.ndarray]:
        """The npz's arrays, in the file's order: ``t``, then ``<curve>_<stat>`` of each curve held."""
        out = {"t": self.t}
        for curve in CURVES:
            stats = getattr(self, curve)
            if stats is not None:
                out.update({f"{curve}_{s}": getattr(stats, s) for s in _STATS})
        return out

    @classmethod
    def from_npz(cls, arrays) -> SeriesCurves:
        """From the arrays of a series' npz (``numpy.load``'s file or a dict)."""
        have = lambda curve: f"{curve}_mean" in arrays  # noqa: E731
        stats = {c: CurveStats(*(np.asarray(arrays[f"{c}_{s}"]) for s in _STATS)) for c in CURVES if have(c)}
        return cls(np.asarray(arrays["t"]), **stats)


@dataclass
class SettingAggregate:
    """One setting: its name, config and runs, its orders and its series' curves (``setting.json`` and the npz)."""

    label: str  # its name: its runs' overrides without the seeds, or its config's keys; "(defaults)"
    folder: str  # its folder in the output directory (setting_folder of its name and config)
    label_parts: list[str]  # the name's words (key=value): the console's legend says the shared ones once
    config: dict | None  # what its runs ran (flat, without the seeds and what changes no number)
    runs: list[str]  # its run directories
    skipped: list[str]  # its series left out (failed, interrupted, no arrays)
    orders: Orders
    curves: dict[str, SeriesCurves] = field(default_factory=dict)  # series name -> its curves
    heavy_ball: bool = False  # a series with momentum: the figure's time axis is t = k eta / (1 - beta)

    def to_dict(self) -> dict:
        """``setting.json``."""
        return {"setting": self.label, "folder": self.folder, "config": self.config, "runs": self.runs,
                "skipped": self.skipped, "orders": self.orders.to_dict()}  # fmt: skip

    def listing(self) -> dict:
        """Its entry in ``aggregate.json``'s ``settings``."""
        return {"setting": self.label, "folder": self.folder, "runs": self.runs}
