"""The core as a notebook uses it: arguments of the wrong kind, shape or dtype are refused at the
boundary with one line naming the argument (an ArgumentError), or taken as documented; never a
traceback from deep inside torch, never a silently wrong result. Tiny nets: each test well under 1 s."""

from __future__ import annotations

import pytest
import torch

import dlnlab
from dlnlab.errors import ArgumentError

DIMS = [5, 4, 3]


@pytest.fixture(scope="module")
def problem():
    return dlnlab.RegressionProblem.teacher([2.0, 1.0], d_x=5, d_y=3, n_samples=20, seed=0)


@pytest.fixture(scope="module")
def theta0():
    return dlnlab.pack(dlnlab.gaussian(DIMS, 0.1, seed=1))


def test_an_argument_error_names_its_argument_in_its_one_line(problem, theta0):
    with pytest.raises(ArgumentError) as info:
        dlnlab.gd(problem, DIMS, theta0, lr=0.1, steps=10, momentum=1.0)
    assert str(info.value) == "momentum: must be in [0, 1), got 1.0"
    assert info.value.argument == "momentum" and info.value.message == "must be in [0, 1), got 1.0"
    with pytest.raises(ArgumentError, match=r"^rtol: must be finite and > 0, got -1$"):
        dlnlab.Solver(rtol=-1)
    # a message that starts with its argument's name is not given the name twice
    assert str(ArgumentError("theta0", "theta0 has shape (3,)")) == "theta0 has shape (3,)"
