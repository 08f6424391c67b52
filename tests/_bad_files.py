"""The bad data and weights files of tests/test_refusals.py's table: one file per way such a file can be
wrong, for the tiny net (dims [4, 3, 3, 2])."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np


def write_bad_files(d: Path) -> None:
    """Write every bad file (and a run directory of another run, ``old_run``) into the folder d."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 20)), rng.normal(size=(2, 20))
    (d / "empty.npz").write_bytes(b"")
    (d / "text.npz").write_text("X, Y\n1, 2\n")
    np.save(d / "single.npy", x)
    (d / "single.npz").write_bytes((d / "single.npy").read_bytes())
    np.savez(d / "pickled.npz", X=np.array([x, "a"], dtype=object), Y=y)
    np.savez(d / "strings.npz", X=np.array([["a"] * 20] * 4), Y=y)
    np.savez(d / "complex.npz", X=x + 1j * x, Y=y)
    np.savez(d / "bools.npz", X=x > 0, Y=y)
    x_nan, x_inf, x_big = x.copy(), x.copy(), x.copy()
    x_nan[1, 2], x_inf[0, 0], x_big[3, 3] = np.nan, np.inf, 1e200
    np.savez(d / "nan.npz", X=x_nan, Y=y)
    np.savez(d / "inf.npz", X=x_inf, Y=y)
    np.savez(d / "huge.npz", X=x_big, Y=y)
    np.savez(d / "no_y.npz", X=x)
    np.savez(d / "shape.npz", X=x[:3], Y=y)
    np.savez(d / "n_mismatch.npz", X=x, Y=y[:, :10])
    np.savez(d / "rows.npz", X=x.T, Y=y.T)  # samples as rows
    np.savez(d / "one_d.npz", X=x[0], Y=y[0])
    np.savez(d / "zero_samples.npz", X=np.zeros((4, 0)), Y=np.zeros((2, 0)))
    with zipfile.ZipFile(d / "plain.zip.npz", "w") as zf:
        zf.writestr("readme.txt", "not arrays")
    (d / "a_dir.npz").mkdir()
    w = [rng.normal(size=s) * 0.1 for s in ((3, 4), (3, 3), (2, 3))]
    np.savez(d / "w_missing.npz", W_1=w[0], W_2=w[1])
    np.savez(d / "w_extra.npz", W_1=w[0], W_2=w[1], W_3=w[2], W_4=w[2])
    np.savez(d / "w_shape.npz", W_1=w[0], W_2=w[1][:2], W_3=w[2])
    np.savez(d / "w_nan.npz", W_1=w[0], W_2=np.full((3, 3), np.nan), W_3=w[2])
    np.savez(d / "w_complex.npz", W_1=w[0] * 1j, W_2=w[1], W_3=w[2])
    np.savez(d / "a0_shape.npz", A0=np.zeros((11, 11)))
    np.savez(d / "a0_offmask.npz", A0=np.ones((12, 12)))
    np.savez(d / "both.npz", A0=np.zeros((12, 12)), W_1=w[0])
    np.savez(d / "neither.npz", B=w[0])
    nonempty = d / "old_run"
    nonempty.mkdir()
    (nonempty / "summary.json").write_text("{}")
