"""Test helpers shared by several test files."""

from __future__ import annotations

import contextlib
import re

import pytest

from dlnlab.errors import ArgumentError

CONFIG_KEY = re.compile(r"\b(model|data|init|flow|sgd|log|limits)\.[a-z_]+")


@contextlib.contextmanager
def bad_argument(argument: str, match: str = ""):
    """The core refuses with ArgumentError naming ``argument``, in its own words (no config key)."""
    with pytest.raises(ArgumentError, match=match) as info:
        yield info
    assert info.value.argument == argument, (info.value.argument, str(info.value))
    assert not CONFIG_KEY.search(str(info.value)), f"a core error names a config key: {info.value}"
