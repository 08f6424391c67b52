"""Small shared helpers: numbers for the console and JSON-safe values (null, never NaN)."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

__all__ = ["fmt", "jsonable"]


def fmt(x) -> str:
    """A number for the console: 4 significant digits, "-" for None, "nan" for a non-finite float."""
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "nan"
    return f"{x:.4g}"


_PLAIN = (str, int, bool, type(None))


def jsonable(x: Any) -> Any:
    """Plain JSON types: numpy/torch scalars and arrays to Python, NaN and infinities to None."""
    kind = type(x)  # the plain types first: most of a summary's leaves (half its write time otherwise)
    if kind is float:
        return x if math.isfinite(x) else None
    if kind in _PLAIN:
        return x
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    torch = sys.modules.get("torch")  # not imported: x is no tensor (reading runs needs no torch, ~1.5 s)
    if isinstance(x, np.ndarray) or (torch is not None and isinstance(x, torch.Tensor)):
        return jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x
