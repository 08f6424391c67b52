"""TensorBoard colours each series of a run as the figures do, in colours a reader tells apart
(dlnlab/lab/record/_runs.py, docs/tensorboard.md): the order of the runs read from the real event files by
TensorBoard's own code, its Rust data server and its Python loader, for a serial run, a run with
run.workers=2 and a resumed run whose first learning rate ran again from its start (one made before the
report's run was named ``report`` among them); every run listed holds something, and the summary's texts
are in the report's run alone, once."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _runtime_helpers import SignalAt

from dlnlab.lab.runner import resume, run
from dlnlab.plots import build_run_figures, load_run
from dlnlab.rundir import series_label
from tests._helpers import make_cfg

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("test_tb_colours")]

BASE = ["experiment=tiny", "log.progress=never"]  # the flow and GD at eta = 0.04, 0.02, 0.01


def _tensorboard_palette() -> list[str]:
    """The palette of the installed TensorBoard's dashboards, read from the JavaScript it serves: the
    standard palette (tensorboard/components/tf_color_scale/palettes.ts, ``standard``) of the colour
    scale whose ``setDomain`` gives the i-th run the colour i mod its length (colorScale.ts)."""
    import tensorboard

    index = zipfile.ZipFile(Path(tensorboard.__file__).parent / "webfiles.zip").read("index.js").decode()
    default = r"(\w+)=\w+\.tensorboardColorBlindAssist;var \w+=class\{constructor\(\w+=\1\)"
    assert re.search(default, index), "the colour scale's default palette is not tensorboardColorBlindAssist"
    (colours,) = re.findall(r"tensorboardColorBlindAssist:\[([^\]]*)\]", index)
    return [c.strip('"').lower() for c in colours.split(",")]


def _core_plugin_runs(provider) -> list[str]:
    """``/data/runs`` as TensorBoard's core plugin serves it from ``provider``: the list whose order the
    dashboards colour by (tensorboard/plugins/core/core_plugin.py, ``_serve_runs``: by start time, ties
    by name; the Custom Scalars charts: tensorboard/components/tf_color_scale/colorScale.ts,
    ``setDomain``: the i-th run gets the palette's colour i mod 7)."""
    import warnings

    from tensorboard.plugins import base_plugin
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    with warnings.catch_warnings():  # the sanitizer of the html5lib TensorBoard vendors: deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        from tensorboard.plugins.core import core_plugin
    apps = core_plugin.CorePlugin(base_plugin.TBContext(data_provider=provider)).get_plugin_apps()
    reply = Client(apps["/data/runs"], Response).get("/data/runs")
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return json.loads(reply.get_data(as_text=True))


def _python_loader_runs(logdir: Path):
    """The runs as TensorBoard lists them with ``--load_fast=false`` (a run starts at the first event of
    its event file whose name sorts first), and the loader's multiplexer, which holds what they hold."""
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    return _core_plugin_runs(data_provider.MultiplexerDataProvider(mux, str(logdir))), mux


def _rust_server_runs(logdir: Path, n_runs: int) -> tuple[list[str], set[str]]:
    """The runs as TensorBoard lists them by default (``--load_fast=auto``): its Rust data server, started
    as TensorBoard starts it (tensorboard/data/server_ingester.py), loading the logdir once; a run
    starts at the earliest event of any of its files. Also the runs that hold scalars."""
    import grpc
    from tensorboard import context
    from tensorboard.data import grpc_provider, server_ingester
    from tensorboard.data.proto import data_provider_pb2_grpc

    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        args = [server_ingester.get_server_binary().path, f"--logdir={logdir}", "--reload=once", "--port=0",
                f"--port-file={port_file}", "--die-after-stdin"]  # fmt: skip
        server = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not (port_file.is_file() and port_file.read_text().endswith("\n")):
                assert server.poll() is None and time.monotonic() < deadline, "the data server did not start"
                time.sleep(0.05)
            addr = f"localhost:{int(port_file.read_text())}"
            stub = data_provider_pb2_grpc.TensorBoardDataProviderStub(grpc.insecure_channel(addr))
            provider = grpc_provider.GrpcDataProvider(addr, stub)
            ctx = context.RequestContext()
            while len(provider.list_runs(ctx, experiment_id="")) < n_runs:  # a run is listed once loaded
                assert time.monotonic() < deadline, provider.list_runs(ctx, experiment_id="")
                time.sleep(0.05)
            with_scalars = set(provider.list_scalars(ctx, experiment_id="", plugin_name="scalars"))
            return _core_plugin_runs(provider), with_scalars
        finally:
            server.stdin.close()  # --die-after-stdin
            server.wait(timeout=30)


def _figure_colours(run_dir: Path) -> dict[str, str]:
    """Each series' colour as the run's loss figure draws it (its legend), by series name."""
    labels = {series_label(s.lr): name for name, s in load_run(run_dir).series.items()}
    (fig,) = build_run_figures(run_dir, names=["loss"]).values()
    colours = {}
    for legend in fig.legends:
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            if text.get_text() in labels:
                colours[labels[text.get_text()]] = _hex(handle.get_color())
    return colours


def _hex(colour) -> str:
    from matplotlib.colors import to_hex

    return to_hex(colour)


def _cielab(colour: str) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour."""
    from matplotlib.colors import to_rgb

    rgb = np.asarray(to_rgb(colour))
    lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ lin
    f = np.cbrt(xyz / np.array([0.95047, 1.0, 1.08883]))
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _assert_tensorboard_colours_are_the_figures(run_dir: Path) -> None:
    """By both of TensorBoard's loaders: each series' run has its figure colour, the run TensorBoard
    colours with a colour no series has draws no lines, and the series' colours are far apart (CIELAB
    25 or more: the palette's orange and red, 19.6 apart, are not both a series')."""
    figures = _figure_colours(run_dir)
    assert set(figures) == {"flow", "sgd_lr_0.04", "sgd_lr_0.02", "sgd_lr_0.01"}, figures
    logdir = run_dir / "tensorboard"
    n_runs = sum(1 for d in logdir.iterdir() if any(d.glob("*tfevents*")))  # the runs TensorBoard finds
    rust, with_scalars = _rust_server_runs(logdir, n_runs)
    python, mux = _python_loader_runs(logdir)
    palette = _tensorboard_palette()
    for order in (rust, python):
        tensorboard = {name: palette[i % len(palette)] for i, name in enumerate(order)}
        assert {name: tensorboard[name] for name in figures} == figures, order
        assert not with_scalars & (set(order) - set(figures)), (order, with_scalars)
    # every run listed holds a tag (an order file alone lists a run that shows nothing: log.figures=false
    # made one); the summary's texts are the report's alone (the flow's before), each logged once
    assert all(mux.Runs()[name]["tensors"] for name in python), {name: mux.Runs()[name] for name in python}
    texts = {run: sorted(tags) for run, tags in mux.PluginRunToTagToContent("text").items()}
    summary = [f"summary/{text}/text_summary" for text in ("1 results", "2 plateaus", "3 config")]
    assert texts == {"report": summary}, texts
    assert all(len(mux.Tensors("report", tag)) == 1 for tag in texts["report"])
    labs = [_cielab(c) for c in figures.values()]
    closest = min(np.linalg.norm(a - b) for i, a in enumerate(labs) for b in labs[i + 1 :])
    assert closest >= 25, (figures, closest)


# run.workers=1 in the slow set: the driver writes the order files before any series, serial or not
# (the default path, workers=2, stays in the default tests: 3.7 s a case on a quiet machine)
@pytest.mark.parametrize("workers", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_tensorboard_colours_each_series_as_the_figures_do(workers, tmp_path):
    out = tmp_path / "run"
    result = run(make_cfg([*BASE, f"run.workers={workers}"]), output_dir=out)
    assert result.exit_code == 0 and result["process"]["workers"] == workers
    _assert_tensorboard_colours_are_the_figures(out)


# in the default tests, a run made before the report's run was named so: its order files are kept as in "kept"
# (its `figures` run's renamed), so that case and the one made before the order files (the margin before every
# earlier event is the same code as a fresh run's) are in the slow set
@pytest.mark.parametrize("order_files", [
    pytest.param("kept", marks=pytest.mark.slow), pytest.param("made before them", marks=pytest.mark.slow),
    "kept, the report's run named figures",
])  # fmt: skip
def test_after_a_resume_that_runs_the_largest_learning_rate_again_the_colours_hold(order_files, tmp_path):
    """The run stopped in its last series; the first learning rate's file damaged, so the resume runs it
    from its start and removes its earlier events (its events then start after the others' kept ones).
    A run made before the order files (they are removed here) gets them from its resume. A run made
    before the report's run was named ``report`` (it is renamed back to ``figures`` here, and the summary's
    texts moved into the flow's run, where that run logged them) has its ``figures`` run renamed, its
    place in the order kept, and the flow's texts replaced by the report's."""
    out = tmp_path / "run"
    SignalAt.fired.clear()
    stop = ["+callbacks.stop._target_=_runtime_helpers.SignalAt", "+callbacks.stop.series=sgd_lr_0.01",
            "+callbacks.stop.m=20"]  # fmt: skip
    stopped = run(make_cfg([*BASE, "run.workers=1", "log.figures=false", *stop]), output_dir=out)
    assert stopped.exit_code == 143
    damaged = out / "series" / "sgd_lr_0.04.npz"
    damaged.write_bytes(np.random.default_rng(0).bytes(damaged.stat().st_size))
    logs = out / "tensorboard"
    if order_files == "made before them":
        for path in logs.glob("*/events.out.tfevents.0.order"):
            path.unlink()
    elif order_files != "kept":
        (text,) = (logs / "report").glob("*.text")
        text.rename(logs / "flow" / text.name.removesuffix(".text"))  # Lightning's own file, where it was
        (logs / "report").rename(logs / "figures")
    time.sleep(1.5)  # the resume's events later than the stopped run's by more than the order's margin, 1 s
    result = resume(out)
    assert result.exit_code == 0, result["series"]
    said = result["resumed"][-1]["series"]
    assert said["sgd_lr_0.04"].startswith("run from the start"), said
    assert not (logs / "figures").exists()
    _assert_tensorboard_colours_are_the_figures(out)


def test_a_run_with_both_the_report_and_an_older_figures_run_keeps_the_report_alone(tmp_path):
    """Both folders there (a run's copy, a tool's): the older run's order file and images go, and its
    folder (an empty run, or the figures twice, would be listed); the report's and the other runs' order
    files stay as they were, and so does a file the lab did not write."""
    from dlnlab.lab.record import ORDER_FILE, figures_logger, order_runs

    logs = tmp_path / "tensorboard"
    tensorboard = {"_target_": "dlnlab.lab.record.TensorBoardLogger"}
    order_runs(tmp_path, tensorboard, ["flow", "sgd_lr_0.1"])
    before = {p: p.read_bytes() for p in logs.glob(f"*/{ORDER_FILE}")}
    assert sorted(p.parent.name for p in before) == ["flow", "report", "sgd_lr_0.1"]
    for keep in (False, True):
        older = logs / "figures"
        older.mkdir()
        for name in (ORDER_FILE, "events.out.tfevents.1.host.1.0.figures", "hparams.yaml"):
            (older / name).write_bytes((logs / "flow" / ORDER_FILE).read_bytes())
        if keep:
            (older / "notes.txt").write_text("mine")
        figures_logger(tmp_path, tensorboard).finalize("success")
        if keep:
            assert sorted(p.name for p in older.iterdir()) == ["notes.txt"]
        else:
            assert not older.exists()
    assert {p: p.read_bytes() for p in logs.glob(f"*/{ORDER_FILE}")} == before
