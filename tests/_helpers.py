"""Test helpers shared by several test files: the composed config (Hydra's compose, as the command line
composes it), the usual override lists, the command line in a subprocess, the problems many tests build,
and the core's refusal check. Fixtures (the session's tiny run among them) are in conftest.py."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from dlnlab import init
from dlnlab.errors import ArgumentError
from dlnlab.lab.config import TrainConfig  # noqa: F401 - imports the schema, which registers itself with Hydra
from dlnlab.network import pack
from dlnlab.problem import RegressionProblem

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TRAIN = ROOT / "scripts" / "train.py"
QUIET = ["log.figures=false", "log.progress=never"]  # no figures, no progress bar
TINY = ["experiment=tiny", "logger=none", *QUIET]  # the tiny experiment with nothing but its files
TINY_EXPERIMENT = ["experiment=tiny"]
FILE_BASE = ["model=tiny", "flow.t_max=4", "sgd.lrs=[0.04]", "log.dt=0.05"]  # tiny, for a data file
# an SGD ensemble with its SME ensembles (members, spreads, sgd_limit with its sme part), nothing but files
SME_ENSEMBLE_RUN = [
    "experiment=tiny", "log.figures=false", "log.progress=never", "logger=none", "ensemble.size=3",
    "ensemble.vary=sgd", "sgd=minibatch", "sgd.batch_size=5", "sgd.sme=true", "sgd.lrs=[0.04,0.02]",
]  # fmt: skip


def make_cfg(overrides: list[str] | tuple[str, ...] | None = None):
    """The ``train`` config composed with ``overrides`` by Hydra's compose API (the schema applied, as
    ``scripts/train.py`` composes it): a copy of the composition, made once per list of overrides in
    this process (a composition costs about 0.1 s, a third of a tiny lab test; a copy a tenth of that)."""
    return copy.deepcopy(_composed(tuple(overrides or ())))


@functools.cache
def _composed(overrides: tuple[str, ...]):
    """Hydra's composition, after clearing a global Hydra left initialised by an in-process run."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="train", overrides=list(overrides))


def refusal_argv(overrides: list[str], d: Path) -> list[str]:
    """The command line of a refusal table's row: ``{d}`` is the folder of bad files; a data file's row
    gets the tiny net without the experiment (whose data keys a data file does not have), a weights
    file's the tiny experiment, a row that sets the net itself nothing more."""
    ov = [o.replace("{d}", str(d)) for o in overrides]
    flags = [o for o in ov if o.startswith("-")]
    ov = [o for o in ov if not o.startswith("-")]
    if any(o.startswith("data.path=") for o in ov):
        return [*flags, *FILE_BASE, "data=file", *ov]
    if any(o.startswith("init.path=") for o in ov):
        return [*flags, *TINY_EXPERIMENT, "init=file", *ov]
    if any(
        o.startswith(("model.dims=[5", "model.dims=[4,0", "data.n_samples=1000000000", "data=file"))
        for o in ov
    ):
        return [*flags, *ov]
    return [*flags, *ov, *TINY_EXPERIMENT] if "-m" in flags else [*flags, *TINY_EXPERIMENT, *ov]


# ---- the command line in a subprocess (scripts/train.py) ------------------------------------------------
def _no_nan(token):
    pytest.fail(f"summary.json holds {token}: JSON must hold null, never NaN")


def read_summary(run_dir: Path) -> dict:
    """A run's summary.json, refusing NaN (JSON must hold null)."""
    return json.loads((run_dir / "summary.json").read_text(), parse_constant=_no_nan)


def popen_cli(args, cwd, **kw) -> subprocess.Popen:
    """``python scripts/train.py *args`` started in ``cwd``, its output piped as text (``kw`` may set
    ``stderr=subprocess.STDOUT``: one pipe, the lines in the order the console shows them)."""
    return subprocess.Popen(
        [sys.executable, str(TRAIN), *args],
        cwd=cwd,
        text=True,
        **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kw},
    )


