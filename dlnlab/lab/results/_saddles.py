"""The saddle analysis of a run, into its summary entries: every series' plateaus (classified), and the
(S)GD series' plateau exits against the flow's.

The core (:mod:`dlnlab.saddles`) returns typed plateaus and raises on a series it cannot analyse; here
such a series is recorded with no plateaus and a warning, and the run goes on.
"""

from __future__ import annotations

import warnings
from collections.abc import Container, Mapping

import numpy as np

from dlnlab._util import jsonable
from dlnlab.analysis import DENSE_HESSIAN_MAX
from dlnlab.errors import AnalysisWarning
from dlnlab.network import as_layout
from dlnlab.problem import RegressionProblem
from dlnlab.saddles import ClassifyTolerances, Plateau, analyze_series, exits_vs_reference

__all__ = ["analyze_run_saddles"]


def analyze_run_saddles(
    problem: RegressionProblem,
    dims,
    series_arrays: Mapping[str, Mapping[str, np.ndarray]],
    series: dict[str, dict],
    *,
    hessian_dense_max: int = DENSE_HESSIAN_MAX,
    classify: bool | Container[str] = True,
) -> dict[str, list[Plateau]]:
    """Plateaus and saddles of every series of a run; fills the summary entries, returns the plateaus.

    Sets ``series[name]["plateaus"]`` (the classified plateaus as JSON, :meth:`Plateau.to_dict`)
    and, for the other series, ``plateau_exits_vs_flow`` (:func:`~dlnlab.saddles.exits_vs_reference`).
    A series the core cannot analyse gets no plateaus and an :class:`~dlnlab.errors.AnalysisWarning`.
    ``hessian_dense_max`` (the run's ``log.hessian_dense_max``): dense Hessians up to this many
    weights in the classification, Hessian-vector products above. ``classify``: False for plateaus and
    exits only (no saddle classification), or the names of the series whose saddles are classified.
    """
    layout = as_layout(dims)
    tolerances = ClassifyTolerances(dense_max=hessian_dense_max)
    names = sorted(series_arrays, key=lambda n: (n != "flow", n))
    results: dict[str, list[Plateau]] = {}
    for name in names:
        arrays = series_arrays[name] or {}
        try:
            yes = classify if isinstance(classify, bool) else name in classify
            results[name] = analyze_series(problem, layout, arrays, tolerances=tolerances, classify=yes)
        except Exception as err:  # noqa: BLE001 - one series' analysis must not lose the others
            warnings.warn(
                f"{name}: saddle analysis failed: {type(err).__name__}: {err}", AnalysisWarning, stacklevel=2
            )
            results[name] = []
        entry = series.setdefault(name, {})
        entry["plateaus"] = [p.to_dict() for p in results[name]]
    flow_plats = results.get("flow")
    for name in names:
        if flow_plats is None or name == "flow":
            continue
        entry = series[name]
        try:
            exits = exits_vs_reference(
                flow_plats, results[name], problem, series_arrays[name], entry.get("lr")
            )
        except Exception as err:  # noqa: BLE001
            warnings.warn(
                f"{name}: plateau exits failed: {type(err).__name__}: {err}", AnalysisWarning, stacklevel=2
            )
            exits = []
        entry["plateau_exits_vs_flow"] = jsonable([e.to_dict() for e in exits])
    return results
