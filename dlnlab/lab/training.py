"""(S)GD on the adjacency A in Lightning: a LightningModule, a LightningDataModule and a thin callback.

Time convention: after k steps at learning rate eta the series is at t = k * tau, tau = eta (GD) or
eta / (1 - beta) (heavy ball with momentum beta, whose steps move about eta / (1 - beta) along the
flow once the velocity has built up). The data module
streams *chunks* of steps (with their minibatch indices from a seeded torch.Generator); one
``training_step`` runs a whole chunk with the closed-form gradient, so the Trainer's per-batch
overhead is paid once per chunk, not once per step. Snapshots of theta are taken at the log-grid
steps k_m = round(t_m / eta) and handed to the recorder by :class:`RecorderCallback`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from dlnlab.network import DeepLinearNetwork, unpack, weights_from_adjacency
from dlnlab.problem import RegressionProblem

__all__ = ["SGDModule", "SGDDataModule", "RecorderCallback", "SeriesOutcome", "series_grid", "train_series"]


def series_grid(n_grid: int, dt: float, tau: float) -> tuple[list[int], list[int]]:
    """(grid indices m, steps k) of a series whose step stands for time ``tau`` on the grid t_m = m dt.

    k_m = round(t_m / tau). For tau <= dt every grid point has its own step (m = 0 .. n_grid - 1);
    for tau > dt (a step coarser than the grid) each step is recorded once, at the grid point nearest
    to its time k tau.
    """
    ks = np.unique(np.rint(np.arange(n_grid) * dt / tau).astype(np.int64))
    ms = np.minimum(n_grid - 1, np.rint(ks * tau / dt).astype(np.int64))
    return ms.tolist(), ks.tolist()


class _ChunkStream(IterableDataset):
    """Yields {"start": k0, "n": steps, "index": (steps, B) long or None} up to ``n_steps`` steps."""

    def __init__(
        self,
        n_steps: int,
        chunk: int,
        n_samples: int,
        batch_size: int | None,
        sampling: str,
        seed: int,
    ) -> None:
        self.n_steps, self.chunk = n_steps, chunk
        self.n_samples, self.batch_size, self.sampling, self.seed = n_samples, batch_size, sampling, seed

    def _indices(self, gen: torch.Generator, n: int, state: dict) -> Tensor | None:
        b = self.batch_size
        if b is None or (b >= self.n_samples and self.sampling == "without_replacement"):
            return None
        if self.sampling == "with_replacement":
            return torch.randint(self.n_samples, (n, b), generator=gen)
        need = n * b  # a stream of fresh permutations, cut into consecutive batches
        buf: Tensor = state.get("buf", torch.empty(0, dtype=torch.long))
        while buf.numel() < need:
            buf = torch.cat([buf, torch.randperm(self.n_samples, generator=gen)])
        state["buf"] = buf[need:]
        return buf[:need].view(n, b)

    def __iter__(self) -> Iterator[dict]:
        gen = torch.Generator().manual_seed(self.seed)
        state: dict = {}
        for k in range(0, self.n_steps, self.chunk):
            n = min(self.chunk, self.n_steps - k)
            yield {"start": k, "n": n, "index": self._indices(gen, n, state)}


class SGDDataModule(L.LightningDataModule):
    """The data of one SGD series: X, Y of the problem, served as chunks of minibatch indices."""

    def __init__(
        self,
        problem: RegressionProblem,
        n_steps: int,
        batch_size: int | None = None,
        sampling: str = "with_replacement",
        seed: int = 0,
        chunk: int = 2000,
    ) -> None:
        super().__init__()
        self.problem = problem
        self.stream = _ChunkStream(n_steps, chunk, problem.n_samples, batch_size, sampling, seed)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.stream, batch_size=None, num_workers=0)


class SGDModule(L.LightningModule):
    """Owns the adjacency module and trains A by (S)GD at learning rate ``lr``.

    Without momentum the update is the in-place A_j -= lr * G_j (the same update as torch.optim.SGD
    without momentum), applied to a contiguous working copy theta of the masked weights and written
    back into A after every chunk of steps (one scatter; the blocks of a dense A are strided, which
    costs the small matmuls a few percent). With momentum it goes through torch.optim.SGD on A,
    whose gradient buffer is zero off the mask. Off-mask entries of A are never touched.
    Snapshots (step, theta) are taken at ``snapshot_steps``.
    """

    def __init__(
        self,
        net: DeepLinearNetwork,
        problem: RegressionProblem,
        lr: float,
        snapshot_steps: Sequence[int] = (),
        momentum: float = 0.0,
        blowup_norm: float = math.inf,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net, self.problem, self.lr, self.momentum = net, problem, float(lr), float(momentum)
        self.tau = self.lr / (1.0 - self.momentum)  # the flow time of one step
        self.snapshot_steps = sorted(set(int(s) for s in snapshot_steps))
        self.blowup_norm = blowup_norm
        self.step_count = 0
        self.snapshots: list[tuple[int, Tensor]] = []
        self.diverged: tuple[int, str] | None = None
        self._next_snap = 0
        self._flat_a, self._theta_index = net.A.detach().view(-1), net.layout.theta_index
        if self.momentum:  # the optimizer updates A itself: work on A's block views
            self._theta = None
            self._views = weights_from_adjacency(net.A.detach(), net.layout)
            self._grad = torch.zeros_like(net.A)
            self._grad_views = weights_from_adjacency(self._grad, net.layout)
        else:
            self._theta = net.theta()
            self._views = unpack(self._theta, net.layout)
        self._take_snapshots_upto(0)

    def configure_optimizers(self):
        return torch.optim.SGD([self.net.A], lr=self.lr, momentum=self.momentum)

    def _current_theta(self) -> Tensor:
        if self._theta is not None:
            return self._theta.clone()
        return self._flat_a.index_select(0, self._theta_index)  # = pack(views), one gather

    def _take_snapshots_upto(self, k: int) -> None:
        snaps = self.snapshot_steps
        while self._next_snap < len(snaps) and snaps[self._next_snap] <= k:
            if snaps[self._next_snap] == k:
                theta = self._current_theta()
                self.snapshots.append((k, theta))
                norm = float(torch.linalg.vector_norm(theta))
                if not math.isfinite(norm):
                    self.diverged = (k, f"non-finite weights at step {k} (t = {k * self.tau:.6g})")
                elif norm > self.blowup_norm:
                    self.diverged = (k, f"||A||_F = {norm:.3g} > {self.blowup_norm:.3g} at step {k}")
            self._next_snap += 1

    def _step_fn(self, index: Tensor | None):
        """One (S)GD step as a closure over the step index within the chunk: the hot loop's body."""
        views, prob, lr = self._views, self.problem, self.lr
        if self.momentum:
            opt = self.optimizers().optimizer  # the bare torch.optim.SGD
            self.net.A.grad = self._grad  # (Lightning may have reset .grad between chunks)
            grad_views = self._grad_views

            def step(i: int) -> None:
                grads = prob.gradient(views) if index is None else prob.minibatch_gradient(views, index[i])
                for gv, g in zip(grad_views, grads):
                    gv.copy_(g)
                opt.step()

        elif index is None:

            def step(i: int) -> None:
                for w, g in zip(views, prob.gradient(views)):
                    w.sub_(g, alpha=lr)

        else:

            def step(i: int) -> None:
                for w, g in zip(views, prob.minibatch_gradient(views, index[i])):
                    w.sub_(g, alpha=lr)

        return step

    @torch.no_grad()
    def training_step(self, batch: dict, batch_idx: int) -> None:
        step = self._step_fn(batch["index"])
        k, end = self.step_count, self.step_count + int(batch["n"])
        snaps = self.snapshot_steps
        while k < end and self.diverged is None:
            nxt = snaps[self._next_snap] if self._next_snap < len(snaps) else end
            stop = min(max(nxt, k + 1), end)  # run straight to the next snapshot (or the chunk's end)
            for i in range(k - self.step_count, stop - self.step_count):
                step(i)
            k = stop
            self._take_snapshots_upto(k)
        self.step_count = k
        if self._theta is not None:
            self._flat_a.index_copy_(0, self._theta_index, self._theta)  # A holds the weights again
        if self.diverged is not None:
            self.trainer.should_stop = True

    def pop_snapshots(self) -> list[tuple[int, Tensor]]:
        out, self.snapshots = self.snapshots, []
        return out


