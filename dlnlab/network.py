"""The deep linear network as a graph: one block adjacency matrix A.

Convention (docs/theory.md section 1): row = target node, column = source node, nodes ordered layer by layer
(input layer 0 first). W_j (shape d_j x d_{j-1}) sits in block (j, j-1) of A, so A^h has the single
nonzero block (h, 0) = P = W_h ... W_1 and A^{h+1} = 0.

theta is the vector of masked weights: W_1 row-major, then W_2, ..., W_h. Every function here that
takes weights accepts leading batch dimensions: W_j of shape (..., d_j, d_{j-1}), theta (..., p).
All cost goes through the list of blocks, never through dense n x n powers (``dense_power`` exists as
a check for tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

import numpy as np
import torch
from torch import Tensor, nn

from dlnlab._layout import Layout, as_layout
from dlnlab.errors import ArgumentError

__all__ = [
    "Layout",
    "as_layout",
    "DeepLinearNetwork",
    "pack",
    "unpack",
    "flat_blocks",
    "product",
    "chained",
    "adjacency_from_weights",
    "weights_from_adjacency",
]


def pack(weights: Sequence[Tensor], out: Tensor | None = None) -> Tensor:
    """Pack [W_1, ..., W_h] (each (..., d_j, d_{j-1})) into theta of shape (..., p) (into ``out``)."""
    return torch.cat([w.reshape(*w.shape[:-2], -1) for w in weights], dim=-1, out=out)


def unpack(theta: Tensor, dims: Layout | Sequence[int]) -> list[Tensor]:
    """Views [W_1, ..., W_h] of theta (..., p); no copy when theta is contiguous."""
    layout = as_layout(dims)
    if theta.shape[-1] != layout.n_weights:
        raise ArgumentError(
            "theta",
            f"theta has {theta.shape[-1]} entries in its last dimension, dims {list(layout.dims)} "
            f"need {layout.n_weights}",
        )
    batch = theta.shape[:-1]
    return [theta[..., s].reshape(*batch, r, c) for s, (r, c) in zip(layout.theta_slices, layout.shapes)]


def flat_blocks(theta: Tensor, layout: Layout) -> list[Tensor]:
    """:func:`unpack` of one contiguous theta (p,) that needs no gradient, unchecked: each W_j one
    ``as_strided`` view of theta's storage, the views unpack's slices and reshapes make (the same
    elements, the same bits downstream) at 40 % of their cost: 6.5 us against 16 us for the five
    layers of Figure 1 (measured side by side), twice in every evaluation of the flow's right-hand side
    (theta's blocks and its result's). The caller guarantees the shape; anything else goes to unpack."""
    if theta.ndim != 1 or not theta.is_contiguous() or theta.requires_grad:
        return unpack(theta, layout)
    base = theta.storage_offset()
    return [
        theta.as_strided((r, c), (c, 1), base + s.start)
        for s, (r, c) in zip(layout.theta_slices, layout.shapes)
    ]


def _as_float_tensor(x) -> Tensor:
    """A tensor as it is; anything else (a numpy array, a list) as a float64 tensor."""
    return x if isinstance(x, Tensor) else torch.as_tensor(x, dtype=torch.float64)


SMALL_STACKED = 4096  # m k n at most: a stack of products this small goes through numpy


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b. A stack of small products on the CPU (an ensemble's) goes through numpy's matmul, zero-copy:
    torch's CPU bmm costs 46 us for 64 products of 6 x 6 by 6 x 11 in float64, numpy's 5.7 us, one
    single product 5.4 us (measured here). One matrix times one matrix stays torch's: a single net's
    numbers are unchanged to the bit; a stack agrees with them to rounding."""
    if (
        isinstance(a, Tensor)
        and isinstance(b, Tensor)
        and (a.ndim > 2 or b.ndim > 2)
        and a.device.type == "cpu"
        and b.device.type == "cpu"
        and not (a.requires_grad or b.requires_grad)
        and a.shape[-2] * a.shape[-1] * b.shape[-1] <= SMALL_STACKED
    ):
        with np.errstate(all="ignore"):  # a diverging member overflows quietly, as torch's products do
            return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))
    return a @ b


def product(weights: Sequence[Tensor]) -> Tensor:
    """P = W_h ... W_1, shape (..., d_y, d_x)."""
    p = weights[0]
    for w in weights[1:]:
        p = matmul(w, p)
    return p


