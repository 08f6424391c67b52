"""The top eigenpairs of the Hessian of L on theta, at one point and along a path (warm-started).

p <= ``dense_max`` (``dlnlab.analysis.DENSE_HESSIAN_MAX``, 1500 weights): ``eigh`` of the closed-form
dense Hessian (exact to rounding). Above it: scipy's LOBPCG on the closed-form Hessian-vector product
(a block of k + ``GUARD`` directions as one batched product), started from the previous point's block
when there is one. LOBPCG rather than dlnlab.analysis' single-vector Lanczos because a block method is
warm-started by the k vectors it tracks at once (a sharpness series along a GD run, the central
flow's right-hand side), and the guard vectors keep it converging when the k-th and (k+1)-th
eigenvalues are close.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, lobpcg
from torch import Tensor

from dlnlab.analysis import DENSE_HESSIAN_MAX
from dlnlab.errors import ArgumentError
from dlnlab.network import Layout, as_layout
from dlnlab.problem import RegressionProblem

__all__ = [
    "SpectrumMethod",
    "Eigenpairs",
    "SpectrumSeries",
    "top_eigenpairs",
    "SpectrumTracker",
    "sharpness_along",
    "DEFAULT_K",
    "GUARD",
]

DEFAULT_K = 3
GUARD = 2  # extra block vectors of LOBPCG beyond the k wanted
DEFAULT_TOL = 1e-9  # residual ||H v - lambda v|| relative to |lambda_1|
DEFAULT_MAX_ITER = 200


class SpectrumMethod(str, Enum):
    DENSE = "dense"  # eigh of the closed-form dense Hessian
    LOBPCG = "lobpcg"  # scipy's LOBPCG on closed-form Hessian-vector products

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Eigenpairs:
    """The top k eigenpairs of H(theta). values (k,) descending; vectors (p, k) orthonormal, column i
    for values[i]; iterations: LOBPCG's (0 for dense); converged: every residual ||H v - lambda v|| <=
    tol |lambda_1| (always for dense); residual: the largest of them over |lambda_1|. warm: the block to
    start the next point's LOBPCG from (None for dense)."""

    values: Tensor
    vectors: Tensor
    method: SpectrumMethod
    iterations: int
    converged: bool
    residual: float
    warm: Tensor | None = None

    @property
    def sharpness(self) -> float:
        """lambda_max(H)."""
        return float(self.values[0])

    @property
    def k(self) -> int:
        return int(self.values.numel())


