"""How the lab reports a problem: its exit codes, its one refusal type :class:`ConfigError`, the command
that finishes a stopped run (:func:`resume_shell_command`), and dlnlab's warnings on the console
(:func:`console_warnings`).

A ConfigError's message starts with the config key it is about and says what is allowed; the CLI
prints it on one line and exits with :attr:`ExitCode.CONFIG` before any work starts. Light to import
(no torch, numpy or Hydra): the scripts refuse bad arguments before their heavy imports.
"""

from __future__ import annotations

import shlex
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import IntEnum

from dlnlab.errors import ArgumentError, DlnlabWarning

__all__ = [
    "ConfigError", "ExitCode", "WriteFailed", "keyed", "shown", "resume_shell_command", "console_warnings",
]  # fmt: skip


class ExitCode(IntEnum):
    """Exit codes of ``scripts/train.py`` (a sweep exits with the largest code of its jobs)."""

    OK = 0  # every series finished, or only diverged / unstable ones stopped (a scientific outcome)
    CRASHED = 1  # the lab itself failed outside any series (a bug): summary.json says status crashed
    CONFIG = 2  # refused before any work: bad config value, impossible size, bad file
    FAILED = 3  # a series failed for a technical reason (solver failure, error); the rest was run
    WRITE_FAILED = 4  # a file of the run could not be written (disk full, quota, file size limit, read-only)
    SIGINT = 130  # interrupted by SIGINT (Ctrl+C): everything recorded so far is written
    SIGTERM = 143  # terminated by SIGTERM: the same as SIGINT


class ConfigError(ValueError):
    """A config value is not allowed; the message names the key and the allowed values."""


class WriteFailed(Exception):
    """The run directory took no more writes (no space left, a quota, a file size limit, a disk gone
    read-only): the run stopped there; the message (one line) names the file, that room must be made,
    and the ``resume=`` that finishes the run. The CLI prints it and exits :attr:`ExitCode.WRITE_FAILED`."""


@contextmanager
def keyed(keys: Mapping[str, str], default: str) -> Iterator[None]:
    """Turn a core :class:`ArgumentError` raised inside the block into a ConfigError naming the key.

    ``keys`` maps the core's argument names to config keys; unknown arguments map to ``default``.
    """
    try:
        yield
    except ArgumentError as err:
        raise ConfigError(f"{keys.get(err.argument, default)}: {err.message}") from err


def shown(value: object, limit: int = 60) -> str:
    """``value`` as a refusal quotes it: at most ``limit`` characters (a 5,000-digit seed is shown by its
    first digits and its length)."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}... ({len(text)} characters)"


def resume_shell_command(run_dir: object) -> str:
    """The command that finishes the run (or the sweep) in ``run_dir``, for the user to copy into a shell:
    the directory quoted, so that a space, a quote, or a sweep job's ``,`` and ``[...]`` (a glob to the
    shell) stay in the one argument ``resume=<run_dir>``."""
    return f"python scripts/train.py resume={shlex.quote(str(run_dir))}"


@contextmanager
def console_warnings() -> Iterator[None]:
    """dlnlab's warnings (:class:`~dlnlab.errors.DlnlabWarning`) on stderr as one line each,
    ``warning: <message>``, each text once per place that raises it; other warnings as Python shows
    them. The user's own filters keep precedence (``default`` is appended after them); on exit the
    filters and ``warnings.showwarning`` are restored."""
    with warnings.catch_warnings():
        warnings.filterwarnings("default", category=DlnlabWarning, append=True)  # resets "once" per run
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            if not issubclass(category, DlnlabWarning):
                shown(message, category, filename, lineno, file, line)
                return
            stream = file or sys.stderr
            stream.write(f"warning: {message}\n")
            stream.flush()

        warnings.showwarning = show
        yield
