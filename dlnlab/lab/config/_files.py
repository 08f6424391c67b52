"""The user's own files: data (``data=file``) and initial weights (``init=file``), checked before use.

Every refusal is a :class:`ConfigError` that starts with the config key (``data.path`` or
``init.path``) and says what is wrong and what is expected. Files are opened with
``allow_pickle=False``: an npz with object arrays is refused, never unpickled. Before any array is
loaded, each one's ``.npy`` header (shape and dtype) is read from the archive: an array whose header
claims more bytes than the archive holds for it (a truncated or forged file: a shape of 10^12 columns
in a few hundred bytes) is refused, the shapes are checked against ``model.dims``, and the claimed
sizes go into the memory estimate, so a file too large for ``limits.memory_gb`` is refused without
reading it. A path longer than the file system takes is refused by its length (:mod:`dlnlab.lab.config._paths`).
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dlnlab._layout import Layout
from dlnlab.lab.config._errors import ConfigError
from dlnlab.lab.config._paths import check_length

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "MAX_ABS_VALUE",
    "ArrayHeader",
    "check_data_shapes",
    "check_weight_shapes",
    "load_data",
    "load_weights",
    "npz_bytes",
    "npz_headers",
]

# |x| above this would square to about 1e200 in the second moments X X^T / N: the loss and its
# gradient are then at the edge of float64; no real data set is near it.
MAX_ABS_VALUE = 1e100


def _path(path: str, key: str) -> Path:
    if not str(path).strip():
        raise ConfigError(f"{key}: empty path; give the path of an .npz file")
    if "\0" in str(path):
        raise ConfigError(f"{key}: the path holds a NUL character, which no file name can")
    check_length(str(path), key)
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise ConfigError(f"{key}: no such file {str(p)!r}")
    if p.is_dir():
        raise ConfigError(f"{key}: {str(p)!r} is a directory; give the path of an .npz file")
    if not p.is_file():
        raise ConfigError(f"{key}: {str(p)!r} is not a regular file")
    if p.stat().st_size == 0:
        raise ConfigError(f"{key}: {str(p)!r} is empty (0 bytes); expected an .npz archive")
    if not zipfile.is_zipfile(p):
        raise ConfigError(
            f"{key}: {str(p)!r} is not an .npz archive (numpy.savez / savez_compressed); "
            "a single .npy array, text or pickle files are not accepted"
        )
    return p


@dataclass(frozen=True)
class ArrayHeader:
    """What an array's ``.npy`` header in the archive claims, and how many data bytes the archive holds."""

    shape: tuple[int, ...]
    dtype: np.dtype
    stored: int

    @property
    def nbytes(self) -> int:  # exact (Python ints): a claimed shape of 10^12 x 10^12 does not overflow
        return math.prod(self.shape) * self.dtype.itemsize


def _header(f, name: str, where: str) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        else:  # 2.0, and 3.0 (the same with a UTF-8 header: numpy has no public reader of its own)
            shape, _, dtype = fmt.read_array_header_2_0(f)
    except zipfile.BadZipFile:  # the archive's fault (a bad CRC), said as such by the caller
        raise
    except Exception as err:  # noqa: BLE001 - numpy parses the header with Python's tokenizer: any error
        raise ConfigError(
            f"{where}: array {name!r} has no readable .npy header ({type(err).__name__}: {err})"
        ) from err
    return tuple(int(n) for n in shape), dtype


def npz_headers(path: str, key: str) -> dict[str, ArrayHeader]:
    """Each array's header, read without loading the array; refuses (naming ``key``) an array whose
    header claims more bytes than the archive holds for it."""
    p = _path(path, key)
    where = f"{key}: {str(p)!r}"
    out = {}
    try:
        with zipfile.ZipFile(p) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename.removesuffix(".npy")
                if name in out:
                    raise ConfigError(
                        f"{where} holds two arrays named {name!r}; which one is meant is unclear"
                    )
                with zf.open(info) as f:
                    shape, dtype = _header(f, name, where)
                    stored = info.file_size - f.tell()
                out[name] = ArrayHeader(shape, dtype, stored)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as err:  # RuntimeError: encrypted
        raise ConfigError(f"{where} is not a readable .npz archive ({err})") from err
    for name, h in out.items():
        if h.dtype.hasobject:
            raise ConfigError(
                f"{where} holds object arrays that only pickle can load (array {name!r}); save plain "
                "numeric arrays (numpy.savez with float or int arrays)"
            )
        if h.nbytes > h.stored:
            raise ConfigError(
                f"{where}: array {name!r} claims shape {h.shape} ({h.dtype}, {_fmt_bytes(h.nbytes)}) but the "
                f"archive holds {_fmt_bytes(max(h.stored, 0))} of it: a truncated or corrupt file"
            )
    return out


