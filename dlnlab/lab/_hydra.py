"""Every use of Hydra's private parts, in one place, each tested (tests/test_hydra_private.py).

Hydra has no public API for these; a Hydra upgrade that changes one fails its test there, loudly,
instead of the command line misbehaving somewhere else:

* :func:`args_parser`: Hydra's own command-line parser (``hydra._internal.utils.get_args_parser``),
  so the preflight reads the command line exactly as ``@hydra.main`` will;
* :func:`sweep_jobs`: the basic sweeper's expansion of a sweep into its jobs
  (``hydra._internal.core_plugins.basic_sweeper.BasicSweeper.split_arguments``), so every job is
  checked before the first runs, and the sweep summary lists the jobs that never started;
* :func:`group_exists`, :func:`group_options`: the config groups and their options, read through the
  config loader's repository (``GlobalHydra.instance().config_loader().repository``, not part of the
  ConfigLoader interface);
* :func:`missing_option`, :func:`unknown_key_in_file`: the parts of two Hydra error messages the
  one-line refusals quote (Hydra raises them with the facts only in their text).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "args_parser",
    "sweep_jobs",
    "group_exists",
    "group_options",
    "missing_option",
    "unknown_key_in_file",
]


def args_parser():
    """Hydra's argparse parser of ``train.py [flags] [overrides]``."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


def sweep_jobs(parsed: list[Any]) -> list[list[str]]:
    """The jobs (their overrides) the basic sweeper makes of parsed overrides, in its order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(parsed, None)[0]


def _repository():
    from hydra.core.global_hydra import GlobalHydra

    return GlobalHydra.instance().config_loader().repository


def group_exists(name: str) -> bool:
    """Whether ``name`` is a config group (Hydra initialised)."""
    return _repository().group_exists(name)


def group_options(name: str) -> list[str]:
    """A config group's options, sorted (Hydra initialised)."""
    from hydra.core.global_hydra import GlobalHydra

    return GlobalHydra.instance().config_loader().get_group_options(name)


def missing_option(text: str) -> tuple[str, str, list[str]] | None:
    """(group, option, the group's options) from a MissingConfigException's text for ``group=option``,
    or None when the text is not that message."""
    m = re.search(r"Could not find '([^']+)/([^']*)'", text)
    opts = re.findall(r"^\t(\S+)$", text.split("Available options in", 1)[-1], re.M) if m else []
    return (m.group(1), m.group(2), opts) if m and opts else None


def unknown_key_in_file(text: str) -> tuple[str, str, str] | None:
    """(the config file, the schema node, the full key) from Hydra's error when a config file (an
    experiment) sets a key the chosen option does not have, or None."""
    m = re.search(
        r"^In '([^']+)': \w+ raised while composing config:\nKey '[^']+' not in '(\w+)'", text, re.M
    )
    key = re.search(r"full_key: (\S+)", text)
    return (m.group(1), m.group(2), key.group(1)) if m and key else None
