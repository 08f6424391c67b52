"""The preflight's checks of the command line's text and of where a run will write, before Hydra runs.

* :func:`check_override_text`: each override is refused before Hydra's parser sees it when it would
  stall or break the parser: more than ``MAX_ITEMS`` items in a list or a sweep (the parser's time
  grows with the square of the items: measured 0.13 s for 1,000, 0.87 s for 3,000, 14 s for 10,000 and
  76 s for 20,000, and the preflight and Hydra each parse the command line), more than ``MAX_CHARS``
  characters, or a key longer than a file name (Hydra looks a key up as a config group, a directory
  and a ``.yaml`` file: ``OSError: File name too long`` otherwise).
* :func:`check_output_dir`: ``hydra.run.dir`` (``hydra.sweep.dir``) resolves, can be made, is new or
  empty, and is short enough for what a run writes in it; :func:`check_sweep_subdir` does the same
  for each job's directory of a sweep (named after its overrides).
* :func:`check_hydra_files`: ``hydra.output_subdir`` and ``hydra.job.name`` name files inside the run
  directory.
* :func:`check_relative_paths`: with ``hydra.job.chdir=true`` a job runs inside its run directory, so
  a relative ``data.path`` or ``init.path`` would be read from there.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from dlnlab.lab.config._errors import ConfigError, shown
from dlnlab.lab.config._launcher import check_launcher
from dlnlab.lab.config._paths import RUN_DIR_RESERVE, check_length, name_limits
from dlnlab.lab.config._schema import describe_omegaconf_error
from dlnlab.rundir import signals

__all__ = [
    "MAX_ITEMS",
    "MAX_CHARS",
    "check_override_text",
    "check_output_dir",
    "check_sweep_subdir",
    "check_hydra_files",
    "check_relative_paths",
    "check_run_dir",
    "check_launcher",
    "check_job_dirs",
    "HYDRA_FILES",
    "output_dir",
]

MAX_ITEMS = 1000  # items of one override's list or sweep
MAX_CHARS = 100_000  # characters of one override
CONFIG_SUFFIX = ".yaml"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def check_override_text(overrides: list[str], conf_dir: Path) -> None:
    """Refuse an override too long for Hydra's parser or a key too long for a file name (one line
    naming the key and the allowed maximum)."""
    name_max = name_limits(conf_dir)[0] - len(CONFIG_SUFFIX)
    for o in overrides:
        key = _key(o)
        size = len(os.fsencode(key))
        if size > name_max:
            raise ConfigError(
                f"{shown(key, 40)}: a key of {size} bytes; allowed: at most {name_max} (Hydra looks a key up as "
                f"a config file name); no key of this config is longer than 30 characters"
            )
        if len(o) > MAX_CHARS:
            raise ConfigError(
                f"{shown(key, 40)}: the override is {len(o):,} characters long; allowed: at most {MAX_CHARS:,} "
                "per override"
            )
        items = o.count(",") + 1
        if items > MAX_ITEMS:
            raise ConfigError(
                f"{shown(key, 40)}: the override has {items:,} items; allowed: at most {MAX_ITEMS:,} per list or "
                f"sweep on the command line (Hydra's parser takes time growing with their square: a minute at "
                "20,000); put a longer list in a config file (conf/experiment/<name>.yaml)"
            )


_UNIQUE = re.compile(r"\$\{dlnlab_unique:(.*)\}", re.S)


def _check_creatable(path: Path, key: str, *, claimed: bool = False) -> None:
    """Hydra makes ``path`` and its parents (``claimed``: the resolver makes ``path`` or a sibling
    ``path_1``, ...): the nearest existing one must be a directory we can write in. A probe
    directory made and removed there answers what permissions cannot (root in /proc, a full or
    read-only disk); nothing is left behind."""
    path = path.absolute()
    anc = path.parent if claimed else path
    while not os.path.lexists(anc) and anc != anc.parent:
        anc = anc.parent
    verb = "cannot be written" if anc == path else "cannot be created"
    hint = f"choose a {key} in a writable directory (or leave it out for a fresh one under outputs/)"
    if not anc.is_dir():
        raise ConfigError(f"{key}: {path} {verb}: {anc} is not a directory; {hint}")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {path} {verb}: {anc} is not writable; {hint}")
    try:
        with signals.deferred():
            os.rmdir(tempfile.mkdtemp(prefix=".dlnlab-probe-", dir=anc))
    except OSError as err:
        raise ConfigError(
            f"{key}: {path} {verb}: no directory can be made in {anc} ({err.strerror}); {hint}"
        ) from err


def _resolved(text_of, key: str) -> str:
    """``text_of()`` (an interpolation's value), a failure to resolve it named by ``key``."""
    try:
        return str(text_of())
    except OmegaConfBaseException as err:
        raise ConfigError(f"{key}: {describe_omegaconf_error(err).split(': ', 1)[-1]}") from err


def output_dir(cfg: DictConfig, multirun: bool) -> tuple[str, Path, bool]:
    """(key, the run's or sweep's directory, whether dlnlab_unique claims it fresh)."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    node = cfg.hydra.sweep if multirun else cfg.hydra.run
    raw = str(OmegaConf.to_container(node, resolve=False)["dir"]).strip()
    unique = _UNIQUE.fullmatch(raw)
    if unique:
        base = _resolved(lambda: OmegaConf.create({"base": unique.group(1)}, parent=node).base, key)
        return key, Path(base), True
    return key, Path(_resolved(lambda: node.dir, key)), "dlnlab_unique" in raw


def check_output_dir(cfg: DictConfig, multirun: bool) -> None:
    """hydra.run.dir (or hydra.sweep.dir) must resolve and be creatable, and new or empty: never another
    run's."""
    key, path, claimed = output_dir(cfg, multirun)
    check_length(path, key, reserve=RUN_DIR_RESERVE, what="the run directory")
    if claimed:  # made fresh by the resolver
        _check_creatable(path, key, claimed=True)
        return
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{key}: {path} is a file, not a directory: choose a new {key} (or leave it out for a fresh "
            "one under outputs/)"
        )
    if path.exists() and any(path.iterdir()):
        raise ConfigError(
            f"{key}: {path} already exists and is not empty; a run never writes into another's "
            f"directory: choose a new {key} (or leave it out for a fresh one under outputs/)"
        )
    _check_creatable(path, key)


def check_hydra_files(cfg: DictConfig, multirun: bool) -> None:
    """What Hydra writes in the run directory before the job starts: ``<hydra.output_subdir>/*.yaml``
    (null: nothing) and ``<hydra.job.name>.log``. Both stay inside the run directory, as names the file
    system takes (an absolute or ``..`` output_subdir would write another directory's .hydra/)."""
    key, base, _ = output_dir(cfg, multirun)
    sub = cfg.hydra.get("output_subdir")
    if sub is not None:
        sub = _resolved(lambda: cfg.hydra.output_subdir, "hydra.output_subdir")
        if os.path.isabs(sub) or ".." in Path(sub).parts:
            raise ConfigError(
                f"hydra.output_subdir: {sub!r} is outside the run directory; a run writes only into its own: give "
                "a relative name (the default is .hydra) or null"
            )
        check_length(base / sub / "overrides.yaml", "hydra.output_subdir", RUN_DIR_RESERVE, "Hydra's record")
    name = _resolved(lambda: cfg.hydra.job.name, "hydra.job.name")
    if not name or "/" in name or name in (".", ".."):
        raise ConfigError(
            f"hydra.job.name: {shown(name)!r} is not a file name (Hydra writes <name>.log in the run directory)"
        )
    check_length(base / f"{name}.log", "hydra.job.name", RUN_DIR_RESERVE, "the job's log file")


def check_sweep_subdir(cfg: DictConfig, num: int, taken: dict[str, int] | None = None) -> None:
    """Job ``num``'s directory of a sweep (hydra.sweep.subdir, by default ``<num>_<its overrides>``) must
    be a name and a path the file system takes, with room for what the run writes in it, and no other
    job's (``taken``: the directories of the jobs checked before, which this adds to)."""
    _, base, _ = output_dir(cfg, True)
    with open_dict(cfg):
        cfg.hydra.job.num = num
    subdir = _resolved(lambda: cfg.hydra.sweep.subdir, "hydra.sweep.subdir")
    if taken is not None and taken.setdefault(subdir, num) != num:
        raise ConfigError(
            f"hydra.sweep.subdir: jobs {taken[subdir]} and {num} would both write to {base / subdir}; "
            "make it differ per job, e.g. hydra.sweep.subdir=${hydra.job.num} (the default names each job "
            f"by its number and overrides){_left_out(cfg)}"
        )
    check_length(
        base / subdir, "hydra.sweep.subdir", reserve=RUN_DIR_RESERVE,
        what=f"job {num}'s directory (named after its overrides; hydra.sweep.subdir=${{hydra.job.num}} names it by number)",
    )  # fmt: skip


def _left_out(cfg: DictConfig) -> str:
    """The overrides of the job that ``hydra.job.override_dirname`` leaves out (conf/train.yaml: data.path
    and init.path, whose '/' made nested folders): jobs that differ only in those get one name from it."""
    excluded = OmegaConf.select(cfg, "hydra.job.config.override_dirname.exclude_keys", default=None) or []
    keys = {
        str(o).split("=", 1)[0].lstrip("+~")
        for o in OmegaConf.select(cfg, "hydra.overrides.task", default=[])
    }
    left = [str(k) for k in excluded if str(k) in keys]
    if not left:
        return ""
    return f"; ${{hydra.job.override_dirname}} leaves out {' and '.join(left)} (hydra.job.config.override_dirname.exclude_keys)"


def check_job_dirs(cfg: DictConfig, num: int, multirun: bool, taken: dict[str, int]) -> None:
    """Where job ``num`` of the command line writes: the output directory and Hydra's files (once, for
    the first job), a sweep's job directory and its launcher (``taken``: see :func:`check_sweep_subdir`)."""
    if num == 0:
        check_output_dir(cfg, multirun)
        check_hydra_files(cfg, multirun)
    if multirun:
        check_sweep_subdir(cfg, num, taken)
        check_launcher(cfg)


def check_relative_paths(cfg: DictConfig, chdir: bool) -> None:
    """With hydra.job.chdir=true (``chdir``) the job runs inside its run directory: a relative file path
    would be looked for there (``cfg``: a checked config, its paths given)."""
    if not chdir:
        return
    for group in ("data", "init"):
        node = cfg.get(group)
        path = node.get("path") if isinstance(node, DictConfig) else None
        if isinstance(path, str) and path.strip() and not os.path.isabs(os.path.expanduser(path)):
            raise ConfigError(
                f"{group}.path: {path!r} is relative, and with hydra.job.chdir=true the run starts inside "
                f"its run directory, where it would be looked for; give an absolute path "
                f"({group}.path={os.path.abspath(path)}) or leave hydra.job.chdir=false"
            )


HYDRA_FILES = (
    ".hydra",
    "train.log",
    "run.log",
    "job.json",
)  # what Hydra (and a sweep job's start) writes first


def check_run_dir(out: Path, also: tuple[str, ...] = (), key: str = "hydra.run.dir") -> None:
    """A run never writes into a non-empty directory it did not create (Hydra's own files aside, and
    the names in ``also``: the run's own lock, once it holds it). ``key``: what the caller gave the
    directory as (``output_dir`` for ``run(cfg, output_dir)`` from Python), named in a refusal."""
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"{key}: {out} is a file, not a directory: choose a new {key}")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in HYDRA_FILES + also)
        if foreign:
            raise ConfigError(
                f"{key}: {out} is not empty (it holds {', '.join(foreign[:5])}); a run never writes "
                f"into another's directory: choose a new {key}"
            )
    out.mkdir(parents=True, exist_ok=True)
