"""Analysis: invariants, spectra, saddle proximity, Hessian extremes and the theory oracles of docs/theory.md.

Conventions as in ``dlnlab.network``: W_j has shape (..., d_j, d_{j-1}) (leading batch dimensions
allowed), theta is the packed vector of masked weights, and every Hessian acts on theta.

Theory oracles (docs/theory.md section 5) for an aligned, balanced mode of strength u (product space):
``du/dt = h |u|^(2-2/h) (s - u)``; ``mode_time``, ``mode_half_time`` and ``mode_solution`` evaluate it
with ~1e-12 relative accuracy, and ``balanced_product_rhs`` is Arora et al.'s end-to-end ODE.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.integrate import quad, solve_ivp
from torch import Tensor

from dlnlab._sizes import DENSE_HESSIAN_MAX  # dense eigensolvers up to this p, Lanczos above
from dlnlab.errors import ArgumentError
from dlnlab.network import Layout, as_layout, pack
from dlnlab.problem import RegressionProblem

__all__ = [
    "DENSE_HESSIAN_MAX",
    "conservation_laws",
    "adjacency_commutator",
    "conservation_drift",
    "layer_singular_values",
    "nearest_level",
    "mode_time",
    "mode_half_time",
    "mode_solution",
    "balanced_sharpness",
    "balanced_minimum_sharpness",
    "gd_stability_threshold",
    "balanced_product_rhs",
    "lanczos_extremes",
    "hessian_extremes",
]


# ----------------------------------------------------------------------------------------------
# Invariants and spectra
def conservation_laws(weights: Sequence[Tensor]) -> list[Tensor]:
    """[C_1, ..., C_{h-1}] with C_j = W_{j+1}^T W_{j+1} - W_j W_j^T, each (..., d_j, d_j)."""
    return [weights[j].mT @ weights[j] - weights[j - 1] @ weights[j - 1].mT for j in range(1, len(weights))]


def adjacency_commutator(a: Tensor, dims: Layout | Sequence[int]) -> Tensor:
    """A^T A - A A^T, (..., n, n).

    For a block-sub-diagonal A this is blkdiag(W_1^T W_1, C_1, ..., C_{h-1}, -W_h W_h^T).
    """
    n = dims.n_nodes if isinstance(dims, Layout) else int(sum(dims))
    if tuple(a.shape[-2:]) != (n, n):
        raise ValueError(f"A has shape {tuple(a.shape[-2:])}, dims {list(dims)} need {n} x {n}")
    return a.mT @ a - a @ a.mT


def conservation_drift(weights: Sequence[Tensor], weights0: Sequence[Tensor]) -> Tensor:
    """||C_j(W) - C_j(W0)||_F for j = 1..h-1, shape (..., h-1) (batch dims of W and W0 broadcast)."""
    c, c0 = conservation_laws(weights), conservation_laws(weights0)
    if not c:
        batch = torch.Size(np.broadcast_shapes(weights[0].shape[:-2], weights0[0].shape[:-2]))
        return weights[0].new_zeros(*batch, 0)
    return torch.stack([torch.linalg.matrix_norm(x - y) for x, y in zip(c, c0)], dim=-1)


def layer_singular_values(weights: Sequence[Tensor], top: int | None = None) -> Tensor:
    """Singular values of A, descending, (..., K) with K = n (or ``top``).

    They are the union of the singular values of the W_j, padded with zeros to n = sum(d_j)
    (A^T A = blkdiag(W_1^T W_1, ..., W_h^T W_h, 0)); no n x n matrix is formed.
    """
    n = weights[0].shape[-1] + sum(w.shape[-2] for w in weights)
    batch = torch.Size(np.broadcast_shapes(*[w.shape[:-2] for w in weights]))
    svs = [torch.linalg.svdvals(w).expand(*batch, -1) for w in weights]
    pad = n - sum(s.shape[-1] for s in svs)
    sv = torch.cat(svs + [weights[0].new_zeros(*batch, pad)], dim=-1)
    sv = torch.sort(sv, dim=-1, descending=True).values
    return sv if top is None else sv[..., : int(top)]


def nearest_level(loss: Tensor | float, levels: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest critical level: r = argmin_r |L - L*_r| (long, (...)) and the gap L - L*_r (...).

    ``levels`` (R,) are e.g. ``problem.plateau_levels(r_max)``; ``loss`` has any shape (...).
    """
    loss = torch.as_tensor(loss, dtype=levels.dtype, device=levels.device)
    r = torch.argmin((loss.unsqueeze(-1) - levels).abs(), dim=-1)
    return r, loss - levels[r]


