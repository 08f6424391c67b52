"""Finishing an interrupted run: what it had done, read back from its own directory.

``python scripts/train.py resume=<run dir>`` (or :func:`dlnlab.lab.experiment.resume`) reruns a run
with the config it was started with (its ``summary.json``), in its own directory:

* the flow is recomputed (the SGD series need it at their exact times, which are not stored) and,
  if it had finished, checked against its ``series/flow.npz`` to within 10 x its rtol, not rewritten;
* a finished SGD series (ok, diverged, unstable) is read back, not recomputed;
* an interrupted one continues from its Lightning checkpoint (``checkpoints/<series>.ckpt``) with the
  points it had recorded, bit for bit as if it had never stopped; one without a usable checkpoint
  is run again from its start;
* ``summary.json`` lists each resume under ``resumed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlnlab.lab.errors import ConfigError
from dlnlab.lab.rundir import read_npz, read_summary
from dlnlab.lab.summary import Status

__all__ = ["Previous", "load_previous", "FINISHED"]

FINISHED = (Status.OK, Status.DIVERGED, Status.UNSTABLE)


@dataclass
class Previous:
    """An earlier, unfinished run of the same directory."""

    run_dir: Path
    summary: dict
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # finished series, by name

    @property
    def config(self) -> dict:
        return self.summary["config"]

    def entry(self, name: str) -> dict | None:
        return self.summary.get("series", {}).get(name)

    def finished(self, name: str) -> bool:
        e = self.entry(name)
        return e is not None and e.get("status") in [s.value for s in FINISHED] and name in self.arrays

    def checkpoint(self, name: str) -> Path:
        return self.run_dir / "checkpoints" / f"{name}.ckpt"

    def resumable(self, name: str, ks: list[int]) -> dict[str, np.ndarray] | None:
        """The recorded points of an interrupted series up to its checkpoint, if every one is there
        (a SIGKILL can lose the last ones): the series then continues from the checkpoint."""
        from dlnlab.lab.training import checkpoint_step

        path, arrays = self.checkpoint(name), self.recorded(name)
        if not path.is_file() or arrays is None or "step" not in arrays:
            return None
        k = checkpoint_step(path)
        steps = arrays["step"]
        n_keep = int((steps <= k).sum())
        if steps[:n_keep].tolist() != [s for s in ks if s <= k]:
            return None
        return {key: v[:n_keep] for key, v in arrays.items()}

    def recorded(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays of ``series/<name>.npz`` (an interrupted series' points so far), or None."""
        return read_npz(self.run_dir / "series" / f"{name}.npz")


def load_previous(run_dir: str | Path) -> Previous:
    """The run in ``run_dir`` as it stopped; ConfigError (key ``resume``) if there is none to finish."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    if summary is None:
        raise ConfigError(f"resume: {run_dir} holds no readable summary.json: not a dlnlab run directory")
    if summary.get("stage") == "done" and summary.get("interrupted") is None:
        raise ConfigError(
            f"resume: the run in {run_dir} finished (exit code {summary.get('exit_code')}); nothing to resume"
        )
    prev = Previous(run_dir, summary)
    for name, entry in summary.get("series", {}).items():
        if name != "flow" and entry.get("status") in [s.value for s in FINISHED]:
            arrays = prev.recorded(name)
            if arrays is not None:
                prev.arrays[name] = arrays
    flow = prev.recorded("flow")
    if flow is not None and (prev.entry("flow") or {}).get("status") == Status.OK.value:
        prev.arrays["flow"] = flow
    return prev
