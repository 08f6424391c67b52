"""The regression task: data, the loss L(A), its gradient and Hessian, the data's modes and critical values.

L = 1/(2N) ||Y - P X||_F^2, X (d_x, N), Y (d_y, N), P = W_h ... W_1. Everything is computed from the
sufficient statistics (cost independent of N) in the cancellation-free form of docs/theory.md section 2:

    L = 1/2 ||(P - P_ls) Sxx^{1/2}||_F^2 + L_min,   P_ls = Syx Sxx^+,

with L_min evaluated once from the residuals of P_ls. Functions taking ``weights`` accept leading
batch dimensions (W_j of shape (..., d_j, d_{j-1})).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from dlnlab import _second_order
from dlnlab._gradient_stack import gradient_stack
from dlnlab.errors import ArgumentError
from dlnlab.network import (
    Layout,
    as_layout,
    chained,
    flat_blocks,
    matmul,
    pack,
    prefix_products,
    product,
    unpack,
)

__all__ = ["RegressionProblem", "check_problem_dims", "haar_orthonormal"]


def check_problem_dims(problem: RegressionProblem, layout: Layout) -> Layout:
    """``layout``, or an ArgumentError naming ``dims`` when its ends d_0, d_h are not the data's d_x, d_y."""
    if problem.d_x != layout.d_x or problem.d_y != layout.d_y:
        fit = f"do not fit the data (d_x = {problem.d_x}, d_y = {problem.d_y})"
        raise ArgumentError("dims", f"dims {list(layout.dims)} {fit}")
    return layout


def haar_orthonormal(rows: int, cols: int, generator: torch.Generator, dtype=torch.float64) -> Tensor:
    """A Haar-random (rows, cols) matrix with orthonormal columns (rows >= cols): QR with the sign fix."""
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=dtype))
    sign = torch.sign(torch.diagonal(r))
    return q * torch.where(sign == 0, torch.ones_like(sign), sign)


def _psd_sqrt_and_pinv_sqrt(s: Tensor, rtol: float = 1e-12) -> tuple[Tensor, Tensor, Tensor]:
    """Sxx^{1/2}, (Sxx^{1/2})^+ and Sxx^+ of a symmetric PSD matrix, by eigh."""
    evals, evecs = torch.linalg.eigh(s)
    keep = evals > rtol * evals.abs().max().clamp_min(torch.finfo(s.dtype).tiny)
    root = torch.where(keep, evals.clamp_min(0).sqrt(), torch.zeros_like(evals))
    inv_root = torch.where(keep, 1 / root.where(keep, torch.ones_like(root)), torch.zeros_like(root))
    inv = inv_root**2
    return (evecs * root) @ evecs.T, (evecs * inv_root) @ evecs.T, (evecs * inv) @ evecs.T


