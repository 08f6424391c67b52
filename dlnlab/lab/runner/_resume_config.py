"""A resume's config against the one its run started with.

A resume takes its config from the run's ``summary.json`` (the command line takes no overrides with
``resume=``), which a user can edit. The run's ``problem.npz``, written once when the run started and
never again, records that config too (key ``config``, JSON text). :func:`check_config` refuses a resume
whose summary.json config differs from it in any key but those of :data:`RESUME_FREE`: the resumed
series would otherwise continue with other numbers (another batch size, loss, tolerance, metric
setting ...) than the run's first part, and the run would mix two configs without saying so.

``.hydra/config.yaml`` is no such record: only the command line's runs have it (not a ``run(cfg,
output_dir)`` in a program, nor a run with ``hydra.output_subdir=null``), and it is Hydra's composed
config before the lab's own checks. A run written before problem.npz recorded its config is checked on
its grid, series, data and initial weights only (:mod:`dlnlab.lab.runner._resume`).
"""

from __future__ import annotations

import json
from pathlib import Path

from dlnlab.lab.config import ConfigError, current_targets, to_plain, typed_config
from dlnlab.rundir import read_npz

__all__ = ["RESUME_FREE", "ABSENT", "check_config", "config_changes"]

# The keys a resume may take with another value than the run started with, and why none of them changes
# a number of a series (the resume runs with summary.json's values for them). Every other key is checked.
RESUME_FREE: dict[str, str] = {
    "run.workers": "how many series run at once: each series is the same bit for bit however many do",
    "log.progress": "the console's progress bar",
    "log.figures": "whether the figures are drawn, from the files, once the series are done",
    "checkpoint.enabled": "whether an interrupted SGD series can continue from a checkpoint; one that "
    "continues is the same bit for bit, one that runs again from its start too",
    "checkpoint.every_s": "how often checkpoints are written (as above)",
    "limits.grid_points": "a refusal before any work, on the grid's size (the grid itself is checked)",
    "limits.sgd_steps": "a refusal before any work, on the steps the series take",
    "limits.memory_gb": "a refusal before any work, on the run's estimated memory",
    "limits.series_file_gb": "a refusal before any work, on the series files' estimated size",
    "data.path": "where the data file is: its contents are checked against problem.npz's X and Y",
    "init.path": "where the weights file is: its contents are checked against problem.npz's A0",
}


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()  # a key one config has and the other lacks


def _flat(tree, prefix: str = "") -> dict[str, object]:
    """A nested config as {dotted key: value}; a list is one value, an empty mapping one key."""
    if not isinstance(tree, dict) or (prefix and not tree):
        return {prefix: tree}
    out: dict[str, object] = {}
    for key, value in tree.items():
        out |= _flat(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def config_changes(started: dict, now: dict) -> dict[str, tuple[object, object]]:
    """{key: (value the run started with, value now)} for every key of either config whose values
    differ, but those of :data:`RESUME_FREE` (a key one of them lacks: ``ABSENT`` there). Moved class
    paths (``_target_``) are compared where the classes are now, as the resume builds them."""
    a, b = _flat(current_targets(started)), _flat(current_targets(now))
    return {
        key: (a.get(key, ABSENT), b.get(key, ABSENT))
        for key in sorted(a.keys() | b.keys())
        if key not in RESUME_FREE and a.get(key, ABSENT) != b.get(key, ABSENT)
    }


def _shown(value) -> str:
    return "(absent)" if value is ABSENT else json.dumps(value)


def check_config(run_dir: Path, config: dict) -> None:
    """Refuse (ConfigError, one line naming each key with its two values) a resume whose ``config``
    (what it built from summary.json's, as plain types: a key summary.json lacks has its default) differs
    from the one problem.npz recorded when the run started (built the same way: a key added to the lab
    since then has its default there too), but in the keys of :data:`RESUME_FREE`. Nothing to check in a problem.npz without a config (an older run)."""
    path = Path(run_dir) / "problem.npz"
    saved = read_npz(path)  # readable: check_problem read it before
    if saved is None or "config" not in saved:
        return
    try:
        started = json.loads(saved["config"].item())  # bytes (a str array in runs of 2026-12-07 morning)
    except ValueError:
        raise ConfigError(f"resume: {path}: its config is not JSON; not resumed") from None
    try:  # through the schema as the resume's own: a key added to the lab since the run started has its default
        started = to_plain(typed_config(current_targets(started)))
    except ConfigError as err:
        raise ConfigError(
            f"resume: {path}: the config it recorded no longer builds ({err}); not resumed"
        ) from None
    changes = config_changes(started, config)
    if changes:
        listed = "; ".join(
            f"{k}: {_shown(a)} when it started, {_shown(b)} now" for k, (a, b) in changes.items()
        )
        raise ConfigError(
            f"resume: the config in {Path(run_dir) / 'summary.json'} builds a config that differs from the one "
            f"the run started with (recorded in problem.npz) in {listed}; the resumed series would mix two "
            f"configs, not resumed (a resume may change only {', '.join(RESUME_FREE)})"
        )