# ----------------------------------------------------------------------------------------------
# Scalar mode dynamics du/dt = h |u|^(2-2/h) (s - u)
def _check_mode_args(s: float, h: int) -> None:
    if isinstance(h, bool) or int(h) != h or h < 1:
        raise ValueError(f"depth h must be a positive integer, got {h}")
    if not s > 0:
        raise ValueError(f"mode strength s must be > 0, got {s}")


def _beta_like(y0: float, y1: float, a: float, sign: float, log_gap: float = 0.0) -> float:
    """int_{y0}^{y1} y^(a-1) / (1 - c y) dy, c = sign = +-1, y0, y1 > 0 (1 not between them), a != 0.

    Split y^(a-1)/(1 - c y) = y^(a-1) + c y^a/(1 - c y) and, for c = 1, y^a/(1 - y) = 1/(1 - y) +
    (y^a - 1)/(1 - y). The first parts are closed form (``log_gap`` = ln|1 - y1| - ln|1 - y0|, from the
    caller without rounding y = u/s); the smooth rest is integrated in x = ln y (exact for tiny y0).
    """
    out = (y1**a - y0**a) / a
    x0, x1 = math.log(y0), math.log(y1)
    if sign > 0:
        out -= log_gap

        def f(x: float) -> float:  # (y^a - 1)/(1 - y) * y, expm1 keeps it exact near y = 1
            return math.exp(x) * math.expm1(a * x) / -math.expm1(x)
    else:

        def f(x: float) -> float:  # -y^a/(1 + y) * y
            return (
                -math.exp((a + 1) * x) / (1 + math.exp(x)) if x < 0 else -math.exp(a * x) / (1 + math.exp(-x))
            )

    val, _ = quad(f, x0, x1, epsabs=0.0, epsrel=1e-13, limit=500)
    return out + val


def mode_time(s: float, u0: float, u: float, h: int) -> float:
    """Time for du/dt = h |u|^(2-2/h) (s - u) to go from u0 to u.

    u0 and u must lie in one interval the flow moves through: (0, s) (growth), (s, inf) (decay to s),
    or (-inf, 0) (stable branch, decay to 0). The sign of the result says the direction (u before u0:
    negative). h = 2 is closed form; h >= 3 splits off the singular parts in closed form and integrates
    the smooth rest with adaptive quadrature in log u (relative accuracy ~1e-12).
    """
    _check_mode_args(s, h)
    s, u0, u = float(s), float(u0), float(u)
    if h == 1:  # du/dt = s - u: linear, may cross 0
        if (u0 - s) * (u - s) <= 0:
            raise ValueError(f"u0={u0} and u={u} must lie on the same side of s={s}")
        return math.log((s - u0) / (s - u))
    if u0 == 0 or u == 0 or (u0 > 0) != (u > 0) or (u0 > 0 and (u0 - s) * (u - s) <= 0):
        raise ValueError(
            f"u0={u0} and u={u} must both lie in (0, s), both in (s, inf) or both < 0 (s={s}); "
            "0 and s are never reached"
        )
    if u0 == u:
        return 0.0
    if h == 2:  # (1/(2s)) ln[u (s - u0) / (u0 (s - u))], mirrored on the stable branch
        return math.copysign(1.0, u0) * math.log(u * (s - u0) / (u0 * (s - u))) / (2 * s)
    a = 2.0 / h - 1.0
    scale = s ** (a - 1) / h  # t = scale * int y^(a-1)/(1 -+ y) dy with v = +-s y
    if u0 > 0:
        return scale * _beta_like(u0 / s, u / s, a, 1.0, math.log(abs((s - u) / (s - u0))))
    return -scale * _beta_like(-u0 / s, -u / s, a, -1.0)


