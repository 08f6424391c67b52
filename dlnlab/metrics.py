"""The per-point quantities of a series, computed in vectorised blocks: one component for every series.

The flow and every (S)GD series go through :class:`SeriesMetrics`: loss, singular values of P and of
A, mode strengths, the gradient norm, the nearest plateau level and the distance to its best rank-r
map, the conservation-law drift, the Hessian's extremes (curvature) on a sub-grid, theta itself,
and for SGD the distance to the flow at the same exact time. Pure torch; nothing is written.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from dlnlab._members import MEMBERLESS_KEYS, member_arrays, members_of
from dlnlab.analysis import (
    DENSE_HESSIAN_MAX,
    conservation_drift,
    hessian_extremes,
    layer_singular_values,
    nearest_level,
)
from dlnlab.descent import GDStepper
from dlnlab.eos import top_eigenpairs
from dlnlab.network import Layout, as_layout, product, unpack
from dlnlab.problem import RegressionProblem

__all__ = ["SeriesMetrics", "METRIC_KEYS", "MEMBERLESS_KEYS", "theta_rows", "member_arrays", "members_of"]

METRIC_KEYS = (
    "grid_index", "t", "loss", "sv", "sv_A", "mode_strength", "grad_norm", "level_index", "level_gap",
    "dist_best_rank", "cons_drift", "lambda_min", "sharpness", "top_eigs",
)  # fmt: skip


class SeriesMetrics:
    """Metrics of one series at blocks of its grid points (one net, or an ensemble: every array then has
    a member axis after the grid axis).

    problem, dims: the task and the widths. theta0 (p,) or (E, p): the start (the reference of the drift).
    sgd: the series has steps (SGD adds ``step`` and ``dist_to_flow``). flow_theta (n_grid, p): the
    flow at this series' exact times (NaN rows where unavailable), for ``dist_to_flow``; modified_theta
    likewise GD's modified flow at the series' step, for ``dist_to_modified``.
    analysis_every: the Hessian's lambda_min, sharpness and top ``top_eigs`` eigenvalues (``top_eigs``
    (K, k), descending) every this many grid points and at ``last_m`` (0: never), dense up to ``hessian_dense_max``
    weights (one eigvalsh gives all of them); above, warm-started Lanczos for the extremes and, for
    k > 1, LOBPCG warm-started from the previous point's block (``dlnlab.eos.top_eigenpairs``). save_theta: keep theta;
    theta_every > 1 keeps it only every that many grid points and at ``last_m`` (as ``theta_sub`` with
    its ``theta_grid_index``, so that ``theta`` is always row for row with ``t``).
    next_step: plain full-batch GD's learning rate (no momentum, no minibatch): at ``last_m`` also the
    sharpness of GD's next iterate (``sharpness_next``, NaN at the other points), one step of the
    series' own stepper: on a period-2 zigzag the phase that the last point is not in, which a series
    recorded an even number of steps apart never shows (the summary's ``unstable`` reads both phases).
    """

    def __init__(
        self,
        problem: RegressionProblem,
        dims: Layout | Sequence[int],
        theta0: Tensor,
        *,
        sgd: bool = False,
        flow_theta: Tensor | None = None,
        modified_theta: Tensor | None = None,
        analysis_every: int = 0,
        sv_A_top: int = 32,
        hessian_dense_max: int = DENSE_HESSIAN_MAX,
        top_eigs: int = 1,
        save_theta: bool = True,
        theta_every: int = 1,
        last_m: int | None = None,
        next_step: float | None = None,
    ) -> None:
        self.problem, self.layout = problem, as_layout(dims)
        self.theta0 = theta0.detach().clone()
        self.members = theta0.shape[0] if theta0.ndim == 2 else None  # an ensemble's size
        self.weights0 = unpack(self.theta0, self.layout)
        self.sgd, self.flow_theta, self.modified_theta = sgd, flow_theta, modified_theta
        self.analysis_every, self.sv_A_top, self.hessian_dense_max = (
            analysis_every,
            sv_A_top,
            hessian_dense_max,
        )
        self.save_theta, self.theta_every, self.last_m = save_theta, max(1, int(theta_every)), last_m
        self.next_step = next_step
        self.levels = problem.plateau_levels(self.layout.r_max)
        self.best_products = torch.stack([problem.best_rank_product(r) for r in range(len(self.levels))])
        self.top_eigs = max(1, min(int(top_eigs), self.layout.n_weights))
        self._warm: dict[tuple, Tensor | None] = {}  # the Lanczos warm start of each member
        self._warm_block: dict[tuple, Tensor | None] = {}  # the LOBPCG block of each member (top_eigs > 1)

    @torch.no_grad()
    def compute(self, ms: list[int], ts: Tensor, thetas: Tensor, steps: list) -> dict[str, np.ndarray]:
        """The metrics of K points: ms (K,) grid indices, ts (K,) times, thetas (K, p) or (K, E, p),
        steps (K,). Arrays are (K, ...) or (K, E, ...) (``t``, ``grid_index``, ``step``: (K,))."""
        return self._metrics(ms, ts, thetas, steps)

    def _metrics(self, ms: list[int], ts: Tensor, thetas: Tensor, steps: list) -> dict[str, np.ndarray]:  # noqa: C901
        prob, lay = self.problem, self.layout
        ws = unpack(thetas, lay)
        p = product(ws)
        loss, grads = prob.loss_and_gradient(ws)
        grad_norm = torch.sqrt(sum((g * g).sum(dim=(-2, -1)) for g in grads))
        # a point counts where theta and P are finite: a finite theta's product can overflow (a diverged
        # member of an ensemble keeps stepping), and svdvals refuses an inf where the masks ask for NaN
        finite = torch.isfinite(thetas).all(dim=-1) & torch.isfinite(p).all(dim=(-2, -1))
        safe_p = torch.where(finite[..., None, None], p, torch.zeros_like(p))
        level_idx, level_gap = nearest_level(loss, self.levels)
        dist_best = prob.product_distance(safe_p, self.best_products[level_idx])
        safe_ws = [torch.where(finite[..., None, None], w, torch.zeros_like(w)) for w in ws]
        nan = float("nan")
        out = {
            "grid_index": np.asarray(ms, dtype=np.int64),
            "t": ts.numpy(),
            "loss": loss.numpy(),
            "sv": _masked(torch.linalg.svdvals(safe_p), finite),
            "sv_A": _masked(layer_singular_values(safe_ws, top=self.sv_A_top), finite),
            "mode_strength": _masked(prob.mode_strength(p), finite),
            "grad_norm": grad_norm.numpy(),
            "level_index": level_idx.numpy(),
            "level_gap": level_gap.numpy(),
            "dist_best_rank": _masked(dist_best, finite),
            "cons_drift": _masked(conservation_drift(safe_ws, self.weights0), finite)
            if lay.depth > 1
            else np.zeros((*finite.shape, 0)),
        }
        out["lambda_min"], out["sharpness"], out["top_eigs"] = self._curvature(ms, thetas, finite)
        if self.next_step is not None:
            out["sharpness_next"] = self._next_sharpness(ms, thetas, finite)
        if self.save_theta and self.theta_every == 1:
            out["theta"] = thetas.numpy()
        elif self.save_theta:
            keep = [i for i, m in enumerate(ms) if m % self.theta_every == 0 or m == self.last_m]
            out["theta_sub"] = thetas[keep].numpy()
            out["theta_grid_index"] = np.asarray([ms[i] for i in keep], dtype=np.int64)
        if self.sgd:
            out["step"] = np.asarray([-1 if s is None else s for s in steps], dtype=np.int64)
            if self.flow_theta is not None:
                ref = self.flow_theta[torch.as_tensor(ms)]
                out["dist_to_flow"] = torch.linalg.vector_norm(thetas - ref, dim=-1).numpy()
            else:
                out["dist_to_flow"] = np.full(tuple(finite.shape), nan)
            if self.modified_theta is not None:  # GD's modified flow at the same exact times
                ref = self.modified_theta[torch.as_tensor(ms)]
                out["dist_to_modified"] = torch.linalg.vector_norm(thetas - ref, dim=-1).numpy()
        return out

    def _curvature(self, ms: list[int], thetas: Tensor, finite: Tensor) -> tuple[np.ndarray, ...]:
        """lambda_min, sharpness (K,) or (K, E) and the top eigenvalues (K, k) or (K, E, k) on the
        analysis sub-grid (NaN elsewhere); each member is warm-started from its own previous point."""
        lam_min = np.full(tuple(finite.shape), float("nan"))
        sharp = np.full(tuple(finite.shape), float("nan"))
        top = np.full((*finite.shape, self.top_eigs), float("nan"))
        if not self.analysis_every:
            return lam_min, sharp, top
        for i, m in enumerate(ms):
            if m % self.analysis_every and m != self.last_m:  # the sub-grid, and the run's last point
                continue
            for e in np.ndindex(tuple(finite.shape[1:])):  # () for one net, (e,) for each member
                if bool(finite[(i, *e)]):
                    lam_min[(i, *e)], sharp[(i, *e)], top[(i, *e)] = self._spectrum(thetas[(i, *e)], e)
        return lam_min, sharp, top

    def _next_sharpness(self, ms: list[int], thetas: Tensor, finite: Tensor) -> np.ndarray:
        """S one GD step past the point ``last_m`` ((K,) or (K, E), NaN elsewhere and where not finite)."""
        out = np.full(tuple(finite.shape), float("nan"))
        if not self.analysis_every or self.last_m not in ms:
            return out
        i = ms.index(self.last_m)
        stepper = GDStepper(self.problem, self.layout, thetas[i], self.next_step)
        stepper.advance(1)  # the series' own update, theta - lr grad L(theta), to the bit
        for e in np.ndindex(tuple(finite.shape[1:])):
            nxt = stepper.theta[e]
            if bool(finite[(i, *e)]) and bool(torch.isfinite(nxt).all()):
                out[(i, *e)] = self._spectrum(nxt, ("next", *e))[1]
        return out

    def _spectrum(self, theta: Tensor, member: tuple) -> tuple[float, float, np.ndarray]:
        """(lambda_min, lambda_max, the top k eigenvalues) of the Hessian at theta (p,)."""
        if self.layout.n_weights <= self.hessian_dense_max:  # one eigvalsh: every eigenvalue, exactly
            evals = torch.linalg.eigvalsh(self.problem.hessian(theta, self.layout))
            return float(evals[0]), float(evals[-1]), evals.flip(0)[: self.top_eigs].numpy()
        lo, hi, self._warm[member] = hessian_extremes(
            self.problem, theta, self.layout, dense_max=self.hessian_dense_max, warm=self._warm.get(member)
        )
        if self.top_eigs == 1:
            return lo, hi, np.array([hi])
        eig = top_eigenpairs(
            self.problem, theta, self.layout, self.top_eigs, dense_max=self.hessian_dense_max,
            warm=self._warm_block.get(member),
        )  # fmt: skip
        self._warm_block[member] = eig.warm
        return lo, hi, eig.values.numpy()


def _masked(x: Tensor, finite: Tensor) -> np.ndarray:
    """x with NaN in the rows of non-finite snapshots."""
    x = x.clone()
    x[~finite] = float("nan")
    return x.numpy()


def theta_rows(arrays) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(rows, thetas) of a series' arrays: the row indices (into ``t``) that have theta, and theta there
    (``theta`` row for row, or ``theta_sub`` at ``theta_grid_index``), (K, p) or an ensemble's (E, K, p);
    (None, None) without theta."""
    if arrays.get("theta") is not None:
        theta = np.asarray(arrays["theta"])
        return np.arange(theta.shape[-2]), theta
    if arrays.get("theta_sub") is not None and arrays.get("grid_index") is not None:
        grid = np.asarray(arrays["grid_index"])
        sub_m = np.asarray(arrays["theta_grid_index"])
        rows = np.searchsorted(grid, sub_m)
        ok = (rows < len(grid)) & (grid[np.minimum(rows, len(grid) - 1)] == sub_m)
        return rows[ok], np.asarray(arrays["theta_sub"])[..., ok, :]
    return None, None
