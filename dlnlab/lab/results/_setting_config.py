"""What a run ran, as the aggregate's settings and ``scripts/tb.py``'s run names read it: the resolved
config summary.json records (``config``, written by every run: the command line's, one from Python,
``scripts/eos_lab.py``'s), not the overrides a run happened to be started with.

Grouping by ``.hydra/overrides.yaml`` alone put every run without that file (from Python, eos_lab.py)
into one setting, the defaults', whatever net it trained, and split one config spelled two ways
(``experiment=tiny`` against its keys given one by one). A setting is now the flattened config
(:func:`flat_config`) without the seeds (:data:`SEED_KEYS`) and without the keys that change no number
of a run (:func:`~dlnlab.lab.results._override_columns.changes_no_number`: Hydra's, the logger, the
callbacks, ``run.workers``, ``log.progress``, ``log.figures``, ..., each with its reason in
``NOT_SETTINGS``). Its name (:func:`name_parts`) stays what a person typed where that is known.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlnlab.lab.results._override_columns import changes_no_number, text
from dlnlab.rundir import read_overrides

__all__ = [
    "SEED_KEYS", "Described", "config_key", "default_config", "flat_config", "given_overrides", "name_parts",
]  # fmt: skip

# The runs of one setting differ only in these (a sweep over seeds, the members of an ensemble).
SEED_KEYS = ("seed", "data.seed", "init.seed", "sgd.seed")


def flat_config(config: dict, seeds: bool = False) -> dict[str, Any]:
    """A run's config (summary.json's ``config``) as dotted key -> value, in the config's order, without
    the keys that change no number and, unless ``seeds``, without :data:`SEED_KEYS`. ``sgd.lrs`` is
    sorted from the largest down: a run takes them in any order and runs the same series."""
    flat: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for name, value in node.items():
            key = f"{prefix}{name}"
            if changes_no_number(key) or (not seeds and key in SEED_KEYS):
                continue
            if isinstance(value, dict) and value:
                walk(value, key + ".")
            else:
                flat[key] = value

    walk(config, "")
    if isinstance(flat.get("sgd.lrs"), list):
        flat["sgd.lrs"] = sorted(flat["sgd.lrs"], key=lambda lr: -lr if isinstance(lr, (int, float)) else 0)
    return flat


def given_overrides(run_dir: Path) -> tuple[str, ...] | None:
    """The overrides a run was started with (``.hydra/overrides.yaml``) without what changes no number of
    it (Hydra's keys, run.workers, the logger, ...: no HParams column either), in the recorded order;
    None without the record (``run(cfg, dir)`` from Python, eos_lab.py) or with a damaged one: such a
    run is named by its config."""
    if not (Path(run_dir) / ".hydra" / "overrides.yaml").is_file():
        return None
    try:
        given = read_overrides(run_dir)
    except ValueError:
        return None
    return tuple(o for o in given if not changes_no_number(o.split("=", 1)[0]))


def config_key(flat: dict[str, Any]) -> str:
    """One text per config, whatever the order of its keys: the identity of a setting."""
    return json.dumps(flat, sort_keys=True, separators=(",", ":"), default=str)


@functools.cache
def _default_plain() -> dict | None:
    """The config of ``python scripts/train.py`` with no overrides (conf/train.yaml next to the package,
    composed by Hydra), plain; None where there is no conf/ (installed without the checkout) or it cannot
    be composed. Hydra's initialize_config_dir keeps and restores a Hydra already set up around it."""
    conf = Path(__file__).resolve().parents[3] / "conf"
    if not (conf / "train.yaml").is_file():
        return None
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from dlnlab.lab.config import TrainConfig  # noqa: F401 - registers the schema the YAML files name

    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
            cfg = compose(config_name="train")
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except (HydraException, OmegaConfBaseException):
        return None


def default_config(seeds: bool = False) -> dict[str, Any] | None:
    """:func:`flat_config` of the command line's defaults (None where they cannot be composed)."""
    plain = _default_plain()
    return None if plain is None else flat_config(plain, seeds=seeds)


@dataclass(frozen=True)
class Described:
    """What names one setting or run: ``overrides`` (those it was started with, without what changes no
    number; None where there is no record, ``run(cfg, dir)`` from Python or eos_lab.py, or where the
    runs of a setting were started with different ones) and ``config`` (:func:`flat_config`; None for a
    summary older than its ``config`` key)."""

    overrides: tuple[str, ...] | None
    config: dict[str, Any] | None


# A config named where there are no defaults to compare it with, and nothing else sets it apart.
ITS_CONFIG = "(its config)"


def name_parts(items: list[Described], defaults: dict[str, Any] | None) -> list[list[str]]:
    """Each item's name, as words ``key=value``: its overrides where it has some; none (the caller says
    ``(defaults)``) where its config is the defaults' or, in a summary without ``config``, where it had
    no overrides (as before configs were compared); else the keys where its config differs from the
    defaults, with its values (what one would have typed), or, without defaults, the keys where the
    items' configs differ."""
    varying = _differing_keys([it.config for it in items if it.config is not None])
    out = []
    for it in items:
        if it.overrides:
            out.append(list(it.overrides))
        elif it.config is None or (defaults is not None and config_key(it.config) == config_key(defaults)):
            out.append([])
        elif defaults is not None:
            out.append(config_words(it.config, defaults))
        else:
            out.append([f"{k}={text(it.config.get(k, '(none)'))}" for k in varying] or [ITS_CONFIG])
    return out


def config_words(config: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """``key=value`` for each key where ``config`` differs from ``defaults``, in the config's order
    (a key the defaults lack included; one the config lacks as ``key=(none)``)."""
    words = [f"{k}={text(v)}" for k, v in config.items() if k not in defaults or not _same(defaults[k], v)]
    return words + [f"{k}=(none)" for k in defaults if k not in config]


def _same(a: Any, b: Any) -> bool:
    """Equal as summary.json writes them (2.0 is not 2: a config's values are typed by its schema)."""
    return json.dumps(a, default=str) == json.dumps(b, default=str)


def _differing_keys(configs: list[dict[str, Any]]) -> list[str]:
    """The keys whose values are not the same in every config (one that some lack included)."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    return [k for k in keys if len({json.dumps(c.get(k, "(none)"), default=str) for c in configs}) > 1]
