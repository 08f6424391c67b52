"""The YAML config files Hydra may read, checked before it reads them, and its YAML errors in one line.

A YAML alias expands to a copy of what it names: seven nested levels of nine aliases (``a: &a [1..9]``,
``b: &b [*a, ..., *a]``, ...) are a 0.5 kB file of 4.8 million values, which OmegaConf turned into config
nodes for 470 s here (about 0.3 ms a value: a list of 20,000 took 6 s). :func:`check_expansion` counts
what each file in the config directories expands to, from PyYAML's node graph (where an alias is the
node it names, counted once per use without being copied), and refuses a file above
``MAX_CONFIG_VALUES``. A file that does not parse is left to Hydra, whose error :func:`describe_yaml_error`
puts in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from dlnlab.lab.config._errors import ConfigError

__all__ = ["MAX_CONFIG_VALUES", "check_expansion", "describe_yaml_error"]

MAX_CONFIG_VALUES = 100_000
MAX_DEPTH, MAX_FILES = 3, 2000  # config groups nest a level or two; a directory of more is not scanned


def _expanded(node, memo: dict[int, int], cap: int) -> int:
    """Values ``node`` expands to (scalars, and one per list or mapping), counting no further than ``cap``."""
    if id(node) in memo:
        return memo[id(node)]
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    for child in children:
        total += _expanded(child, memo, cap)
        if total > cap:
            break
    memo[id(node)] = total
    return total


def _yaml_files(d: Path) -> list[Path]:
    """The .yaml files under ``d`` up to MAX_DEPTH levels down, symlinks not followed into; none when
    there are more than MAX_FILES (``--config-dir=/`` must not make the preflight walk the disk)."""
    found: list[Path] = []
    level = [str(d)]
    for _ in range(MAX_DEPTH + 1):
        nxt: list[str] = []
        for folder in level:
            try:
                with os.scandir(folder) as entries:
                    for e in entries:
                        if e.is_dir(follow_symlinks=False):
                            nxt.append(e.path)
                        elif e.name.endswith(".yaml") and e.is_file():
                            found.append(Path(e.path))
            except OSError:  # unreadable: Hydra cannot read it either
                continue
            if len(found) + len(nxt) > MAX_FILES:
                return []
        level = nxt
    return sorted(found)


# a file's count by (path, mtime, size): a sweep's preflight checks every job, each reading the same 25
# files (14 ms a check here); a file changed since is counted again
_COUNTED: dict[tuple[str, int, int], int] = {}


def _count(path: Path) -> int:
    try:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in _COUNTED:
            with open(path, encoding="utf-8") as f:
                root = yaml.compose(f, Loader=yaml.SafeLoader)
            _COUNTED[key] = _expanded(root, {}, MAX_CONFIG_VALUES) if root is not None else 0
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return 0  # Hydra reports it if the file is used
    return _COUNTED[key]


def check_expansion(dirs: list[Path]) -> None:
    """Refuse a .yaml file in ``dirs`` (their config groups) that expands to more than
    MAX_CONFIG_VALUES values: whether Hydra will read it cannot be known without reading it."""
    for d in dirs:
        for path in _yaml_files(d):
            if _count(path) > MAX_CONFIG_VALUES:
                raise ConfigError(
                    f"{path}: expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases copy what they "
                    f"name); allowed: at most {MAX_CONFIG_VALUES:,} values per config file"
                )


def describe_yaml_error(err: BaseException) -> str:
    """One line for a config file that is not YAML Hydra can read (a syntax error, a Python tag, a
    duplicate key, bytes that are not UTF-8)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"{mark.name} line {mark.line + 1}: not a YAML config Hydra can read: {err.problem}"
    if isinstance(err, UnicodeDecodeError):
        return f"a config file is not UTF-8 text ({err.reason} at byte {err.start})"
    return f"a config file is not YAML Hydra can read: {str(err).splitlines()[0]}"
