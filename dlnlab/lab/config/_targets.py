"""The classes a config names with ``_target_`` (the logger, the callbacks), checked without making one.

A logger or a callback is instantiated by Hydra when a series starts, long after the run began: a
class that cannot be imported, a package it needs that is not installed, an argument it does not
take or a required one that nobody gives would fail there (exit 1 at the flow stage, with files
written). Each is refused before any work instead, from what can be read without calling the class:

* it imports, and is a subclass of the Lightning base it stands for;
* a Lightning logger's own requirement is met: Lightning marks each optional backend with a
  ``RequirementCache`` named after the logger (``_WANDB_AVAILABLE`` for ``WandbLogger``,
  ``_MLFLOW_AVAILABLE`` for ``MLFlowLogger``), which says what to install;
* the config's arguments are ones its constructor takes (``inspect.signature`` along the class's
  ``__init__`` chain; a TensorBoard logger's extra arguments go to its ``SummaryWriter``), and every
  required one is given by the config or by the lab (``save_dir``, ``name``, ``version``,
  ``run_name`` for a logger). A constructor that takes ``**kwargs`` it forwards elsewhere (W&B's go
  to ``wandb.init``) is not checked further;
* a logger's ``save_dir`` and ``version`` are the lab's to set (the series' directory inside the run
  directory), and ``_partial_`` / ``_args_`` (a partial instead of the object, positional arguments)
  are refused.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import sys
from typing import Any

from dlnlab.lab.config._errors import ConfigError
from dlnlab.lab.config._schema import unknown_key_message

__all__ = ["import_class", "check_target", "LOGGER_SUPPLIED", "MOVED_TARGETS", "current_targets"]

LOGGER_SUPPLIED = frozenset({"save_dir", "name", "version", "run_name"})  # what make_logger passes
# set by the lab only: another save_dir writes outside the run directory, one version for all series
# would have them write into one another's logs
LOGGER_OWN = ("save_dir", "version")
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
# dlnlab's own classes that a config names and that have moved: a run made before the move keeps its
# config in summary.json, and a resume of it finds the class where it is now
MOVED_TARGETS = {"dlnlab.lab.logging.TensorBoardLogger": "dlnlab.lab.record.TensorBoardLogger"}


def current_targets(cfg: dict) -> dict:
    """A plain config with each ``_target_`` of :data:`MOVED_TARGETS` renamed to where the class is now."""
    if isinstance(cfg, dict):
        return {k: MOVED_TARGETS.get(v, v) if k == "_target_" else current_targets(v) for k, v in cfg.items()}
    return cfg


def import_class(path: str) -> type:
    """``hydra.utils.get_class`` without the ERROR lines it logs on a failure (the caller reports it
    in one line)."""
    from hydra.utils import get_class

    log = logging.getLogger("hydra.utils")
    was = log.disabled
    log.disabled = True
    try:
        return get_class(path)
    finally:
        log.disabled = was


def _import(key: str, path: str, base: str) -> tuple[type, type]:
    try:
        return import_class(path), import_class(base)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's to see
        cause = err.__cause__ or err
        why = _missing_name(path) or f"{type(cause).__name__}: {cause}"
        raise ConfigError(f"{key}._target_: cannot import {path!r} ({why})") from err


def _missing_name(path: str) -> str | None:
    """Where the module of ``path`` imports but has no such name (a typo in the class): that, with the
    closest public names it has; Python's own error then blames the module (``'dlnlab.lab.callbacks'
    is not a package``). None otherwise."""
    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name) if module_name else None
    except Exception:  # noqa: BLE001 - the module itself does not import: Python's error says why
        return None
    if module is None or hasattr(module, name):
        return None
    public = [n for n in dir(module) if not n.startswith("_") and isinstance(getattr(module, n), type)]
    close = difflib.get_close_matches(name, public, n=1)
    hint = f"; did you mean {module_name}.{close[0]}?" if close else ""
    return f"module {module_name!r} has no {name!r}{hint}"


def _missing_requirement(cls: type) -> str | None:
    """What Lightning says to install for ``cls`` (a subclass's base counts too), or None."""
    for klass in cls.__mro__:
        module = sys.modules.get(klass.__module__)
        cache = getattr(module, f"_{klass.__name__.removesuffix('Logger').upper()}_AVAILABLE", None)
        if cache is not None and hasattr(cache, "requirement") and not bool(cache):
            return str(cache.requirement or cache.module)
    return None


def _summary_writer_args() -> set[str]:
    """The arguments of the SummaryWriter a Lightning TensorBoard logger makes (torch's, else tensorboardX's)."""
    from lightning.fabric.loggers.tensorboard import _TENSORBOARD_AVAILABLE

    if _TENSORBOARD_AVAILABLE:
        from torch.utils.tensorboard import SummaryWriter
    else:  # pragma: no cover - tensorboard is a dependency of dlnlab
        from tensorboardX import SummaryWriter
    return set(inspect.signature(SummaryWriter).parameters) - {"self"}


def _accepted(cls: type) -> set[str] | None:
    """The keyword arguments ``cls(...)`` takes, or None where some go on as ``**kwargs`` we cannot follow."""
    from lightning.fabric.loggers.tensorboard import TensorBoardLogger as FabricTensorBoard

    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):
            return None
        names |= {n for n, p in list(params.items())[1:] if p.kind in _NAMED}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return names
        if klass is FabricTensorBoard:  # its **kwargs make the SummaryWriter; log_dir and root_dir it
            return (names | _summary_writer_args()) - {
                "log_dir",
                "root_dir",
            }  # and its subclass set themselves
    return None