def mode_half_time(s: float, u0: float, h: int) -> float:
    """Time for a balanced mode to grow from u0 to s/2: ``mode_time(s, u0, s/2, h)``."""
    return mode_time(s, u0, 0.5 * s, h)


def mode_solution(t, s: float, u0: float, h: int, *, method: str = "DOP853") -> np.ndarray:
    """u(t) of du/dt = h |u|^(2-2/h) (s - u), u(0) = u0, on an array of times t >= 0 (any order).

    h = 2: u = s u0 / (u0 + (s - u0) exp(-2 s t sign u0)), which also covers the stable branch
    u0 < 0. Otherwise solve_ivp (``method``, rtol 1e-12) on x = ln|u|, so tiny u0 keep their relative
    accuracy. For h >= 2, u0 = 0 stays 0 and u0 < 0 decays to 0. ``method="LSODA"`` (with the
    closed-form Jacobian) is for curves to draw: about 1e-9 relative where DOP853 reaches 1e-15, 30 to 40
    times fewer evaluations (once u is near s the equation is stiff: DOP853 took 28,600 on t in [0, 300]).
    """
    _check_mode_args(s, h)
    t = np.asarray(t, dtype=np.float64)
    if np.any(t < 0):
        raise ValueError("mode_solution: times must be >= 0")
    s, u0 = float(s), float(u0)
    if h == 1:
        return s + (u0 - s) * np.exp(-t)
    if u0 == 0 or t.size == 0:
        return np.zeros_like(t)
    if h == 2:
        with np.errstate(over="ignore"):
            return s * u0 / (u0 + (s - u0) * np.exp(-2 * s * t * np.sign(u0)))
    sgn, e = math.copysign(1.0, u0), 1.0 - 2.0 / h

    def rhs(_, x):  # d ln|u| / dt = h sgn |u|^(1-2/h) (s - u)
        v = np.exp(x[0])
        return [h * sgn * v**e * (s - sgn * v)]

    def jac(_, x):  # d rhs / dx, with dv/dx = v
        v = np.exp(x[0])
        return [[h * sgn * v**e * (e * (s - sgn * v) - sgn * v)]]

    flat = t.ravel()
    order = np.argsort(flat)
    ts = flat[order]
    out = np.empty_like(flat)
    if ts[-1] == 0:
        out[:] = u0
        return out.reshape(t.shape)
    sol = solve_ivp(
        rhs,
        (0.0, ts[-1]),
        [math.log(abs(u0))],
        method=method,
        t_eval=ts,
        rtol=1e-12,
        atol=1e-13,
        **({} if method in ("RK45", "RK23", "DOP853") else {"jac": jac}),
    )
    if not sol.success:
        raise RuntimeError(f"mode_solution: solve_ivp failed: {sol.message}")
    out[order] = sgn * np.exp(sol.y[0])
    out[flat == 0] = u0  # exactly, not exp(log(u0))
    return out.reshape(t.shape)


def balanced_sharpness(s1: float, h: int) -> float:
    """lambda_max of the Hessian at the balanced global minimum: h s1^(2-2/h), for the largest data
    mode s1 = m_1 (``problem.modes[0]``; whitened data) and the depth h >= 1."""
    if isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1:
        raise ArgumentError("h", f"the depth must be an integer >= 1, got {h!r}")
    if not (math.isfinite(float(s1)) and float(s1) >= 0):
        raise ArgumentError("s1", f"the largest data mode must be finite and >= 0, got {float(s1):g}")
    return h * float(s1) ** (2.0 - 2.0 / h)


