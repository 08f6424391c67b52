"""One process at a time in a run directory: the lock a run or a resume holds while it works.

``<run dir>/.lock`` is locked with ``flock`` (exclusive, non-blocking) by the run from its first file to
its end, and by ``resume`` before it reads anything; a second resume (or a resume of a run still going)
is refused with one line naming the holder (its pid, host and start, written into the file). The file
is removed when the lock is released. The kernel drops the lock when the last process holding it ends,
so a lock file left by a killed run is free: nothing stale to clean. The run's forked workers
(recorders, figures) share the lock: while a worker of a killed run still writes its series, the
directory stays locked.

A run given an explicit ``hydra.run.dir`` claims it in the command line's check, before Hydra writes
its ``.hydra/`` there (:func:`claim_run_dir`): the directory is made if new, locked, and only then
checked to hold nothing but the lock. Of two runs started together with the same directory exactly
one gets the lock of an empty directory; the other is refused having written nothing there (before,
both passed the check, both Hydras wrote ``.hydra/``, and the loser's overrides were left beside the
winner's results). The run (:func:`dlnlab.lab.runner.run`) takes the claim over (:func:`take_claim`);
one no run took is released when the command line ends (:func:`release_claims`).

A sweep's explicit ``hydra.sweep.dir`` is claimed the same way, and its process keeps the claim until
the command line ends (no job takes it: each job locks its own directory below): of two sweeps started
together with one directory, one runs and the other is refused (before, both wrote their jobs, their
``multirun.yaml`` and their ``sweep_summary.json`` into it). A sweep whose directory was made fresh
(``dlnlab_unique``) locks it when it starts (:func:`hold_dir`), so that every running sweep holds its
directory's lock: ``resume=<sweep dir>`` is refused while the sweep runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from dlnlab.lab.config import ConfigError

__all__ = ["RunLock", "LOCK_NAME", "lock_holder", "claim_run_dir", "take_claim", "release_claims", "hold_dir"]

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


# (st_dev, st_ino) of a claimed directory -> (its lock, whether the claim made the directory)
_CLAIMS: dict[tuple[int, int], tuple[RunLock, bool]] = {}


def _identity(path: str | Path) -> tuple[int, int]:
    """A directory's (device, inode): the same directory however it is named."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def claim_run_dir(run_dir: str | Path, key: str) -> None:
    """Make ``run_dir`` if it is new, lock it and refuse (ConfigError naming ``key``) unless it holds
    nothing but the lock: the check comes after the lock, so no other run can write there between the
    two. Held until :func:`take_claim` hands it to the run or :func:`release_claims` lets it go."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True)
        made = True
    except FileExistsError:
        made = False
    except OSError as err:
        raise ConfigError(f"{key}: {run_dir} cannot be created ({err.strerror})") from err
    try:
        lock = RunLock.acquire(run_dir, key)
    except ConfigError as err:
        holder = lock_holder(run_dir)
        if holder is None:
            raise
        raise ConfigError(
            f"{key}: {run_dir} is taken by {_describe(holder)}, a {_what(key)} started there; a run never writes "
            f"into another's directory: choose a new {key} (or leave it out for a fresh one under outputs/)"
        ) from err
    held = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME)
    if held:
        lock.release()
        raise ConfigError(
            f"{key}: {run_dir} is not empty (it holds {', '.join(held[:5])}); a run never writes into "
            f"another's directory: choose a new {key} (or leave it out for a fresh one under outputs/)"
        )
    _CLAIMS[_identity(run_dir)] = (lock, made)


def _what(key: str) -> str:
    return "sweep" if key == "hydra.sweep.dir" else "run"


def hold_dir(run_dir: str | Path, key: str) -> None:
    """Lock ``run_dir`` (made if new) until :func:`release_claims`, unless a claim of this process holds
    it already (ConfigError naming ``key`` if another process holds it)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    if _identity(run_dir) not in _CLAIMS:
        _CLAIMS[_identity(run_dir)] = (RunLock.acquire(run_dir, key), False)


def take_claim(run_dir: str | Path) -> RunLock | None:
    """The lock :func:`claim_run_dir` holds on ``run_dir`` (the same directory, however named), now the
    caller's to release; None when this process claimed no such directory."""
    try:
        claim = _CLAIMS.pop(_identity(run_dir), None)
    except OSError:
        return None
    return claim[0] if claim is not None else None


def release_claims() -> None:
    """Release the claims no run took (Hydra failed before the job started): the lock goes, and a
    directory the claim made goes too while it is empty."""
    while _CLAIMS:
        _, (lock, made) = _CLAIMS.popitem()
        lock.release()
        if made:
            with contextlib.suppress(OSError):
                lock.path.parent.rmdir()
