"""(S)GD in Lightning: a LightningModule around the core stepper, a data module of step chunks, callbacks.

The math is the core's: :class:`SGDModule` wraps :class:`dlnlab.descent.GDStepper` (the same update, the
same minibatch sampler), so a series run here equals ``dlnlab.gd`` step for step, bit for bit. Time
convention: after k steps the series is at t = k tau, tau = lr / (1 - momentum).

One ``training_step`` runs a whole chunk of steps (about 0.1 s of work), so the Trainer's per-batch
overhead is paid once per chunk. Snapshots of theta are taken at the series' grid steps
k_m = round(t_m / tau) and handed to the callbacks after each chunk. SIGINT / SIGTERM (with the lab's
handlers) are held during a chunk and stop the series at the chunk's end, where its state is
consistent: theta, the step, the optimizer and the sampler's generator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from dlnlab.descent import EnsembleSampler, GDStepper, MinibatchSampler, time_per_step
from dlnlab.lab.callbacks import MetricsCallback
from dlnlab.lab.config import series_grid
from dlnlab.lab.record import step_scale
from dlnlab.network import DeepLinearNetwork
from dlnlab.problem import RegressionProblem
from dlnlab.rundir import atomic_path, signals
from dlnlab.status import Status

__all__ = [
    "SGDModule",
    "SGDDataModule",
    "SeriesOutcome",
    "series_grid",
    "chunk_size",
    "SeriesCheckpoint",
    "checkpoint_step",
    "checkpoint_state",
    "train_series",
]


def chunk_size(gradient_s: float, target_s: float = 0.1, most: int = 2000) -> int:
    """Steps per ``training_step``: about ``target_s`` of work (a signal waits at most that long)."""
    return int(min(most, max(1, round(target_s / max(gradient_s, 1e-9)))))


class _ChunkStream(IterableDataset):
    """Yields {"start": k0, "n": steps} chunks from step ``first`` up to ``n_steps``."""

    def __init__(self, n_steps: int, chunk: int, first: int = 0) -> None:
        self.n_steps, self.chunk, self.first = n_steps, chunk, first

    def __iter__(self) -> Iterator[dict]:
        for k in range(self.first, self.n_steps, self.chunk):
            yield {"start": k, "n": min(self.chunk, self.n_steps - k)}


class SGDDataModule(L.LightningDataModule):
    """The steps of one SGD series, as chunks. The data (X, Y) enter through the problem's statistics,
    and the minibatches are drawn by the module's sampler when a chunk runs (never prefetched)."""

    def __init__(self, n_steps: int, chunk: int = 2000, first: int = 0) -> None:
        super().__init__()
        self.stream = _ChunkStream(n_steps, chunk, first)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.stream, batch_size=None, num_workers=0)