def _check_k(k: int, p: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= p:
        raise ArgumentError("k", f"the number of eigenpairs must be an integer in 1..{p} (p), got {k!r}")
    return int(k)


def _dense(problem, theta, layout, k, at_least) -> Eigenpairs:
    evals, evecs = torch.linalg.eigh(problem.hessian(theta, layout))
    if at_least is not None:
        k = max(k, int((evals >= at_least).sum()))
    vals, vecs = evals.flip(0)[:k], evecs.flip(1)[:, :k]
    return Eigenpairs(vals, vecs, SpectrumMethod.DENSE, 0, True, 0.0)


def _start_block(p: int, b: int, warm: Tensor | None, like: Tensor, gen: torch.Generator) -> Tensor:
    """(p, b) orthonormal: the warm columns first, completed with random ones."""
    cols = [] if warm is None else [warm.reshape(p, -1)[:, :b].to(like)]
    have = sum(c.shape[1] for c in cols)
    if have < b:
        cols.append(torch.randn(p, b - have, generator=gen, dtype=like.dtype).to(like.device))
    q, _ = torch.linalg.qr(torch.cat(cols, dim=1))
    return q


def _lobpcg(problem, theta, layout, k, warm, tol, max_iter, gen) -> Eigenpairs:
    p = theta.shape[-1]
    b = min(k + GUARD, p)

    def matmat(x: np.ndarray) -> np.ndarray:
        v = torch.from_numpy(np.ascontiguousarray(np.asarray(x).reshape(p, -1).T)).to(theta)
        return problem.hvp_theta(theta, v, layout).T.cpu().numpy()

    op = LinearOperator((p, p), matvec=matmat, matmat=matmat, dtype=np.float64)
    x0 = _start_block(p, b, warm, theta, gen)
    hx = torch.from_numpy(matmat(x0.cpu().numpy())).to(theta)
    scale = float(torch.linalg.eigvalsh(x0.T @ hx).abs().max().clamp_min(1e-300))
    with warnings.catch_warnings():  # non-convergence is reported through ``converged``
        warnings.simplefilter("ignore")
        vals, vecs, hist = lobpcg(
            op, x0.cpu().numpy(), tol=tol * scale, maxiter=max_iter, largest=True,
            retResidualNormsHistory=True,
        )  # fmt: skip
    order = np.argsort(-vals)
    vals, vecs = (
        torch.from_numpy(vals[order].copy()).to(theta),
        torch.from_numpy(vecs[:, order].copy()).to(theta),
    )
    res = torch.linalg.vector_norm(
        problem.hvp_theta(theta, vecs[:, :k].T, layout).T - vecs[:, :k] * vals[:k], dim=0
    )
    rel = float(res.max()) / max(float(vals[0].abs()), 1e-300)
    iters = max(len(hist) - 1, 0)
    return Eigenpairs(vals[:k], vecs[:, :k], SpectrumMethod.LOBPCG, iters, rel <= tol, rel, vecs)


def top_eigenpairs(
    problem: RegressionProblem,
    theta: Tensor,
    dims: Layout | Sequence[int],
    k: int = DEFAULT_K,
    *,
    at_least: float | None = None,
    dense_max: int = DENSE_HESSIAN_MAX,
    warm: Tensor | None = None,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    seed: int = 0,
) -> Eigenpairs:
    """The top k eigenpairs of the Hessian of L at theta (p,), descending.

    at_least: also every eigenvalue >= this value (k grows until the k-th is below it; the central
    flow's critical set). p <= dense_max: dense ``eigh``; else LOBPCG started from ``warm`` (a previous
    result's ``warm`` block, or any (p, j) vectors) completed with random directions drawn from
    ``seed``; it stops when every residual is <= tol |lambda_1| or after max_iter iterations.
    """
    layout = as_layout(dims)
    p = layout.n_weights
    k = _check_k(k, p)
    if theta.shape != (p,):
        raise ArgumentError(
            "theta", f"must have shape ({p},) for dims {list(layout.dims)}, got {tuple(theta.shape)}"
        )
    if p <= dense_max:
        return _dense(problem, theta, layout, k, at_least)
    gen = torch.Generator().manual_seed(int(seed))
    while True:
        res = _lobpcg(problem, theta, layout, k, warm, tol, max_iter, gen)
        if at_least is None or float(res.values[-1]) < at_least or k == p:
            return res
        k, warm = min(2 * k, p), res.warm


class SpectrumTracker:
    """Top-k eigenpairs at a sequence of nearby points, each call started from the last one's block
    (LOBPCG; dense below ``dense_max`` needs no start). ``calls`` and ``iterations`` count the work,
    ``unconverged`` the calls whose residuals stayed above the tolerance (their eigenpairs are used anyway)."""

    def __init__(
        self,
        problem: RegressionProblem,
        dims: Layout | Sequence[int],
        k: int = DEFAULT_K,
        *,
        dense_max: int = DENSE_HESSIAN_MAX,
        tol: float = DEFAULT_TOL,
        max_iter: int = DEFAULT_MAX_ITER,
        seed: int = 0,
    ) -> None:
        self.problem, self.layout = problem, as_layout(dims)
        self.k = _check_k(k, self.layout.n_weights)
        self.dense_max, self.tol, self.max_iter, self.seed = dense_max, tol, max_iter, seed
        self.warm: Tensor | None = None
        self.calls = 0
        self.iterations = 0
        self.unconverged = 0

    @property
    def dense(self) -> bool:
        return self.layout.n_weights <= self.dense_max

    def __call__(self, theta: Tensor, at_least: float | None = None) -> Eigenpairs:
        res = top_eigenpairs(
            self.problem, theta, self.layout, self.k, at_least=at_least, dense_max=self.dense_max,
            warm=self.warm, tol=self.tol, max_iter=self.max_iter, seed=self.seed + self.calls,
        )  # fmt: skip
        self.warm = res.warm
        self.calls += 1
        self.iterations += res.iterations
        self.unconverged += 0 if res.converged else 1
        return res


@dataclass(frozen=True)
class SpectrumSeries:
    """Top-k eigenvalues along a path: values (T, k) descending, top_vectors (T, p) (the sharpness'
    eigenvector, sign as the solver gave it), iterations (T,) and converged (T,) per point."""

    values: Tensor
    top_vectors: Tensor
    iterations: Tensor
    converged: Tensor
    method: SpectrumMethod

    @property
    def sharpness(self) -> Tensor:
        return self.values[:, 0]


def sharpness_along(
    problem: RegressionProblem,
    dims: Layout | Sequence[int],
    thetas: Tensor,
    k: int = DEFAULT_K,
    **options,
) -> SpectrumSeries:
    """The top-k eigenpairs at every row of thetas (T, p), warm-started from row to row
    (:class:`SpectrumTracker`; ``options`` are its keywords)."""
    tracker = SpectrumTracker(problem, dims, k, **options)
    if thetas.ndim != 2 or thetas.shape[0] < 1:
        raise ArgumentError("thetas", f"must have shape (T, p) with T >= 1, got {tuple(thetas.shape)}")
    points = [tracker(th) for th in thetas]
    return SpectrumSeries(
        values=torch.stack([r.values for r in points]),
        top_vectors=torch.stack([r.vectors[:, 0] for r in points]),
        iterations=torch.tensor([r.iterations for r in points]),
        converged=torch.tensor([r.converged for r in points]),
        method=points[0].method,
    )
