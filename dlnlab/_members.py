"""An ensemble's series arrays, member by member: which keys carry the member axis. numpy only, so that
reading a run directory (:mod:`dlnlab.rundir`) needs no torch (its import is ~1.5 s of a script's start).
Re-exported by :mod:`dlnlab.metrics`, which writes these arrays."""

from __future__ import annotations

import numpy as np

__all__ = ["MEMBERLESS_KEYS", "member_arrays", "members_of"]

# keys of a series' arrays that an ensemble shares (no member axis); every other key of an ensemble's
# series file has the member axis first: (E, T, ...)
MEMBERLESS_KEYS = frozenset({"t", "grid_index", "step", "theta_grid_index"})


def members_of(arrays) -> int | None:
    """The ensemble size of a series file's arrays (member-major, see ``MEMBERLESS_KEYS``), or None."""
    loss = arrays.get("loss") if hasattr(arrays, "get") else None
    return None if loss is None or np.ndim(loss) != 2 else int(np.shape(loss)[0])


def member_arrays(arrays, member: int) -> dict:
    """The arrays of one member of an ensemble's series (its own trajectory, like a single run's)."""
    return {k: (v if k in MEMBERLESS_KEYS else v[member]) for k, v in arrays.items()}
