"""Several runs in one TensorBoard, each named by its config: ``scripts/tb.py``.

``tensorboard --logdir outputs/`` names a run by its path (``2026-12-06/14-35-00/tensorboard/flow``),
which says nothing of its config. TensorBoard's own ``--logdir_spec name:path,...`` names each run
directory instead; :func:`logdir_spec` builds it with each run named by the overrides it was started
with (Hydra's ``.hydra/overrides.yaml``), so that runs read ``sgd.lrs=[0.01]/flow``. A run without
them (``run(cfg, dir)`` from Python, ``scripts/eos_lab.py``) is named by the keys where its config
(summary.json's) differs from the defaults (``model.dims=[4;4;4;3] flow.t_max=2.0``), and ``default``
only where its config is the defaults' (:func:`dlnlab.lab.results.name_parts`, the aggregate's rule
for a setting's name, with the seeds kept: they tell runs apart): such runs were all named
``default``, whatever net they trained. Of several runs, each is named by the words that set it apart
(:func:`run_labels`): the ones every run shares are said once, not repeated in each name, where they
hid the one that differs (TensorBoard's run list wraps such a name over four lines; its HParams table
cuts it after about 20 characters).

TensorBoard splits ``--logdir_spec`` at every ``,`` and has no escape, and a sweep's job directory
holds one wherever its job has two overrides (``0_seed=0,sgd.batch_size=5``): such a path is given
through a symbolic link without one (:func:`logdir_spec`'s ``link_dir``), which TensorBoard resolves.
Before, TensorBoard read such a path in pieces and showed no run at all.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dlnlab.lab.results import Described, default_config, flat_config, given_overrides, name_parts
from dlnlab.rundir import read_summary_object

__all__ = ["find_runs", "run_label", "run_labels", "logdir_spec"]


def find_runs(paths) -> list[Path]:
    """Every run directory (one with ``tensorboard/``) at or below each path, in path order."""
    runs: list[Path] = []
    for path in map(Path, paths):
        found = (
            [path] if (path / "tensorboard").is_dir() else sorted(p.parent for p in path.rglob("tensorboard"))
        )
        runs += [r for r in found if (r / "tensorboard").is_dir() and r not in runs]
    return runs


def _described(run_dir: Path) -> Described:
    """The run's overrides (:func:`given_overrides`) and its config (None where summary.json has none: an
    older run, or no summary)."""
    summary, _ = read_summary_object(run_dir / "summary.json")
    config = (summary or {}).get("config")
    flat = flat_config(config, seeds=True) if isinstance(config, dict) and config else None
    return Described(given_overrides(run_dir), flat)


def _label(words: list[str]) -> str:
    """A TensorBoard run name cannot hold ',' or ':' (they separate --logdir_spec's entries), so those
    become ';' and '-'."""
    return _name_safe(" ".join(words) or "default")


def _name_safe(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace(",", ";").replace(":", "-"))


def _words(run_dirs) -> list[list[str]]:
    """Each run's name as words: its overrides, else the keys where its config is not the defaults'."""
    return name_parts([_described(Path(r)) for r in run_dirs], default_config(seeds=True))


def run_label(run_dir: Path) -> str:
    """The run's name, one line: its overrides, else what its config sets (``default`` when nothing)."""
    return _label(_words([run_dir])[0])


def run_labels(run_dirs) -> tuple[list[str], list[str]]:
    """(the words every run's name shares, each run's label): of two runs or more, a label holds only the
    words that set its run apart; one run is named by all of its own."""
    words = _words(run_dirs)
    shared = [o for o in words[0] if all(o in other for other in words)] if len(words) > 1 else []
    return shared, [_label([o for o in own if o not in shared]) for own in words]


def logdir_spec(run_dirs, link_dir: Path | None = None, labels: list[str] | None = None) -> str:
    """``name:path,...`` for ``tensorboard --logdir_spec``; equal names get the end of the run's path
    after them (:func:`_distinct`). A run's ``tensorboard/`` whose path holds ',' is given as a symbolic
    link in ``link_dir`` (made if needed; required then), named by the run's place in the list.
    ``labels``: the runs' labels from :func:`run_labels`, where the caller has them already (tb.py prints
    the shared overrides); read from the runs' ``overrides.yaml`` when not given."""
    runs = [Path(r) for r in run_dirs]
    if labels is None:
        _, labels = run_labels(runs)
    elif len(labels) != len(runs):
        raise ValueError(f"labels: {len(labels)} labels for {len(runs)} runs")
    labels = _distinct(labels, runs)
    paths = []
    for i, run in enumerate(runs):
        path = run / "tensorboard"
        if "," in str(path):
            if link_dir is None or "," in str(link_dir):
                raise ValueError(
                    f"{path} holds ',', which --logdir_spec cannot take: give a link_dir without one"
                )
            Path(link_dir).mkdir(parents=True, exist_ok=True)
            link = Path(link_dir) / str(i)
            link.symlink_to(path.absolute(), target_is_directory=True)
            path = link
        paths.append(path)
    return ",".join(f"{label}:{path}" for label, path in zip(labels, paths))


def _distinct(labels: list[str], runs: list[Path]) -> list[str]:
    """Each label that others share gets the shortest end of its run's path that no run of that label
    shares (``seed=1 (t1/0_seed=1)``). TensorBoard keeps one run of a name and drops the others ("Conflict
    for name"): the run directory's name alone was shared by the same job of two sweeps."""
    ends = [Path(os.path.abspath(r)).parts for r in runs]
    named = []
    for label, end in zip(labels, ends):
        group = [e for lab, e in zip(labels, ends) if lab == label]
        if len(group) == 1:
            named.append(label)
            continue
        depth = next(
            (d for d in range(1, len(end) + 1) if [e[-d:] for e in group].count(end[-d:]) == 1), len(end)
        )
        tail = "/".join(end[-depth:]).lstrip("/")
        named.append(f"{label} ({_name_safe(tail)})")
    return named
