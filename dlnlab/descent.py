"""(S)GD on the packed weights theta: the core of every SGD series (the lab's Lightning module wraps it).

* :class:`MinibatchSampler`: the minibatch indices, drawn from a seeded ``torch.Generator`` in fixed
  blocks, so the sequence does not depend on how a caller splits its steps into chunks; its
  ``state_dict`` makes a resumed run draw exactly what an uninterrupted one would.
* :class:`GDStepper`: ``advance(n)`` takes n steps on a contiguous theta (p,) in place with the
  closed-form gradient: theta_j -= lr g_j, or heavy ball through ``torch.optim.SGD`` (momentum beta).
* :func:`gd`: a whole run from theta0, recorded at requested steps, as a :class:`Trajectory`.

A step at learning rate lr stands for flow time tau = lr (heavy ball: lr / (1 - beta), the distance
one step moves along the flow once the velocity has built up).
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from dlnlab._steps import time_per_step  # torch-free (the config checks count steps with it)
from dlnlab.errors import ArgumentError
from dlnlab.network import Layout, as_layout, unpack
from dlnlab.problem import RegressionProblem, check_problem_dims
from dlnlab.trajectory import Interrupted, Status, Trajectory

__all__ = ["SAMPLINGS", "MinibatchSampler", "EnsembleSampler", "GDStepper", "gd", "time_per_step"]

SAMPLINGS = ("with_replacement", "without_replacement", "reshuffle")
DRAW_BLOCK = 2000  # minibatches drawn per refill of the sampler's buffer
# without replacement: about this many uniforms per refill (N of them a step): an ensemble's members each
# refill, so a block of DRAW_BLOCK steps (N = 20: 40,000 uniforms and their argsort per member) made 2000
# members' 50 steps take 7.2 s (with replacement: 4.6 s); 4096 takes 4.0 s
DRAW_NUMBERS = 4096
# an ensemble's members draw about this many random numbers in all for one block of its steps
ENSEMBLE_BLOCK_NUMBERS = 1 << 20


class MinibatchSampler:
    """Minibatch indices (n, B) for the next n steps, or None for full-batch GD.

    with_replacement: B i.i.d. uniform indices a step. without_replacement: B distinct indices a step,
    a uniform B-subset drawn afresh at every step (the first B of a uniform permutation), so the steps'
    noises are independent: the minibatch gradient's covariance is (N - B) / (B (N - 1)) Sigma, the
    SME's. reshuffle (random reshuffling): consecutive slices of a stream of fresh permutations of
    0..N-1, so an epoch of N / B steps sees every sample once and its noises cancel (SGD is then O(eta)
    from the flow, not O(eta^1/2)). B >= N without replacement or reshuffled is full-batch GD.
    """

    def __init__(
        self, n_samples: int, batch_size: int | None, sampling: str = "with_replacement", seed: int = 0
    ):
        if sampling not in SAMPLINGS:
            raise ArgumentError("sampling", f"unknown sampling {sampling!r}; allowed: {', '.join(SAMPLINGS)}")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1
        ):
            raise ArgumentError(
                "batch_size", f"must be an integer >= 1 or None (full batch), got {batch_size!r}"
            )
        batch_size = None if batch_size is None else int(batch_size)
        self.n_samples, self.batch_size, self.sampling = int(n_samples), batch_size, sampling
        self.full_batch = batch_size is None or (batch_size >= n_samples and sampling != "with_replacement")
        self.generator = torch.Generator().manual_seed(int(seed))
        self._buffer = torch.empty(0, dtype=torch.long)  # drawn, not yet handed out (flat)

    def _refill(self, need: int) -> None:
        parts = [self._buffer]
        have = self._buffer.numel()
        while have < need:
            if self.sampling == "with_replacement":
                block = torch.randint(
                    self.n_samples, (DRAW_BLOCK * self.batch_size,), generator=self.generator
                )
            elif self.sampling == "without_replacement":  # a uniform permutation's first B, per step
                steps = max(1, min(DRAW_BLOCK, DRAW_NUMBERS // self.n_samples))
                uniforms = torch.rand(steps, self.n_samples, generator=self.generator, dtype=torch.float64)
                block = uniforms.argsort(dim=-1)[:, : self.batch_size].reshape(-1)
            else:
                block = torch.randperm(self.n_samples, generator=self.generator)
            parts.append(block)
            have += block.numel()
        self._buffer = torch.cat(parts)

    def draw(self, n: int) -> Tensor | None:
        """The indices (n, B) of the next n minibatches (None for full batch)."""
        if self.full_batch:
            return None
        need = n * self.batch_size
        if self._buffer.numel() < need:
            self._refill(need)
        out, self._buffer = self._buffer[:need], self._buffer[need:]
        return out.view(n, self.batch_size)

    def state_dict(self) -> dict:
        # "sampling" names the scheme the buffer was drawn by; states saved before it was recorded have
        # none, and their without_replacement was what reshuffle is now (the run's resume checks it)
        return {
            "generator": self.generator.get_state(),
            "buffer": self._buffer.clone(),
            "sampling": self.sampling,
        }

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("sampling")
        if saved is not None and saved != self.sampling:
            raise ArgumentError(
                "sampling", f"the state was drawn {saved}, this sampler draws {self.sampling}"
            )
        self.generator.set_state(state["generator"])
        self._buffer = state["buffer"].clone()


class EnsembleSampler:
    """One :class:`MinibatchSampler` per member of an ensemble, each with its own seed: member e draws
    exactly what a single run with seed ``seeds[e]`` draws. ``draw(n)`` gives (n, E, B) or None.

    The members' indices are taken in blocks of steps into one (E, k B) buffer and handed out a slice a
    step: a member's draw costs about 8 us of Python, so drawing each member every step made 1000 members
    8 ms a step (most of a 1000-member SGD ensemble's time on the tiny net; measured). A block is the
    steps for which the members draw about ENSEMBLE_BLOCK_NUMBERS random numbers in all (N a step each
    without replacement, B otherwise), so that a short run does not pay for many steps drawn ahead
    (sized by indices alone, 4 members of N = 1000, B = 1 drew 65 s of uniforms ahead). Each member still
    draws from its own generator in its own order, so the indices are the same numbers."""

    def __init__(self, n_samples: int, batch_size: int | None, sampling: str, seeds: Sequence[int]) -> None:
        self.members = [MinibatchSampler(n_samples, batch_size, sampling, int(s)) for s in seeds]
        self.full_batch = self.members[0].full_batch
        self.batch_size = batch_size
        # the random numbers a member draws for a step: N uniforms without replacement, else B indices
        self._numbers_a_step = n_samples if sampling == "without_replacement" else (batch_size or 1)
        self._buffer = torch.empty(len(self.members), 0, dtype=torch.long)  # (E, taken, not handed out)

    def draw(self, n: int) -> Tensor | None:
        if self.full_batch:
            return None
        size, members = self.batch_size, len(self.members)
        need = n * size
        if self._buffer.shape[1] < need:
            want = n - self._buffer.shape[1] // size
            steps = max(want, ENSEMBLE_BLOCK_NUMBERS // (members * self._numbers_a_step))
            fresh = torch.stack([m.draw(steps).reshape(-1) for m in self.members])
            self._buffer = torch.cat([self._buffer, fresh], dim=1)
        out, self._buffer = self._buffer[:, :need], self._buffer[:, need:]
        return out.reshape(members, n, size).transpose(0, 1).contiguous()

    def state_dict(self) -> dict:
        """Each member's state as its own sampler's, the indices taken but not handed out first."""
        states = [m.state_dict() for m in self.members]
        for taken, state in zip(self._buffer, states):
            state["buffer"] = torch.cat([taken, state["buffer"]])
        return {"members": states}

    def load_state_dict(self, state: dict) -> None:
        for m, st in zip(self.members, state["members"]):
            m.load_state_dict(st)
        self._buffer = torch.empty(len(self.members), 0, dtype=torch.long)


class GDStepper:
    """(S)GD steps on theta (p,), or an ensemble (E, p), in place, with the closed-form gradient.

    Without momentum the update is theta_j -= lr g_j on the views W_j of a contiguous theta (the same
    update as ``torch.optim.SGD`` without momentum). With momentum it is ``torch.optim.SGD`` over theta
    (``self.optimizer``; its state holds the velocity). ``steps`` counts the steps taken. An ensemble
    steps every member at once (batched products; an :class:`EnsembleSampler` gives each member its
    own minibatches); the update is elementwise, so each member follows its own trajectory.
    """

    def __init__(
        self,
        problem: RegressionProblem,
        dims: Layout | Sequence[int],
        theta0: Tensor,
        lr: float,
        momentum: float = 0.0,
        sampler: MinibatchSampler | None = None,
    ) -> None:
        layout = as_layout(dims)
        check_problem_dims(problem, layout)
        theta0 = _as_states(theta0, problem)
        if not (math.isfinite(lr) and lr > 0):
            raise ArgumentError("lr", f"must be finite and > 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ArgumentError("momentum", f"must be in [0, 1), got {momentum}")
        if theta0.ndim not in (1, 2) or theta0.shape[-1] != layout.n_weights:
            raise ArgumentError(
                "theta0",
                f"has shape {tuple(theta0.shape)}, dims {list(layout.dims)} need ({layout.n_weights},) "
                f"or (members, {layout.n_weights})",
            )
        self.problem, self.layout, self.lr, self.momentum = problem, layout, float(lr), float(momentum)
        self.tau = time_per_step(self.lr, self.momentum)
        self.sampler = sampler or MinibatchSampler(problem.n_samples, None)
        self.theta = theta0.detach().to(dtype=problem.X.dtype, device=problem.X.device).clone().contiguous()
        self.views = unpack(self.theta, layout)
        self.steps = 0
        self.optimizer: torch.optim.SGD | None = None
        if self.momentum:
            self.optimizer = torch.optim.SGD([self.theta], lr=self.lr, momentum=self.momentum)
            self._grad = torch.zeros_like(self.theta)
            self._grad_views = unpack(self._grad, layout)

    @torch.no_grad()
    def advance(self, n: int) -> None:
        """Take n steps (drawing their minibatches from the sampler)."""
        if n <= 0:
            return
        index = self.sampler.draw(n)  # drawn on the CPU (the generator's stream), used where theta is
        if index is not None and self.theta.device.type != "cpu":
            index = index.to(self.theta.device)
        views, prob, lr = self.views, self.problem, self.lr
        if self.optimizer is not None:
            self.theta.grad = self._grad
            for i in range(n):
                grads = prob.step_gradient(views, None if index is None else index[i])
                for gv, g in zip(self._grad_views, grads):
                    gv.copy_(g)
                self.optimizer.step()
        elif index is None:
            for _ in range(n):
                for w, g in zip(views, prob.step_gradient(views)):
                    w.sub_(g, alpha=lr)
        else:
            for i in range(n):
                for w, g in zip(views, prob.step_gradient(views, index[i])):
                    w.sub_(g, alpha=lr)
        self.steps += n

    def divergence(self, blowup: float = math.inf) -> str | None:
        """Why the weights count as diverged (non-finite, or ||theta|| > blowup), or None; an ensemble:
        why its first diverged member does (see :meth:`member_divergence`)."""
        if self.theta.ndim == 2:
            why = self.member_divergence(blowup)
            return next(iter(why.values()), None)
        return self._why(float(torch.linalg.vector_norm(self.theta)), blowup)

    def member_divergence(self, blowup: float = math.inf) -> dict[int, str]:
        """{member: why} for the members of an ensemble that count as diverged."""
        norms = torch.linalg.vector_norm(self.theta, dim=-1).tolist()
        out = {e: self._why(v, blowup) for e, v in enumerate(norms)}
        return {e: f"member {e}: {why}" for e, why in out.items() if why is not None}

    def _why(self, norm: float, blowup: float) -> str | None:
        if not math.isfinite(norm):
            return f"non-finite weights at step {self.steps} (t = {self.steps * self.tau:.6g})"
        if norm > blowup:
            return f"||theta|| = {norm:.3g} > {blowup:.3g} at step {self.steps} (t = {self.steps * self.tau:.6g})"
        return None

    def state_dict(self) -> dict:
        state = {"theta": self.theta.clone(), "steps": self.steps, "sampler": self.sampler.state_dict()}
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.theta.copy_(state["theta"])
        self.steps = int(state["steps"])
        self.sampler.load_state_dict(state["sampler"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])


def _as_states(theta0, problem: RegressionProblem) -> Tensor:
    """theta0 as a tensor: a numpy array or a list (of Python floats, which torch would make float32)
    in the problem's dtype, as integrate takes them."""
    return theta0 if isinstance(theta0, Tensor) else torch.as_tensor(theta0, dtype=problem.X.dtype)


def _record_steps(steps: int, record: Iterable[int] | None, max_points: int = 1001) -> list[int]:
    if record is None:
        every = max(1, math.ceil(steps / (max_points - 1)))
        record = list(range(0, steps + 1, every)) + [steps]
    out = sorted({int(k) for k in record})
    if not out or out[0] < 0 or out[-1] > steps:
        outside = [k for k in out if not 0 <= k <= steps]
        got = f"{len(outside)} outside, e.g. {outside[:3]}" if outside else "none"
        raise ArgumentError("record_steps", f"must be steps in 0 .. {steps}, got {got}")
    return out


def _sampler(problem, theta0: Tensor, batch_size, sampling: str, seed) -> MinibatchSampler | EnsembleSampler:
    seeds = [int(seed)] if isinstance(seed, numbers.Integral) else list(seed)
    if theta0.ndim == 1:
        if len(seeds) != 1:
            raise ArgumentError("seed", f"one net takes one seed, got {len(seeds)}")
        return MinibatchSampler(problem.n_samples, batch_size, sampling, seeds[0])
    if len(seeds) != len(theta0):
        if batch_size is not None:
            raise ArgumentError(
                "seed", f"an ensemble of {len(theta0)} with minibatches needs one seed per member"
            )
        seeds = seeds * len(theta0)  # full batch: the seeds draw nothing
    return EnsembleSampler(problem.n_samples, batch_size, sampling, seeds)


def gd(
    problem: RegressionProblem,
    dims: Layout | Sequence[int],
    theta0: Tensor,
    lr: float,
    steps: int,
    *,
    momentum: float = 0.0,
    batch_size: int | None = None,
    sampling: str = "with_replacement",
    seed: int | Sequence[int] = 0,
    record_steps: Iterable[int] | None = None,
    blowup: float = math.inf,
    progress: Callable[[float, float], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Trajectory:
    """Run ``steps`` (S)GD steps from theta0 (p,), or an ensemble (E, p); record theta at ``record_steps``.

    theta0: a tensor, numpy array or list, taken in the problem's dtype and device; dims must end in the
    data's d_x and d_y (else an ArgumentError naming ``dims``).

    record_steps: step indices in 0..steps (default: about 1000 evenly spaced, and the last). Times are
    t = k tau, tau = lr / (1 - momentum). batch_size None is full-batch GD; else minibatches of that
    size (``sampling`` with or without replacement, drawn from ``seed``; an ensemble with minibatches
    takes one seed per member, member e drawing what a single run with ``seed[e]`` draws). The run
    stops as diverged when, at a recorded step, theta is non-finite or ||theta|| > blowup (an
    ensemble: every member). Ctrl+C raises :class:`~dlnlab.trajectory.Interrupted` with the trajectory
    so far, and so does ``stop()`` returning True (checked at every recorded step, as ``integrate``'s).
    ``progress(t, t_end)`` is called at every recorded step. theta is (T, p) or (T, E, p).
    """
    layout = as_layout(dims)  # checked against the data by GDStepper
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ArgumentError("steps", f"must be an integer >= 0, got {steps!r}")
    steps, theta0 = int(steps), _as_states(theta0, problem)  # numpy's integers as Python's
    record = _record_steps(steps, record_steps)
    sampler = _sampler(problem, theta0, batch_size, sampling, seed)
    stepper = GDStepper(problem, layout, theta0, lr, momentum, sampler)
    method = ("gd" if sampler.full_batch else "sgd") + ("_heavy_ball" if momentum else "")
    thetas, taken, start = [], [], time.perf_counter()

    def result(status: Status, message: str) -> Trajectory:
        ks = torch.tensor(taken, dtype=torch.long)
        theta = torch.stack(thetas) if thetas else stepper.theta.new_zeros(0, layout.n_weights)
        return Trajectory(
            t=ks.to(theta.dtype) * stepper.tau, theta=theta, status=status, message=message, method=method,
            nfe=stepper.steps, njev=0, n_steps=stepper.steps, wall_time_s=time.perf_counter() - start, steps=ks,
        )  # fmt: skip

    try:
        for k in record:
            stepper.advance(k - stepper.steps)
            thetas.append(stepper.theta.clone())
            taken.append(k)
            if progress is not None:
                progress(k * stepper.tau, steps * stepper.tau)
            why = stepper.divergence(blowup)
            if why is not None and (
                theta0.ndim == 1 or len(stepper.member_divergence(blowup)) == len(theta0)
            ):
                return result(Status.DIVERGED, why)
            if stop is not None and k < steps and stop():
                raise Interrupted(result(Status.INTERRUPTED, f"stopped at step {stepper.steps}"))
    except Interrupted:
        raise  # stop(): its own message
    except KeyboardInterrupt as exc:
        raise Interrupted(result(Status.INTERRUPTED, f"interrupted at step {stepper.steps}")) from exc
    return result(Status.OK, f"{steps} steps, t = {steps * stepper.tau:.6g}")
