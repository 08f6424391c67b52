"""The orders in eta: one rule for GD's convergence order and SGD's strong and weak orders, and how the
console words an order its bootstrap leaves undetermined. Constructed series: C eta^p is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from dlnlab.lab.results._limit import BOOTSTRAP, _window_stats
from dlnlab.lab.results._summary import convergence_order

LRS = [0.04, 0.02, 0.01, 0.005]  # as a run lists them: largest first


def _errors(p: float, missing: set[float]) -> list[float | None]:
    return [None if lr in missing else 0.3 * lr**p for lr in LRS]


def _boot(values: list, rng) -> list:
    """R resampled values per rate: the value times a small noise (None where the value is None)."""
    return [None if v is None else v * np.exp(0.01 * rng.standard_normal(BOOTSTRAP)) for v in values]


@pytest.mark.parametrize("missing", [set(), {0.005}, {0.01}])
def test_gd_and_sgd_orders_take_the_same_rates(missing):
    """Three to fit, four rates: a rate without a value is replaced by the next larger one, in both."""
    errors = _errors(0.5, missing)
    gd = convergence_order(LRS, errors, 3)
    sgd = _window_stats(LRS, 3, errors, _boot(errors, np.random.default_rng(0)), 0.5)
    want = sorted(lr for lr in LRS if lr not in missing)[:3]
    for got in (gd, sgd):
        assert got["lrs_used"] == want and got["message"] == ""
        assert got["order"] == pytest.approx(0.5, rel=1e-9)
    lo, hi = sgd["ci90"]
    assert lo < 0.5 < hi and hi - lo < 0.1
    assert sgd["constant"] == pytest.approx(0.3, rel=1e-9)  # C = error / eta^p over the rates fitted


@pytest.mark.parametrize("missing", [{0.005, 0.01}, {0.04, 0.02, 0.01}])
def test_too_few_rates_with_a_value_give_no_order_in_either(missing):
    """Two of four rates without a value: three cannot be fitted; neither order is made of two rates."""
    errors = _errors(1.0, missing)
    gd = convergence_order(LRS, errors, 3)
    sgd = _window_stats(LRS, 3, errors, _boot(errors, np.random.default_rng(1)), 1.0)
    have = sorted(lr for lr in LRS if lr not in missing)
    for got, what in ((gd, "a distance"), (sgd, "an error")):
        assert got["order"] is None and got["lrs_used"] == have
        assert got["message"] == f"needs at least 3 learning rates with {what}, got {len(have)}"
    assert sgd["ci90"] is None


def test_a_resample_without_a_value_is_left_out_of_the_interval():
    """The estimate has its three rates; resamples that lose one of them (a NaN) do not fit over two."""
    errors = _errors(1.0, set())
    boot = _boot(errors, np.random.default_rng(2))
    boot[3][: BOOTSTRAP // 2] = np.nan  # half the resamples lack eta = 0.005
    boot[2][: BOOTSTRAP // 2] *= 100.0  # and are wild at 0.01: fitted over 0.01 and 0.02 they would be
    got = _window_stats(LRS, 3, errors, boot, 1.0)
    lo, hi = got["ci90"]
    assert lo < 1.0 < hi and hi - lo < 0.1
