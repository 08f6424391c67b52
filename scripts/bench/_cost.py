"""The body of ``python -m scripts.bench.cost``: the benchmark its docstring describes (scripts/bench/cost.py,
which parses the command line and imports this module only then)."""

from __future__ import annotations

import time

import torch

from dlnlab.init import gaussian
from dlnlab.network import adjacency_from_weights, weights_from_adjacency
from dlnlab.problem import RegressionProblem


def best_time(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(dims: list[int], repeat: int) -> dict:
    h = len(dims) - 1
    problem = RegressionProblem.teacher(
        [1.0] * min(dims[0], dims[-1]), dims[0], dims[-1], max(dims[0], 64), seed=0
    )
    weights = gaussian(dims, 1.0 / dims[0] ** 0.5, seed=0)
    a0 = adjacency_from_weights(weights)

    def blocks():
        return problem.loss_and_gradient(weights_from_adjacency(a0, dims))

    def dense():
        a = a0.clone().requires_grad_(True)
        p = torch.linalg.matrix_power(a, h)[-dims[-1] :, : dims[0]]  # block (h, 0) of A^h
        loss = problem.loss_of_product(p)
        (grad,) = torch.autograd.grad(loss, a)
        return loss, grad

    (lb, gb), (ld, gd) = blocks(), dense()
    grad_blocks = adjacency_from_weights(gb)
    err = float((grad_blocks - gd).abs().max() / gd.abs().max())
    return {
        "dims": dims,
        "n": a0.shape[0],
        "blocks_s": best_time(blocks, repeat),
        "dense_s": best_time(dense, repeat),
        "rel_diff": err,
        "loss_diff": abs(float((lb - ld).detach())),
    }


def report(repeat: int) -> str:
    """The report's markdown: the width-256, depth-8 net and the Figure 1 net, single-threaded."""
    torch.set_num_threads(1)
    rows = [measure([256] * 9, repeat), measure([11, 6, 6, 6, 6, 4], max(repeat, 50))]
    lines = [
        "# Loss and gradient: blocks against dense powers of A",
        "",
        f"Best of {repeat} (50 for the small net), 1 thread, float64, torch {torch.__version__}.",
        "",
        "| dims | n | blocks (s) | dense A^h + autograd (s) | dense / blocks | max rel. diff of the gradient |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dims']} | {r['n']} | {r['blocks_s']:.3g} | {r['dense_s']:.3g} | "
            f"{r['dense_s'] / r['blocks_s']:.0f}x | {r['rel_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"
