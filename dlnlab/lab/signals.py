"""SIGINT and SIGTERM end a run cleanly: what is recorded is written, the summary says so.

:func:`install` makes both signals raise :class:`Interrupted` (a KeyboardInterrupt) in the main thread,
so the flow, the SGD series and the analysis stop where they are and the lab's usual interrupt path
saves the running series and writes ``summary.json``. Inside :func:`deferred` (file writes) the signal
is held until the block ends, so no file is left half-written. After the first signal further ones are
ignored while the run shuts down (a SIGKILL still ends it at once).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Interrupted", "install", "uninstall", "deferred", "received", "reset", "exit_code"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised by the handler; ``signum`` is the signal (SIGINT or SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_state: dict = {"depth": 0, "pending": None, "received": None, "previous": None, "installs": 0}


def _handler(signum: int, frame) -> None:
    if _state["received"] is not None:  # shutting down already: let it finish writing
        return
    _state["received"] = signum
    if _state["depth"]:
        _state["pending"] = signum
        return
    raise Interrupted(signum)


def install() -> None:
    """Route SIGINT and SIGTERM to :class:`Interrupted` (main thread only; elsewhere a no-op).

    Calls nest: each :func:`install` is undone by one :func:`uninstall`, the outermost restoring the
    handlers found at the first call.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if _state["installs"] == 0:
        _state["previous"] = {s: signal.getsignal(s) for s in SIGNALS}
    _state["installs"] += 1
    for s in SIGNALS:  # again on every call: Lightning may have replaced them meanwhile
        signal.signal(s, _handler)


def uninstall() -> None:
    """Undo one :func:`install`; the outermost restores the original handlers."""
    if threading.current_thread() is not threading.main_thread() or _state["installs"] == 0:
        return
    _state["installs"] -= 1
    if _state["installs"] == 0:
        for s, h in _state["previous"].items():
            signal.signal(s, h)
        _state["previous"] = None
    else:
        for s in SIGNALS:
            signal.signal(s, _handler)


def reset() -> None:
    """Forget a received signal (before the next run in the same process)."""
    _state.update(depth=0, pending=None, received=None)


def received() -> int | None:
    """The signal that interrupted the run, or None."""
    return _state["received"]


def exit_code(default: int = 130) -> int:
    """128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    sig = _state["received"]
    return 128 + int(sig) if sig is not None else default


@contextmanager
def deferred(raise_at_end: bool = True) -> Iterator[None]:
    """Hold SIGINT / SIGTERM until the block ends, then raise :class:`Interrupted`.

    With ``raise_at_end=False`` the block is shielded: a signal during it is only noted
    (:func:`received`), and the caller stops at its next check.
    """
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    if not _state["depth"] and _state["pending"] is not None:
        signum, _state["pending"] = _state["pending"], None
        if raise_at_end:
            raise Interrupted(signum)


@contextmanager
def blocked_in_children() -> Iterator[None]:
    """Block both signals around a fork, so a child can ignore them before one arrives."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
