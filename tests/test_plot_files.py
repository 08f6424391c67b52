"""A run's figures as files: ``scripts/plot.py`` remakes them from a run's files alone, forked workers draw
the same bytes, TensorBoard gets those PNGs (drawn once), the workers stop on a signal, and the reference
mode solution drawn in them keeps its sign. (What each figure draws: tests/test_plots.py.)"""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from dlnlab.plots import make_run_figures
from tests._helpers import FIGURE_NAMES, check_png, copy_run_files

# its tests on one xdist worker (--dist loadgroup) with tests/test_plots.py: the session's tiny run
pytestmark = pytest.mark.xdist_group("tiny_run")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.lab
def test_plot_script_remakes_figures_and_forked_workers_draw_the_same_pngs_into_tensorboard(
    tiny_run, tmp_path, capsys
):
    """``scripts/plot.py`` remakes the figures from a run's files alone (no TensorBoard folder: none is
    created); make_run_figures(workers=2), the figures split between two forked processes, writes the
    same bytes on a copy with TensorBoard, and on_png gets them in the figures' order; sent to TensorBoard
    as the lab sends them (log_png), they replace the run's own images, never stacked, each the PNG
    file's picture. One serial drawing (the script's) and one forked serve all checks (a third, serial
    drawing for TensorBoard cost ~1.9 CPU s)."""
    from io import BytesIO

    from tensorboard.backend.event_processing.event_accumulator import (
        STORE_EVERYTHING_SIZE_GUIDANCE,
        EventAccumulator,
    )

    from dlnlab.lab.record import figures_logger, log_png

    d = copy_run_files(tiny_run, tmp_path / "copy")
    # the script's main in this process (its exit codes and one-line refusals in a subprocess of their
    # own: tests/test_scripts.py)
    plot_main = runpy.run_path(str(ROOT / "scripts" / "plot.py"))["main"]
    assert plot_main([str(d)]) == 0
    out = capsys.readouterr().out
    written = [Path(line) for line in out.split() if line.endswith(".png")]
    assert {p.stem for p in written} == FIGURE_NAMES and "TensorBoard" not in out
    for name in FIGURE_NAMES:
        check_png(d / "figures" / f"{name}.png")
    assert not (d / "tensorboard").exists()  # no TensorBoard folder: none is created
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SystemExit) as refused:  # an empty directory: skipped, nothing usable is left
        plot_main([str(tmp_path / "nothing")])
    assert refused.value.code == 2
    assert "not a run directory" in capsys.readouterr().err

    one = {p.name: p.read_bytes() for p in written}
    mine = tmp_path / "mine"  # a copy: the session's run is read-only
    shutil.copytree(tiny_run, mine)
    logger = figures_logger(mine, {"_target_": "dlnlab.lab.record.TensorBoardLogger"})
    got = []

    def on_png(name: str, png: bytes) -> None:
        got.append((name, png))
        log_png(logger, f"figures/{name}", png)

    two = make_run_figures(mine, strict=True, workers=2, on_png=on_png)
    logger.finalize("success")  # the run made them once already: replaced, never stacked
    assert [p.name for p in two] == list(one) and [f"{n}.png" for n, _ in got] == list(one)
    for path, (_, png) in zip(two, got):
        assert path.read_bytes() == one[path.name] == png
    assert len(list((mine / "tensorboard" / "report").glob("*.figures"))) == 1
    runs = mine / "tensorboard"
    acc = EventAccumulator(str(runs / "report"), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    assert acc.Tags()["scalars"] == []  # a run without lines (its colour: red): the run's texts, images
    assert acc.Tags()["tensors"] and all(t.startswith("summary/") for t in acc.Tags()["tensors"])
    tags = set(acc.Tags()["images"])
    assert {f"figures/{n}" for n in FIGURE_NAMES} <= tags
    img = acc.Images("figures/loss")[-1]
    assert img.step == 0 and img.width >= 400 and img.height >= 300
    # the image is the PNG file's picture (decoded and re-encoded, not drawn again)
    shown = imread(BytesIO(img.encoded_image_string), format="png")
    np.testing.assert_allclose(shown, imread(mine / "figures" / "loss.png"), atol=1 / 255)
    flow = EventAccumulator(str(runs / "flow"), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE)
    flow.Reload()
    assert flow.Tags()["images"] == []  # the report's run only
    capsys.readouterr()
    plot_main([str(mine), "--dpi", "40"])  # the script names the TensorBoard run its images went to
    said = capsys.readouterr().out.splitlines()[-1]
    assert said == f"images added to TensorBoard under {runs / 'report'} (its Images tab)"
    assert len(list((runs / "report").glob("*.figures"))) == 1
    assert not [t for t in flow.Tags()["tensors"] if t.startswith("summary/")]  # the texts: the report's
    n_grid = len(np.load(mine / "series" / "flow.npz")["t"])
    assert len(flow.Scalars("loss/loss")) == n_grid  # the flow's own scalars are untouched


@pytest.mark.lab
def test_a_signal_noted_while_the_figure_workers_fork_stops_the_drawing(tiny_run, tmp_path, monkeypatch):
    """A SIGTERM that reaches another thread while make_run_figures forks its workers (the main thread
    blocks both signals then) has its handler run in the main thread inside the fork's block, which only
    notes it: the drawing stops all the same (Interrupted, no PNG written), as for a signal during it.
    Each worker stops after the figure it is drawing (it drew its whole share, which the run waited for):
    here each waits to draw until the run has given the drawing up, so at most one figure a worker."""
    import os
    import signal
    import threading
    import time

    from matplotlib.figure import Figure

    import dlnlab.plots._render as render
    from dlnlab.rundir import signals

    drawn, savefig = tmp_path / "drawn", Figure.savefig
    drawn.write_text("")

    def when_given_up(fig, *args, **kwargs):  # in a worker (forked with this patch): one mark a figure
        render._stop.wait(timeout=10)  # never set (the drawing not given up): 10 s a figure, then all drawn
        with open(drawn, "a") as marks:
            marks.write("x")
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", when_given_up)

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns("figures"))
    idle = threading.Event()
    taker = threading.Thread(target=idle.wait, daemon=True)  # leaves both signals unblocked
    taker.start()
    armed = []

    def signal_the_taker() -> None:  # in the main thread, after each fork, inside the block
        if armed and armed.pop():
            signal.pthread_kill(taker.ident, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while signals.received() is None and time.monotonic() < deadline:
                time.sleep(0.001)  # the main thread runs the handler here

    os.register_at_fork(after_in_parent=signal_the_taker)  # for good: disarmed once it has fired
    signals.reset()
    signals.install()
    try:
        armed.append(True)
        with pytest.raises(signals.Interrupted):
            make_run_figures(run_dir, strict=True, workers=2)
        assert signals.received() == signal.SIGTERM
    finally:
        armed.clear()
        signals.uninstall()
        signals.reset()
        idle.set()
    assert not list(run_dir.glob("figures/*.png"))
    assert len(drawn.read_text()) <= 2  # of 7: the first of each worker's share, at most


def test_the_reference_mode_keeps_the_sign_of_a_negative_u0(tmp_path):
    """init=aligned with u0 = [0.05, -0.05] on the net 3-3-2 (h = 2): mode 2 starts on the stable branch
    and decays to 0, as the run's own mode strength does; only mode 1 has an escape to mark."""
    from dlnlab.analysis import mode_solution
    from dlnlab.plots._common import reference_modes
    from dlnlab.rundir import RunData

    summary = {"config": {"model": {"dims": [3, 3, 2]}, "init": {"kind": "aligned", "u0": [0.05, -0.05]}}}
    run = RunData(tmp_path, {"modes": np.array([2.0, 1.0]), "dims": np.array([3, 3, 2])}, summary, {})
    t = np.linspace(0.0, 4.0, 9)
    refs = {r["k"]: r for r in reference_modes(run, t)}
    assert refs[0]["t_half"] is not None and refs[1]["t_half"] is None and refs[1]["u0"] == -0.05
    np.testing.assert_allclose(refs[1]["u"], mode_solution(t, 1.0, -0.05, 2), rtol=1e-8)
    assert np.all(refs[1]["u"] < 0) and abs(refs[1]["u"][-1]) < 0.01
