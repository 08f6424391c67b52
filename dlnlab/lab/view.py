"""Several runs in one TensorBoard, each named by its config: ``scripts/tb.py``.

``tensorboard --logdir outputs/`` names a run by its path (``2026-12-06/14-35-00/tensorboard/flow``),
which says nothing of its config. TensorBoard's own ``--logdir_spec name:path,...`` names each run
directory instead; :func:`logdir_spec` builds it with each run named by the overrides it was started
with (Hydra's ``.hydra/overrides.yaml``), so that runs read ``sgd.lrs=[0.01]/flow``. Of several runs,
each is named by the overrides that set it apart (:func:`run_labels`): the ones every run shares are
said once, not repeated in each name, where they hid the one that differs (TensorBoard's run list
wraps such a name over four lines; its HParams table cuts it after about 20 characters).

TensorBoard splits ``--logdir_spec`` at every ``,`` and has no escape, and a sweep's job directory
holds one wherever its job has two overrides (``0_seed=0,sgd.batch_size=5``): such a path is given
through a symbolic link without one (:func:`logdir_spec`'s ``link_dir``), which TensorBoard resolves.
Before, TensorBoard read such a path in pieces and showed no run at all.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dlnlab.lab.results import changes_no_number
from dlnlab.rundir import read_overrides

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


def _overrides(run_dir: Path) -> list[str]:
    try:
        given = read_overrides(run_dir)
    except ValueError:  # a damaged record: the run is named as one without overrides
        given = []
    # what changes no number of the run (Hydra's keys, run.workers, the logger, ...) names no run, as it
    # is no HParams column
    return [o for o in given if not changes_no_number(o.split("=", 1)[0])]


def _label(overrides: list[str]) -> str:
    """A TensorBoard run name cannot hold ',' or ':' (they separate --logdir_spec's entries), so those
    become ';' and '-'."""
    return _name_safe(" ".join(overrides) or "default")


def _name_safe(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace(",", ";").replace(":", "-"))


def run_label(run_dir: Path) -> str:
    """The overrides a run was started with, one line (``default`` when none)."""
    return _label(_overrides(run_dir))


def run_labels(run_dirs) -> tuple[list[str], list[str]]:
    """(the overrides every run shares, each run's label): of two runs or more, a label holds only the
    overrides that set its run apart; one run is named by all of its own."""
    overrides = [_overrides(r) for r in run_dirs]
    shared = [o for o in overrides[0] if all(o in other for other in overrides)] if len(overrides) > 1 else []
    return shared, [_label([o for o in own if o not in shared]) for own in overrides]


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