def chained(weights: Sequence[Tensor], d_x: int, d_y: int) -> Sequence[Tensor]:
    """``weights`` as given, once checked to chain d_x inputs to d_y outputs: W_1 (..., d_1, d_x), each
    W_j taking W_{j-1}'s rows as its columns, W_h with d_y rows. Else an ArgumentError naming the layer
    and its shape expected and given (torch's matmul error named neither, and a last layer of one row
    broadcast against d_y > 1 rows without an error). The shapes alone, no tensor op: 0.6 - 0.9 us for 3
    to 5 layers, against 15 - 40 us for the loss or gradient of such a net (docs/performance.md)."""
    cols = d_x
    try:
        for w in weights:
            shape = w.shape
            if shape[-1] != cols:
                break
            cols = shape[-2]
        else:
            if cols == d_y and weights:
                return weights
    except IndexError:  # a weight of fewer than two dimensions
        pass
    _unchained(weights, d_x, d_y)


def _unchained(weights: Sequence[Tensor], d_x: int, d_y: int) -> NoReturn:
    """The refusal of weights that do not chain: the first layer that breaks the chain, named."""
    h, cols = len(weights), d_x
    if not h:
        raise ArgumentError("weights", "no layers: give [W_1, ..., W_h], h >= 1")
    for j, w in enumerate(weights, start=1):
        shape = tuple(w.shape)
        if len(shape) < 2 or shape[-1] != cols or (j == h and shape[-2] != d_y):
            break
        cols = shape[-2]
    rows = d_y if j == h else (shape[-2] if len(shape) >= 2 else f"d_{j}")
    source = f"the data's d_x = {cols}" if j == 1 else f"the {cols} rows of W_{j - 1}"
    why = f"its columns take {source}" + (f", its rows give the data's d_y = {d_y}" if j == h else "")
    expected = f"W_{j} (weights[{j - 1}]) has shape {shape[-2:]}, expected ({rows}, {cols})"
    raise ArgumentError("weights", f"{expected}: {why}")


def prefix_products(weights: Sequence[Tensor]) -> list[Tensor]:
    """[W_1, W_2 W_1, ..., W_h...W_1] (the partial products P_{j:1}, j = 1..h)."""
    out = [weights[0]]
    for w in weights[1:]:
        out.append(matmul(w, out[-1]))
    return out


def adjacency_from_weights(weights: Sequence[Tensor]) -> Tensor:
    """The n x n block adjacency matrix (..., n, n) holding W_j in block (j, j-1)."""
    layout = Layout(tuple([weights[0].shape[-1]] + [w.shape[-2] for w in weights]))
    for j, w in enumerate(weights, start=1):
        if tuple(w.shape[-2:]) != layout.shapes[j - 1]:
            raise ValueError(f"W_{j} has shape {tuple(w.shape[-2:])}, expected {layout.shapes[j - 1]}")
    batch = max((w.shape[:-2] for w in weights), key=len)  # leading dims must agree (no broadcasting)
    a = weights[0].new_zeros(*batch, layout.n_nodes, layout.n_nodes)
    for j, w in enumerate(weights, start=1):
        rows, cols = layout.block(j)
        a[..., rows, cols] = w
    return a


def weights_from_adjacency(a: Tensor, dims: Layout | Sequence[int]) -> list[Tensor]:
    """Views [W_1, ..., W_h] of the blocks (j, j-1) of A (..., n, n)."""
    layout = as_layout(dims)
    if tuple(a.shape[-2:]) != (layout.n_nodes, layout.n_nodes):
        raise ValueError(
            f"A has shape {tuple(a.shape[-2:])}, dims {list(layout.dims)} need "
            f"{layout.n_nodes} x {layout.n_nodes}"
        )
    return [a[..., r, c] for r, c in (layout.block(j) for j in range(1, layout.depth + 1))]