def _required(cls: type) -> set[str]:
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        return set()
    return {p.name for p in params if p.kind in _NAMED and p.default is inspect.Parameter.empty}


def check_target(node: Any, key: str, base: str, supplied: frozenset[str] = frozenset()) -> type:
    """The class ``node['_target_']`` names, refused (ConfigError naming the key) where making it would
    fail: not importable, not a ``base`` (a dotted path), a requirement missing, an argument it does not
    take, a required one missing. ``supplied``: arguments the lab passes itself."""
    if not isinstance(node, dict) or "_target_" not in node:
        raise ConfigError(f"{key}: expected a mapping with _target_ (a Lightning {base.rsplit('.', 1)[-1]})")
    path = str(node["_target_"])
    cls, parent = _import(key, path, base)
    if not (isinstance(cls, type) and issubclass(cls, parent)):
        raise ConfigError(f"{key}._target_: {path} is not a {base}")
    need = _missing_requirement(cls)
    if need is not None:
        raise ConfigError(
            f"{key}._target_: {path} needs {need}, which is not installed here: pip install -U '{need}'"
        )
    if node.get("_partial_"):
        raise ConfigError(
            f"{key}._partial_: the lab needs the {base.rsplit('.', 1)[-1]} itself, not a partial of it"
        )
    if node.get("_args_"):
        raise ConfigError(f"{key}._args_: give the arguments by name ({key}.<argument>=...)")
    given = {k for k in node if not (k.startswith("_") and k.endswith("_"))}
    for own in LOGGER_OWN if supplied else ():
        if own in given:
            raise ConfigError(
                f"{key}.{own}: set by the lab (each series logs into <run dir>/<logger>/<series>), so that a run "
                f"writes only into its own directory and no series into another's; remove {key}.{own}"
            )
    accepted = _accepted(cls)
    if accepted is not None:
        for arg in sorted(given - accepted):
            raise ConfigError(
                f"{unknown_key_message(f'{key}.{arg}', sorted(accepted))} (the arguments of {cls.__name__})"
            )
    missing = sorted(_required(cls) - given - supplied)
    if missing:
        raise ConfigError(
            f"{key}.{missing[0]}: required by {cls.__name__} and not given; add it, e.g. +{key}.{missing[0]}=..."
        )
    return cls
