"""The lab's exit codes and its one refusal type, :class:`ConfigError`.

A ConfigError's message starts with the config key it is about and says what is allowed; the CLI
prints it on one line and exits with :attr:`ExitCode.CONFIG` before any work starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import IntEnum

from dlnlab.errors import ArgumentError

__all__ = ["ConfigError", "ExitCode", "keyed", "shown"]


class ExitCode(IntEnum):
    """Exit codes of ``scripts/train.py`` (a sweep exits with the largest code of its jobs)."""

    OK = 0  # every series finished, or only diverged / unstable ones stopped (a scientific outcome)
    CRASHED = 1  # the lab itself failed outside any series (a bug): summary.json says status crashed
    CONFIG = 2  # refused before any work: bad config value, impossible size, bad file
    FAILED = 3  # a series failed for a technical reason (solver failure, error); the rest was run
    SIGINT = 130  # interrupted by SIGINT (Ctrl+C): everything recorded so far is written
    SIGTERM = 143  # terminated by SIGTERM: the same as SIGINT


class ConfigError(ValueError):
    """A config value is not allowed; the message names the key and the allowed values."""


@contextmanager
def keyed(keys: Mapping[str, str], default: str) -> Iterator[None]:
    """Turn a core :class:`ArgumentError` raised inside the block into a ConfigError naming the key.

    ``keys`` maps the core's argument names to config keys; unknown arguments map to ``default``.
    """
    try:
        yield
    except ArgumentError as err:
        raise ConfigError(f"{keys.get(err.argument, default)}: {err}") from err


def shown(value: object, limit: int = 60) -> str:
    """``value`` as a refusal quotes it: at most ``limit`` characters (a 5,000-digit seed is shown by its
    first digits and its length)."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}... ({len(text)} characters)"