class DeepLinearNetwork(nn.Module):
    """f(x) = W_h ... W_1 x held as one block adjacency parameter ``A`` (n x n, n = sum(dims)).

    ``members=B`` holds an ensemble of B such nets as one parameter A of shape (B, n, n): every view
    (weights, theta, product, forward) then has a leading member axis. Entries of A outside the mask
    are zero at construction; every update the project makes (the gradient, GD/SGD steps, the flow on
    theta) keeps them exactly zero.
    """

    def __init__(
        self,
        dims: Sequence[int],
        weights: Sequence[Tensor] | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        members: int | None = None,
    ) -> None:
        super().__init__()
        self.layout = as_layout(dims)
        n = self.layout.n_nodes
        self.members = members
        shape = (n, n) if members is None else (int(members), n, n)
        self.A = nn.Parameter(torch.zeros(*shape, dtype=dtype, device=device))
        if weights is not None:
            self.set_weights(weights)

    @classmethod
    def from_weights(cls, weights: Sequence[Tensor]) -> DeepLinearNetwork:
        """From [W_1, ..., W_h], each (d_j, d_{j-1}) or (B, d_j, d_{j-1}) for an ensemble (tensors keep
        their dtype; numpy arrays or lists become float64)."""
        weights = [_as_float_tensor(w) for w in weights]
        dims = [weights[0].shape[-1]] + [w.shape[-2] for w in weights]
        members = weights[0].shape[0] if weights[0].ndim == 3 else None
        return cls(dims, weights=weights, dtype=weights[0].dtype, device=weights[0].device, members=members)

    @classmethod
    def from_theta(cls, dims: Sequence[int], theta: Tensor) -> DeepLinearNetwork:
        """From theta (p,), or (B, p) for an ensemble of B nets (a numpy array or a list: float64)."""
        theta = _as_float_tensor(theta)
        members = theta.shape[0] if theta.ndim == 2 else None
        return cls(dims, weights=unpack(theta, dims), dtype=theta.dtype, device=theta.device, members=members)

    @property
    def dims(self) -> tuple[int, ...]:
        return self.layout.dims

    @property
    def depth(self) -> int:
        return self.layout.depth

    @property
    def weights(self) -> list[Tensor]:
        """Views W_1..W_h of A (no copies: writing into them writes into A).

        The views are made once and kept while A's storage is the same (a view costs about 5 us, as much
        as a whole gradient of a width-4 net: measured 1.7x a plain list of matrices without the cache,
        1.0x with it); ``A.data = ...``, ``.to(...)`` or loading a state dict make them anew. With
        autograd on they are always made anew (a view must be made in the grad mode it is used in)."""
        a = self.A
        if torch.is_grad_enabled():
            return weights_from_adjacency(a, self.layout)
        key = (a.data_ptr(), a.shape, a.stride(), a.dtype, a.device)
        if getattr(self, "_views_key", None) != key:
            self._views = weights_from_adjacency(a, self.layout)
            self._views_key = key
        return list(self._views)

    def weight(self, j: int) -> Tensor:
        """W_j, a view of block (j, j-1), for j = 1..h."""
        return self.A[(..., *self.layout.block(j))]

    def to_weights(self) -> list[Tensor]:
        """Detached copies of W_1..W_h."""
        return [w.detach().clone() for w in self.weights]

    @torch.no_grad()
    def set_weights(self, weights: Sequence[Tensor]) -> None:
        if len(weights) != self.depth:
            raise ValueError(f"expected {self.depth} weight matrices, got {len(weights)}")
        self.A.zero_()
        for j, (w, view) in enumerate(zip(weights, self.weights), start=1):
            if tuple(w.shape) != tuple(view.shape):
                raise ValueError(f"W_{j} has shape {tuple(w.shape)}, expected {tuple(view.shape)}")
            view.copy_(w)

    def mask(self) -> Tensor:
        return self.layout.mask(self.A.device)

    def theta(self) -> Tensor:
        """The packed masked weights, shape (p,) (an ensemble: (B, p)), a copy."""
        return pack([w.detach() for w in self.weights])

    @torch.no_grad()
    def load_theta(self, theta: Tensor) -> None:
        self.set_weights(unpack(theta.to(self.A), self.layout))

    def product(self) -> Tensor:
        """P = W_h ... W_1, shape (d_y, d_x) (an ensemble: (B, d_y, d_x)), through the blocks."""
        return product(self.weights)

    def forward(self, x: Tensor) -> Tensor:
        """x of shape (batch, d_x) -> f(x) of shape (batch, d_y) (an ensemble: (B, batch, d_y))."""
        if x.shape[-1] != self.layout.d_x:
            raise ValueError(f"input has {x.shape[-1]} features, the network takes d_x = {self.layout.d_x}")
        for w in self.weights:
            x = x @ w.mT
        return x

    def dense_power(self, k: int) -> Tensor:
        """A^k by dense n x n products. Exists as a check; never used on a hot path."""
        return torch.linalg.matrix_power(self.A, k)

    def edges(self, tol: float = 0.0) -> list[tuple[int, int, float]]:
        """Edge list (source, target, weight) of the graph, for |weight| > tol."""
        a = self.A.detach()
        tgt, src = torch.nonzero(a.abs() > tol, as_tuple=True)
        return [(int(s), int(t), float(a[t, s])) for t, s in zip(tgt.tolist(), src.tolist())]

    def to_graph(self, tol: float = 0.0) -> dict:
        """The network as a layered graph: ``{"nodes": [(id, layer, index_in_layer)], "edges": [...]}``.

        Edges are (source, target, weight) with row = target, column = source of A.
        """
        nodes = []
        for j, d in enumerate(self.layout.dims):
            nodes += [(self.layout.offsets[j] + i, j, i) for i in range(d)]
        return {"nodes": nodes, "edges": self.edges(tol)}

    def extra_repr(self) -> str:
        ens = f", members={self.members}" if self.members is not None else ""
        return f"dims={list(self.layout.dims)}, n={self.layout.n_nodes}, p={self.layout.n_weights}{ens}"
