"""The linear algebra of radau_batch's Newton iteration (``dlnlab.flow._radau``): the real and the
complex system (mu / h I - J) x = r of every member solved in the eigenbasis of its Jacobian.

The Jacobian -H(theta) of the gradient flow is symmetric, J = Q diag(lam) Q^T, so
(mu / h I - J)^(-1) = (h / mu) (I + Q diag(c lam / (1 - c lam)) Q^T) with c = h / mu: a new step size
changes only the weights on the eigenpairs, never a factorisation (scipy's Radau factorises two p x p
matrices, one complex, whenever h changes). Only the leading eigenpairs that matter to some member are
kept, in float32: the solves only steer the iteration, whose residuals are float64.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MU_REAL", "MU_COMPLEX", "EigenbasisSolve"]

MU_REAL = 3 + 3 ** (2 / 3) - 3 ** (1 / 3)  # the eigenvalues of A^(-1)
MU_COMPLEX = 3 + 0.5 * (3 ** (1 / 3) - 3 ** (2 / 3)) - 0.5j * (3 ** (5 / 6) + 3 ** (7 / 6))


class EigenbasisSolve:
    """(mu / h I - J)^(-1) = c (I + Q diag(c lam / (1 - c lam)) Q^T), c = h / mu, for the real mu and the
    complex one, on the eigenpairs that matter to some member (the rest weigh 0 in the sum). In float32:
    the Newton corrections and the error estimate need a few digits, the residuals are float64."""

    def __init__(
        self, lam: np.ndarray, abs_lam: np.ndarray, qt: np.ndarray, h: np.ndarray, neglect: float
    ) -> None:
        """lam, abs_lam (B, p): the Jacobians' eigenvalues by decreasing size and their moduli; qt
        (B, p, p) float32: the eigenvectors as rows; h (B,): the step sizes; neglect: eigenpairs with
        |c lam| at most this are left out."""
        c_real, c_complex = h / MU_REAL, h / MU_COMPLEX
        keep = abs_lam > (neglect * MU_REAL / h)[:, None]  # |c lam| > neglect for the larger |c|
        k = max(1, int(keep.sum(axis=1).max()))
        lam, keep = lam[:, :k], keep[:, :k]
        cl_r, cl_c = c_real[:, None] * lam, c_complex[:, None] * lam
        w_r = np.where(keep, c_real[:, None] * cl_r / (1 - cl_r), 0.0)
        w_c = np.where(keep, c_complex[:, None] * cl_c / (1 - cl_c), 0.0)
        self.w = np.stack([w_r, w_c.real, w_c.imag]).astype(np.float32)  # (3, B, k)
        c = np.stack([c_real, c_complex.real, c_complex.imag])
        self.c = c.astype(np.float32)[:, :, None]  # (3, B, 1)
        self.qt = qt[:, :k]

    def both(self, r: np.ndarray, members=slice(None)) -> np.ndarray:
        """r (3, n, p): the real system's right-hand side, then the real and imaginary parts of the
        complex one's; the solutions (float32) in the same layout, for ``members``."""
        w, c = self.w[:, members], self.c[:, members]
        qt = self.qt if isinstance(members, slice) else self.qt[members]
        r32 = np.empty((r.shape[1], 3, r.shape[2]), dtype=np.float32)
        r32.transpose(1, 0, 2)[...] = r
        proj = np.matmul(r32, qt.transpose(0, 2, 1)).transpose(1, 0, 2)  # (3, n, k)
        u = np.empty((r.shape[1], 3, qt.shape[1]), dtype=np.float32)
        ut = u.transpose(1, 0, 2)
        np.multiply(w[0], proj[0], out=ut[0])
        ut[1] = w[1] * proj[1] - w[2] * proj[2]
        ut[2] = w[1] * proj[2] + w[2] * proj[1]
        out = np.matmul(u, qt).transpose(1, 0, 2)  # (3, n, p), the eigenpairs' part
        r0, r1, r2 = r32.transpose(1, 0, 2)
        out[0] += c[0] * r0
        out[1] += c[1] * r1 - c[2] * r2
        out[2] += c[1] * r2 + c[2] * r1
        return out

    def real(self, r: np.ndarray, members=slice(None)) -> np.ndarray:
        """The real system alone, r (n, p), for ``members`` (indices, or a slice: no copies)."""
        w, qt = self.w[0, members], self.qt[members]
        r32 = r.astype(np.float32)
        proj = np.matmul(qt, r32[:, :, None])[..., 0]
        return self.c[0, members] * r32 + np.matmul((proj * w)[:, None, :], qt)[:, 0]
