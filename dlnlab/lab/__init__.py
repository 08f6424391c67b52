"""The lab layer: the only part of dlnlab that touches Lightning, Hydra, TensorBoard or the disk.

Its stages are sub-packages (docs/architecture.md): ``config`` (the schema, the checks, ``prepare``),
``record`` (the recorders, TensorBoard), ``results`` (summary.json, typed; the reports), ``runner``
(``run``, ``resume``, the series kinds) and the command line (``cli``, ``sweep``). The entry points
are exported here and imported on first use (``import dlnlab.lab`` itself is cheap)::

    from dlnlab.lab import run, resume, ConfigError
    cfg = {"model": {"dims": [4, 3, 3, 2]}, "data": {"singular_values": [2.0, 1.0]}, "flow": {"t_max": 4.0}}
    result = run(cfg, output_dir="/tmp/run")  # a RunResult: result.summary is typed

A plain dict gives each group's keys (docs/config.md); the command line's options (``experiment=tiny``,
``sgd=minibatch``) are files of conf/: ``compose(["experiment=tiny", "sgd=minibatch"])`` gives the
command line's config, composed by Hydra and checked (docs/api.md). Many runs across seeds, setting by
setting, in memory: ``aggregate_runs(sweep_dir)`` (an ``Aggregate``; ``.write(out)`` writes what
``scripts/aggregate.py`` writes).
"""

from dlnlab._lazy import lazy_exports

_EXPORTS = {
    "dlnlab.lab.runner": ["run", "resume", "KINDS", "SeriesKind"],
    "dlnlab.lab.config": ["prepare", "Plan", "ConfigError", "ExitCode", "TrainConfig"],
    "dlnlab.lab.results": [
        "RunResult",
        "RunStatus",
        "Summary",
        "aggregate_runs",
        "Aggregate",
        "NothingToAggregate",
    ],
    "dlnlab.lab.cli": ["main", "job"],
    "dlnlab.lab._compose": ["compose"],
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
