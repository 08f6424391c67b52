"""SIGINT and SIGTERM end a run cleanly: what is recorded is written, the summary says so.

:func:`install` makes both signals raise :class:`Interrupted` (a KeyboardInterrupt) in the main thread,
so the flow, the SGD series and the analysis stop where they are and the lab's usual interrupt path
saves the running series and writes ``summary.json``. Inside :func:`deferred` (file writes) the signal
is held until the block ends, so no file is left half-written. After the first signal further ones are
ignored while the run shuts down (a SIGKILL still ends it at once), and :func:`ignore_until_exit` keeps
them ignored through the interpreter's own exit (Python resets a handler it installed to the default,
which kills the process, when it finalises; an ignored signal stays ignored).

A KeyboardInterrupt raised by the handler can be lost: Python prints and drops an exception raised in a
weakref callback, a ``__del__`` or a garbage-collector callback, which is where the handler runs if the
signal arrives while one executes. The flag stays set, so the run polls it too: :func:`check` at every
stage boundary, the solvers' and the SGD chunks' stop tests.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "Interrupted",
    "install",
    "uninstall",
    "installed",
    "deferred",
    "hold",
    "release",
    "received",
    "reset",
    "check",
    "exit_code",
    "ignore_until_exit",
    "on_first_signal",
    "note",
    "in_forked_child",
]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised by the handler; ``signum`` is the signal (SIGINT or SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_state: dict = {
    "depth": 0, "pending": None, "received": None, "previous": None, "installs": 0, "on_first": [],
}  # fmt: skip


def _handler(signum: int, frame) -> None:
    if _state["received"] is not None:  # shutting down already: let it finish writing
        return
    signum = _first_arrived(signum)
    _state["received"] = signum
    for call in list(_state["on_first"]):  # e.g. a sweep hands the signal on to its jobs' processes
        call(signum)
    if _state["depth"]:
        _state["pending"] = signum
        return
    raise Interrupted(signum)


def _first_arrived(signum: int) -> int:
    """The signal that arrived first. Python runs the handlers of the signals that came while it could
    not (a long C call, a blocked mask) in signal-number order, SIGINT (2) before SIGTERM (15); the
    wakeup pipe, written by the C-level handler as each signal arrives, keeps their order."""
    fd = _state.get("wakeup_read")
    if fd is None or _state.get("wakeup_pid") != os.getpid():  # a forked child: the pipe is its parent's
        return signum
    try:
        arrived = os.read(fd, 512)
    except (BlockingIOError, OSError):
        return signum
    return next((b for b in arrived if b in SIGNALS), signum)


def _open_wakeup() -> None:
    """A non-blocking pipe for :func:`signal.set_wakeup_fd` (the previous one is put back later)."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    try:
        previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except (ValueError, OSError):  # not the main thread of the main interpreter
        os.close(r)
        os.close(w)
        return
    _state.update(wakeup_read=r, wakeup_write=w, wakeup_previous=previous, wakeup_pid=os.getpid())


def _close_wakeup() -> None:
    if _state.get("wakeup_read") is None or _state.get("wakeup_pid") != os.getpid():
        return
    signal.set_wakeup_fd(_state["wakeup_previous"])
    os.close(_state.pop("wakeup_read"))
    os.close(_state.pop("wakeup_write"))


def install() -> None:
    """Route SIGINT and SIGTERM to :class:`Interrupted` (main thread only; elsewhere a no-op).

    Calls nest: each :func:`install` is undone by one :func:`uninstall`, the outermost restoring the
    handlers found at the first call.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if _state["installs"] == 0:
        _state["previous"] = {s: signal.getsignal(s) for s in SIGNALS}
        _open_wakeup()
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
        _close_wakeup()
    else:
        for s in SIGNALS:
            signal.signal(s, _handler)


def installed() -> int:
    """How many :func:`install` calls are in force (0: the lab's handlers are not installed)."""
    return _state["installs"]


def reset() -> None:
    """Forget a received signal (before the next run in the same process)."""
    _state.update(depth=0, pending=None, received=None)
    _first_arrived(0)  # and the pipe's record of it


def note(signum: int) -> None:
    """Count a signal that another process of the run got (a series worker) as this process's, as if it
    had come inside :func:`deferred`: noted, never raised; the first one counts."""
    if _state["received"] is None:
        _state["received"] = signum


def in_forked_child() -> None:
    """In a process just forked from a run's (a series worker): forget the parent's signal state (a
    signal it had noted, the depth of its :func:`deferred` blocks) and its wakeup pipe, keep the
    handler. The handlers' first-signal calls are the parent's too (they hand a signal on to its
    children)."""
    reset()
    _state["on_first"] = []
    if _state.get("wakeup_read") is not None and _state.get("wakeup_pid") != os.getpid():
        try:
            signal.set_wakeup_fd(-1)
        except (ValueError, OSError):  # not the main thread
            pass


def received() -> int | None:
    """The signal that interrupted the run, or None."""
    return _state["received"]


def check() -> None:
    """Raise :class:`Interrupted` if a signal was received (also one whose exception Python dropped)."""
    if _state["received"] is not None and not _state["depth"]:
        raise Interrupted(_state["received"])


def on_first_signal(call) -> None:
    """Call ``call(signum)`` in the handler on the first signal, before it raises (None: forget them)."""
    if call is None:
        _state["on_first"] = []
    else:
        _state["on_first"].append(call)


def ignore_until_exit() -> None:
    """Ignore SIGINT and SIGTERM from now on (main thread only): the process is about to exit, with
    everything written; a signal now would only turn its exit code into a kill."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)


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
    hold()
    try:
        yield
    finally:
        _state["depth"] -= 1
    _raise_pending(raise_at_end)


def hold() -> None:
    """Hold SIGINT / SIGTERM until the matching :func:`release`: :func:`deferred` for a span that is no
    block of one function (Hydra's own composition, from before its call to the task to the task's start)."""
    _state["depth"] += 1


def release() -> None:
    """End a :func:`hold`; the outermost raises :class:`Interrupted` for a signal that came during it."""
    _state["depth"] -= 1
    _raise_pending(True)


def _raise_pending(raise_it: bool) -> None:
    if not _state["depth"] and _state["pending"] is not None:
        signum, _state["pending"] = _state["pending"], None
        if raise_it:
            raise Interrupted(signum)


@contextmanager
def blocked_in_children() -> Iterator[None]:
    """Block both signals around a fork, so a child can ignore them before one arrives. A signal that
    came just before (its handler not yet run) is only noted in the block: raised inside the fork's
    own callbacks, Python would print and drop it (found: in logging's at-fork lock release)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        with deferred(raise_at_end=False):
            yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
