"""Saddles: the loss staircase, the saddles a trajectory visits, and whether each is strict or non-strict.

From near the origin a deep linear network learns the data's modes one at a time, largest first
(docs/theory.md sections 4, 5, 7). Each plateau of the loss is the trajectory passing close to a saddle: a
critical point whose product is P_S = Pi_S Syx Sxx^+ for the set S of modes learnt so far, at the
critical value L(P_S) = L_min + 1/2 sum_{k not in S} m_k^2.

* ``plateaus``: :func:`detect_plateaus` finds the plateaus (:class:`Plateau`, ``to_dict`` for
  summary.json) from the recorded series alone (mode strengths, loss, ||grad L||), with thresholds
  that scale with the problem;
* ``critical``: :func:`critical_point` constructs a critical point for any S (balanced or not, with
  chosen layer ranks), and the snap moves a trajectory's closest point onto the nearby one;
* ``classify``: :func:`classify_saddle` labels the saddle strict, non-strict or inconclusive from ranks,
  theory and the Hessian (``snap``: the snap to the nearby critical point and the Hessian there;
  ``ranks``: the numerical ranks of the layers and their partial products; ``nearest``: the nearest
  critical point found from the trajectory, and when its negative curvature decides);
* ``escape``: :func:`escape_directions` gives the next mode, the unstable direction and the stable /
  unstable branches of every unlearnt mode;
* ``analyze``: :func:`analyze_series` applies all of it to one recorded series (and
  :func:`analyze_trajectory` to a core trajectory), :func:`exits_vs_reference` compares a series'
  exits with the flow's (:class:`PlateauExit`). Bad input raises :class:`~dlnlab.errors.ArgumentError`;
  what a run records of it is the lab's (``dlnlab.lab``).

Pure torch / numpy / scipy, float64.
"""

from dlnlab.saddles.analyze import PlateauExit, analyze_series, analyze_trajectory, exits_vs_reference
from dlnlab.saddles.classify import LABELS, ClassifyTolerances, SaddleClassification, classify_saddle
from dlnlab.saddles.critical import critical_point
from dlnlab.saddles.escape import EscapeDirections, escape_directions
from dlnlab.saddles.plateaus import Plateau, PlateauThresholds, detect_plateaus, modes_learnt

__all__ = [
    "LABELS",
    "Plateau",
    "PlateauThresholds",
    "ClassifyTolerances",
    "SaddleClassification",
    "EscapeDirections",
    "modes_learnt",
    "detect_plateaus",
    "critical_point",
    "classify_saddle",
    "escape_directions",
    "analyze_series",
    "exits_vs_reference",
    "PlateauExit",
    "analyze_trajectory",
]