class SGDModule(L.LightningModule):
    """Owns the adjacency module and trains A by (S)GD at learning rate ``lr`` with the core stepper.

    The stepper works on a contiguous copy theta of the masked weights (the blocks of a dense A are
    strided, which costs the small matmuls a few percent) and theta is written back into A after every
    chunk (one scatter). Off-mask entries of A are never touched. Snapshots (step, theta) are taken at
    ``snapshot_steps``; ``new_snapshots`` holds those of the last chunk. An ensemble (``net.members``)
    steps all its members at once, each with its own minibatch seed (``seed``: one per member); a
    member that diverges is recorded in ``member_diverged`` and the others go on (the series stops
    when every member has diverged).
    """

    def __init__(
        self,
        net: DeepLinearNetwork,
        problem: RegressionProblem,
        lr: float,
        snapshot_steps: Sequence[int] = (),
        momentum: float = 0.0,
        blowup_norm: float = math.inf,
        batch_size: int | None = None,
        sampling: str = "with_replacement",
        seed: int | Sequence[int] = 0,
        series_name: str = "sgd",
        step_to_grid: dict[int, int] | None = None,
        step_per_grid: float = 1.0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self._log_hyperparams = False  # the lab logs the run's hparams itself, once, at the end
        self.series_name = series_name
        self.net, self.problem, self.lr, self.momentum = net, problem, float(lr), float(momentum)
        if net.members:
            seeds = [seed] * net.members if isinstance(seed, int) else list(seed)
            sampler = EnsembleSampler(problem.n_samples, batch_size, sampling, seeds)
        else:
            sampler = MinibatchSampler(problem.n_samples, batch_size, sampling, seed)
        self.stepper = GDStepper(problem, net.layout, net.theta(), lr, momentum, sampler)
        self.tau = self.stepper.tau
        self.snapshot_steps = sorted(set(int(s) for s in snapshot_steps))
        self.last_step = self.snapshot_steps[-1] if self.snapshot_steps else 0
        self.step_to_grid = step_to_grid or {k: m for m, k in enumerate(self.snapshot_steps)}
        self.step_per_grid = step_per_grid  # the logger's step of grid point m (GridPoint.log_step)
        self.blowup_norm = blowup_norm
        self.new_snapshots: list[tuple[int, Tensor]] = []
        self.diverged: tuple[int, str] | None = None
        self.member_diverged: dict[int, tuple[int, str]] = {}  # member -> (step, why) in an ensemble
        self.interrupted = False
        self._next_snap = 0
        self._flat_a = net.A.detach().view(*net.A.shape[:-2], -1)  # (n^2,) or (E, n^2)
        self._theta_index = net.layout.theta_index
        self._take_snapshots_upto(0)

    @property
    def step_count(self) -> int:
        return self.stepper.steps

    @property
    def dims(self) -> tuple[int, ...]:
        return self.net.layout.dims

    def configure_optimizers(self):
        # Heavy ball: the stepper's torch.optim.SGD (Lightning checkpoints its velocity). Plain GD
        # updates theta in place; its optimizer over A only stands in for Lightning and never steps.
        return self.stepper.optimizer or torch.optim.SGD([self.net.A], lr=self.lr)

    def _take_snapshots_upto(self, k: int) -> None:
        snaps = self.snapshot_steps
        while self._next_snap < len(snaps) and snaps[self._next_snap] <= k:
            if snaps[self._next_snap] == k:
                self.new_snapshots.append((k, self.stepper.theta.clone()))
                self._check_divergence(k)
            self._next_snap += 1

    def _check_divergence(self, k: int) -> None:
        if not self.net.members:
            why = self.stepper.divergence(self.blowup_norm)
            if why is not None:
                self.diverged = (k, why)
            return
        for e, why in self.stepper.member_divergence(self.blowup_norm).items():
            self.member_diverged.setdefault(e, (k, why))
        if len(self.member_diverged) == self.net.members:
            self.diverged = (k, f"every one of the {self.net.members} members diverged")

    @torch.no_grad()
    def training_step(self, batch: dict, batch_idx: int) -> None:
        self.new_snapshots = []
        end = min(self.step_count + int(batch["n"]), self.last_step)
        snaps = self.snapshot_steps
        while self.step_count < end and self.diverged is None:
            nxt = snaps[self._next_snap] if self._next_snap < len(snaps) else end
            self.stepper.advance(min(max(nxt, self.step_count + 1), end) - self.step_count)
            self._take_snapshots_upto(self.step_count)
        self._flat_a.index_copy_(
            self._flat_a.ndim - 1, self._theta_index, self.stepper.theta
        )  # A holds them again
        if signals.received() is not None and self.step_count < self.last_step:
            self.interrupted = True  # a signal in the last chunk lets the series end: all its steps ran
        if self.diverged is not None or self.interrupted:
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = self.stepper.state_dict()
        state.pop("optimizer", None)  # Lightning saves the optimizer itself
        checkpoint["dlnlab"] = {
            "stepper": state, "next_snapshot": self._next_snap, "member_diverged": self.member_diverged,
        }  # fmt: skip

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["dlnlab"]
        self.stepper.theta.copy_(state["stepper"]["theta"])
        self.stepper.steps = int(state["stepper"]["steps"])
        self.stepper.sampler.load_state_dict(state["stepper"]["sampler"])
        self._next_snap = int(state["next_snapshot"])
        self.member_diverged = dict(state.get("member_diverged", {}))
        self.new_snapshots = []


class SeriesCheckpoint(L.Callback):
    """Lightning checkpoints of a running series, at the end of a chunk (where its state is consistent):
    every ``every_s`` seconds of wall time, and when a signal stops it. Written atomically; removed
    when the series finishes.

    Not Lightning's ModelCheckpoint: it skips a save when ``trainer.global_step`` has not moved, and
    with manual optimisation ``global_step`` counts ``optimizer.step()`` calls, which plain GD (an
    in-place update) never makes.
    """

    def __init__(self, path: str | Path, every_s: float = 60.0) -> None:
        self.path, self.every_s = Path(path), float(every_s)
        self._last = time.monotonic()
        self._saved_at: int | None = None

    def save(self, trainer, pl_module) -> None:
        with atomic_path(self.path) as tmp:
            trainer.save_checkpoint(tmp)
        self._last, self._saved_at = time.monotonic(), pl_module.step_count

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.interrupted or time.monotonic() - self._last >= self.every_s:
            self.save(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception) -> None:
        # Lightning's own SIGTERM handling raises SIGTERMException (a SystemExit) between two chunks,
        # where the state is consistent: a SIGTERM that came after this chunk's save (during the
        # callbacks that follow it) would otherwise leave no checkpoint, and a resume would run the
        # series from its start.
        if isinstance(exception, SystemExit) and self._saved_at != pl_module.step_count:
            self.save(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if not pl_module.interrupted and self.path.exists():
            self.path.unlink()  # finished: nothing to resume


def checkpoint_step(path: str | Path) -> int:
    """The step a series checkpoint was taken at."""
    return checkpoint_state(path).step


@dataclass(frozen=True)
class CheckpointState:
    """What a series checkpoint holds (see :class:`~dlnlab.lab.callbacks.MetricsCallback`): the step,
    theta, the recorder's open block (position, points) or None, and the sampling its minibatches were
    drawn by (None in checkpoints made before it was recorded)."""

    step: int
    theta: Tensor
    block: tuple[int, list] | None
    sampling: str | None

    def other_sampling(self, sampling: str | None) -> str | None:
        """Why its minibatches cannot continue a series drawn by ``sampling`` (None: full batch, nothing
        drawn), or None. A checkpoint without a recorded sampling predates ``reshuffle``: its
        with_replacement is today's, its without_replacement was today's reshuffle (epochs), not a fresh
        subset at every step."""
        saved = self.sampling
        if sampling is None or saved == sampling or (saved is None and sampling == "with_replacement"):
            return None
        if saved is None:
            return (
                "was made when sgd.sampling=without_replacement meant reshuffled epochs (now "
                "sgd.sampling=reshuffle)"
            )
        return f"drew its minibatches {saved}, not {sampling}"


def checkpoint_state(path: str | Path) -> CheckpointState:
    """A series checkpoint's :class:`CheckpointState`; raises on a damaged file (random bytes, cut short)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own file
    state = ckpt["dlnlab"]["stepper"]
    block = (ckpt.get("callbacks") or {}).get(MetricsCallback.state_key)
    opened = None if block is None else (int(block["position"]), list(block["open"]))
    sampler = state["sampler"]
    sampler = sampler["members"][0] if "members" in sampler else sampler  # an ensemble's: one scheme
    return CheckpointState(
        int(state["steps"]), torch.as_tensor(state["theta"]), opened, sampler.get("sampling")
    )


@dataclass
class SeriesOutcome:
    status: Status  # ok, diverged or interrupted
    steps: int
    t_stop: float
    message: str
    member_diverged: dict[int, tuple[int, str]] = field(default_factory=dict)  # an ensemble's


def make_trainer(callbacks: list, logger=None, device: torch.device | None = None) -> L.Trainer:
    """A Trainer for one series: the series' logger; no progress bar, model summary or validation."""
    import logging
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Your `IterableDataset` has `__len__` defined.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    # resuming mid-"epoch": the chunk stream starts at the checkpoint's step itself
    warnings.filterwarnings(
        "ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*"
    )
    return L.Trainer(
        max_epochs=1,
        accelerator="gpu" if device is not None and device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device is not None and device.type == "cuda" else 1,
        logger=logger if logger is not None else False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
    )


def train_series(
    problem: RegressionProblem,
    dims: Sequence[int],
    theta0: Tensor,
    lr: float,
    dt: float,
    n_grid: int,
    recorder,
    batch_size: int | None = None,
    sampling: str = "with_replacement",
    momentum: float = 0.0,
    seed: int | Sequence[int] = 0,
    blowup_norm: float = math.inf,
    progress=None,
    chunk: int = 2000,
    logger=None,
    callbacks: Sequence[L.Callback] = (),
    name: str = "sgd",
    checkpoint: str | Path | None = None,
    checkpoint_every_s: float = 60.0,
    resume: bool = False,
    device: torch.device | None = None,
    reopened: tuple[int, list] | None = None,
) -> SeriesOutcome:
    """(S)GD steps from theta0 in Lightning up to the last grid point, recording every grid point.

    A step stands for time tau = lr / (1 - momentum). ``logger`` is the series' Lightning logger (the
    Trainer's); ``callbacks`` are more Lightning callbacks (e.g. a user's GridPointCallback). SIGINT /
    SIGTERM end the series as ``interrupted`` at the end of the running chunk (or, without the lab's
    handlers, where Lightning stops), with every snapshot taken so far recorded. With ``checkpoint``
    (a path) the series is checkpointed there (see :class:`SeriesCheckpoint`); ``resume`` continues
    it from that checkpoint (Lightning's ``ckpt_path``): the same steps, the same numbers, bit for bit;
    ``reopened`` is then the recorder's open block at the checkpoint, handed to it again (see
    :class:`~dlnlab.lab.callbacks.MetricsCallback`).
    """
    tau = time_per_step(lr, momentum)
    ms, ks = series_grid(n_grid, dt, tau)
    net = DeepLinearNetwork.from_theta(dims, theta0.to(problem.X.device).clone())
    module = SGDModule(
        net, problem, lr, snapshot_steps=ks, momentum=momentum, blowup_norm=blowup_norm,
        batch_size=batch_size, sampling=sampling, seed=seed, series_name=name, step_to_grid=dict(zip(ks, ms)),
        step_per_grid=step_scale(dt),
    )  # fmt: skip
    first = checkpoint_step(checkpoint) if resume else 0
    data = SGDDataModule(ks[-1], chunk=chunk, first=first)
    metrics = MetricsCallback(recorder, progress, reopened)
    if resume:
        metrics.last_step = first  # the snapshots up to the checkpoint are recorded already
    saver = [SeriesCheckpoint(checkpoint, checkpoint_every_s)] if checkpoint is not None else []
    trainer = make_trainer([metrics, *saver, *callbacks], logger, device)
    try:
        # With the lab's handlers a signal during fit is only noted; the module stops at the end of
        # its chunk (consistent state, checkpointed). Without them Lightning handles Ctrl+C itself.
        with signals.deferred(raise_at_end=False):
            trainer.fit(module, datamodule=data, ckpt_path=str(checkpoint) if resume else None)
    except (KeyboardInterrupt, SystemExit):  # Lightning: KeyboardInterrupt -> shutdown -> exit(1)
        metrics.drain(module)
        k = metrics.last_step or 0
        if k < ks[-1]:
            return SeriesOutcome(Status.INTERRUPTED, k, k * tau, "interrupted")
        if checkpoint is not None:  # Lightning's SIGTERM stop after the last step: the series is whole
            Path(checkpoint).unlink(missing_ok=True)
    gone = module.member_diverged
    if module.diverged is not None:
        k, msg = module.diverged
        return SeriesOutcome(Status.DIVERGED, k, k * tau, msg, gone)
    if module.interrupted:
        return SeriesOutcome(
            Status.INTERRUPTED, module.step_count, module.step_count * tau, "interrupted", gone
        )
    return SeriesOutcome(Status.OK, module.step_count, module.step_count * tau, "", gone)
