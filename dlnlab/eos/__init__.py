"""Large learning rates: the edge of stability and the central flow (docs/eos.md, docs/theory.md 10-11).

Pure core (torch, numpy, scipy): the top Hessian eigenpairs at one point or along a path
(:func:`top_eigenpairs`, :class:`SpectrumTracker`, :func:`sharpness_along`), the third derivative in
closed form (:func:`curvature_gradient`, :func:`weighted_curvature_gradient`), the central flow
(:class:`CentralFlow`, :func:`integrate_central`), GD's edge-of-stability diagnostics, and all of
them for one learning rate from one call (:func:`edge_report`).
"""

from dlnlab.eos._central import (
    CENTRAL_SOLVER,
    CRITICAL_FRACTION,
    LOOKAHEAD,
    CentralFlow,
    CentralFlowResult,
    CentralPoint,
    describe_central,
    integrate_central,
)
from dlnlab.eos._curvature import curvature_gradient, pair_curvature_gradients, weighted_curvature_gradient
from dlnlab.eos._diagnostics import (
    HOVER_BAND,
    WINDOW,
    DistanceComparison,
    EdgeDiagnostics,
    GFSSharpness,
    Outcome,
    SharpnessComparison,
    distance_comparison,
    edge_diagnostics,
    gfs_sharpness,
    oscillation_amplitude,
    oscillation_variance,
    parting_time,
    sharpness_comparison,
    window_average,
)
from dlnlab.eos._report import EdgeReport, edge_report
from dlnlab.eos._sigma import SigmaMethod, SigmaSolution, solve_sigma
from dlnlab.eos._spectrum import (
    Eigenpairs,
    SpectrumMethod,
    SpectrumSeries,
    SpectrumTracker,
    sharpness_along,
    top_eigenpairs,
)

__all__ = [
    "CENTRAL_SOLVER", "CRITICAL_FRACTION", "LOOKAHEAD", "CentralFlow", "CentralFlowResult", "CentralPoint",
    "describe_central", "integrate_central", "curvature_gradient", "pair_curvature_gradients", "weighted_curvature_gradient",
    "HOVER_BAND", "WINDOW", "DistanceComparison", "EdgeDiagnostics", "GFSSharpness", "Outcome",
    "SharpnessComparison", "distance_comparison", "edge_diagnostics", "gfs_sharpness", "oscillation_amplitude",
    "oscillation_variance", "parting_time", "sharpness_comparison", "window_average", "SigmaMethod",
    "SigmaSolution", "solve_sigma", "Eigenpairs", "SpectrumMethod", "SpectrumSeries", "SpectrumTracker",
    "sharpness_along", "top_eigenpairs", "EdgeReport", "edge_report",
]  # fmt: skip