def run_cli(args, cwd, timeout=300, env=None) -> subprocess.CompletedProcess:
    """``python scripts/train.py *args`` run to its end in ``cwd`` (``env``: the environment, if not this one's)."""
    return subprocess.run(
        [sys.executable, str(TRAIN), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def wait_for_stage(run_dir: Path, stage: str, proc, timeout: float = 120) -> None:
    """Until the run's summary.json says it is at ``stage`` (fails if the process ends or time runs out)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if read_summary(run_dir)["stage"] == stage:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    pytest.fail(f"the run never reached stage {stage!r} (exit {proc.poll()})")


# ---- problems built by many tests (a fresh one per call: cheap, and no test sees another's changes) ----
def figure1_problem(whiten: bool = True) -> RegressionProblem:
    """The Figure 1 task: teacher s = (4, 3, 2, 1), d_x = 11, d_y = 4, N = 110, data seed 0."""
    return RegressionProblem.teacher(
        [4.0, 3.0, 2.0, 1.0], d_x=11, d_y=4, n_samples=110, whiten=whiten, seed=0
    )


def noisy_problem() -> RegressionProblem:
    """A small task with everything a closed form can get wrong: not whitened, noisy labels (L_min > 0),
    three modes; d_x = 4, d_y = 3, N = 20, seed 1."""
    return RegressionProblem.teacher(
        [3.0, 2.0, 1.0], d_x=4, d_y=3, n_samples=20, whiten=False, noise=0.1, seed=1
    )


# ---- the stiff batch solvers' members and their tight solves (tests/test_flow_bdf.py, test_flow_radau.py) ----
SMALL, FIG1 = [4, 5, 5, 3], [11, 6, 6, 6, 6, 4]


@dataclass(frozen=True)
class StiffBatch:
    """A batch (B, p) of members on one problem, the output times, and each member's tight solve (lsoda
    at rtol 1e-12, atol 1e-14: measured within 3e-12 of scipy's Radau at rtol 1e-12 here); for the small
    net also the GD modified flow's (lr 0.01) over the first 21 times."""

    problem: RegressionProblem
    dims: list[int]
    thetas: torch.Tensor
    t: torch.Tensor
    tight: list[torch.Tensor]
    tight_modified: list[torch.Tensor]


def stiff_batch(which: str) -> StiffBatch:
    """``small``: gaussian inputs with noise (Sxx != I), members at init scales 0.2, 0.5, 0.8, t <= 3 on dt
    0.05; ``figure1``: the Figure 1 net, scales 0.1 (on the first plateau), 0.5 and 1, t <= 5 on dt 0.1."""
    from dlnlab.flow import Solver, integrate, time_grid

    tight = Solver("lsoda", rtol=1e-12, atol=1e-14)
    if which == "small":
        problem, dims, scales, seed0, t = noisy_problem(), SMALL, (0.2, 0.5, 0.8), 0, time_grid(3.0, dt=0.05)
    else:
        problem, dims, scales, seed0, t = figure1_problem(), FIG1, (0.1, 0.5, 1.0), 1, time_grid(5.0, dt=0.1)
    thetas = torch.stack([pack(init.gaussian(dims, sc, seed=seed0 + k)) for k, sc in enumerate(scales)])
    solves = [integrate(problem, dims, th, t, tight).theta for th in thetas]
    modified = (
        [integrate(problem, dims, th, t[:21], tight, modified_lr=0.01).theta for th in thetas]
        if which == "small"
        else []
    )
    return StiffBatch(problem, dims, thetas, t, solves, modified)


def small_flow_case() -> tuple[RegressionProblem, list[int], torch.Tensor]:
    """The flow tests' small case: :func:`noisy_problem` on a depth-3 net [4, 5, 5, 3] from gaussian(0.5),
    seed 0: (problem, dims, theta0)."""
    dims = [4, 5, 5, 3]
    return noisy_problem(), dims, pack(init.gaussian(dims, 0.5, seed=0))


LINEAR_RATES, LINEAR_DIMS = (100.0, 3.0, 0.1), (3, 2)


def linear_flow_problem() -> RegressionProblem:
    """A one-layer net (h = 1) on data with Sxx = diag(LINEAR_RATES): its gradient flow
    dW/dt = -(W - P_ls) Sxx is linear and stiff (rates 100 to 0.1), solved by :func:`linear_flow_exact`."""
    n = len(LINEAR_RATES)
    x = torch.diag(torch.tensor(LINEAR_RATES, dtype=torch.float64).sqrt()) * n**0.5  # X X^T / N = diag
    y = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.7, -1.1]], dtype=torch.float64) @ x
    return RegressionProblem(x, y)


