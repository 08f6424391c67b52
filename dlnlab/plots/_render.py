"""Writing a run's figures: ``figures/<name>.png`` from :func:`build_run_figures`, drawn in this process
or in forked workers (each a share of the figures), each file written atomically."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlnlab.errors import AnalysisWarning
from dlnlab.plots._style import style
from dlnlab.plots.run_figures import build_run_figures, figures_of
from dlnlab.rundir import RunData, atomic_path, load_run

# a figure worker's stop flag (its parent's multiprocessing Event, set when the drawing is given up)
_stop = None


def _render(run: RunData | str | Path, strict: bool, dpi: int, names=None) -> dict[str, bytes]:
    """{name: the PNG's bytes} of the run's figures (``names``: only those); in a figure worker, only
    those drawn before its parent gave the drawing up (the figures after are left)."""
    out = {}
    with style():
        for name, fig in build_run_figures(run, strict=strict, names=names).items():
            if _stop is not None and _stop.is_set():
                break
            buf = io.BytesIO()
            fig.savefig(buf, dpi=dpi, format="png")
            out[name] = buf.getvalue()
    return out


def _quiet_child(stop) -> None:
    """A figure worker leaves SIGINT / SIGTERM to the run (blocked around the fork, ignored here), and
    ends with the run: a worker waits for its next figure on a pipe whose other end it holds itself,
    so it never sees the run die (found: a killed run's figure worker still waiting minutes later).
    ``stop``: set by the run when it gives the drawing up (a signal), so that the worker ends after the
    figure it is drawing, not after its whole share (each share is one task, which shutdown waits for)."""
    import os
    import signal
    import threading
    import time

    global _stop
    _stop = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    parent = os.getppid()

    def exit_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True).start()


def _render_in_workers(run_dir: Path, names: list[str], strict: bool, dpi: int, workers: int) -> dict:
    """The PNGs drawn by ``workers`` forked processes, each a share of the figures: drawing is all of the
    figures' cost (0.2 s a figure at dpi 200; 7 at width 256: 1.5 s in one process), and the cores are free."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from dlnlab.rundir.signals import blocked_in_children, check

    shares = [names[i::workers] for i in range(workers)]
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    ex = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_quiet_child, initargs=(stop,))
    try:
        # the signals are blocked only while the workers are forked (at the first submit): blocked for the
        # whole drawing, a SIGTERM and a SIGINT were both held, then run SIGINT first (exit 130 for a SIGTERM);
        # one another thread took meanwhile is only noted there (found: drawn to the end, exit 143 in "done")
        with blocked_in_children():
            futures = [ex.submit(_render, run_dir, strict, dpi, share) for share in shares]
        check()
        out: dict[str, bytes] = {}
        for f in futures:
            out |= f.result()
    except BaseException:
        stop.set()  # interrupted (or a worker failed): the workers stop after the figure each is drawing
        raise
    finally:
        ex.shutdown(wait=True, cancel_futures=True)  # the workers end before the run goes on
    return out


def make_run_figures(
    run_dir: str | Path,
    on_figure: Callable[[str, Any], None] | None = None,
    strict: bool = False,
    dpi: int = 200,
    on_png: Callable[[str, bytes], None] | None = None,
    workers: int = 1,
) -> list[Path]:
    """Write ``figures/<name>.png`` for a run directory from its files alone; returns the paths.

    ``on_figure(name, figure)`` is called with each figure before it is closed, ``on_png(name, png)``
    with the bytes of its PNG file (the lab sends these to the logger: the figure is drawn once, where
    logging the figure would draw it again, 0.15 s a figure). ``workers`` > 1 (and no ``on_figure``):
    the figures are drawn in that many forked processes, the same PNGs. Never raises on diverged, short
    or NaN series; ``strict`` re-raises a failing figure (for tests).
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    names = list(figures_of(run))
    parallel = workers > 1 and on_figure is None and "fork" in _start_methods()
    figs = {} if parallel else build_run_figures(run, strict=strict)
    pngs = _render_in_workers(run_dir, names, strict, dpi, min(workers, len(names))) if parallel else {}
    out_dir = run_dir / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with style():
        for name in names:
            if name not in pngs:
                buf = io.BytesIO()
                figs[name].savefig(buf, dpi=dpi, format="png")
                pngs[name] = buf.getvalue()
            path = out_dir / f"{name}.png"
            with atomic_path(path) as tmp:  # a reader never sees half a PNG
                Path(tmp).write_bytes(pngs[name])
            paths.append(path)
            for callback, arg in ((on_figure, figs.get(name)), (on_png, pngs[name])):
                if callback is None:
                    continue
                try:
                    callback(name, arg)
                except Exception as err:
                    if strict:
                        raise
                    warnings.warn(
                        f"figure {name} to the logger failed: {type(err).__name__}: {err}",
                        AnalysisWarning,
                        stacklevel=2,
                    )
    return paths


def _start_methods() -> list[str]:
    import multiprocessing

    return multiprocessing.get_all_start_methods()
