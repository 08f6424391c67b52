"""Finishing an interrupted run: what it had done, read back from its own directory.

``python scripts/train.py resume=<run dir>`` (or :func:`dlnlab.lab.runner._driver.resume`) reruns a run
with the config it was started with (its ``summary.json``), in its own directory, holding the
directory's lock (:mod:`dlnlab.lab.runner._lock`):

* refused (one line, exit code 2, nothing written) for a sweep's folder, when ``summary.json`` is
  missing, unreadable or not a run summary, when the run finished, when ``problem.npz`` is missing or
  unreadable, when the config no longer builds the same data, dims and initial weights as it holds (a
  data or init file changed), when summary.json's config differs from the one the run started with in
  a key that changes a series' numbers (:mod:`dlnlab.lab.runner._resume_config`), or when the recomputed
  flow differs from the recorded one by more than 10 x its tolerance (summary.json put back as it was);
* what happens to each series is its kind's ``resume`` policy (:class:`~dlnlab.lab.runner._kind.Resume`):
* the flow and GD's modified flows are recomputed (the SGD series need them at their exact times, which
  are not stored) and, if they had finished, checked against their ``series/<name>.npz``, not rewritten;
* an SME ensemble runs again from its start;
* a finished SGD series (ok, diverged, unstable) is read back, not recomputed;
* an interrupted one continues from its Lightning checkpoint (``checkpoints/<series>.ckpt``) with the
  points it had recorded, bit for bit as if it had never stopped;
* a series whose file or checkpoint is unreadable, cut short or inconsistent (a finished flow's too)
  is run again from its start, and the resume record says why;
* ``summary.json`` lists each resume under ``resumed``: when, where the run had stopped, and per
  series ``kept``, ``continued from its checkpoint`` or ``run from the start`` (with the reason when
  a damaged file forced it), or, for a series a signal kept the resume from starting, ``not run: the
  resume stopped before it (planned: ...)`` (:meth:`~dlnlab.lab.runner._tasks.ResumeStep.not_started`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dlnlab.errors import SeriesWarning
from dlnlab.lab.config import ConfigError, resume_shell_command
from dlnlab.lab.record import ORDER_FILE
from dlnlab.lab.results import RunStatus
from dlnlab.metrics import MEMBERLESS_KEYS, members_of, theta_rows
from dlnlab.network import unpack
from dlnlab.rundir import read_npz
from dlnlab.status import FINISHED, Status

__all__ = ["Previous", "Continuation", "load_previous", "check_problem", "check_series",
           "check_recomputed_flow", "ResumeRefused"]  # fmt: skip


@dataclass
class Continuation:
    """Where an interrupted SGD series continues from its checkpoint: the points kept from its file
    (``kept``, up to the last block boundary before the checkpoint), ``position`` (the points it had at
    the checkpoint), the points of the open block (``reopen``: (m, t, step, theta), from the
    checkpoint, recorded again so that they are computed in the same block as in an unbroken run,
    see :class:`~dlnlab.lab.callbacks.MetricsCallback`) and the last grid point the run had logged."""

    kept: dict[str, np.ndarray]
    position: int
    reopen: list
    logged_upto: int

    def preload(self) -> tuple | None:
        """The open block as a recorder's ``preload`` (ms, ts, thetas, steps), or None."""
        if not self.reopen:
            return None
        ms, ts, steps, thetas = zip(*[(p[0], p[1], p[2], p[3]) for p in self.reopen])
        return list(ms), list(ts), torch.stack(list(thetas)), list(steps)


class ResumeRefused(ConfigError):
    """The resume cannot continue this run (found once it had started): summary.json is put back."""


