"""Packages whose names are imported on first use, so that importing the package itself stays cheap.

A package lists what it exports in ``_EXPORTS`` ({submodule: [names]}) and gets its ``__getattr__``,
``__dir__`` and ``__all__`` from :func:`lazy_exports`. ``import dlnlab.lab.config`` then imports nothing
heavy; ``from dlnlab.lab.config import prepare`` imports the one submodule that holds ``prepare`` (the
scripts refuse a bad argument before torch or Hydra is imported, and a refused config never imports
Lightning). The layering test reads ``_EXPORTS`` as the package's imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """(``__getattr__``, ``__dir__``, ``__all__``) for ``package`` exporting ``exports``: {a submodule,
    relative (``"._prepare"``) or absolute: the names it gives}."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        setattr(sys.modules[package], name, value)  # imported once
        return value

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__, sorted(where)
