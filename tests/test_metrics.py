"""The per-point metrics of a series (dlnlab/metrics.py) against quantities computed independently of
the closed forms: the loss and its autograd gradient from the raw data X, Y and explicit products, the
whitened distance ||(P - Q) X||_F / sqrt(N) from the data, and the distance to the flow row by row.

Non-whitened data throughout, so that a whitening matrix left out (Sxx for Sxx^{1/2}) shows; added by
the mutation audit (docs/mutations.md): the gradient's norm without its square root, the distance to
the flow read one grid point off and product_distance with Sxx for Sxx^{1/2} passed every test before.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlnlab.init import gaussian
from dlnlab.metrics import SeriesMetrics
from dlnlab.network import pack
from dlnlab.problem import RegressionProblem

DIMS = (4, 3, 3, 2)


@pytest.fixture(scope="module")
def noisy():
    pr = RegressionProblem.teacher([2.0, 1.0], d_x=4, d_y=2, n_samples=20, whiten=False, noise=0.3, seed=3)
    assert not pr.whitened
    return pr


def _direct(pr: RegressionProblem, theta: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """(loss, ||grad L||, P) from X, Y and the explicit product, the gradient by autograd."""
    ws, start = [], 0
    for r, c in zip(DIMS[1:], DIMS[:-1]):
        ws.append(theta[start : start + r * c].reshape(r, c).clone().requires_grad_(True))
        start += r * c
    p = ws[2] @ ws[1] @ ws[0]
    loss = ((pr.Y - p @ pr.X) ** 2).sum() / (2 * pr.n_samples)
    grads = torch.autograd.grad(loss, ws)
    return float(loss.detach()), float(torch.sqrt(sum((g * g).sum() for g in grads))), p.detach()


def _data_distance(pr: RegressionProblem, p: torch.Tensor, q: torch.Tensor) -> float:
    """||(P - Q) Sxx^{1/2}||_F from its definition: sqrt(tr((P - Q) Sxx (P - Q)^T)) = ||(P - Q) X||_F / sqrt(N)."""
    return float(torch.linalg.matrix_norm((p - q) @ pr.X)) / pr.n_samples**0.5


def test_product_distance_is_the_whitened_distance_of_the_data(noisy):
    gen = torch.Generator().manual_seed(0)
    p, q = torch.randn(2, 2, 4, generator=gen, dtype=torch.float64)
    assert float(noisy.product_distance(p, q)) == pytest.approx(_data_distance(noisy, p, q), rel=1e-12)
    # the loss is L_min plus half the squared distance to the least-squares map
    loss = float(noisy.loss_of_product(p))
    assert loss == pytest.approx(noisy.L_min + 0.5 * _data_distance(noisy, p, noisy.P_ls) ** 2, rel=1e-12)


def test_series_metrics_are_the_directly_computed_quantities(noisy):
    theta0 = pack(gaussian(DIMS, 0.6, seed=1))
    thetas = torch.stack([theta0, pack(gaussian(DIMS, 0.8, seed=2)), pack(gaussian(DIMS, 1.1, seed=3))])
    flow = torch.stack([pack(gaussian(DIMS, 0.5, seed=10 + i)) for i in range(5)])  # five distinct grid rows
    ms = [3, 0, 4]  # the points' grid indices, out of order
    metrics = SeriesMetrics(noisy, DIMS, theta0, sgd=True, flow_theta=flow, save_theta=False)
    out = metrics.compute(ms, torch.tensor([0.3, 0.0, 0.4], dtype=torch.float64), thetas, [3, 0, 4])
    levels = noisy.plateau_levels(2)
    for i, theta in enumerate(thetas):
        loss, grad_norm, p = _direct(noisy, theta)
        assert out["loss"][i] == pytest.approx(loss, rel=1e-12)
        assert out["grad_norm"][i] == pytest.approx(grad_norm, rel=1e-10)
        np.testing.assert_allclose(out["sv"][i], torch.linalg.svdvals(p).numpy(), rtol=1e-12)
        r = int(out["level_index"][i])
        assert r == int(torch.argmin((levels - loss).abs()))
        assert out["level_gap"][i] == pytest.approx(loss - float(levels[r]), rel=1e-12, abs=1e-14)
        best = noisy.best_rank_product(r)
        assert out["dist_best_rank"][i] == pytest.approx(_data_distance(noisy, p, best), rel=1e-12)
        want = float(torch.linalg.vector_norm(theta - flow[ms[i]]))
        assert out["dist_to_flow"][i] == pytest.approx(want, rel=1e-12)
    assert out["dist_to_flow"][1] > 0  # a point at grid index 0 compared with the flow's row 0, not another
