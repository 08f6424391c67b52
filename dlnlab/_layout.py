"""The node and weight layout of a deep linear network (:class:`Layout`): widths, blocks, slices. No
torch at import (its two tensor-valued members import it when called): the lab's config checks size a
network before torch is imported (a refused config is answered in a fraction of a second)."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from dlnlab.errors import ArgumentError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = ["Layout", "as_layout"]


@dataclass(frozen=True)
class Layout:
    """Node and weight layout of a network with widths ``dims = [d_0, ..., d_h]``."""

    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        # Integral numbers (numpy ints, ...) become ints; 2.5, "4" or True fail below.
        dims = tuple(
            int(d) if isinstance(d, numbers.Integral) and not isinstance(d, bool) else d for d in self.dims
        )
        if len(dims) < 2:
            raise ArgumentError(
                "dims", f"need at least two widths [d_x, ..., d_y] (depth h >= 1), got {list(dims)}"
            )
        for d in dims:
            if isinstance(d, bool) or not isinstance(d, int) or d < 1:
                raise ArgumentError("dims", f"every width must be a positive integer, got {list(dims)}")
        object.__setattr__(self, "dims", dims)

    @property
    def depth(self) -> int:
        """h, the number of weight matrices."""
        return len(self.dims) - 1

    @property
    def d_x(self) -> int:
        return self.dims[0]

    @property
    def d_y(self) -> int:
        return self.dims[-1]

    @property
    def n_nodes(self) -> int:
        return sum(self.dims)

    @property
    def r_max(self) -> int:
        """The largest rank P can have: min_j d_j."""
        return min(self.dims)

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """o_j = d_0 + ... + d_{j-1}: first node of layer j (length h + 2, last is n)."""
        out = [0]
        for d in self.dims:
            out.append(out[-1] + d)
        return tuple(out)

    @cached_property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """Shapes (d_j, d_{j-1}) of W_1, ..., W_h."""
        return tuple((self.dims[j], self.dims[j - 1]) for j in range(1, len(self.dims)))

    @cached_property
    def theta_slices(self) -> tuple[slice, ...]:
        out, start = [], 0
        for r, c in self.shapes:
            out.append(slice(start, start + r * c))
            start += r * c
        return tuple(out)

    @property
    def n_weights(self) -> int:
        """p, the number of masked weights (length of theta)."""
        return self.theta_slices[-1].stop

    def block(self, j: int) -> tuple[slice, slice]:
        """Row and column slices of block (j, j-1) of A, for j = 1..h."""
        if not 1 <= j <= self.depth:
            raise IndexError(f"layer index j must be in 1..{self.depth}, got {j}")
        o = self.offsets
        return slice(o[j], o[j + 1]), slice(o[j - 1], o[j])

    @cached_property
    def theta_index(self) -> Tensor:
        """Flat indices into A (n*n, row-major) of theta's entries: theta = A.reshape(-1)[theta_index]."""
        import torch  # here, not at the top: the lab's config checks use Layout before torch is imported

        n, out = self.n_nodes, []
        for j in range(1, self.depth + 1):
            rows, cols = self.block(j)
            r = torch.arange(rows.start, rows.stop)[:, None]
            c = torch.arange(cols.start, cols.stop)[None, :]
            out.append((r * n + c).reshape(-1))
        return torch.cat(out)

    def mask(self, device: torch.device | str | None = None) -> Tensor:
        """Boolean n x n mask, True exactly on the blocks (j, j-1)."""
        import torch

        m = torch.zeros(self.n_nodes, self.n_nodes, dtype=torch.bool, device=device)
        for j in range(1, self.depth + 1):
            m[self.block(j)] = True
        return m

    def layer_of_node(self, node: int) -> int:
        for j in range(len(self.dims)):
            if node < self.offsets[j + 1]:
                return j
        raise IndexError(node)


def as_layout(dims: Layout | Sequence[int]) -> Layout:
    """``dims`` as a :class:`Layout` (a Layout passes through)."""
    if isinstance(dims, Layout):
        return dims
    if not isinstance(dims, Iterable) or isinstance(dims, (str, bytes)):
        raise ArgumentError("dims", f"must be a sequence of widths [d_x, ..., d_y] or a Layout, got {dims!r}")
    return Layout(tuple(dims))
