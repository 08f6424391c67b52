"""The scripts' command-line contract (aggregate, plot, figure1, limit), the same as ``train.py``'s.

A bad argument exits 2 with one line, ``error: <argument>: <what is wrong and what is allowed>``,
before any work: no traceback, nothing written. argparse already exits 2 on a bad argument;
:class:`ScriptParser` makes its message one line, and the type functions below say what is allowed.
Checks that need two arguments at once (``--replot`` needs ``--runs``) go through
:meth:`ScriptParser.refuse` after parsing, still before any work.

Only the standard library is imported when this module loads (:func:`checked_config` imports Hydra
and the lab when called), so a script refuses a bad argument before numpy, torch or matplotlib are
loaded: a refusal in a subprocess takes about 0.1 s where the first heavy import takes seconds.

Outputs: a file the user names (``--out figure.png``, ``--csv t.csv``) may replace an existing file
(the user asked for it); a directory the user names must be new or empty; a default output is a
fresh directory (:func:`fresh_dir`), so no call overwrites another's results.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn

__all__ = [
    "ScriptParser",
    "integer",
    "positive",
    "existing_dir",
    "output_file",
    "output_dir",
    "fresh_dir",
    "cannot_create",
    "cannot_write_in",
    "stamped",
    "say",
    "checked_config",
    "run_script",
    "FIGURE_SUFFIXES",
]

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")  # what matplotlib's savefig writes from the extension


class ScriptParser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: <argument>: <message>``, exit 2) and no abbreviations
    (``--mem`` is not taken for ``--members``: a typo is refused, not guessed)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self._one_line(message)}\n")

    def refuse(self, argument: str, message: str) -> NoReturn:
        """Refuse a parsed argument (a check across arguments, or on the disk): one line, exit 2."""
        self.error(f"{argument}: {message}")

    def check(self, argument: str, parse: Callable[[str], object], text: str):
        """``parse(text)`` with one of the type functions below, refusing ``argument`` if it fails."""
        try:
            return parse(text)
        except argparse.ArgumentTypeError as err:
            self.refuse(argument, str(err))

    def _one_line(self, message: str) -> str:
        text = " ".join(str(message).split())
        text = re.sub(r"^argument ([^:]+): ", r"\1: ", text)  # argparse's "argument --dpi: ..."
        if m := re.fullmatch(r"unrecognized arguments: (.*)", text):
            return f"{m.group(1)}: no such argument; allowed: {', '.join(self._options())} (see --help)"
        if m := re.fullmatch(r"the following arguments are required: (.*)", text):
            return f"{m.group(1)}: missing (see --help)"
        return text

    def _options(self) -> list[str]:
        return [s for a in self._actions for s in a.option_strings if s.startswith("--")]


def _fail(message: str) -> NoReturn:
    raise argparse.ArgumentTypeError(message)


def integer(low: int, high: int, what: str = "") -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (``what`` says what it counts, for the message)."""
    allowed = f"an integer from {low} to {high}{f' ({what})' if what else ''}"

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:  # not an integer, or more than Python's 4300 digits
            _fail(f"expected {allowed}, got {_show(text)}")
        if not low <= value <= high:
            _fail(f"expected {allowed}, got {_show(text)}")
        return value

    parse.__name__ = "integer"
    return parse


def positive(what: str, below: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number above 0 (and under ``below``); ``what`` says what it is."""
    allowed = f"a number above 0{f' and below {below:g}' if below is not None else ''} ({what})"

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            _fail(f"expected {allowed}, got {_show(text)}")
        if not (math.isfinite(value) and value > 0 and (below is None or value < below)):
            _fail(f"expected {allowed}, got {_show(text)}")
        return value

    parse.__name__ = "number"
    return parse


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _nonempty(text: str) -> Path:
    if not text.strip():
        _fail("empty path; give a path")
    if "\0" in text:
        _fail(f"{_show(text)} holds a NUL character; give a path")
    return Path(text).expanduser()


def existing_dir(text: str) -> Path:
    """An argparse type: a directory that exists."""
    path = _nonempty(text)
    try:
        if path.is_dir():
            if not os.access(path, os.R_OK | os.X_OK):
                _fail(f"{_show(text)} cannot be read (permission denied)")
            return path
        exists = os.path.lexists(path)
    except OSError as err:  # a name too long for the file system, say
        _fail(f"{_show(text)}: {err.strerror}")
    if not exists:
        _fail(f"no such directory {_show(text)}")
    if path.is_symlink() and not path.exists():
        _fail(f"{_show(text)} is a broken symbolic link")
    _fail(f"{_show(text)} is not a directory")


def cannot_write_in(directory: Path) -> str | None:
    """Why no file can be made in the existing ``directory``, or None. A probe directory is made and
    removed there: it answers what permission bits cannot (root, a read-only mount, /proc)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".dlnlab-probe-", dir=directory))
    except OSError as err:
        return f"{str(directory)!r} is not writable ({err.strerror})"
    return None


def cannot_create(path: Path) -> str | None:
    """Why ``path`` (and its missing parents) cannot be created, or None: the nearest existing
    ancestor must be a directory this process can write in."""
    anc = path.absolute().parent
    while not os.path.lexists(anc) and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        return f"{_show(str(path))} cannot be created: {str(anc)!r} is not a directory"
    why = _too_long(path.absolute(), anc) or cannot_write_in(anc)
    return f"{_show(str(path))} cannot be created: {why}" if why else None


