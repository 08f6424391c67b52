"""scale * grad L for a stack of nets theta (B, p) on the CPU, in numpy: the batched flows' right-hand side.

Split out of dlnlab/problem.py (whose ``RegressionProblem.gradient_theta`` is the public name and checks
its arguments once, before it calls this); the functions read only the problem's statistics, named by
:class:`Statistics`, so this module does not import the problem (no circle).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from dlnlab.network import Layout

__all__ = ["Statistics", "gradient_stack"]


class Statistics(Protocol):
    """What the stack's gradient reads of a :class:`~dlnlab.problem.RegressionProblem`."""

    P_ls: Tensor
    Sxx: Tensor
    whitened: bool


def gradient_stack(problem: Statistics, theta: Tensor, layout: Layout, out, scale: float) -> Tensor:
    """scale * grad L for a stack theta (B, p) on the CPU, in numpy: the products network.matmul sends to
    numpy anyway, without torch's per-operation cost around them (measured: 0.18 ms instead of 0.33 ms
    for 64 Figure 1 nets, 0.04 ms instead of 0.28 ms for 4; the stiff batch's Newton iterations evaluate
    a few members at a time). Each layer's gradient is written into its block of the result. No checks
    here: :meth:`~dlnlab.problem.RegressionProblem.gradient_theta` checks the stack's width and dims."""
    if out is not None and not out.is_contiguous():  # the blocks are written through views of out
        return out.copy_(gradient_stack(problem, theta, layout, None, scale))
    with np.errstate(all="ignore"):  # a diverging member overflows quietly, as torch's products do
        return _gradient_stack_numpy(problem, theta.detach().numpy(), layout, out, scale)


def _gradient_stack_numpy(problem, y, layout: Layout, out, scale: float) -> Tensor:
    out = torch.from_numpy(np.empty_like(y)) if out is None else out
    b, views = y.shape[0], zip(layout.theta_slices, layout.shapes)
    ws, grads = zip(*((y[:, s].reshape(b, r, c), out.numpy()[:, s].reshape(b, r, c)) for s, (r, c) in views))
    pre = [ws[0]]
    for w in ws[1:]:
        pre.append(np.matmul(w, pre[-1]))
    t = pre[-1] - problem.P_ls.numpy()
    t = t if problem.whitened else np.matmul(t, problem.Sxx.numpy())
    t = t * scale if scale != 1.0 else t
    # The backward sweep on T_j^T (d_x, d_j): grad_j^T = P_{j-1:1} T_j^T and T_{j-1}^T = T_j^T W_j keep the
    # second factor of each product unstrided; numpy's T_j P^T (a transposed second factor) took 222 us
    # instead of 176 us for 3 x 64 Figure 1 nets (the same sums in the same order: the same bits)
    t_tr = t.transpose(0, 2, 1)
    for j in range(len(ws) - 1, 0, -1):
        np.matmul(pre[j - 1], t_tr, out=grads[j].transpose(0, 2, 1))
        t_tr = np.matmul(t_tr, ws[j])
    grads[0][...] = t_tr.transpose(0, 2, 1)
    return out