def _fmt_bytes(n: int) -> str:
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def npz_bytes(path: str, key: str) -> dict[str, int]:
    """Size in bytes of each array in the archive, from its header, without loading it."""
    return {name: h.nbytes for name, h in npz_headers(path, key).items()}


def _read(path: str, key: str, names: list[str]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of the archive (those it holds), each checked to be finite real numbers.
    Each member is read whole first, so that zip's CRC is checked (numpy's reader stops at the array's
    last byte and never looks at it: a flipped bit would load as another number)."""
    p = _path(path, key)
    try:
        with zipfile.ZipFile(p) as zf:
            held = set(zf.namelist())
            arrays = {
                n: np.load(io.BytesIO(zf.read(f"{n}.npy")), allow_pickle=False)
                for n in names
                if f"{n}.npy" in held
            }
    except ConfigError:
        raise
    except ValueError as err:  # object arrays need pickle, which is never allowed
        if "pickle" in str(err):
            raise ConfigError(
                f"{key}: {str(p)!r} holds object arrays that only pickle can load; save plain numeric "
                "arrays (numpy.savez with float or int arrays)"
            ) from err
        raise ConfigError(f"{key}: {str(p)!r} cannot be read as an .npz archive ({err})") from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{key}: {str(p)!r} cannot be read as an .npz archive ({err})") from err
    for name, arr in arrays.items():
        _check_numeric(arr, f"{key}: array {name!r} of {str(p)!r}")
    return arrays


def _check_numeric(arr: np.ndarray, where: str) -> None:
    if arr.dtype.kind == "c":
        raise ConfigError(f"{where} is complex ({arr.dtype}); the network is real: give real arrays")
    if arr.dtype.kind not in "fiu":
        raise ConfigError(f"{where} has dtype {arr.dtype}; expected real numbers (float or int)")
    if arr.size == 0:
        raise ConfigError(f"{where} is empty (shape {arr.shape})")
    vals = arr.astype(np.float64, copy=False)
    if not np.isfinite(vals).all():
        bad = int((~np.isfinite(vals)).sum())
        raise ConfigError(f"{where} holds {bad} NaN or infinite value(s); every value must be finite")
    big = float(np.abs(vals).max())
    if big > MAX_ABS_VALUE:
        raise ConfigError(f"{where} holds |value| = {big:.3g} > {MAX_ABS_VALUE:g}: rescale the data")


def _shape_hint(x: tuple, y: tuple, d_x: int, d_y: int) -> str:
    """What to do where the file is sound but the config or the layout is not: the refusal said only
    what was needed (for a file of d_x = 6 with model.dims left at model=figure1's, X of shape (11, N))."""
    if len(x) != 2 or len(y) != 2:
        return ""
    if x[0] == y[0] and (x[1], y[1]) == (d_x, d_y):
        return "; the file holds the samples as rows: save X.T and Y.T"
    if x[1] == y[1] and (x[0], y[0]) != (d_x, d_y):
        return f"; for this file set model.dims=[{x[0]}, <hidden widths>, {y[0]}]"
    return ""


def check_data_shapes(path: str, dims: tuple[int, ...]) -> int:
    """N, the number of samples, from the headers of X (d_x, N) and Y (d_y, N) in the npz at ``path``,
    checked against ``dims`` without reading the arrays (and without torch)."""
    key = "data.path"
    heads = npz_headers(path, key)
    missing = [n for n in ("X", "Y") if n not in heads]
    if missing:
        raise ConfigError(
            f"{key}: {path!r} must hold arrays X (d_x x N) and Y (d_y x N); missing {', '.join(missing)}"
            f" (found: {', '.join(sorted(heads)) or 'nothing'})"
        )
    x, y = heads["X"].shape, heads["Y"].shape
    d_x, d_y = dims[0], dims[-1]
    if len(x) != 2 or len(y) != 2 or x[0] != d_x or y[0] != d_y or x[1] != y[1]:
        raise ConfigError(
            f"{key}: X {x} and Y {y} do not fit model.dims={list(dims)}: need X of shape "
            f"({d_x}, N) and Y of shape ({d_y}, N) with the same number of samples N (columns)"
            f"{_shape_hint(x, y, d_x, d_y)}"
        )
    if x[1] == 0:
        raise ConfigError(f"{key}: X and Y have no columns (N = 0 samples); give at least one sample")
    return x[1]


def load_data(path: str, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """X (d_x, N) and Y (d_y, N) as float64 from the npz at ``path``, checked against ``dims`` (the
    shapes from the headers, before the arrays are read)."""
    import torch  # here: the checks before a run's data is read import no torch

    check_data_shapes(path, dims)
    arrays = _read(path, "data.path", ["X", "Y"])
    return torch.from_numpy(arrays["X"].astype(np.float64)), torch.from_numpy(arrays["Y"].astype(np.float64))


_W_KEY = re.compile(r"^W_?(\d+)$")


def _layer_names(path: str, key: str, names: list[str]) -> dict[int, str]:
    """{j: the array's name} for W_1 .. W_h (W_j or Wj); refuses two arrays for one layer."""
    by_layer: dict[int, list[str]] = {}
    for n in names:
        if m := _W_KEY.match(n):
            by_layer.setdefault(int(m.group(1)), []).append(n)
    for j, found in sorted(by_layer.items()):
        if len(found) > 1:
            raise ConfigError(
                f"{key}: {path!r} holds {' and '.join(sorted(found))}, {len(found)} arrays for layer {j}; keep one"
            )
    return {j: found[0] for j, found in by_layer.items()}


def check_weight_shapes(path: str, dims: tuple[int, ...]) -> list[str]:
    """The arrays to read from the npz at ``path``: ``["A0"]``, or the names of W_1 .. W_h in order,
    their shapes checked against ``dims`` from the headers, without reading them (and without torch)."""
    key = "init.path"
    layout = Layout(tuple(dims))
    heads = npz_headers(path, key)
    names = list(heads)
    w_names = _layer_names(path, key, names)
    has_a = "A0" in names
    if has_a and w_names:
        raise ConfigError(f"{key}: {path!r} holds both A0 and W_j arrays; give one of the two")
    if not has_a and not w_names:
        raise ConfigError(
            f"{key}: {path!r} holds neither W_1 .. W_{layout.depth} nor A0 (found: {', '.join(names) or 'nothing'})"
        )
    if has_a:
        n = layout.n_nodes
        if heads["A0"].shape != (n, n):
            raise ConfigError(
                f"{key}: A0 has shape {heads['A0'].shape}; model.dims={list(dims)} has n = {n} nodes: need ({n}, {n})"
            )
        return ["A0"]
    wanted = set(range(1, layout.depth + 1))
    if set(w_names) != wanted:
        extra = sorted(set(w_names) - wanted)
        lost = sorted(wanted - set(w_names))
        what = (f"missing W_{', W_'.join(map(str, lost))}" if lost else "") + (
            f"{'; ' if lost else ''}{', '.join(w_names[j] for j in extra)} beyond the layers W_1 .. W_{layout.depth}"
            if extra
            else ""
        )
        raise ConfigError(f"{key}: model.dims={list(dims)} has depth h = {layout.depth}: {what}")
    for j, shape in enumerate(layout.shapes, start=1):
        if heads[w_names[j]].shape != tuple(shape):
            raise ConfigError(
                f"{key}: {w_names[j]} has shape {heads[w_names[j]].shape}; model.dims={list(dims)} needs "
                f"{tuple(shape)} (d_j x d_{{j-1}})"
            )
    return [w_names[j] for j in sorted(wanted)]


def load_weights(path: str, dims: tuple[int, ...]) -> list[Tensor]:
    """[W_1, ..., W_h] (float64) from the npz at ``path``: either arrays W_1 .. W_h (or W1 .. Wh), or
    A0 (n x n). The shapes are checked from the headers, before the arrays are read.

    Other arrays in the file are ignored, so a run's ``problem.npz`` (which holds A0) can be given.
    """
    import torch

    from dlnlab.network import weights_from_adjacency

    key = "init.path"
    layout = Layout(tuple(dims))
    names = check_weight_shapes(path, dims)
    arrays = _read(path, key, names)
    if names == ["A0"]:
        a0 = arrays["A0"].astype(np.float64)
        off = np.abs(a0 * ~layout.mask().numpy()).max()
        if off > 0:
            raise ConfigError(
                f"{key}: A0 has entries outside the blocks W_j (max |A0_ij| there = {off:.3g}); the "
                "network's edges run only from layer j-1 to layer j"
            )
        return [w.clone() for w in weights_from_adjacency(torch.from_numpy(a0), layout)]
    return [torch.from_numpy(arrays[n].astype(np.float64)) for n in names]