def _too_long(path: Path, anc: Path) -> str | None:
    """A name or path longer than the file system under ``anc`` takes (255 and 4096 bytes on Linux)."""
    name_max, path_max = os.pathconf(anc, "PC_NAME_MAX"), os.pathconf(anc, "PC_PATH_MAX")
    for part in path.relative_to(anc).parts:
        if len(os.fsencode(part)) > name_max:
            return f"a name in it is longer than {name_max} bytes"
    if len(os.fsencode(str(path))) >= path_max:
        return f"it is longer than {path_max} bytes"
    return None


def _writable_parent(path: Path, text: str) -> None:
    why = cannot_create(path)
    if why:
        _fail(why)


def output_file(suffixes: Iterable[str]) -> Callable[[str], Path]:
    """An argparse type: a file to write with one of ``suffixes``; an existing file is replaced (the
    user named it), a directory is refused, missing parent directories are made when writing."""
    allowed = tuple(suffixes)

    def parse(text: str) -> Path:
        path = _nonempty(text)
        if path.suffix.lower() not in allowed:
            _fail(f"{_show(text)}: the file name must end in {' or '.join(allowed)}")
        try:
            if path.is_dir():
                _fail(f"{_show(text)} is a directory; give a file name ending in {' or '.join(allowed)}")
            if path.exists() and not path.is_file():
                _fail(f"{_show(text)} exists and is not a regular file")
            _writable_parent(path, text)  # replaced by renaming a new file onto it: the folder counts
        except OSError as err:
            _fail(f"{_show(text)}: {err.strerror}")
        return path

    parse.__name__ = "output file"
    return parse


def output_dir(text: str) -> Path:
    """An argparse type: a directory to write into, new or empty (never another call's results)."""
    path = _nonempty(text)
    try:
        if os.path.lexists(path):
            if not path.is_dir():
                _fail(f"{_show(text)} exists and is not a directory; give a new or empty directory")
            if any(path.iterdir()):
                _fail(f"{_show(text)} is not empty; give a new or empty directory (nothing is overwritten)")
            why = cannot_write_in(path)
            if why:
                _fail(why)
        else:
            _writable_parent(path, text)
    except OSError as err:
        _fail(f"{_show(text)}: {err.strerror}")
    return path


def fresh_dir(base: Path) -> Path:
    """Create and return a new directory: ``base``, else ``base_1``, ``base_2``, ... (``os.mkdir`` fails
    when the name is taken, so two calls at once never share one). The names follow the lab's run
    directories; ``rundir.claim_directory`` is not reused because it memoises per process (Hydra
    resolves a run directory more than once), so a second call in one process would get the same one."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(100_000):
        candidate = base if i == 0 else base.with_name(f"{base.name}_{i}")
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        return candidate
    raise RuntimeError(f"no free directory next to {base}")


def stamped(parent: Path) -> Path:
    """``parent/<date>/<time>``, the pattern of the lab's own run directories."""
    return parent / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S")


def say(text: str) -> None:
    """A line on stderr (what was skipped, where output goes when not on stdout)."""
    print(text, file=sys.stderr, flush=True)


def checked_config(conf_dir: Path, overrides: list[str], dir_option: str = "--runs"):
    """Compose ``train.yaml`` with ``overrides`` and run the lab's own checks on it (``prepare``), as
    ``train.py``'s preflight does: the config, or None and the one-line reason it is refused. Nothing
    is written. Hydra's own settings (``hydra.*``) are refused: a script sets the run directories,
    given by its option ``dir_option``, which the refusal names."""
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0].split("/")[0] in ("hydra", "resume"):
            why = (
                f"{key}: this script sets its runs' directories itself: give one with {dir_option}; "
                "any key but hydra.* and resume is allowed"
            )
            return None, why
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from dlnlab.lab.cli import describe_hydra_error
    from dlnlab.lab.config import ConfigError, prepare

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
            cfg = compose(config_name="train", overrides=list(overrides))
        prepare(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        return None, describe_hydra_error(err)
    except ConfigError as err:
        return None, str(err)
    except Exception as err:  # noqa: BLE001 - a value the lab's checks do not catch yet: still no run
        return (
            None,
            f"the lab's checks failed on it ({type(err).__name__}: {' '.join(str(err).split())[:200]})",
        )
    finally:
        GlobalHydra.instance().clear()
    return cfg, None


def run_script(main: Callable[[], int]) -> NoReturn:
    """``sys.exit(main())``, with one line instead of a traceback when the script is stopped: 130 for
    Ctrl+C (SIGINT) outside a lab run (a lab run handles its own signals and returns 130 / 143), 141
    (128 + SIGPIPE, what a shell shows for a program killed by it) when the reader of stdout goes away
    (``| head``; Python's docs' advice for BrokenPipeError). Every file is written atomically, so
    those written so far are complete."""
    from dlnlab.lab.config import console_warnings

    try:
        with console_warnings():
            code = main()
        sys.stdout.flush()
    except KeyboardInterrupt:
        print("interrupted (SIGINT); the files written so far are complete", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        code = 141
    sys.exit(code)
