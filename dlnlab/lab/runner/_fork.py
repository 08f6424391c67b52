"""What the lab's forked processes share (the series units of :mod:`dlnlab.lab.runner._parallel`, the
flow's solve ahead of Lightning's import in :mod:`dlnlab.lab.runner._ahead`); imports no Lightning."""

from __future__ import annotations

import multiprocessing
import os
import signal

__all__ = ["POLL_S", "available_cores", "asked_workers", "can_fork", "end_with_parent", "kill"]

POLL_S = 0.2  # how often the driver looks for a signal while it waits for its workers


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; a container's or taskset's limit counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def asked_workers(cfg) -> int:
    """The worker processes a run may use: ``run.workers``, or (null) the cores this process may use."""
    return available_cores() if cfg.run.workers is None else int(cfg.run.workers)


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def kill(pid: int, sig: int) -> None:
    """Signal ``pid``, which may have just ended."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def end_with_parent() -> None:
    """SIGTERM to this worker when the driver ends (Linux's PR_SET_PDEATHSIG): a killed run's worker
    saves its series as at a signal and ends, rather than computing on for nobody."""
    import ctypes

    parent = multiprocessing.parent_process().pid
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux: it runs its unit to the end
        return
    if os.getppid() != parent:  # the driver died before the call
        os.kill(os.getpid(), signal.SIGTERM)
