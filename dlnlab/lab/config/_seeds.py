"""The seeds of a run's parts (data, init, minibatches, each ensemble member, each SME ensemble), derived
from its one ``seed`` by a hash, so that they are stable across versions and machines."""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(seed: int, purpose: str) -> int:
    """A seed for ``purpose`` (data, init, sgd) derived from the run's ``seed``: stable across versions."""
    digest = hashlib.sha256(f"dlnlab:{int(seed)}:{purpose}".encode()).hexdigest()
    return int(digest[:8], 16)
