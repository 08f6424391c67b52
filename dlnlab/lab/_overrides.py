"""The command line's overrides read as Hydra will: their parse, a sweep's jobs, and the refusals Hydra
itself would raise as a traceback (a value Python cannot read, a sweep too large to list, a config group
given a value that is not an option's name). Used by :mod:`dlnlab.lab.cli`'s preflight."""

from __future__ import annotations

import math

from dlnlab.lab import _hydra
from dlnlab.lab.config import ConfigError, shown

__all__ = ["MAX_SWEEP_JOBS", "check_group_values", "override_jobs"]


def _parse(overrides: list[str]) -> list:
    """Hydra's parse of the overrides; a value Python cannot read (an integer of more than 4300 digits
    raises a bare ValueError inside the parser) is refused naming its key."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    try:
        return parser.parse_overrides(overrides)
    except ValueError as err:
        if type(err) is not ValueError:  # Hydra's own errors are described by the caller
            raise
        bad = next((o for o in overrides if _fails(parser, o)), overrides[0])
        raise ConfigError(
            f"{shown(bad.split('=', 1)[0], 40)}: cannot read the value: {str(err).split(';')[0]}"
        ) from err


def _fails(parser, override: str) -> bool:
    try:
        parser.parse_overrides([override])
    except ValueError:
        return True
    return False


def override_jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Each job's overrides (one job unless ``multirun``): Hydra's parse and its basic sweeper's list."""
    parsed = _parse(overrides)
    for o in parsed:
        if not o.key_or_group:  # '=', '=x', '+=1', '~': Hydra would say "Could not override ''"
            raise ConfigError(
                f"{o.input_line!r}: the override has no key; an override is key=value (e.g. seed=1), "
                "+key=value to add a key, ~key to delete one"
            )
    if not multirun:
        return [overrides]
    _check_sweep_size(parsed)
    try:
        return _hydra.sweep_jobs(parsed) or [[]]
    except Exception:  # noqa: BLE001 - a sweep syntax only another sweeper knows: check the base config
        return [[o.input_line for o in parsed if not o.is_sweep_override()]]


MAX_SWEEP_JOBS = 10_000  # Hydra's basic sweeper lists every job first: range(0, 10**9) ran out of memory


def _sweep_len(value) -> int:
    from hydra.core.override_parser.types import ChoiceSweep, RangeSweep

    if isinstance(value, RangeSweep) and value.step:
        return max(0, math.ceil((value.stop - value.start) / value.step))
    if isinstance(value, ChoiceSweep):
        return len(value.list)
    return 1  # a glob over a group's options, or what the sweeper refuses itself


def _check_sweep_size(parsed: list) -> None:
    """A sweep of more than MAX_SWEEP_JOBS jobs is refused before it is listed, naming its largest part."""
    sizes = {o.key_or_group: _sweep_len(o.value()) for o in parsed if o.is_sweep_override()}
    jobs = math.prod(sizes.values())
    if jobs > MAX_SWEEP_JOBS:
        key = max(sizes, key=sizes.get)
        raise ConfigError(
            f"{key}: the sweep has {jobs:,} jobs ({', '.join(f'{k}: {n:,}' for k, n in sizes.items())}); allowed: at "
            f"most {MAX_SWEEP_JOBS:,} jobs in one sweep: split it into several"
        )


def check_group_values(overrides: list[str]) -> None:
    """A config group takes the name of an option (or a list of names): Hydra raises a bare
    ValueError (a trace, exit 1) for ``logger=5`` or ``logger=null``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override() or not _hydra.group_exists(o.key_or_group):
            continue
        value = o.value()
        names = value if isinstance(value, list) else [value]
        if isinstance(value, dict) or (o.is_delete() and value is None):
            continue
        if names and all(isinstance(v, str) for v in names):
            continue
        options = ", ".join(_hydra.group_options(o.key_or_group))
        raise ConfigError(
            f"{o.key_or_group}: expected the name of an option, got {o.get_value_element_as_str()}; "
            f"allowed: {options} (e.g. {o.key_or_group}={options.split(',')[0]})"
        )
