"""The weak errors of an ensemble (dlnlab.ensemble_errors): debiased by the Monte Carlo error of the
members' mean, for the mean and for every bootstrap resample alike, against synthetic members around a
known mean (the true weak error is then known exactly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlnlab.ensemble_errors import error_curves, members_kept

E, P, T, SIGMA = 256, 50, 40, 0.1  # the Monte Carlo floor sqrt(tr Cov / E) = sqrt(P / E) SIGMA = 0.044
# (T independent time points: the tests compare averages over them, each point being noisy)


def _members(offset: float, seed: int = 0):
    """Members theta_e(t) = mu + noise (mu = offset along the first axis), the reference 0; the losses
    alike: L_e = 1 + offset + noise, the reference's 1."""
    rng = np.random.default_rng(seed)
    theta = SIGMA * rng.standard_normal((E, T, P))
    theta[..., 0] += offset
    loss = 1.0 + offset + SIGMA * rng.standard_normal((E, T))
    t = np.arange(T, dtype=np.float64)
    arrays = {"t": t, "grid_index": np.arange(T), "theta": theta, "loss": loss,
              "dist_to_flow": np.linalg.norm(theta, axis=-1)}  # fmt: skip
    flow = {"t": t, "grid_index": np.arange(T), "theta": np.zeros((T, P)), "loss": np.ones(T)}
    return arrays, flow


def _weights(resamples: int, seed: int = 1) -> np.ndarray:
    counts = np.random.default_rng(seed).multinomial(E, np.full(E, 1 / E), size=resamples) / E
    return np.vstack([np.full(E, 1 / E), counts])


@pytest.mark.parametrize("kind", ["weak_theta", "weak_loss"])
def test_a_weak_error_of_zero_is_not_reported_as_the_monte_carlo_floor(kind):
    arrays, flow = _members(0.0)
    _, curves = error_curves(arrays, flow, _weights(0))[kind]
    floor = np.sqrt(P / E) * SIGMA if kind == "weak_theta" else SIGMA / np.sqrt(E)
    naive = (np.linalg.norm(arrays["theta"].mean(0), axis=-1) if kind == "weak_theta"
             else np.abs(arrays["loss"].mean(0) - 1))  # fmt: skip
    # the plain norm of the mean is the floor (0.8 of it for one dimension); debiased, far less
    assert naive.mean() > 0.6 * floor and curves[0].mean() < 0.45 * floor, (
        naive.mean(),
        curves[0].mean(),
        floor,
    )


def test_the_estimate_and_its_bootstrap_interval_agree_where_the_weak_error_is_near_the_floor():
    """A true weak error of 0.05 (about the floor): the estimate 0.05 on average (the plain norm of the
    mean is sqrt(0.05^2 + 0.044^2) = 0.067) and inside its own 90 % bootstrap interval at most points
    (undebiased, the interval lay above the estimate: the resample means carry the Monte Carlo error twice)."""
    arrays, flow = _members(0.05)
    _, curves = error_curves(arrays, flow, _weights(200), resamples_from=1)["weak_theta"]
    est, boot = curves[0], curves[1:]
    assert abs(est.mean() - 0.05) < 0.005, est.mean()
    lo, hi = np.quantile(boot, 0.05, axis=0), np.quantile(boot, 0.95, axis=0)
    assert np.mean((lo <= est) & (est <= hi)) >= 0.8, (lo, est, hi)