def balanced_minimum_sharpness(
    problem: RegressionProblem, dims: Layout | Sequence[int], dense_max: int = DENSE_HESSIAN_MAX
) -> float:
    """lambda_max of the Hessian at the balanced (C_j = 0) global minimum of ``problem`` on ``dims``.

    Whitened data: the closed form h m_1^(2-2/h) (:func:`balanced_sharpness`). Otherwise no closed form
    holds (the Hessian's Gauss-Newton part carries Sxx: h = 1 gives lambda_max(Sxx), and scaling X by c
    scales the sharpness by c^(2/h) while the modes m_k stay), so it is computed: the 0-balanced
    factorisation of the top-min(q, r_max) product P_S (its SVD, hidden frames e_1..e_k: orthogonal
    frames change no eigenvalue) and the top eigenvalue of the Hessian there (:func:`hessian_extremes`).
    0.0 for data without modes."""
    layout = as_layout(dims)
    if not problem.n_modes:
        return 0.0
    if problem.whitened:
        return balanced_sharpness(float(problem.modes[0]), layout.depth)
    k, h = min(problem.n_modes, layout.r_max), layout.depth
    u, s, vh = torch.linalg.svd(problem.critical_product(range(k)), full_matrices=False)
    a = s[:k] ** (1.0 / h)
    eye = [torch.eye(d, k, dtype=s.dtype) for d in layout.dims[1:-1]]
    frames = [vh[:k].T, *eye, u[:, :k]]  # frames[j]: (d_j, k), orthonormal columns
    theta = pack([(frames[j] * a) @ frames[j - 1].T for j in range(1, h + 1)])
    return hessian_extremes(problem, theta, layout, dense_max=dense_max)[1]


def gd_stability_threshold(s1: float, h: int) -> float:
    """eta* = 2 / (h s1^(2-2/h)) (s1 = m_1, h the depth; see :func:`balanced_sharpness`): GD cannot
    settle at any global minimum above it, for whitened data (otherwise 2 / :func:`balanced_minimum_sharpness`
    is the threshold of the balanced minimum). Data without a mode (s1 = 0, h >= 2) have none: inf."""
    sharpness = balanced_sharpness(s1, h)
    return 2.0 / sharpness if sharpness > 0 else math.inf


def balanced_product_rhs(p: Tensor, problem: RegressionProblem, h: int) -> Tensor:
    """Arora et al.'s balanced end-to-end ODE, dP/dt (..., d_y, d_x), valid when every C_j = 0.

    dP/dt = -sum_{j=1}^h (P P^T)^((h-j)/h) D (P^T P)^((j-1)/h), D = dL/dP = (P - P_ls) Sxx. Fractional
    powers come from a thin SVD of P dropping singular values < 1e-12; exponent 0 gives the identity.
    """
    e = p - problem.P_ls
    d = e if problem.whitened else e @ problem.Sxx
    u, sv, vh = torch.linalg.svd(p, full_matrices=False)
    keep = sv >= 1e-12
    svk = torch.where(keep, sv, torch.ones_like(sv))

    def power(vecs: Tensor, k: int) -> Tensor:  # (M M^T)^(k/h) from the singular vectors of M
        if k == 0:
            return torch.eye(vecs.shape[-2], dtype=p.dtype, device=p.device)
        lam = torch.where(keep, svk ** (2.0 * k / h), torch.zeros_like(sv))
        return (vecs * lam.unsqueeze(-2)) @ vecs.mT

    left = [power(u, k) for k in range(h)]  # (P P^T)^(k/h)
    right = [power(vh.mT, k) for k in range(h)]  # (P^T P)^(k/h)
    return -sum(left[h - j] @ d @ right[j - 1] for j in range(1, h + 1))


