"""The user's own files: data (``data=file``) and initial weights (``init=file``), checked before use.

Every refusal is a :class:`ConfigError` that starts with the config key (``data.path`` or
``init.path``) and says what is wrong and what is expected. Files are opened with
``allow_pickle=False``: an npz with object arrays is refused, never unpickled. The sizes of the arrays
are read from the archive's directory before anything is loaded, so a file too large for
``limits.memory_gb`` is refused without reading it.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dlnlab.lab.errors import ConfigError
from dlnlab.network import Layout, weights_from_adjacency

__all__ = ["MAX_ABS_VALUE", "load_data", "load_weights", "npz_bytes"]

# |x| above this would square to about 1e200 in the second moments X X^T / N: the loss and its
# gradient are then at the edge of float64; no real data set is near it.
MAX_ABS_VALUE = 1e100


def _path(path: str, key: str) -> Path:
    p = Path(str(path)).expanduser()
    if not str(path).strip():
        raise ConfigError(f"{key}: empty path; give the path of an .npz file")
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


def npz_bytes(path: str, key: str) -> dict[str, int]:
    """Uncompressed size in bytes of each array in the archive, without loading it."""
    p = _path(path, key)
    try:
        with zipfile.ZipFile(p) as zf:
            return {
                info.filename.removesuffix(".npy"): info.file_size
                for info in zf.infolist()
                if info.filename.endswith(".npy")
            }
    except (zipfile.BadZipFile, OSError) as err:
        raise ConfigError(f"{key}: {str(p)!r} is not a readable .npz archive ({err})") from err


def _read(path: str, key: str, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays ``names`` (all when None) of the archive, each checked to be finite real numbers."""
    p = _path(path, key)
    try:
        with np.load(p, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise ConfigError(
                    f"{key}: {str(p)!r} holds a single array, not an .npz archive of named arrays"
                )
            wanted = f.files if names is None else [n for n in names if n in f.files]
            arrays = {n: f[n] for n in wanted}
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


def load_data(path: str, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """X (d_x, N) and Y (d_y, N) as float64 from the npz at ``path``, checked against ``dims``."""
    key = "data.path"
    arrays = _read(path, key, ["X", "Y"])
    missing = [n for n in ("X", "Y") if n not in arrays]
    if missing:
        found = sorted(npz_bytes(path, key))
        raise ConfigError(
            f"{key}: {path!r} must hold arrays X (d_x x N) and Y (d_y x N); missing {', '.join(missing)}"
            f" (found: {', '.join(found) or 'nothing'})"
        )
    x, y = arrays["X"], arrays["Y"]
    d_x, d_y = dims[0], dims[-1]
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != d_x or y.shape[0] != d_y or x.shape[1] != y.shape[1]:
        raise ConfigError(
            f"{key}: X {x.shape} and Y {y.shape} do not fit model.dims={list(dims)}: need X of shape "
            f"({d_x}, N) and Y of shape ({d_y}, N) with the same number of samples N (columns)"
        )
    return torch.from_numpy(x.astype(np.float64)), torch.from_numpy(y.astype(np.float64))


_W_KEY = re.compile(r"^W_?(\d+)$")


def load_weights(path: str, dims: tuple[int, ...]) -> list[Tensor]:
    """[W_1, ..., W_h] (float64) from the npz at ``path``: either arrays W_1 .. W_h, or A0 (n x n).

    Other arrays in the file are ignored, so a run's ``problem.npz`` (which holds A0) can be given.
    """
    key = "init.path"
    layout = Layout(tuple(dims))
    names = list(npz_bytes(path, key))
    w_names = {int(m.group(1)): n for n in names if (m := _W_KEY.match(n))}
    has_a = "A0" in names
    if has_a and w_names:
        raise ConfigError(f"{key}: {path!r} holds both A0 and W_j arrays; give one of the two")
    if not has_a and not w_names:
        raise ConfigError(
            f"{key}: {path!r} holds neither W_1 .. W_{layout.depth} nor A0 (found: {', '.join(names) or 'nothing'})"
        )
    if has_a:
        a0 = _read(path, key, ["A0"])["A0"].astype(np.float64)
        n = layout.n_nodes
        if a0.shape != (n, n):
            raise ConfigError(
                f"{key}: A0 has shape {a0.shape}; model.dims={list(dims)} has n = {n} nodes: need ({n}, {n})"
            )
        off = np.abs(a0 * ~layout.mask().numpy()).max()
        if off > 0:
            raise ConfigError(
                f"{key}: A0 has entries outside the blocks W_j (max |A0_ij| there = {off:.3g}); the "
                "network's edges run only from layer j-1 to layer j"
            )
        return [w.clone() for w in weights_from_adjacency(torch.from_numpy(a0), layout)]
    wanted = set(range(1, layout.depth + 1))
    if set(w_names) != wanted:
        extra = sorted(set(w_names) - wanted)
        lost = sorted(wanted - set(w_names))
        what = (f"missing W_{', W_'.join(map(str, lost))}" if lost else "") + (
            f"{'; ' if lost else ''}W_{', W_'.join(map(str, extra))} beyond depth h = {layout.depth}"
            if extra
            else ""
        )
        raise ConfigError(f"{key}: model.dims={list(dims)} has depth h = {layout.depth}: {what}")
    arrays = _read(path, key, [w_names[j] for j in sorted(wanted)])
    weights = []
    for j, shape in enumerate(layout.shapes, start=1):
        w = arrays[w_names[j]]
        if tuple(w.shape) != tuple(shape):
            raise ConfigError(
                f"{key}: {w_names[j]} has shape {w.shape}; model.dims={list(dims)} needs {tuple(shape)} "
                "(d_j x d_{j-1})"
            )
        weights.append(torch.from_numpy(w.astype(np.float64)))
    return weights
