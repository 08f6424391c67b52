"""dlnlab: training dynamics of deep linear networks as a graph (one block adjacency matrix A).

What a notebook needs, from the pure-torch core (no Lightning, no Hydra, no disk)::

    import dlnlab
    problem = dlnlab.RegressionProblem.teacher([4, 3, 2, 1], d_x=11, d_y=4, n_samples=110)
    theta0 = dlnlab.pack(dlnlab.gaussian([11, 6, 6, 6, 6, 4], scale=0.1, seed=1))
    flow = dlnlab.integrate(problem, [11, 6, 6, 6, 6, 4], theta0, dlnlab.time_grid(300.0, dt=0.1))
    run = dlnlab.gd(problem, [11, 6, 6, 6, 6, 4], theta0, lr=0.01, steps=30_000)

Names are imported on first use, so ``import dlnlab`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "dlnlab.network": ["DeepLinearNetwork", "Layout", "pack", "unpack", "product"],
    "dlnlab.problem": ["RegressionProblem"],
    "dlnlab.init": ["gaussian", "orthogonal", "balanced", "aligned", "initial_weights"],
    "dlnlab.trajectory": ["Trajectory", "SolveStats", "MemberStats", "Interrupted"],
    "dlnlab.flow": [
        "integrate",
        "Solver",
        "time_grid",
        "vector_field",
        "GradientFlow",
        "ModifiedFlow",
        "LossLevel",
        "Convergence",
        "FlowSolverError",
        "FlowInterrupted",
    ],
    "dlnlab.descent": ["gd", "GDStepper", "MinibatchSampler", "time_per_step"],
    "dlnlab.metrics": ["SeriesMetrics"],
    "dlnlab.sme": ["integrate_sme", "per_sample_gradients", "noise_factor"],
    "dlnlab.analysis": [
        "conservation_laws",
        "conservation_drift",
        "mode_time",
        "mode_half_time",
        "mode_solution",
        "gd_stability_threshold",
        "balanced_sharpness",
        "hessian_extremes",
    ],
    "dlnlab.saddles": [
        "detect_plateaus",
        "analyze_series",
        "analyze_trajectory",
        "Plateau",
        "critical_point",
        "classify_saddle",
        "escape_directions",
        "SaddleClassification",
        "EscapeDirections",
    ],
    "dlnlab.eos": [
        "top_eigenpairs",
        "SpectrumTracker",
        "sharpness_along",
        "curvature_gradient",
        "weighted_curvature_gradient",
        "CentralFlow",
        "integrate_central",
        "edge_diagnostics",
        "edge_report",
    ],
    "dlnlab.errors": [
        "ArgumentError",
        "DlnlabWarning",
        "ConfigWarning",
        "SeriesWarning",
        "AnalysisWarning",
        "FileWarning",
    ],
    "dlnlab.status": ["Status"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dlnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