class RegressionProblem:
    """Linear regression data (X, Y) with its statistics, modes, loss, gradient and Hessian.

    Attributes (float64 by default):
        X (d_x, N), Y (d_y, N), Sxx (d_x, d_x), Syx (d_y, d_x), P_ls (d_y, d_x),
        L_min (unconstrained least-squares loss), whitened (Sxx == I to rounding),
        modes (q,) the data's modes m_k = singular values of Syx Sxx^{-1/2}, descending,
        mode_u (d_y, q), mode_v (d_x, q) their singular vectors.
    """

    def __init__(
        self, X: Tensor, Y: Tensor, mode_rtol: float = 1e-10, dtype: torch.dtype | None = None
    ) -> None:
        """X (d_x, N) and Y (d_y, N): tensors, numpy arrays or nested lists, taken in ``dtype``; None
        keeps the data's floating dtype (X's and Y's promoted: a float64 Y is never rounded to a float32
        X's), float64 for integer data. :meth:`from_data` and :meth:`teacher` default to float64."""
        X, Y = torch.as_tensor(X), torch.as_tensor(Y)
        if dtype is None:
            floats = [t.dtype for t in (X, Y) if t.dtype.is_floating_point]
            dtype = torch.promote_types(*floats) if len(floats) == 2 else (floats or [torch.float64])[0]
        if X.is_complex() or Y.is_complex():  # .to(float64) would drop the imaginary part, with a warning
            raise ArgumentError("X" if X.is_complex() else "Y", "X and Y must be real, got complex data")
        if X.ndim != 2 or Y.ndim != 2:
            raise ArgumentError(
                "X" if X.ndim != 2 else "Y",
                f"X and Y must be 2-D (features x samples), got {tuple(X.shape)}, {tuple(Y.shape)}",
            )
        if X.shape[1] != Y.shape[1]:
            raise ArgumentError("Y", f"X has {X.shape[1]} samples and Y has {Y.shape[1]}: they must match")
        if X.shape[1] < 1:
            raise ArgumentError("X", "the data need at least one sample")
        if not (torch.isfinite(X).all() and torch.isfinite(Y).all()):
            raise ArgumentError("X" if not torch.isfinite(X).all() else "Y", "X and Y must be finite")
        self.X = X.to(dtype)
        self.Y = Y.to(dtype)
        self.d_x, self.n_samples = self.X.shape
        self.d_y = self.Y.shape[0]
        n = self.n_samples
        self.Sxx = self.X @ self.X.T / n
        self.Syx = self.Y @ self.X.T / n
        self.tr_Syy = float((self.Y * self.Y).sum() / n)
        eye = torch.eye(self.d_x, dtype=dtype, device=self.X.device)
        self.whitened = bool((self.Sxx - eye).abs().max() <= 64 * torch.finfo(dtype).eps)
        if self.whitened:
            self.sxx_sqrt, self.sxx_pinv_sqrt, sxx_pinv = eye, eye, eye
        else:
            self.sxx_sqrt, self.sxx_pinv_sqrt, sxx_pinv = _psd_sqrt_and_pinv_sqrt(self.Sxx)
        self.P_ls = self.Syx @ sxx_pinv
        resid = self.Y - self.P_ls @ self.X
        self.L_min = float((resid * resid).sum() / (2 * n))
        m_d = self.Syx @ self.sxx_pinv_sqrt
        u, s, vh = torch.linalg.svd(m_d, full_matrices=False)
        keep = s > mode_rtol * s[0] if s.numel() and s[0] > 0 else torch.zeros_like(s, dtype=torch.bool)
        self.modes = s[keep]
        self.mode_u = u[:, keep]
        self.mode_v = vh[keep].T

    # ----------------------------------------------------------------------------------------
    # Construction
    @classmethod
    def teacher(
        cls,
        singular_values: Sequence[float],
        d_x: int,
        d_y: int,
        n_samples: int,
        whiten: bool = True,
        noise: float = 0.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> RegressionProblem:
        """Data from a teacher map T = U [diag(s) | 0] V^T with Haar-random U, V drawn from ``seed``.

        Inputs are exactly whitened (X = sqrt(N) Q^T, Q with orthonormal columns; needs N >= d_x) or
        i.i.d. standard Gaussian; Y = T X + noise * standard Gaussian.
        """
        s = [float(v) for v in singular_values]
        if len(s) > min(d_x, d_y):
            raise ArgumentError(
                "singular_values", f"at most min(d_x, d_y) = {min(d_x, d_y)} values, got {len(s)}"
            )
        if not all(math.isfinite(v) and v >= 0 for v in s):
            raise ArgumentError("singular_values", f"every singular value must be finite and >= 0, got {s}")
        if n_samples < 1:
            raise ArgumentError("n_samples", f"must be >= 1, got {n_samples}")
        if whiten and n_samples < d_x:
            raise ArgumentError(
                "n_samples",
                f"{n_samples} samples < d_x = {d_x}: exactly whitened inputs need at least d_x samples "
                "(whiten=False draws Gaussian inputs instead)",
            )
        if not (math.isfinite(noise) and noise >= 0):
            raise ArgumentError("noise", f"must be finite and >= 0, got {noise}")
        gen = torch.Generator().manual_seed(int(seed))
        u = haar_orthonormal(d_y, d_y, gen, dtype)  # Haar-random orthogonal matrices
        v = haar_orthonormal(d_x, d_x, gen, dtype)
        sig = torch.zeros(d_y, d_x, dtype=dtype)
        for k, val in enumerate(s):
            sig[k, k] = val
        t = u @ sig @ v.T
        if whiten:
            x = (n_samples**0.5) * haar_orthonormal(n_samples, d_x, gen, dtype).T
        else:
            x = torch.randn(d_x, n_samples, generator=gen, dtype=dtype)
        y = t @ x
        if noise > 0:
            y = y + noise * torch.randn(d_y, n_samples, generator=gen, dtype=dtype)
        prob = cls(x, y)
        prob.teacher_map = t
        prob.teacher_singular_values = torch.tensor(sorted(s, reverse=True), dtype=dtype)
        return prob

    @classmethod
    def from_data(cls, X: Tensor, Y: Tensor, dtype: torch.dtype = torch.float64) -> RegressionProblem:
        """From user data, X (d_x, N) and Y (d_y, N) (tensors, numpy arrays or lists), in ``dtype``:
        float64 unless asked otherwise, whatever the data's (``torch.randn``'s float32 included)."""
        return cls(X, Y, dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self.X.device

    def to(self, device: torch.device | str) -> RegressionProblem:
        """The same problem with every tensor on ``device`` (for the hot loops on a GPU)."""
        new = copy.copy(self)
        for key, value in vars(self).items():
            if isinstance(value, Tensor):
                setattr(new, key, value.to(device))
        return new

    # ----------------------------------------------------------------------------------------
    # Loss and gradient
    def _residual(self, p: Tensor) -> Tensor:
        """(P - P_ls) Sxx^{1/2}: the whitened residual, (..., d_y, d_x)."""
        e = p - self.P_ls
        return e if self.whitened else e @ self.sxx_sqrt

    def loss_of_product(self, p: Tensor) -> Tensor:
        """L as a function of P (..., d_y, d_x) -> (...)."""
        r = self._residual(p)
        return 0.5 * (r * r).sum(dim=(-2, -1)) + self.L_min

    def loss(self, weights: Sequence[Tensor]) -> Tensor:
        return self.loss_of_product(product(chained(weights, self.d_x, self.d_y)))

    def _dloss_dp(self, p: Tensor) -> Tensor:
        """D = dL/dP = (P - P_ls) Sxx = P Sxx - Syx, cancellation-free."""
        e = p - self.P_ls
        return e if self.whitened else e @ self.Sxx

    def loss_and_gradient(self, weights: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """L and [grad_{W_j} L] by the closed form grad_{W_j} = P_{h:j+1}^T D P_{j-1:1}^T."""
        pre = prefix_products(chained(weights, self.d_x, self.d_y))
        p = pre[-1]
        r = self._residual(p)
        loss = 0.5 * (r * r).sum(dim=(-2, -1)) + self.L_min
        d = r if self.whitened else (p - self.P_ls) @ self.Sxx
        return loss, _backprop(weights, pre, d)

    def gradient(self, weights: Sequence[Tensor]) -> list[Tensor]:
        """[grad_{W_j} L] by the closed form, each (..., d_j, d_{j-1})."""
        return self.step_gradient(chained(weights, self.d_x, self.d_y))

    def step_gradient(self, weights: Sequence[Tensor], index: Tensor | None = None) -> list[Tensor]:
        """:meth:`gradient` (of the minibatch ``index``) without the shape check: a stepper checks once."""
        pre = prefix_products(weights)
        if index is None:
            return _backprop(weights, pre, self._dloss_dp(pre[-1]))
        if index.ndim == 2:  # X_b of each member: (E, d_x, b)
            xb, yb = self.X.T[index].mT, self.Y.T[index].mT
        else:
            xb, yb = self.X[:, index], self.Y[:, index]
        return _backprop(weights, pre, matmul(matmul(pre[-1], xb) - yb, xb.mT) / xb.shape[-1])

    def gradient_theta(
        self, theta: Tensor, dims: Layout | Sequence[int], out: Tensor | None = None, scale: float = 1.0
    ) -> Tensor:
        """scale * grad L on theta (..., p) (written into ``out`` when given: no new tensor). For one theta
        (p,) every layer's product is written straight into its block of the result (no concatenation:
        1.4 ms of an 8 ms gradient at width 256, depth 8); the scale goes on dL/dP (d_y x d_x), so -1
        gives the flow's right-hand side without a pass over p (and exactly -grad L). Checked here: the
        width and ``out``'s shape (a stack (B, p) on the CPU goes through numpy, one theta through
        :func:`~dlnlab.network.flat_blocks`, both unchecked: a wider one was cut silently)."""
        layout = check_problem_dims(self, as_layout(dims))
        if theta.ndim in (1, 2) and (
            theta.shape[-1] != layout.n_weights or (out is not None and out.shape != theta.shape)
        ):
            raise ArgumentError("theta", _misfit(theta, out, layout))
        return self.field_gradient(theta, layout, out, scale)

    def field_gradient(
        self, theta: Tensor, layout: Layout, out: Tensor | None = None, scale: float = 1.0
    ) -> Tensor:
        """:meth:`gradient_theta` without its checks of the dims and of a stack's shape: the right-hand side
        of the vector fields (dlnlab.flow.field), which check the dims when made, evaluated on states a
        solve checked once where it started (``integrate``'s theta0): checked at every evaluation, the
        width and ``out``'s shape cost 0.2-0.5 us of a 40 us Figure 1 gradient."""
        if theta.ndim == 2 and theta.device.type == "cpu" and not theta.requires_grad:
            return gradient_stack(self, theta, layout, out, scale)
        ws = flat_blocks(theta, layout)
        pre = prefix_products(ws)
        d = self._dloss_dp(pre[-1])
        if scale != 1.0:
            d = d * scale
        if theta.ndim != 1 or theta.device.type != "cpu" or (out is not None and not out.is_contiguous()):
            return pack(_backprop(ws, pre, d), out=out)
        out = torch.empty_like(theta) if out is None else out
        _backprop(ws, pre, d, into=flat_blocks(out, layout))
        return out

    def minibatch_gradient(self, weights: Sequence[Tensor], index: Tensor) -> list[Tensor]:
        """The gradient of 1/(2b) ||Y_b - P X_b||^2 over the columns ``index`` (b,) (the SGD hot loop);
        an ensemble (weights (E, d_j, d_{j-1})) takes one minibatch per member, ``index`` (E, b)."""
        return self.step_gradient(chained(weights, self.d_x, self.d_y), index)

    def weighted_gradient(self, weights: Sequence[Tensor], sample_weights: Tensor) -> list[Tensor]:
        """The gradient of (1/2) sum_i c_i ||y_i - P x_i||^2 for sample weights c (..., N): one backward
        pass through the weights, whatever N (the SME's noise, G dW, is one of these)."""
        return self.gradient_and_weighted_gradient(weights, sample_weights)[1]

    def gradient_and_weighted_gradient(
        self, weights: Sequence[Tensor], sample_weights: Tensor
    ) -> tuple[list[Tensor], list[Tensor]]:
        """:meth:`gradient` and :meth:`weighted_gradient` from one set of forward products (an SME step
        needs both: the drift and the noise)."""
        pre = prefix_products(chained(weights, self.d_x, self.d_y))
        residual = (matmul(pre[-1], self.X) - self.Y) * sample_weights.unsqueeze(-2)
        return (
            _backprop(weights, pre, self._dloss_dp(pre[-1])),
            _backprop(weights, pre, matmul(residual, self.X.mT)),
        )

    def minibatch_loss_and_gradient(
        self, weights: Sequence[Tensor], index: Tensor
    ) -> tuple[Tensor, list[Tensor]]:
        """Loss 1/(2B) ||Y_b - P X_b||^2 of the columns ``index`` (B,) and its gradient."""
        xb, yb = self.X[:, index], self.Y[:, index]
        b = xb.shape[1]
        pre = prefix_products(chained(weights, self.d_x, self.d_y))
        e = pre[-1] @ xb - yb
        loss = 0.5 * (e * e).sum(dim=(-2, -1)) / b
        return loss, _backprop(weights, pre, e @ xb.T / b)

    # ----------------------------------------------------------------------------------------
    # Modes and critical values
    @property
    def n_modes(self) -> int:
        """q, the number of nonzero data modes."""
        return int(self.modes.numel())

    def mode_strength(self, p: Tensor) -> Tensor:
        """u_k^T P Sxx^{1/2} v_k for each data mode (..., q); equals u_k^T P v_k for whitened data."""
        ps = p if self.whitened else p @ self.sxx_sqrt
        return torch.einsum("yk,...yx,xk->...k", self.mode_u, ps, self.mode_v)

    def critical_value(self, modes: Iterable[int]) -> float:
        """L(P_S) for a set S of mode indices (0-based): L_min + 1/2 sum_{k not in S} m_k^2."""
        s = set(int(k) for k in modes)
        bad = [k for k in s if not 0 <= k < self.n_modes]
        if bad:
            raise ValueError(f"mode indices must be in 0..{self.n_modes - 1}, got {sorted(bad)}")
        rest = [k for k in range(self.n_modes) if k not in s]
        return self.L_min + 0.5 * float(sum(float(self.modes[k]) ** 2 for k in rest))

    def plateau_levels(self, r_max: int) -> Tensor:
        """L*_r for r = 0..min(r_max, q): the critical values of the top-r sets, decreasing."""
        r_top = min(int(r_max), self.n_modes)
        return torch.tensor([self.critical_value(range(r)) for r in range(r_top + 1)], dtype=self.X.dtype)

    def best_rank_product(self, r: int) -> Tensor:
        """P*_r = Pi_{1..r} Syx Sxx^+ (the optimal rank-r map, the product of the top-r critical points)."""
        u = self.mode_u[:, : max(0, int(r))]
        return u @ (u.T @ self.P_ls)

    def critical_product(self, modes: Iterable[int]) -> Tensor:
        """P_S = Pi_S Syx Sxx^+ for a set S of mode indices (0-based)."""
        u = self.mode_u[:, sorted(set(int(k) for k in modes))]
        return u @ (u.T @ self.P_ls)

    def product_distance(self, p: Tensor, q: Tensor) -> Tensor:
        """||(P - Q) Sxx^{1/2}||_F, (...)."""
        e = p - q
        e = e if self.whitened else e @ self.sxx_sqrt
        return torch.linalg.matrix_norm(e)

    # ----------------------------------------------------------------------------------------
    # Second order, on theta (never on all n^2 entries of A): closed forms in dlnlab/_second_order.py
    def hvp(self, weights: Sequence[Tensor], directions: Sequence[Tensor]) -> list[Tensor]:
        """Hessian-vector products in closed form: d/de grad L(W + e V) at e = 0.

        weights: W_j (d_j, d_{j-1}); directions: V_j (..., d_j, d_{j-1}) with any batch of
        directions. Returns [(H V)_j] with the batch shape of the directions.
        """
        return _second_order.hvp(self, chained(weights, self.d_x, self.d_y), directions)

    def hvp_theta(self, theta: Tensor, v: Tensor, dims: Layout | Sequence[int]) -> Tensor:
        """H(theta) v on theta; v of shape (..., p)."""
        return pack(self.hvp(unpack(theta, dims), unpack(v, dims)))

    def hessian(self, theta: Tensor, dims: Layout | Sequence[int]) -> Tensor:
        """The dense Hessian on theta, (p, p), or (..., p, p) for a batch theta (..., p) (an ensemble's
        stiff flow), assembled in closed form from the blocks (:func:`dlnlab._second_order.hessian`)."""
        return _second_order.hessian(self, theta, dims)

    def hessian_by_hvp(self, theta: Tensor, dims: Layout | Sequence[int]) -> Tensor:
        """The dense Hessian by one batched HVP on the identity (a check of :meth:`hessian`)."""
        eye = torch.eye(theta.shape[-1], dtype=theta.dtype, device=theta.device)
        h = self.hvp_theta(theta, eye, dims)
        return 0.5 * (h + h.T)


def _backprop(
    weights: Sequence[Tensor], pre: Sequence[Tensor], d: Tensor, into: Sequence[Tensor] | None = None
) -> list[Tensor]:
    """grad_{W_j} = T_j P_{j-1:1}^T with T_h = D and T_{j-1} = W_j^T T_j; ``into``: contiguous matrices
    (one net's) to write them into (the same products, the same bits)."""
    h = len(weights)
    out: list[Tensor] = [None] * h  # type: ignore[list-item]
    t = d
    if h == 1 and into is not None:
        return [into[0].copy_(t)]
    for j in range(h - 1, 0, -1):
        if into is None:
            out[j] = matmul(t, pre[j - 1].mT)
            t = matmul(weights[j].mT, t)
        else:
            out[j] = torch.matmul(t, pre[j - 1].mT, out=into[j])
            t = torch.matmul(weights[j].mT, t, out=into[0] if j == 1 else None)
    out[0] = t
    return out


def _misfit(theta: Tensor, out: Tensor | None, layout: Layout) -> str:
    p, into = layout.n_weights, "" if out is None else f" into out {tuple(out.shape)}"
    need = f"dims {list(layout.dims)} need {f'a stack (B, {p})' if theta.ndim == 2 else f'({p},)'}"
    return f"theta {tuple(theta.shape)}{into}: {need}{into and ', and out of the shape of theta'}"
