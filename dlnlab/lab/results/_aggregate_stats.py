"""The statistics of a setting's samples (:class:`~dlnlab.lab.results._aggregate_collect.Setting`), as
typed records (:mod:`dlnlab.lab.results._aggregate_records`); computed in memory, nothing written.

* the curves across the samples against time: the mean, std and the 10/25/50/75/90% quantiles of the
  loss, the singular values of P, and the distances to the flow and to GD's modified flow, and ``n``
  the samples with a value at each point (a sample that stopped early counts until it stopped);
* the plateau exit times of each mode: each sample's first exit by that mode, with the samples that
  left no plateau by it counted apart;
* the convergence order of each sample (the slope of its largest distance to the flow against the
  learning rate, by the runs' own rule) with its spread across samples, and the same against the
  modified flows; the order of those samples' mean distance.

The spread of a quantity is its finite values' mean, std (ddof 1; of one sample unknown: None, NaN in
the curves, never 0), min, max and ``q5_q95``, the 5% and 95% quantiles of its samples (linear
interpolation between order statistics): where the middle 90% of the seeds and members fall, not a
confidence interval of the mean.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np

from dlnlab.lab.results._aggregate_collect import Setting
from dlnlab.lab.results._aggregate_records import (
    CURVES,
    QUANTILES,
    AggregateRow,
    CurveStats,
    ModeExits,
    Orders,
    SampleOrders,
    SampleSpread,
    SeriesCurves,
    SettingAggregate,
)
from dlnlab.lab.results._part_records import PlateauEntry
from dlnlab.lab.results._record_base import MissingKeys, UnknownKeys
from dlnlab.lab.results._summary import fit_order
from dlnlab.rundir import series_order_key

__all__ = ["aggregate_setting", "curve_stats", "sample_spread", "setting_orders", "mode_exits", "series_row"]

# a sample's arrays and its summary entry (a member's: the series' entry and its own)
Sample = tuple[dict, dict]


def curve_stats(curves: list[np.ndarray]) -> CurveStats:
    """Mean, std, quantiles and ``n`` (the samples with a value) across samples, point by point;
    a shorter sample (one that stopped early) is NaN past its end and counts where it has values, so
    the statistics past it are over fewer samples (``n`` says how many). Every curve has one shape
    per point (:func:`stackable` picks them)."""
    if len({np.shape(c)[1:] for c in curves}) > 1:  # (T, 1) would broadcast into (T, 3) unsaid
        raise ValueError(f"curves of different shapes per point: {sorted({np.shape(c)[1:] for c in curves})}")
    x = np.full((len(curves), max(len(c) for c in curves), *np.shape(curves[0])[1:]), np.nan)
    for i, c in enumerate(curves):
        x[i, : len(c)] = np.asarray(c, dtype=np.float64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (a series past its failure)
        return CurveStats(
            mean=np.nanmean(x, axis=0),
            std=np.nanstd(x, axis=0, ddof=1),  # NaN where one sample has a value: unknown, not 0
            n=(~np.isnan(x)).sum(axis=0),  # the samples each statistic is over
            **{f"q{int(q * 100)}": np.nanquantile(x, q, axis=0) for q in QUANTILES},
        )


def stackable(samples: list[Sample], curve: str, t_ref: np.ndarray) -> tuple[list[np.ndarray], str]:
    """The samples' ``curve`` arrays that can be compared point by point, and a note on the others ("" when
    none is left out): a sample on another time grid than ``t_ref`` (the longest sample's; a sample that
    stopped early is on its start), or whose values at a point have another shape than most samples'
    (the first sample's among equals), would put its values at the wrong times or not fit; within one
    setting that means runs of another code or config version. A researcher must see it, so it is said."""
    have = [(np.asarray(a["t"], dtype=np.float64), np.asarray(a[curve])) for a, _ in samples if curve in a]
    on_grid = [
        c for t, c in have if len(t) <= len(t_ref) and np.allclose(t, t_ref[: len(t)], rtol=1e-12, atol=0)
    ]
    if not have:
        return [], ""
    if not on_grid:
        return [], f"{curve}: all {len(have)} samples left out (none on the longest sample's time grid)"
    shape = Counter(c.shape[1:] for c in on_grid).most_common(1)[0][0]  # ties: the first seen
    kept = [c for c in on_grid if c.shape[1:] == shape]
    why = [f"{len(have) - len(on_grid)} on another time grid"] if len(on_grid) < len(have) else []
    if len(kept) < len(on_grid):
        others = sorted({str(c.shape[1:]) for c in on_grid if c.shape[1:] != shape})
        why.append(
            f"{len(on_grid) - len(kept)} with values of shape {', '.join(others)} per point, not {shape}"
        )
    note = (
        f"{curve}: {len(have) - len(kept)} of {len(have)} samples left out ({'; '.join(why)})" if why else ""
    )
    return kept, note


def _number(x) -> float | None:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else None


def sample_spread(values) -> SampleSpread | None:
    """The spread of the finite values (``q5_q95``: the samples' 5% and 95% quantiles, where they fall,
    not a confidence interval of the mean, so not called ``ci90`` as the bootstrap intervals of
    ``sgd_limit`` are); None without one."""
    v = np.asarray([x for x in map(_number, values) if x is not None], dtype=np.float64)
    if not len(v):
        return None
    lo, hi = (np.quantile(v, 0.05), np.quantile(v, 0.95)) if len(v) > 1 else (v[0], v[0])
    std = float(v.std(ddof=1)) if len(v) > 1 else None
    return SampleSpread(mean=float(v.mean()), std=std, min=float(v.min()), max=float(v.max()),
                        q5_q95=[float(lo), float(hi)], n=int(len(v)))  # fmt: skip


def setting_orders(st: Setting, key: str) -> SampleOrders:
    """Each sample's slope of log max distance (``key`` of its entry) against log lr, and the slope of the
    samples' mean distance, by the run's own rule (:func:`fit_order`: over the ``sgd.order_fit`` smallest
    learning rates, none with fewer), so that a run's order and its aggregate's agree (they did not: the
    aggregate fitted every rate, also two where the run said none). A sample is one run's member, paired
    across the rates by its run and member (not by its place in the list: a series that failed or
    diverged in one run would pair the runs after it with the wrong seeds); only the samples with a
    positive distance at every fitted rate enter, the per-sample slopes and the mean alike."""
    by_lr: dict[float, dict[tuple[str, int], float | None]] = {}
    for name, samples in st.samples.items():
        if name.startswith("sgd_lr_"):
            values = [_number(s[1].get(key)) for s in samples]
            by_lr[float(name[len("sgd_lr_") :])] = dict(zip(st.origins[name], values))
    lrs = sorted(by_lr)[: st.order_fit]
    if len(lrs) < st.order_fit:
        why = f"needs at least {st.order_fit} learning rates with a distance (sgd.order_fit), got {len(lrs)}"
        return SampleOrders(per_sample=None, of_the_mean=None, lrs=lrs, message=why)
    common = set.intersection(*(set(by_lr[lr]) for lr in lrs))
    complete = sorted(o for o in common if all((by_lr[lr][o] or 0.0) > 0 for lr in lrs))
    slopes = [fit_order(lrs, [by_lr[lr][o] for lr in lrs], st.order_fit)[0] for o in complete]
    means = [float(np.mean([by_lr[lr][o] for o in complete])) for lr in lrs] if complete else None
    of_mean = fit_order(lrs, means, st.order_fit)[0] if means else None
    return SampleOrders(per_sample=sample_spread(slopes), of_the_mean=of_mean, lrs=lrs, message="")


def _plateaus(entry: dict) -> list[PlateauEntry] | None:
    """A sample's plateaus (the summary's entry, or its member's) read through their record; None when
    they were not analysed. A plateau its record cannot read (a damaged file) is left out."""
    plateaus = entry.get("plateaus")
    if not isinstance(plateaus, list):
        return None
    out = []
    for p in plateaus:
        try:
            out.append(PlateauEntry.from_dict(p))
        except (UnknownKeys, MissingKeys):  # NotAnObject among them: not a dict
            continue
    return out


def _exit_times(entry: dict) -> dict[int, float] | None:
    """Each mode's first plateau exit time in one sample (mode -> t_exit); None when its plateaus were
    not analysed. SGD can leave a plateau by the same mode twice (it unlearnt the mode in between):
    the sample counts once, with its first exit, the one the flow's single exit compares to."""
    plateaus = _plateaus(entry)
    if plateaus is None:
        return None
    first: dict[int, float] = {}
    for p in plateaus:
        mode, t_exit = p.exit_mode, _number(p.t_exit)  # a damaged file's values: checked, as the JSON's
        if isinstance(mode, int) and not isinstance(mode, bool) and t_exit is not None:
            first[mode] = min(first.get(mode, math.inf), t_exit)
    return first


def _setting_exit_modes(st: Setting) -> set[int]:
    """The modes any sample of any series of the setting left a plateau by."""
    return {k for samples in st.samples.values() for _, e in samples for k in (_exit_times(e) or {})}


def mode_exits(samples: list[Sample], modes: set[int] = frozenset()) -> list[ModeExits]:
    """Per mode (those of ``modes``, the setting's, and those the samples left by): the spread of the
    samples' first exits by it (None without one), ``samples`` the samples whose plateaus were analysed
    and ``without_exit`` those of them that left no plateau by that mode (they ended on a plateau, or
    learnt the mode without one): the exit times are of the others only. A series none of whose samples
    left by a mode another series left by shows 0 of n, not nothing."""
    per_sample = [x for x in (_exit_times(e) for _, e in samples) if x is not None]
    if not per_sample:
        return []
    out = []
    for k in sorted(set(modes) | {k for x in per_sample for k in x}):
        times = [x[k] for x in per_sample if k in x]
        out.append(ModeExits(mode=k, t_exit=sample_spread(times), samples=len(per_sample),
                             without_exit=len(per_sample) - len(times)))  # fmt: skip
    return out


def series_row(
    st: Setting,
    name: str,
    samples: list[Sample],
    exit_modes: set[int] = frozenset(),
    orders: Orders | None = None,
) -> tuple[SeriesCurves, AggregateRow]:
    """The curves' statistics and the table row of one series (``orders``: the setting's, in an (S)GD
    series' row)."""
    longest = max((a for a, _ in samples), key=lambda a: len(a["t"]))
    curves = SeriesCurves(t=np.asarray(longest["t"], dtype=np.float64))
    left_out = []
    for c in CURVES:
        kept, note = stackable(samples, c, curves.t)
        left_out += [note] if note else []
        if kept:
            setattr(curves, c, curve_stats(kept))
    entries = [e for _, e in samples]
    sgd = name.startswith("sgd_lr_")
    spread_of = lambda key: sample_spread([e.get(key) for e in entries]) if sgd else None  # noqa: E731
    row = AggregateRow(
        setting=st.label, folder=st.folder, series=name, samples=len(samples),
        samples_left_out=st.members_left_out.get(name, 0), runs=len(st.runs),
        final_loss=sample_spread([e.get("final_loss") for e in entries]),
        max_dist_to_flow=spread_of("max_dist_to_flow"),
        max_dist_to_modified_flow=spread_of("max_dist_to_modified_flow"),
        plateau_exits=mode_exits(samples, exit_modes),
        curves_left_out=left_out, orders=orders if sgd else None,
    )  # fmt: skip
    return curves, row


def aggregate_setting(st: Setting) -> tuple[SettingAggregate, list[AggregateRow]]:
    """One setting with samples: its record (orders, curves) and its rows, the series in a run's order
    (the flow, then the learning rates from the largest down: :func:`series_order_key`)."""
    orders = Orders(
        to_flow=setting_orders(st, "max_dist_to_flow"),
        to_modified_flow=setting_orders(st, "max_dist_to_modified_flow"),
    )
    heavy_ball = any(e.get("momentum") for samples in st.samples.values() for _, e in samples)
    result = SettingAggregate(
        st.label, st.folder, st.label_parts, st.config, st.runs, st.skipped, orders, heavy_ball=heavy_ball
    )
    rows, exit_modes = [], _setting_exit_modes(st)
    for name in sorted(st.samples, key=series_order_key):
        samples = st.samples[name]
        result.curves[name], row = series_row(st, name, samples, exit_modes, orders)
        rows.append(row)
    return result, rows