@dataclass
class Previous:
    """An earlier, unfinished run of the same directory."""

    run_dir: Path
    summary: dict
    raw: bytes = b""  # summary.json as it was, put back if the resume is refused after it started
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # finished series, by name
    damaged: dict[str, str] = field(default_factory=dict)  # series -> why its files cannot be used
    # the TensorBoard event files the earlier run(s) wrote, by series (tensorboard/<series>/), as found
    events: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def config(self) -> dict:
        return self.summary["config"]

    def entry(self, name: str) -> dict | None:
        return self.summary.get("series", {}).get(name)

    def finished(self, name: str) -> bool:
        e = self.entry(name)
        return e is not None and e.get("status") in FINISHED and name in self.arrays

    def checkpoint(self, name: str) -> Path:
        return self.run_dir / "checkpoints" / f"{name}.ckpt"

    def resumable(self, name: str, ks: list[int], theta_shape, sampling: str | None) -> Continuation | None:
        """How an interrupted series continues from its checkpoint, if its file holds every point up to
        the checkpoint's last block boundary (a SIGKILL can lose the last ones) and the checkpoint is
        readable, of this net and drawn by this ``sampling`` (None: full batch, nothing drawn).
        Otherwise None (the series runs from its start), and ``damaged`` says why when a file is bad
        or of another sampling."""
        from dlnlab.lab.runner._training import checkpoint_state

        path, arrays = self.checkpoint(name), self.recorded(name)
        if not path.is_file() or arrays is None or "step" not in arrays:
            return None
        try:
            state = checkpoint_state(path)
        except Exception as err:  # noqa: BLE001 - a damaged checkpoint: the series runs from its start
            self.damaged[name] = f"checkpoints/{name}.ckpt is unreadable ({type(err).__name__})"
            return None
        k, theta, block = state.step, state.theta, state.block
        if tuple(theta.shape) != tuple(theta_shape) or not 0 <= k <= (ks[-1] if ks else 0):
            self.damaged[name] = f"checkpoints/{name}.ckpt does not belong to this series"
            return None
        other = state.other_sampling(sampling)
        if other is not None:
            self.damaged[name] = f"checkpoints/{name}.ckpt {other}"
            return None
        upto = [s for s in ks if s <= k]
        position, reopen = block if block is not None else (len(upto), [])
        base = position - len(reopen)  # the points kept from the file: up to the open block
        steps = arrays["step"]
        if (
            position != len(upto)
            or [p[2] for p in reopen] != upto[base:]
            or steps[:base].tolist() != upto[:base]
        ):
            return None
        logged = int(arrays["grid_index"][-1]) if len(arrays.get("grid_index", ())) else -1
        return Continuation(_first_points(arrays, base), position, reopen, logged)

    def recorded(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays of ``series/<name>.npz`` (an interrupted series' points so far), or None when it is
        missing or damaged (``damaged`` says why)."""
        arrays, why = _read_series(self.run_dir / "series" / f"{name}.npz")
        if why is not None:
            self.damaged[name] = why
        return arrays

    def drop_events(self, name: str) -> None:
        """A series run again from its start: the earlier run's TensorBoard events of it go (the run
        logs the same points again, bit for bit; kept, each tag had its points twice and past the 1000
        TensorBoard keeps, which then drops a random sample, bucket extremes included)."""
        for path in self.events.pop(name, []):
            path.unlink(missing_ok=True)

    def drop_limit_events(self) -> None:
        """Before the resume logs the limit curves (``.limit`` event files, see
        :func:`~dlnlab.lab.results.log_limit`): the earlier runs' go, so that each curve is there once."""
        for paths in self.events.values():
            for path in [p for p in paths if p.name.endswith(".limit")]:
                path.unlink(missing_ok=True)
                paths.remove(path)

    def drop_closing_events(self) -> None:
        """Before the resume logs the run's closing results (hparams, text; with the custom-scalars
        layout in Lightning's own event files, not ``.scalars`` or ``.figures``): the earlier runs' go,
        so that each HParams row and text is there once, with the finished run's numbers."""
        for name, paths in self.events.items():
            keep = [p for p in paths if p.name.endswith((".scalars", ".figures"))]
            for path in set(paths) - set(keep):
                path.unlink(missing_ok=True)
            self.events[name] = keep

    def how(self, name: str, continued: bool) -> str:
        """The resume record's word for a series that was not kept."""
        if continued:
            return "continued from its checkpoint"
        why = self.damaged.get(name)
        return "run from the start" if why is None else f"run from the start: {why}"


def _first_points(arrays: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """A series file's arrays cut to its first n grid points: along the grid axis (an ensemble's is the
    second, after the members), and ``theta_sub`` (theta every few points) to the rows at those points."""
    ensemble = members_of(arrays) is not None
    last_m = int(arrays["grid_index"][n - 1]) if n and "grid_index" in arrays else -1
    sub = np.asarray(arrays.get("theta_grid_index", ()))
    n_sub = int((sub <= last_m).sum()) if n else 0
    out = {}
    for key, v in arrays.items():
        rows = n_sub if key in ("theta_sub", "theta_grid_index") else n
        out[key] = v[:, :rows] if ensemble and key not in MEMBERLESS_KEYS else v[:rows]
    return out


def _read_series(path: Path) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """(arrays, None), (None, None) when the file is missing, or (None, why) when it is damaged:
    unreadable, cut short, or its rows disagree (every per-row array has one row per time)."""
    if not path.is_file():
        return None, None
    rel = f"series/{path.name}"
    try:
        arrays = read_npz(path)
    except Exception as err:  # noqa: BLE001 - random bytes, a cut zip, a bad header: all unreadable
        return None, f"{rel} is unreadable ({type(err).__name__})"
    if "t" not in arrays or "loss" not in arrays:
        return None, f"{rel} lacks its times or losses"
    n = len(arrays["t"])
    loss = arrays["loss"]
    rows = [loss.shape[-1] if loss.ndim == 2 else len(loss)]  # an ensemble's loss is (E, T)
    rows += [len(arrays[k]) for k in ("step", "grid_index") if k in arrays]
    if any(r != n for r in rows):
        return None, f"{rel} is inconsistent (its arrays disagree on the number of points)"
    return arrays, None


def _read_summary(run_dir: Path) -> tuple[dict, bytes]:
    path = run_dir / "summary.json"
    where = f"resume: {run_dir}"
    if not run_dir.is_dir():
        raise ConfigError(f"{where} is not a directory: give the run directory to finish")
    if (run_dir / "multirun.yaml").is_file() and not path.exists():  # Hydra's sweep folder, not a run
        cli = resume_shell_command(run_dir)
        raise ConfigError(
            f"{where} is a sweep (multirun.yaml): resume(<a job's folder>) finishes a job, {cli} all"
        )
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(
            f"{where} holds no readable summary.json ({err.strerror}), which a run writes as it starts: not a "
            "dlnlab run directory; give the directory of the run to finish"
        ) from None
    try:
        summary = json.loads(raw)
    except ValueError:
        raise ConfigError(
            f"{where}/summary.json is not JSON: not a dlnlab run summary; not resumed"
        ) from None
    if (
        not isinstance(summary, dict)
        or not isinstance(summary.get("config"), dict)
        or not isinstance(summary.get("series", {}), dict)
    ):
        raise ConfigError(
            f"{where}/summary.json is not a dlnlab run summary (a JSON object with the run's config and "
            "series); not resumed"
        )
    return summary, raw


def load_previous(run_dir: str | Path) -> Previous:
    """The run in ``run_dir`` as it stopped; ConfigError (key ``resume``) if there is none to finish.
    Call it holding the directory's lock: a summary that says ``running`` is then a killed run's."""
    run_dir = Path(run_dir)
    summary, raw = _read_summary(run_dir)
    if (
        summary.get("status") != RunStatus.CRASHED
        and summary.get("stage") == "done"
        and not summary.get("interrupted")
        and not summary.get("killed")  # a series worker killed: its series are to be run again
    ):
        raise ConfigError(
            f"resume: the run in {run_dir} finished (exit code {summary.get('exit_code')}); nothing to resume"
        )
    _check_shapes(run_dir, summary)
    prev = Previous(run_dir, summary, raw, events=_event_files(run_dir / "tensorboard"))
    for name, entry in summary.get("series", {}).items():
        if not isinstance(entry, dict):
            raise ConfigError(f"resume: {run_dir}/summary.json: series {name!r} is not an entry; not resumed")
        if name != "flow" and entry.get("status") in FINISHED:
            arrays = prev.recorded(name)
            if arrays is not None:
                prev.arrays[name] = arrays
    if (prev.entry("flow") or {}).get("status") == Status.OK:
        flow = prev.recorded("flow")
        if flow is not None:
            prev.arrays["flow"] = flow
    return prev


def _event_files(log_dir: Path) -> dict[str, list[Path]]:
    """The event files under ``log_dir``, by series (its folders), less the runs' order files: those stay."""
    if not log_dir.is_dir():
        return {}
    files = {d.name: sorted(d.glob("events.out.tfevents.*")) for d in sorted(log_dir.iterdir()) if d.is_dir()}
    return {name: [p for p in paths if p.name != ORDER_FILE] for name, paths in files.items()}


def _check_shapes(run_dir: Path, summary: dict) -> None:
    """Refuse a directory where the run's files cannot be written: a folder the run writes into that is
    not a folder, or a file it writes that is a folder (the resume would fail to write it)."""
    folders = [run_dir / "series", run_dir / "checkpoints"]
    files = [run_dir / "problem.npz", run_dir / "summary.json"]
    for name in summary.get("series") or {}:
        files += [run_dir / "series" / f"{name}.npz", run_dir / "checkpoints" / f"{name}.ckpt"]
    bad = [p for p in folders if p.exists() and not p.is_dir()]
    bad += [p for p in files if p.exists() and not p.is_file()]
    if bad:
        what = "not a folder" if bad[0] in folders else "not a file"
        raise ConfigError(f"resume: {bad[0]} is {what}: the run cannot write there; not resumed")


def check_problem(run_dir: Path, recorded: dict[str, np.ndarray]) -> None:
    """Refuse a resume whose config no longer builds the data, dims and initial weights the run used
    (``recorded``: what :func:`dlnlab.rundir.problem_arrays` gives for the config now)."""
    path = Path(run_dir) / "problem.npz"
    try:
        saved = read_npz(path)
    except Exception as err:  # noqa: BLE001 - unreadable: the run's data cannot be checked
        saved, why = None, f"is unreadable ({type(err).__name__})"
    else:
        why = "is missing"
    if saved is None:
        raise ConfigError(
            f"resume: {path} {why}: it records the data and initial weights the run used, and without it "
            "the resume cannot check that its config still builds them; not resumed"
        )
    what = {"dims": "the dims", "X": "the data (X)", "Y": "the data (Y)", "A0": "the initial weights (A0)"}
    for key, name in what.items():
        if key not in saved:
            raise ConfigError(f"resume: {path} lacks {key}: not a dlnlab problem file; not resumed")
        a, b = np.asarray(saved[key]), np.asarray(recorded[key])
        if a.shape != b.shape or not np.array_equal(a, b):
            raise ConfigError(
                f"resume: {name} its config builds now differ from {path} (a data or init file changed?); "
                "not the same run, not resumed"
            )


def check_series(previous: Previous, grid: np.ndarray, names: list[str], sgd_names: list[str]) -> None:
    """Refuse a resume whose config (summary.json's, perhaps edited) builds another grid or other series
    than the run recorded: its files would be continued on the wrong times (a shorter flow.t_max crashed
    the flow's check with an IndexError) or a changed ``sgd.lrs`` silently mixed two runs. ``grid``: the
    grid t_m the config builds; ``names``: every series it builds; ``sgd_names``: its (S)GD series, which
    the run recorded either as entries or under ``not_run``."""
    where = f"resume: the config in {previous.run_dir}/summary.json"
    recorded = previous.summary.get("grid")
    if isinstance(recorded, dict) and recorded.get("n_grid"):
        if recorded.get("n_grid") != len(grid) or recorded.get("dt") != previous.config["log"]["dt"]:
            raise ConfigError(
                f"{where} builds a grid of {len(grid)} points (flow.t_max, log.dt), but the run recorded "
                f"{recorded.get('n_grid')} points of dt = {recorded.get('dt')} (an edited config?); not resumed"
            )
    flow, _ = _read_series(previous.run_dir / "series" / "flow.npz")  # a damaged one is recorded afresh
    if flow is not None:
        t = np.asarray(flow["t"], dtype=np.float64)
        if len(t) > len(grid) or not np.allclose(t, grid[: len(t)], rtol=1e-12, atol=0.0):
            raise ConfigError(
                f"{where} builds a grid t_m = m dt of {len(grid)} points, but series/flow.npz holds "
                f"{len(t)} points on other times (an edited flow.t_max or log.dt?); not resumed"
            )
    not_run = previous.summary.get("not_run")
    known = set(previous.summary.get("series", {})) | set(not_run if isinstance(not_run, list) else ())
    foreign = sorted(known - set(names))
    unknown = [n for n in sgd_names if n not in known]
    if foreign or unknown:
        what = f"has no series {', '.join(foreign)}" if foreign else f"builds series {', '.join(unknown)}"
        raise ConfigError(
            f"{where} {what} that the run recorded{'' if foreign else ' nowhere'} (an edited sgd.lrs or "
            "series option?); not the same run, not resumed"
        )


def check_recomputed_flow(previous, flow_at, all_t, grid, f, now: dict, problem, layout) -> tuple[dict, dict]:
    """The recorded flow, with how far the recomputed one is from it (tolerance 10 x rtol); ``now``: the
    recomputation's entry (a failure or interrupt there is reported, and the recorded series kept).
    A recomputation further off than the tolerance is not this run's flow: the resume is refused
    (ResumeRefused) rather than continuing the SGD series against another flow."""
    entry, arrays = dict(previous[0]), previous[1]
    if now["status"] != Status.OK:
        warnings.warn(
            f"flow: recomputed for the resume, it stopped ({now['status']}: {now.get('message')}); the "
            "recorded series is kept, and the SGD series' distances to it stop where the recomputation stopped",
            SeriesWarning,
            stacklevel=2,
        )
        entry["resume_check"] = {"status": Status(now["status"]).value, "message": now.get("message")}
        entry["status"] = Status(entry["status"])
        return entry, arrays
    rows, theta = theta_rows(arrays)
    at_grid = flow_at[torch.searchsorted(all_t, grid)]
    if theta is not None:
        now_theta = at_grid[torch.as_tensor(rows)]
        theta = torch.as_tensor(theta if theta.ndim == 2 else np.moveaxis(theta, 0, 1))  # an ensemble's
        diff = float((now_theta - theta).abs().max())
        bound, what = 10 * (f.rtol * float(theta.abs().max()) + f.atol), "theta"
    else:  # theta not saved: the losses (looser: the gradient carries theta's error into them)
        rec = torch.as_tensor(arrays["loss"])
        rec = rec.T if rec.ndim == 2 else rec  # an ensemble's (E, T) -> (T, E)
        loss = problem.loss(unpack(at_grid[: len(rec)], layout))
        diff = float((loss - rec).abs().max()) if len(rec) else 0.0
        bound, what = 100 * (f.rtol * float(rec.abs().max()) + f.atol) if len(rec) else 0.0, "the loss"
    if not diff <= bound:
        raise ResumeRefused(
            f"resume: the flow recomputed now differs from series/flow.npz by {diff:.3g} in {what} (more than "
            f"10 x its tolerance, {bound:.3g}): not the same run (another machine or library version?); not resumed"
        )
    entry["resume_check"] = {"max_abs_diff": diff, "of": what, "tolerance": bound}
    entry["status"] = Status(entry["status"])
    return entry, arrays