# ----------------------------------------------------------------------------------------------
# Extreme eigenvalues of the Hessian on theta
def lanczos_extremes(
    matvec: Callable[[Tensor], Tensor],
    p: int,
    v0: Tensor | None = None,
    iters: int = 80,
    tol: float = 1e-10,
    generator: torch.Generator | None = None,
) -> tuple[float, float, Tensor, Tensor]:
    """Smallest and largest eigenvalue of a symmetric operator (p,) -> (p,) and their Ritz vectors (p,).

    Lanczos with full reorthogonalisation, started from ``v0`` (e.g. the warm vector of a previous call)
    or a random vector. On breakdown (an invariant subspace, e.g. v0 an eigenvector) it continues with
    a fresh random direction. Stops when both extreme Ritz residuals are <= tol * max|Ritz value|, or
    after min(iters, p) steps.
    """
    if v0 is not None:
        dtype, device = v0.dtype, v0.device
    else:
        dtype, device = torch.float64, (generator.device if generator is not None else "cpu")
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)

    def random_vec() -> Tensor:
        return torch.randn(p, generator=generator, dtype=dtype, device=device)

    m = max(1, min(int(iters), p))
    q = torch.zeros(m, p, dtype=dtype, device=device)
    alpha = torch.zeros(m, dtype=dtype, device=device)
    beta = torch.zeros(m, dtype=dtype, device=device)  # beta[k] couples q_k and q_{k+1}
    v = v0.detach().reshape(p).to(dtype) if v0 is not None else random_vec()
    if not torch.isfinite(v).all() or float(v.norm()) == 0.0:
        v = random_vec()
    q[0] = v / v.norm()
    min_k = 1
    for k in range(m):
        w = matvec(q[k]).reshape(p).to(dtype)
        alpha[k] = q[k] @ w
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - q[: k + 1].T @ (q[: k + 1] @ w)
        b = w.norm()
        evals, evecs = torch.linalg.eigh(
            torch.diag(alpha[: k + 1]) + torch.diag(beta[:k], 1) + torch.diag(beta[:k], -1)
        )
        scale = float(evals.abs().max())
        res = (float(b) * evecs[-1, [0, -1]].abs()).max()
        if k == m - 1 or (k >= min_k and float(res) <= tol * scale) or k + 1 >= p:
            break
        if float(b) <= 1e-12 * max(scale, 1.0):  # invariant subspace: restart orthogonally
            beta[k], min_k = 0.0, k + 10  # let the new block grow before trusting convergence
            for _ in range(3):
                w = random_vec()
                for _ in range(2):
                    w = w - q[: k + 1].T @ (q[: k + 1] @ w)
                if float(w.norm()) > 1e-8:
                    break
            q[k + 1] = w / w.norm()
        else:
            beta[k] = b
            q[k + 1] = w / b
    basis = q[: k + 1]
    v_min, v_max = evecs[:, 0] @ basis, evecs[:, -1] @ basis
    return float(evals[0]), float(evals[-1]), v_min / v_min.norm(), v_max / v_max.norm()


def hessian_extremes(
    problem: RegressionProblem,
    theta: Tensor,
    dims: Layout | Sequence[int],
    dense_max: int = DENSE_HESSIAN_MAX,
    warm: Tensor | None = None,
    *,
    iters: int = 80,
    tol: float = 1e-10,
) -> tuple[float, float, Tensor | None]:
    """(lambda_min, lambda_max, warm) of the Hessian of L on theta (p,).

    p <= dense_max: eigvalsh of the dense ``problem.hessian`` (warm is None). Otherwise Lanczos on
    ``problem.hvp_theta`` started from ``warm``; the returned warm vector (p,) (the normalised sum of
    the two extreme Ritz vectors) seeds the next call.
    """
    p = theta.shape[-1]
    if p <= dense_max:
        evals = torch.linalg.eigvalsh(problem.hessian(theta, dims))
        return float(evals[0]), float(evals[-1]), None
    lo, hi, v_lo, v_hi = lanczos_extremes(
        lambda v: problem.hvp_theta(theta, v, dims), p, v0=warm, iters=iters, tol=tol
    )
    w = v_lo + v_hi
    return lo, hi, w / w.norm() if float(w.norm()) > 0 else v_lo