def test_a_diverged_member_is_left_out_of_the_means_not_made_their_blow_up():
    """An ok series whose member 3 diverged at t = 20 (inf, then NaN): every mean over the members was
    inf or NaN from there (the horizon's strong error inf, so sgd_limit dropped that learning rate from
    the fit; the weak errors' maxima over the time before it only). The members that did not diverge,
    the same resamples renormalised over them; reference: numpy over those members alone."""
    arrays, flow = _members(0.05)
    for key in ("theta", "loss"):
        arrays[key][3, 20:] = np.inf
        arrays[key][3, 30:] = np.nan
    arrays["dist_to_flow"] = np.linalg.norm(arrays["theta"], axis=-1)
    entry = {"status": "ok", "members": [{"status": "diverged" if e == 3 else "ok"} for e in range(E)]}
    keep = members_kept(entry, E)
    assert keep.sum() == E - 1 and not keep[3]
    got = error_curves(arrays, flow, _weights(20), resamples_from=1, keep=keep)
    theta, loss, n = arrays["theta"][keep], arrays["loss"][keep], E - 1
    np.testing.assert_allclose(got["strong"][1][0], arrays["dist_to_flow"][keep].mean(axis=0), rtol=1e-12)
    gap2 = (theta.mean(axis=0) ** 2).sum(axis=-1)
    want = np.sqrt(np.maximum(gap2 - theta.var(axis=0, ddof=1).sum(axis=-1) / n, 0))
    np.testing.assert_allclose(got["weak_theta"][1][0], want, rtol=1e-9, atol=1e-15)
    want = np.sqrt(np.maximum((loss.mean(axis=0) - 1) ** 2 - loss.var(axis=0, ddof=1) / n, 0))
    np.testing.assert_allclose(got["weak_loss"][1][0], want, rtol=1e-9, atol=1e-15)
    assert all(np.isfinite(curves).all() for _, curves in got.values())  # the resamples too


def test_members_at_the_reference_have_a_weak_error_of_exactly_zero():
    """At t = 0 an ensemble.vary=sgd run's members and its flow are one init: the weak errors are 0. The
    mean of E equal values was not always that value in floating point, so they were 1e-16, the largest
    over a horizon where the weak error is below resolution (debiased to 0), and an order was fitted to
    that rounding (-21.7 on 16 members of the tiny net). Reference: exactly 0."""
    arrays, flow = _members(0.05)
    rng = np.random.default_rng(5)
    theta0, loss0 = rng.standard_normal(P) / 3, 1.0 / 3
    arrays["theta"][:, 0], arrays["loss"][:, 0] = theta0, loss0
    flow["theta"][0], flow["loss"][0] = theta0, loss0
    got = error_curves(arrays, flow, _weights(20), resamples_from=1)
    for kind in ("weak_theta", "weak_loss"):
        assert (got[kind][1][:, 0] == 0.0).all(), (kind, got[kind][1][:, 0])
    assert abs(got["weak_theta"][1][0, 1:].mean() - 0.05) < 0.01  # the rest as before: 0.05 on average


def test_the_sgd_limit_figure_draws_the_constants_the_summary_fitted():
    """The sgd_limit figure's error constants e(t) / eta^p: as the summary's ``sgd_limit``, over the
    members that did not diverge and of its learning rates only. They averaged every member (a diverged
    member's inf made the curve end at its divergence, with numpy's overflow warnings) and drew the
    series sgd_limit left out (diverged: no member ok). Reference: numpy over the kept members."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlnlab.plots.ensemble import draw_error_constants
    from dlnlab.rundir import RunData, Series

    arrays, flow = _members(0.05)
    arrays["t"] = flow["t"] = np.arange(T) + 1.0  # the constants are drawn after t = 0
    arrays["theta"][3, 20:] = np.inf
    arrays["dist_to_flow"] = np.linalg.norm(arrays["theta"], axis=-1)
    members = [{"status": "diverged" if e == 3 else "ok"} for e in range(E)]
    ok = Series("sgd_lr_0.01", 0.01, {}, {"status": "ok", "members": members}, arrays)
    gone = Series("sgd_lr_0.02", 0.02, {}, {"status": "diverged", "members": members}, arrays)
    run = RunData(Path("."), {}, {}, {"flow": Series("flow", None, flow), gone.name: gone, ok.name: ok})
    fig, ax = plt.subplots()
    draw_error_constants(ax, run, {"expected_order": {"strong": 0.5}}, lrs=[0.01])
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    plt.close(fig)
    assert sorted(lines) == [
        "strong / $\\eta^{0.5}$, $\\eta$ = 0.01",
        "weak ($\\theta$) / $\\eta^{1}$, $\\eta$ = 0.01",
    ]
    want = np.delete(arrays["dist_to_flow"], 3, axis=0).mean(axis=0) / 0.01**0.5
    np.testing.assert_allclose(lines["strong / $\\eta^{0.5}$, $\\eta$ = 0.01"], want, rtol=1e-12)
