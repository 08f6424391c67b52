"""The keys a run was given on the command line as HParams columns (:func:`given_columns`).

A sweep (``train.py -m seed=0,1 init.scale=0.01,0.1``) varies some of a run's keys; which ones, the run
itself only knows from its command line. Hydra records a job's overrides in
``<run>/.hydra/overrides.yaml`` before the job starts (the concrete values of its job in a sweep), and
that record is read here, not Hydra's live ``HydraConfig``: a run finished by ``resume=<run dir>``, which
runs without Hydra, has its columns from the same file, those of the run it finishes; the run names of
``scripts/tb.py`` (the HParams Trial ID) come from it too where a run has it (else from its config:
:mod:`dlnlab.lab.results._setting_config`). A run without that file (``run(cfg, output_dir)`` from
Python, ``hydra.output_subdir=null``) has no such columns.

Each given key is one column, named by the key (``model.dims``, ``init.scale``, ``seed``, ``experiment``),
except Hydra's own keys and those that change no number of the run (:data:`NOT_SETTINGS`), and those
the row shows already (:data:`SHOWN_AS`). Its value is the one the run ran with (the checked config),
typed by the key's schema, never by the value, so that every job of a sweep gives a key the same type:
a number column sorts and filters as numbers, and TensorBoard's filter of a number column raises on a
text value (as a text column's on a number: ``list_session_groups``), which fails the whole table:

* a key the schema types as a number (``seed``, ``init.scale``, ``flow.max_nfe``): the number; null
  (``data.seed=null``): NaN, a number column declared with an empty cell. Never left out: TensorBoard
  takes the table's columns from one run (the first it lists), and a column that run lacks is in no
  row (:meth:`dlnlab.lab.record.TensorBoardLogger.log_hyperparams`);
* a switch (``flow.modified``): ``"true"`` / ``"false"``. torch's ``hparams`` writes a bool as the
  number 1 or 0 (it tests ``isinstance(v, (int, float))`` first);
* any other key: its text, a list as Hydra writes it (``model.dims`` ``[11,6,6,6,6,4]``), and a key
  that takes a number or a list (``init.u0``) always as text (``0.001``, ``[0.01,0.001]``);
* a config group (``experiment=eos``, ``model=tiny``, ``flow=dopri5``): the option's name.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlnlab.errors import AnalysisWarning
from dlnlab.rundir import read_overrides

__all__ = ["GivenColumns", "NOT_SETTINGS", "SHOWN_AS", "changes_no_number", "given_columns", "run_overrides"]

# Given keys that are no column, and why: each changes no number of the run (or is Hydra's own).
# A key is left out with every key below it (``checkpoint`` leaves out ``checkpoint.every_s``).
NOT_SETTINGS: dict[str, str] = {
    "hydra": "Hydra's own (hydra.run.dir, hydra.sweep.dir, hydra/launcher): where and how the job runs",
    "resume": "finishes a run with the run's own config",
    "logger": "which logger records the run",
    "callbacks": "the user's Lightning callbacks: what the run records or does beside its series",
    "run.workers": "how many series run at once: each is the same bit for bit",
    "log.progress": "the console's progress bar",
    "log.figures": "whether the figures are drawn",
    "log.tb_max_points": "how many points of a curve go to TensorBoard",
    "log.save_theta": "whether the series files keep theta",
    "log.theta_max_mb": "how much of theta the series files keep",
    "checkpoint": "the checkpoints a resume continues from: a continued series is the same bit for bit",
    "limits.grid_points": "a refusal before any work",
    "limits.sgd_steps": "a refusal before any work",
    "limits.memory_gb": "a refusal before any work",
    "limits.series_file_gb": "a refusal before any work",
}

# Given keys the row shows as a column of its own already (:func:`dlnlab.lab.results._report._hparams`).
SHOWN_AS: dict[str, str] = {
    "sgd.lrs": "lr",  # each row is one rate
    "sgd.batch_size": "batch_size",
    "sgd.momentum": "momentum",
    "ensemble.size": "ensemble",
    "ensemble.vary": "ensemble",
}

HParam = float | int | str


@dataclass(frozen=True)
class GivenColumns:
    """The columns of the keys a run was given (``columns``: key -> value), and every key given
    (``keys``: those shown as another column, :data:`SHOWN_AS`, and those left out included)."""

    columns: dict[str, HParam] = dataclasses.field(default_factory=dict)
    keys: frozenset[str] = frozenset()


def run_overrides(run_dir: Path) -> list[str]:
    """The overrides a run was started with, as Hydra recorded them (``<run>/.hydra/overrides.yaml``);
    none without that file. An unreadable one is said (a warning) and read as none: the HParams rows
    are still logged, with the columns of a run without overrides."""
    try:
        return read_overrides(run_dir)
    except ValueError as err:
        warnings.warn(
            f"{err}; the run's HParams rows have no columns of its own keys", AnalysisWarning, stacklevel=2
        )
        return []


def changes_no_number(key: str) -> bool:
    """Whether a given key (``run.workers``, ``+callbacks.x._target_``, ``hydra/launcher``) is one of
    :data:`NOT_SETTINGS` or below one: no column, no part of a run's name in ``scripts/tb.py``, and no
    part of what makes an aggregate's setting (:func:`dlnlab.lab.results.flat_config`)."""
    key = key.lstrip("+~")
    return any(key == k or key.startswith((k + ".", k + "/")) for k in NOT_SETTINGS)


