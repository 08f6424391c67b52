"""The strong and weak errors of an ensemble of series against one reference trajectory (the flow),
from their recorded arrays (docs/theory.md, section 9):

* strong error  e_s(t) = E ||theta_sgd(t) - theta_flow(t)||   (the mean of the series' ``dist_to_flow``),
* weak error    e_w(t) = ||E theta_sgd(t) - theta_flow(t)||,
* weak loss     e_L(t) = |E L_sgd(t) - L_flow(t)|,

E a weighted mean over the members (the plain mean, or a bootstrap resample's counts). The weak errors
compare with the reference's grid, so they use the rows whose exact time is a grid time. Pure numpy:
the lab fits their orders (``sgd_limit``), the plots draw them.
"""

from __future__ import annotations

import numpy as np

from dlnlab.metrics import theta_rows

__all__ = ["error_curves"]


def _aligned(arrays: dict, flow: dict) -> tuple[np.ndarray, np.ndarray]:
    """(rows, grid indices) of a series whose exact time equals the flow's grid time there."""
    grid, t = np.asarray(arrays["grid_index"]), np.asarray(arrays["t"], dtype=np.float64)
    ft = np.asarray(flow["t"], dtype=np.float64)
    rows = np.flatnonzero(grid < len(ft))
    same = np.abs(t[rows] - ft[grid[rows]]) <= 1e-9 * np.maximum(1.0, np.abs(ft[grid[rows]]))
    return rows[same], grid[rows[same]]


def error_curves(arrays: dict, flow: dict, weights: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{kind: (rows (T,), curves (R, T))} of one series (rows: into its arrays); ``weights`` (R, E): a row per curve, each the
    members' weights (1/E for the plain mean, bootstrap counts / E for a resample)."""
    dist = np.asarray(arrays["dist_to_flow"])
    out = {"strong": (np.arange(dist.shape[1]), weights @ dist)}
    rows, ms = _aligned(arrays, flow)
    loss = np.asarray(arrays["loss"])[:, rows]
    out["weak_loss"] = (rows, np.abs(weights @ loss - np.asarray(flow["loss"])[None, ms]))
    have, theta = theta_rows(arrays)
    frows, ftheta = theta_rows(flow)
    if theta is not None and ftheta is not None:
        where = {int(m): j for j, m in enumerate(np.asarray(flow["grid_index"])[frows])}
        at = {int(r): int(m) for r, m in zip(rows, ms)}
        keep = [i for i, r in enumerate(have) if int(r) in at and at[int(r)] in where]
        mean = np.einsum("re,ekp->rkp", weights, theta[:, keep])
        ref = ftheta[[where[at[int(have[i])]] for i in keep]]
        out["weak_theta"] = (have[keep], np.linalg.norm(mean - ref[None], axis=-1))
    return out
