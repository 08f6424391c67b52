"""Shared fixtures: the Figure 1 problem (the other problems many tests build are in tests/_helpers.py),
and one tiny lab run per session that the tests which only read a run's files share (instead of each
running its own). float64, one torch thread.

Markers (pyproject.toml): ``slow`` for long tests, ``lab`` for tests that run the whole lab (a run in-process
or through the CLI). ``pytest -m "not slow and not lab"`` is the quick loop over the core."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest
import torch

from dlnlab.problem import RegressionProblem
from tests._helpers import SME_ENSEMBLE_RUN, StiffBatch, figure1_problem, make_cfg, stiff_batch

torch.set_num_threads(1)


def pytest_configure(config) -> None:
    """The lab's bytecode, compiled once: where PYTHONDONTWRITEBYTECODE is set (this project's machines
    set it), every command-line run a test starts compiled the lab's ~100 modules from source again
    (0.11 s of the 0.19 s of their imports, measured; some 60 subprocesses in the default tests)."""
    import compileall

    root = Path(__file__).resolve().parents[1]
    for folder in ("dlnlab", "scripts"):
        compileall.compile_dir(root / folder, quiet=1)
    # The test modules' rewritten bytecode, cached too: pytest rewrites each test module's asserts on
    # import and caches the result only where bytecode may be written, so under PYTHONDONTWRITEBYTECODE
    # every xdist worker rewrote and compiled all ~80 test modules again in every session (~4 CPU s a
    # worker of its ~10 s of collection, measured). Allowed while the tests are collected, then as before.
    config.stash[_DONT_WRITE_BYTECODE] = sys.dont_write_bytecode
    sys.dont_write_bytecode = False


_DONT_WRITE_BYTECODE = pytest.StashKey[bool]()


def pytest_collection_finish(session) -> None:
    sys.dont_write_bytecode = session.config.stash.get(_DONT_WRITE_BYTECODE, sys.dont_write_bytecode)


def pytest_unconfigure(config) -> None:
    sys.dont_write_bytecode = config.stash.get(_DONT_WRITE_BYTECODE, sys.dont_write_bytecode)


def pytest_runtest_setup(item) -> None:
    """Each test starts with no signal noted. A run resets the lab's signal state as it starts, but a
    test that calls a series directly (tests/test_training.py's ``train_series``) does not: once, in an
    xdist worker where an earlier test had signalled its own process, such a series ended "interrupted"
    after 7 steps (seen once in the default suite under load, not reproduced alone)."""
    from dlnlab.rundir import signals

    signals.reset()


_MODULES_FROZEN = [0]  # len(sys.modules) at the last freeze


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem) -> None:
    """The imported libraries' objects out of the garbage collector's full passes: once a test has
    imported 100 modules more (Lightning, TensorBoard, matplotlib come in with the first tests that use
    them), what lives then is collected once and frozen (gc.freeze). Each full pass traversed every
    object of torch, Lightning and the rest, ~430,000 after one lab run: 0.4-1.4 s a pass here, 15 passes
    in tests/test_refusals.py, test_lab.py and test_plots.py (one process), 3.8 s of their GC's 5.3 s;
    frozen, 38 passes took 1.9 s (four freezes 0.35 s; measured). Forked lab workers inherit the freeze."""
    if len(sys.modules) > _MODULES_FROZEN[0] + 100:
        gc.collect()
        gc.freeze()
        _MODULES_FROZEN[0] = len(sys.modules)


FIG1_DIMS = (11, 6, 6, 6, 6, 4)
TINY_RUN = ["experiment=tiny", "log.progress=never"]  # the session's run: TensorBoard and figures on


@pytest.fixture(scope="session")
def fig1_problem() -> RegressionProblem:
    """Teacher s = (4, 3, 2, 1), exactly whitened inputs, N = 110, no noise (shared: read-only)."""
    return figure1_problem()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One real ``dlnlab.lab.run`` of ``experiment=tiny`` (the flow and GD at lr 0.04, 0.02, 0.01 over
    t <= 4, 81 grid points; TensorBoard and figures on), made once per session; tests read its directory
    and never write into it (a test that changes a run copies it first, or makes its own)."""
    from dlnlab.lab.runner import run

    out = tmp_path_factory.mktemp("session") / "tiny"
    result = run(make_cfg(TINY_RUN), output_dir=out)
    assert result.exit_code == 0, result["series"]
    return out


@pytest.fixture(scope="session")
def sme_ensemble_run(tmp_path_factory):
    """(result, run directory) of one real run of ``SME_ENSEMBLE_RUN``, made once per session and read
    by tests/test_records.py (its summary's records) and tests/test_kinds.py (the unbroken run a killed
    and resumed one must equal); its users share the xdist group ``sme_ensemble_run``. Read-only."""
    from dlnlab.lab.runner import run

    out = tmp_path_factory.mktemp("session") / "sme_ensemble"
    result = run(make_cfg(SME_ENSEMBLE_RUN), output_dir=out)
    assert result.exit_code == 0, result["series"]
    return result, out


MODIFIED_RUN = [
    "experiment=tiny", "logger=tensorboard", "log.figures=false", "log.progress=never", "flow.modified=true",
    "sgd.lrs=[0.02,0.01,0.005]", "flow.t_max=2", "init.scale=0.5",
]  # fmt: skip


@pytest.fixture(scope="session")
def modified_run(tmp_path_factory):
    """(result, run directory) of one real run with the GD modified flows (``MODIFIED_RUN``: TensorBoard
    on), made once per session and read by tests/test_modified.py (its records, orders, TensorBoard)
    and tests/test_records.py (its summary's records); its users share the xdist group
    ``sme_ensemble_run``. Read-only."""
    from dlnlab.lab.runner import run

    out = tmp_path_factory.mktemp("session") / "modified"
    result = run(make_cfg(MODIFIED_RUN), output_dir=out)
    return result, out


@pytest.fixture(scope="session")
def small_batch() -> StiffBatch:
    """Three members of the small noisy net over t <= 3 and their tight solves (tests/_helpers.py),
    shared by tests/test_flow_bdf.py and tests/test_flow_radau.py (one xdist group, ``stiff_batch``)."""
    return stiff_batch("small")


@pytest.fixture(scope="session")
def figure1_batch() -> StiffBatch:
    """Three Figure 1 members over t <= 5 and their tight solves; as :func:`small_batch`."""
    return stiff_batch("figure1")
