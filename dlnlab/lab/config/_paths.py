"""Paths the file system cannot name, refused by length before anything is opened or made.

The kernel refuses a name longer than NAME_MAX bytes and a path longer than PATH_MAX bytes with
``OSError: File name too long``, from wherever the path is first used: deep inside Hydra or numpy, as
a trace. Both limits are asked of the file system itself (``os.pathconf`` on the nearest existing
directory; 255 and 4096 on Linux), and lengths are counted in bytes of the file system's encoding,
so a name of 100 three-byte characters is 300 bytes. A run directory also needs room for what a run
writes inside it (``RUN_DIR_RESERVE`` bytes: ``tensorboard/<series>/events.out.tfevents.<time>.<host>...``).
"""

from __future__ import annotations

import os
from pathlib import Path

from dlnlab.lab.config._errors import ConfigError, shown

__all__ = ["check_length", "RUN_DIR_RESERVE", "name_limits"]

RUN_DIR_RESERVE = 256  # the longest path a run writes under its directory is about 170 bytes


def _nearest_existing(path: Path) -> Path:
    anc = path
    while anc != anc.parent:
        try:
            if anc.is_dir():
                return anc
        except OSError:  # the name itself is too long to look up
            pass
        anc = anc.parent
    return anc


def name_limits(path: Path) -> tuple[int, int]:
    """(NAME_MAX, PATH_MAX) of the file system ``path`` would be on."""
    anc = _nearest_existing(path.absolute())
    try:
        return os.pathconf(anc, "PC_NAME_MAX"), os.pathconf(anc, "PC_PATH_MAX")
    except (OSError, ValueError):  # pragma: no cover - a platform without pathconf: POSIX's minimums
        return 255, 4096


def check_length(path: str | os.PathLike, key: str, reserve: int = 0, what: str = "the path") -> None:
    """Refuse ``path`` (naming ``key``) when one of its names is longer than NAME_MAX bytes or the
    whole, made absolute and with ``reserve`` bytes more for what goes inside it, is longer than
    PATH_MAX - 1 bytes."""
    p = Path(os.path.expanduser(os.fspath(path)))
    name_max, path_max = name_limits(p)
    for part in p.parts:
        size = len(os.fsencode(part))
        if size > name_max:
            raise ConfigError(
                f"{key}: {what} has a name of {size} bytes ({shown(part, 40)}); this file system allows at "
                f"most {name_max} bytes per name (and {path_max} per path): shorten it"
            )
    size = len(os.fsencode(str(p.absolute()))) + reserve
    if size > path_max - 1:
        extra = f" with the {reserve} bytes a run writes inside it" if reserve else ""
        raise ConfigError(
            f"{key}: {what} is {size - reserve} bytes long as an absolute path{extra}, above this file "
            f"system's limit of {path_max - 1} bytes per path: shorten it"
        )
