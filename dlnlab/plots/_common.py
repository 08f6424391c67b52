"""Drawing helpers shared by the run figures and Figure 1: limits that ignore blown-up series,
markers for series that stopped, plateau shading, critical levels and the reference mode solution."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from dlnlab.network import product, weights_from_adjacency
from dlnlab.plots._style import FLOW_COLOR, PLATEAU_COLOR, series_colors
from dlnlab.rundir import RunData, Series
from dlnlab.status import Status

__all__ = [
    "Markers",
    "colors_of",
    "draw_order",
    "bounded",
    "log_limits",
    "lin_limits",
    "shade_plateaus",
    "plateau_handle",
    "level_lines",
    "no_data",
    "reference_u0",
    "reference_modes",
    "least_squares_svals",
    "reference_rule",
    "first_crossing",
]


def colors_of(run: RunData) -> dict[str, object]:
    """Series name -> colour, fixed for the whole run."""
    by_lr = series_colors([s.lr for s in run.sgd])
    return {s.name: FLOW_COLOR if s.is_flow else by_lr[s.lr] for s in run.series.values()}


def draw_order(run: RunData) -> list[Series]:
    """SGD series from the largest lr down, then the flow on top."""
    out = list(run.sgd)
    if run.flow is not None:
        out.append(run.flow)
    return out


def bounded(s: Series) -> bool:
    """Series whose values set the axis limits (a diverged series is clipped instead)."""
    return not (s.status in (Status.DIVERGED, Status.ERROR) or s.entry.get("diverged"))


def _finite(arrs: Iterable[np.ndarray], positive: bool) -> np.ndarray:
    vals = [np.asarray(a, dtype=np.float64).ravel() for a in arrs]
    v = np.concatenate(vals) if vals else np.zeros(0)
    v = v[np.isfinite(v)]
    return v[v > 0] if positive else v


def log_limits(arrs: Iterable[np.ndarray], decades: float = 16.0) -> tuple[float, float] | None:
    """(lo, hi) for a log axis over the positive finite values, at most ``decades`` decades deep."""
    v = _finite(arrs, positive=True)
    if not len(v):
        return None
    lo, hi = float(v.min()), float(v.max())
    lo = max(lo, hi * 10.0**-decades)
    if hi <= lo * 1.0001:
        lo, hi = lo / 2.0, hi * 2.0
    return lo / 10 ** (0.04 * math.log10(hi / lo)), hi * 10 ** (0.06 * math.log10(hi / lo))


def lin_limits(arrs: Iterable[np.ndarray], zero: bool = False) -> tuple[float, float] | None:
    v = _finite(arrs, positive=False)
    if not len(v):
        return None
    lo, hi = float(v.min()), float(v.max())
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
    return lo - pad, hi + pad


class Markers:
    """An × where a series stopped early, or where an unstable one ended (it ran to its end, its loss
    stuck up: not a stop, and the legend says which); drawn last, clamped into the axes so it is always
    visible."""

    def __init__(self) -> None:
        self.items: list[tuple[float, float, object]] = []
        self.kinds: set[str] = set()

    def add(self, s: Series, t: np.ndarray, y: np.ndarray, color) -> None:
        if not s.failed or len(t) == 0:
            return
        unstable = s.status == Status.UNSTABLE and not s.entry.get("diverged")
        self.kinds.add("ended unstable" if unstable else "stopped")
        ok = np.isfinite(t) & np.isfinite(y)
        if ok.any():
            i = np.flatnonzero(ok)[-1]
            x_mark = float(t[i])
            y_mark = float(y[i])
        else:
            x_mark = s.t_stop if s.t_stop is not None else 0.0
            y_mark = math.inf
        if s.entry.get("t_stop") is not None and math.isfinite(float(s.entry["t_stop"])):
            x_mark = max(x_mark, float(s.entry["t_stop"]))
            if s.status == Status.DIVERGED:
                y_mark = math.inf  # it left the picture after the last recorded point
        self.items.append((x_mark, y_mark, color))

    def draw(self, ax: Axes) -> bool:
        if not self.items:
            return False
        x0, x1 = ax.get_xlim()
        y0, y1 = ax.get_ylim()
        for x, y, c in self.items:
            x = min(max(x, x0), x1)
            y = y1 if (not math.isfinite(y) or y > y1) else max(y, y0)
            ax.plot(
                [x], [y], marker="X", ms=6.5, mfc=c, mec="white", mew=0.6, ls="none", clip_on=False, zorder=6
            )
        return True

    def handle(self) -> Line2D:
        """The legend entry of the marks drawn: "stopped", "ended unstable" or both."""
        return stop_handle(", or ".join(k for k in ("stopped", "ended unstable") if k in self.kinds))


def stop_handle(label: str = "stopped") -> Line2D:
    return Line2D([], [], marker="X", ms=6, mfc="0.3", mec="white", mew=0.6, ls="none", label=label)


def plateau_handle() -> Patch:
    return Patch(facecolor=PLATEAU_COLOR, alpha=0.2, lw=0, label="plateaus (flow)")


def shade_plateaus(ax: Axes, run: RunData, name: str = "flow") -> bool:
    """Shade the plateaus of one series (summary.json); True when any was drawn."""
    ps = sorted(run.plateaus(name), key=lambda p: float(p["t_start"]))
    for i, p in enumerate(ps):  # alternate two tones: back-to-back plateaus stay distinguishable
        a, b = float(p["t_start"]), float(p["t_end"])
        ax.axvspan(a, b, color=PLATEAU_COLOR, alpha=0.24 if i % 2 == 0 else 0.12, lw=0, zorder=0)
    return bool(ps)


def level_lines(ax: Axes, levels: np.ndarray, log: bool = True, min_sep: float = 0.065) -> None:
    """Dashed lines at the critical values L*_r, labelled at the right edge.

    Labels that would touch the previous one move to a second column; a label that fits in neither
    column is left out (the line stays), so labels never overlap.
    """
    y0, y1 = ax.get_ylim()
    trans = blended_transform_factory(ax.transAxes, ax.transData)

    def pos(v: float) -> float:  # fraction of the axis height
        if log:
            return (math.log10(v) - math.log10(y0)) / (math.log10(y1) - math.log10(y0))
        return (v - y0) / (y1 - y0)

    x0, x1 = ax.get_xlim()
    if ax.get_xscale() == "log" and x0 > 0:
        xs = np.geomspace(x0, x1, 60)
    else:
        xs = np.linspace(x0, x1, 60)
    columns = [(1.012, []), (1.085, [])]
    for r, v in enumerate(levels):
        if not (np.isfinite(v) and y0 < v < y1) or (log and v <= 0):
            continue
        # a sampled line, not axhline: legend(loc="best") then keeps clear of it
        ax.plot(
            xs,
            np.full(len(xs), v),
            color="0.45",
            ls=(0, (4, 3)),
            lw=0.6,
            zorder=1,
            scalex=False,
            scaley=False,
        )
        f = pos(float(v))
        for x, taken in columns:
            if all(abs(f - g) >= min_sep for g in taken):
                ax.text(
                    x, v, f"$L^*_{r}$", transform=trans, va="center", ha="left", fontsize=6.5, color="0.3"
                )
                taken.append(f)
                break


def no_data(ax: Axes, msg: str) -> None:
    ax.text(
        0.5, 0.5, msg, transform=ax.transAxes, ha="center", va="center", fontsize=7.5, color="0.35", wrap=True
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def reference_u0(run: RunData) -> tuple[np.ndarray, str] | None:
    """Initial strengths u0_k of the aligned, balanced reference (one per data mode) and a label.

    init.kind = aligned: the configured u0 (the reference is then exact for whitened data). Otherwise
    the aligned network with the same initial product norm, spread evenly over the q data modes:
    u0 = ||P(0)||_F / sqrt(q).
    """
    q = len(run.modes)
    if q == 0:
        return None
    ini = run.config.get("init") or {}
    if ini.get("kind") == "aligned" and ini.get("u0") is not None:
        u0 = np.atleast_1d(np.asarray(ini["u0"], dtype=np.float64))  # a negative u0: the stable branch
        vals = np.full(q, u0[0]) if u0.size == 1 else np.concatenate([u0, np.zeros(q)])[:q]
        return vals, "$u_0$ = init.u0"
    p0 = None
    if "A0" in run.problem and run.dims:
        try:
            a0 = torch.from_numpy(np.asarray(run.problem["A0"], dtype=np.float64))
            # P(0) = W_h ... W_1, multiplied as numpy views (numpy's matmul, the figures' numbers)
            p0 = product([w.numpy() for w in weights_from_adjacency(a0, run.dims)])
        except (ValueError, IndexError, RuntimeError):
            p0 = None
    if p0 is None and run.flow is not None and run.flow.get("sv") is not None:
        sv0 = run.flow.get("sv")[0]
        fro = float(np.sqrt(np.nansum(sv0**2)))
    elif p0 is not None:
        fro = float(np.linalg.norm(p0))
    else:
        return None
    u0 = fro / math.sqrt(q)
    if not (math.isfinite(u0) and u0 > 0):
        return None
    return np.full(q, u0), f"$u_0$ = {u0:.2g}"


def reference_rule(run: RunData) -> str:
    """How :func:`reference_u0` picks u0 for this run (mathtext)."""
    ini = run.config.get("init") or {}
    if ini.get("kind") == "aligned" and ini.get("u0") is not None:
        return "$u_0$ = init.u0"
    return "$u_0 = \\|P(0)\\|_F/\\sqrt{q}$"


def reference_modes(run: RunData, t: np.ndarray) -> list[dict] | None:
    """The reference mode solution du/dt = h |u|^(2-2/h) (m_k - u) for each data mode on times t.

    Returns [{"k", "s", "u0", "u" (len(t)), "t_half" (None unless 0 < u0 < s/2: a mode started at or past
    s/2 has no escape to mark, one started below 0 decays to 0)}] and None when not available.
    """
    from dlnlab.analysis import mode_half_time, mode_solution

    ref = reference_u0(run)
    h = run.depth
    if ref is None or h < 1 or not len(t):
        return None
    u0s, _ = ref
    out = []
    tt = np.clip(np.asarray(t, dtype=np.float64), 0.0, None)
    for k, (s, u0) in enumerate(zip(run.modes, u0s)):
        if not (s > 0 and u0 != 0):
            continue
        try:
            u = mode_solution(tt, float(s), float(u0), h, method="LSODA")  # to draw: 1e-9 is plenty
            t_half = mode_half_time(float(s), float(u0), h) if 0 < u0 < s / 2 else None
        except (ValueError, RuntimeError):
            continue
        out.append({"k": k, "s": float(s), "u0": float(u0), "u": u, "t_half": t_half})
    return out or None


def first_crossing(t: np.ndarray, y: np.ndarray, level: float) -> float | None:
    """First time y reaches ``level`` from below (linear interpolation); None if it starts above or never does.

    Not ``dlnlab.saddles.plateaus._first_crossing`` (PCHIP, stops at the first NaN, takes a later
    upward crossing after starting above): here NaN rows are skipped and a start above gives None.
    """
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y)
    if not ok.any() or y[ok][0] >= level:
        return None
    above = np.flatnonzero(ok & (y >= level))
    if not len(above):
        return None
    i = int(above[0])
    j = i - 1
    while j >= 0 and not ok[j]:
        j -= 1
    if j < 0 or y[i] == y[j]:
        return float(t[i])
    return float(t[j] + (level - y[j]) * (t[i] - t[j]) / (y[i] - y[j]))


def least_squares_svals(run: RunData) -> np.ndarray:
    """The nonzero singular values of P_ls = Y X^T (X X^T)^+ (the limit of P = W_h ... W_1 from a generic
    start with full width), from the run's problem.npz."""
    x, y = (np.asarray(run.problem[k], dtype=np.float64) for k in ("X", "Y"))
    p_ls = y @ x.T @ np.linalg.pinv(x @ x.T)
    sv = np.linalg.svd(p_ls, compute_uv=False)
    return sv[sv > 1e-12 * max(sv.max(initial=0.0), 1e-300)]