def given_columns(cfg: Any, overrides: list[str]) -> GivenColumns:
    """The HParams columns of the keys in ``overrides`` (Hydra's override syntax), with the values of
    ``cfg``, the run's checked config (a TrainConfig). Overrides Hydra cannot parse give none (said)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        warnings.warn(f"cannot parse the run's overrides: {err}", AnalysisWarning, stacklevel=2)
        return GivenColumns()
    columns: dict[str, HParam] = {}
    keys = []
    for o in parsed:
        key = o.key_or_group + (f"@{o.package}" if o.package else "")
        keys.append(key)
        columns.pop(key, None)  # a key given twice: Hydra takes the last
        if changes_no_number(key) or key in SHOWN_AS:
            continue
        columns[key] = _column_value(cfg, key, o.value())
    return GivenColumns(columns, frozenset(keys))


_NOT_IN_CONFIG = object()


def _lookup(cfg: Any, key: str) -> tuple[Any, Any]:
    """(the value at a dotted key of the config, its schema type); ``_NOT_IN_CONFIG`` when the config
    has no such key (a config group, ``experiment``, or another program's key)."""
    node, hint = cfg, Any
    for part in key.split("."):
        if dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}:
            hint, node = typing.get_type_hints(type(node))[part], getattr(node, part)
        elif isinstance(node, dict) and part in node:
            hint, node = Any, node[part]
        else:
            return _NOT_IN_CONFIG, Any
    return node, hint


def _column_value(cfg: Any, key: str, given: Any) -> HParam:
    """The column's value of one given key: from the config where the key is one of its values, the
    given value itself where it is not (a group's option, ``experiment=eos``). NaN: a number column
    without a value (null, or inf, which protobuf's JSON cannot carry): declared, its cell empty
    (:meth:`dlnlab.lab.record.TensorBoardLogger.log_hyperparams`)."""
    value, hint = _lookup(cfg, key)
    if value is _NOT_IN_CONFIG or dataclasses.is_dataclass(value) or isinstance(value, dict):
        value, hint = given, _hint_of(given)  # the key chose an option of a group (or is no config key)
    kind = _kind(hint)
    if kind is float:
        return value if value is not None and math.isfinite(value) else math.nan
    if kind is bool and value is not None:
        return "true" if value else "false"
    return value if isinstance(value, str) else text(value)


def _hint_of(value: Any) -> Any:
    """The type a value given for no config key is shown as: a number as a number, the rest as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float
    return bool if isinstance(value, bool) else Any


def _kind(hint: Any) -> type:
    """float for a number (int, float, optional or not), bool for a switch, str for anything else."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
    else:
        args = [hint]
    if args and all(a in (int, float) for a in args):
        return float
    return bool if args == [bool] else str


def text(value: Any) -> str:
    """A value as Hydra's override syntax writes it: ``[11,6,4]``, ``{a:1}``, ``true``, ``null``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{text(v)}" for k, v in value.items()) + "}"
    return str(value)
