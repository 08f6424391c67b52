"""Shared fixtures: the Figure-1 problem (docs/theory.md section 7) in float64, with one torch thread."""

import pytest
import torch

from dlnlab.lab.config import TrainConfig  # noqa: F401 - imports the schema, which registers itself with Hydra
from dlnlab.problem import RegressionProblem

torch.set_num_threads(1)

FIG1_DIMS = (11, 6, 6, 6, 6, 4)


@pytest.fixture(scope="session")
def fig1_problem() -> RegressionProblem:
    """Teacher s = (4, 3, 2, 1), exactly whitened inputs, N = 110, no noise."""
    return RegressionProblem.teacher([4.0, 3.0, 2.0, 1.0], d_x=11, d_y=4, n_samples=110, whiten=True, seed=0)