class RecorderCallback(L.Callback):
    """Hands the module's snapshots to the recorder after every chunk; nothing else."""

    def __init__(self, recorder, step_to_grid: dict[int, int], tau: float, progress=None) -> None:
        self.recorder, self.step_to_grid, self.tau, self.progress = recorder, step_to_grid, tau, progress
        self.last_step: int | None = None

    def drain(self, module: SGDModule) -> None:
        for k, theta in module.pop_snapshots():
            self.recorder.record(self.step_to_grid[k], k * self.tau, theta, step=k, copy=False)
            self.last_step = k

    def on_train_start(self, trainer, pl_module) -> None:
        self.drain(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.drain(pl_module)
        if self.progress is not None:
            self.progress(pl_module.step_count * self.tau)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.drain(pl_module)  # the snapshots of an interrupted chunk are recorded too


@dataclass
class SeriesOutcome:
    status: str  # ok, diverged or interrupted
    steps: int
    t_stop: float
    message: str


def make_trainer(callbacks: list) -> L.Trainer:
    """A Trainer that stays out of the way: no logger, checkpoints, progress bar or summary."""
    import logging
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Your `IterableDataset` has `__len__` defined.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    return L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
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
    seed: int = 0,
    blowup_norm: float = math.inf,
    progress=None,
    chunk: int = 2000,
) -> SeriesOutcome:
    """(S)GD steps from theta0 in Lightning up to the last grid point, recording every grid point.

    A step stands for time tau = lr / (1 - momentum). SIGINT / SIGTERM (which Lightning turns into
    SystemExit after its own shutdown) end the series as ``interrupted`` with every snapshot taken so
    far recorded.
    """
    tau = lr / (1.0 - momentum)
    ms, ks = series_grid(n_grid, dt, tau)
    net = DeepLinearNetwork.from_theta(dims, theta0.clone())
    module = SGDModule(net, problem, lr, snapshot_steps=ks, momentum=momentum, blowup_norm=blowup_norm)
    data = SGDDataModule(problem, ks[-1], batch_size, sampling, seed, chunk=chunk)
    callback = RecorderCallback(recorder, dict(zip(ks, ms)), tau, progress)
    trainer = make_trainer([callback])
    try:
        trainer.fit(module, datamodule=data)
    except (KeyboardInterrupt, SystemExit):  # Lightning: KeyboardInterrupt -> shutdown -> exit(1)
        callback.drain(module)
        k = callback.last_step or 0
        return SeriesOutcome("interrupted", k, k * tau, "interrupted")
    if module.diverged is not None:
        k, msg = module.diverged
        return SeriesOutcome("diverged", k, k * tau, msg)
    return SeriesOutcome("ok", module.step_count, module.step_count * tau, "")
