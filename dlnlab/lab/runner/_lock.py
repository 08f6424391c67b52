"""One process at a time in a run directory: the lock a run or a resume holds while it works.

``<run dir>/.lock`` is locked with ``flock`` (exclusive, non-blocking) by the run from its first file to
its end, and by ``resume`` before it reads anything; a second resume (or a resume of a run still going)
is refused with one line naming the holder (its pid, host and start, written into the file). The file
is removed when the lock is released. The kernel drops the lock when the last process holding it ends,
so a lock file left by a killed run is free: nothing stale to clean. The run's forked workers
(recorders, figures) share the lock: while a worker of a killed run still writes its series, the
directory stays locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from dlnlab.lab.config import ConfigError

__all__ = ["RunLock", "LOCK_NAME", "lock_holder"]

LOCK_NAME = ".lock"


class RunLock:
    """The lock of one run directory, held until :meth:`release` (or the process ends)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    @classmethod
    def acquire(cls, run_dir: str | Path, key: str) -> RunLock:
        """Lock ``run_dir`` or refuse (ConfigError naming ``key``) if another process holds it."""
        path = Path(run_dir) / LOCK_NAME
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise ConfigError(f"{key}: cannot lock {run_dir} ({err.strerror})") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConfigError(
                    f"{key}: {run_dir} is in use by {_describe(lock_holder(run_dir))}; one process at a "
                    "time works in a run directory: wait for it to end, or stop it first"
                ) from None
            if _same_file(fd, path):
                break
            os.close(fd)  # its holder removed the file as we opened it: lock the new one
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Remove the lock file (a finished run leaves none; a killed one leaves it, free) and unlock."""
        if self._fd is not None:
            if _same_file(self._fd, self.path):
                self.path.unlink()
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (the lock is removed at release, so a
    process that opened the old file must not take its lock for the directory's)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def lock_holder(run_dir: str | Path) -> dict | None:
    """Who holds the run directory's lock ({pid, host, started} as written, {} if unreadable), or None
    when nobody does (no run works there now: one whose summary still says ``running`` was killed)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(os.pread(fd, 4096, 0).decode())
            except (OSError, ValueError):
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process"
    return f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('started')})"