def linear_flow_exact(problem: RegressionProblem, thetas: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(T, B, p) for thetas (B, p): W(t) = P_ls + (W0 - P_ls) exp(-Sxx t), column by column."""
    w0 = thetas.reshape(-1, LINEAR_DIMS[1], LINEAR_DIMS[0])
    decay = torch.exp(-torch.tensor(LINEAR_RATES, dtype=torch.float64)[None, :] * t[:, None])  # (T, d_x)
    w = problem.P_ls + (w0[None] - problem.P_ls) * decay[:, None, None, :]
    return w.reshape(len(t), thetas.shape[0], -1)


def eos_problem(seed: int = 5) -> RegressionProblem:
    """The edge-of-stability tests' task: teacher (2, 1, 0.5), d_x = 4, d_y = 3, N = 20, whitened."""
    return RegressionProblem.teacher([2.0, 1.0, 0.5], d_x=4, d_y=3, n_samples=20, seed=seed)


CONFIG_KEY = re.compile(r"\b(model|data|init|flow|sgd|log|limits)\.[a-z_]+")


@contextlib.contextmanager
def bad_argument(argument: str, match: str = ""):
    """The core refuses with ArgumentError naming ``argument``, in its own words (no config key)."""
    with pytest.raises(ArgumentError, match=match) as info:
        yield info
    assert info.value.argument == argument, (info.value.argument, str(info.value))
    assert not CONFIG_KEY.search(str(info.value)), f"a core error names a config key: {info.value}"


# ---- TensorBoard read back ------------------------------------------------------------------------------
def _hparams_content(log_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return acc.PluginTagToContent(metadata.PLUGIN_NAME)


def hparams_of(log_dir: Path) -> dict:
    """The HParams row of one TensorBoard run (``<run>/tensorboard/<series>``), read by TensorBoard's own
    event reader and hparams plugin parser: hyperparameter -> its value (a number, a string or a bool,
    as the plugin has it)."""
    from tensorboard.plugins.hparams import metadata

    content = _hparams_content(log_dir)
    assert metadata.SESSION_START_INFO_TAG in content, (log_dir, list(content))
    info = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}


def hparams_declared(log_dir: Path) -> dict[str, str]:
    """The HParams columns one TensorBoard run declares (its experiment summary, which TensorBoard takes
    from the first run it lists for the whole table): name -> type (``DATA_TYPE_FLOAT64``, ...)."""
    from tensorboard.plugins.hparams import api_pb2, metadata

    content = _hparams_content(log_dir)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    return {h.name: api_pb2.DataType.Name(h.type) for h in experiment.hparam_infos}


def hparams_table(logdir: Path):
    """TensorBoard's HParams table of every run below ``logdir``, as its hparams plugin answers the
    dashboard: a function of the filters (its /session_groups request's ``colParams``) that returns
    (column -> type, from /experiment; run -> its hyperparameters, the rows the filters keep)."""
    import json
    import warnings

    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.plugins import base_plugin
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    with warnings.catch_warnings():  # the sanitizer of the html5lib TensorBoard vendors: deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        from tensorboard.plugins.hparams import hparams_plugin

    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(logdir))
    apps = hparams_plugin.HParamsPlugin(
        base_plugin.TBContext(logdir=str(logdir), multiplexer=mux, data_provider=provider)
    ).get_plugin_apps()

    def post(route: str, request: dict) -> dict:
        reply = Client(apps[route], Response).post(route, json=request)
        assert reply.status_code == 200, reply.get_data(as_text=True)
        return json.loads(reply.get_data(as_text=True))

    def table(col_params: list[dict] | None = None) -> tuple[dict[str, str], dict[str, dict]]:
        experiment = post("/experiment", {"experimentName": ""})
        groups = post(
            "/session_groups",
            {"experimentName": "", "colParams": col_params or [], "startIndex": 0, "sliceSize": 1000,
             "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]},
        )  # fmt: skip
        columns = {h["name"]: h["type"] for h in experiment["hparamInfos"]}
        return columns, {g["name"]: g["hparams"] for g in groups.get("sessionGroups", [])}

    return table


def figure_text_inside(fig) -> bool:
    """Every drawn artist (titles, labels, legends, level labels) lies within the figure: no clipping."""
    fig.canvas.draw()
    bb = fig.get_tightbbox(fig.canvas.get_renderer())
    w, h = fig.get_size_inches()
    return bb.x0 >= -0.01 and bb.y0 >= -0.01 and bb.x1 <= w + 0.01 and bb.y1 <= h + 0.01


# ---- a run's figures (tests/test_plots.py, tests/test_plot_files.py) ----------------------------------
FIGURE_NAMES = {
    "loss",
    "sharpness",
    "sv_P",
    "mode_strength",
    "dist_to_flow",
    "convergence_order",
    "conservation",
}


def check_png(path: Path, min_bytes: int = 10_000) -> None:
    """A PNG of a figure's size that is not blank."""
    from matplotlib.image import imread

    assert path.exists() and path.stat().st_size > min_bytes, path
    img = imread(path)
    h, w = img.shape[:2]
    assert 400 <= w <= 2500 and 300 <= h <= 2500, (path.name, w, h)
    assert float(img[..., :3].std()) > 0.02, f"{path.name} looks blank"


def copy_run_files(src: Path, dst: Path) -> Path:
    """Only the files a user keeps: problem.npz, series/, summary.json (no figures, no TensorBoard)."""
    dst.mkdir(parents=True)
    shutil.copy(src / "problem.npz", dst / "problem.npz")
    shutil.copy(src / "summary.json", dst / "summary.json")
    shutil.copytree(src / "series", dst / "series")
    return dst
