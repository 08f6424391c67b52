"""Several runs in one TensorBoard, each named by its config: ``scripts/tb.py``.

``tensorboard --logdir outputs/`` names a run by its path (``2026-12-06/14-35-00/tensorboard/flow``),
which says nothing of its config. TensorBoard's own ``--logdir_spec name:path,...`` names each run
directory instead; :func:`logdir_spec` builds it with each run named by the overrides it was started
with (Hydra's ``.hydra/overrides.yaml``), so that runs read ``sgd.lrs=[0.01]/flow``.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["find_runs", "run_label", "logdir_spec"]

NOT_IN_LABEL = ("hydra.", "hydra/", "log.progress", "log.figures")  # overrides that do not change the science


def find_runs(paths) -> list[Path]:
    """Every run directory (one with ``tensorboard/``) at or below each path, in path order."""
    runs: list[Path] = []
    for path in map(Path, paths):
        found = (
            [path] if (path / "tensorboard").is_dir() else sorted(p.parent for p in path.rglob("tensorboard"))
        )
        runs += [r for r in found if (r / "tensorboard").is_dir() and r not in runs]
    return runs


def run_label(run_dir: Path) -> str:
    """The overrides a run was started with, one line (``default`` when none): a TensorBoard run name
    cannot hold ',' or ':' (they separate --logdir_spec's entries), so those become ';' and '-'."""
    overrides = []
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if path.is_file():
        import yaml

        loaded = yaml.safe_load(path.read_text()) or []
        overrides = [str(o) for o in loaded if not str(o).startswith(NOT_IN_LABEL)]
    label = " ".join(overrides) or "default"
    return re.sub(r"\s+", " ", label.replace(",", ";").replace(":", "-"))


def logdir_spec(run_dirs) -> str:
    """``name:path,...`` for ``tensorboard --logdir_spec``; equal names get the run directory's name
    after them."""
    runs = [Path(r) for r in run_dirs]
    labels = [run_label(r) for r in runs]
    labels = [
        f"{label} ({run.name})".replace(",", ";").replace(":", "-") if labels.count(label) > 1 else label
        for label, run in zip(labels, runs)
    ]
    return ",".join(f"{label}:{run / 'tensorboard'}" for label, run in zip(labels, runs))
