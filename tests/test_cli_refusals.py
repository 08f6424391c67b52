"""The command line's refusals in subprocesses: one line on stderr, exit code 2, nothing written, and
those a config alone answers before torch is imported (every refusal's message, in-process:
tests/test_refusals.py). Split from tests/test_cli.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests._helpers import popen_cli as _popen

pytestmark = pytest.mark.lab  # the lab's command line

ROOT = Path(__file__).resolve().parents[1]


# One refusal from each place a command line can be refused: the script's own arguments, Hydra's override
# parser, the config's check (one line whatever it finds: tests/test_refusals.py sends the whole table
# through the same preflight in-process), the cost estimate (no warning first) and the run directory.
# The other fragments go through the CLI with the slow tests.
# Through the command line in subprocesses (the messages of every refusal, in-process: test_refusals.py):
# one of Hydra's errors and one of the lab's checks by default, the rest with the slow tests
REFUSED = [
    (  # the experiment's teacher key under data=file (a key the user never typed: said as the clash)
        ["data=file", "data.path=/x.npz"],
        "error: experiment=tiny sets data.singular_values (in experiment/tiny.yaml), a key of data=teacher; "
        "with data=file, data has: kind, path\n",
    ),
    (
        ["sgd.lrs=[1e-300]"],
        "error: sgd.lrs: the series at lr = 1e-300 needs 4e+300 steps",
    ),  # no warning first
]
REFUSED_MORE = [
    (["sgd.lr=0.1"], "error: sgd.lr: no such key"),
    (["model.dims=[1,2"], "error: malformed override"),
    (["hydra.run.dir=/proc/audit8"], "error: hydra.run.dir: /proc/audit8 cannot be created"),
    (["--cfg", "job", "sgd.lr=0.1"], "error: unrecognized arguments: sgd.lr=0.1 (Hydra's flags come before"),
    (["flow.t_max=${oops}"], "error: flow.t_max: the interpolation does not resolve"),
    (["sgd.lrs=[-0.1]"], "error: sgd.lrs: every learning rate must be finite and > 0"),
    (["+sgd.lr=0.1"], "error: sgd.lr: no such key"),
    (["init=foo"], "error: init=foo: no such option"),
    (["log.dt=1e-9"], "error: log.dt: the grid"),
    (["logger=5"], "error: logger: expected the name of an option, got 5; allowed: csv, none"),
    (["logger._target_=nonexistent.Logger"], "error: logger._target_: cannot import 'nonexistent.Logger'"),
    (["+callbacks.x._target_=nope.Nope"], "error: callbacks.x._target_: cannot import 'nope.Nope'"),
    (
        ["data.path=/x.npz"],
        "error: data.path: no such key; data has: kind, singular_values, n_samples, whiten, "
        "noise, seed; data.path is a key of data=file\n",
    ),  # fmt: skip
    (["flow.method=[lsoda]"], "error: flow.method: expected one of [auto, dopri5, "),
    (["="], "error: '=': the override has no key; an override is key=value"),
    (
        ["logger=csv", "+logger.bogus=1"],
        "error: logger.bogus: no such key; logger has: flush_logs_every_n_steps",
    ),
]


def _refused_in_one_line(cases, tmp_path) -> None:
    """Each command line exits 2 with one line on stderr starting with its fragment, and no directory."""
    procs = [
        (_popen(["experiment=tiny", f"hydra.run.dir={tmp_path / f'r{i}'}", *args], tmp_path), fragment)
        for i, (args, fragment) in enumerate(cases)
    ]
    for proc, fragment in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (fragment, err[-2000:])
        assert err.startswith(fragment) and err.count("\n") == 1, err
        assert "Traceback" not in err + out
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a refused run created a directory"


def test_refusals_exit_2_with_one_line_and_write_nothing(tmp_path):
    _refused_in_one_line(REFUSED, tmp_path)


# each refused on its own, before torch: Hydra's composition, the schema, the rules, the counts, the files
REFUSED_BEFORE_TORCH = [
    (["flow.rtool=2", "init=nope"], "error: init=nope: no such option"),
    (["+flow.foo=1"], "error: flow.foo"),
    (["flow.rtol=2"], "error: flow.rtol: 2 is above 0.001"),
    (["sgd.lrs=[1e-300]"], "error: sgd.lrs: the series at lr = 1e-300 needs"),
    (["init=file", "init.path=/no/such/weights.npz"], "error: init.path: "),
    (["init=file", "init.path=w.npz"], "error: init.path: W_1 has shape (6, 4); model.dims="),
    (["sgd.batch_size=200", "sgd.sampling=without_replacement"], "error: sgd.batch_size: 200 > N = 110"),
]


def test_a_config_refused_on_its_own_is_answered_before_torch_is_imported(tmp_path):
    """A mistyped key, option or type (Hydra's composition), a key added with + (the schema), a value out
    of range (the rules) or too much work (the counts) is refused before torch is imported: the checks on
    the config alone import none (dlnlab.flow's constants come from flow/solver.py, Layout from
    dlnlab/_layout.py; the data, the weights and the estimates that need them are config/_build.py,
    imported after), and so are the files' names and shapes and a minibatch larger than N without
    replacement (N from data.n_samples or the data file's header): 0.4 s instead of 1.7 - 2.2 s here.
    The command line run as __main__ in one fresh interpreter, one case after the other (as
    tests/test_scripts.py's refusals): a case that imported torch or Lightning shows it on its own line
    (the modules only add up), and each process start cost ~0.7 s."""
    train = ROOT / "scripts" / "train.py"
    # the shapes, from headers
    np.savez(tmp_path / "w.npz", **{f"W_{j}": np.zeros((6, 4)) for j in range(1, 6)})
    code = (
        "import runpy, sys\n"
        f"for args in {[args for args, _ in REFUSED_BEFORE_TORCH]!r}:\n"
        "    print('case', file=sys.stderr, flush=True)\n"
        f"    sys.argv = [{str(train)!r}, *args]\n"
        "    try:\n"
        f"        runpy.run_path({str(train)!r}, run_name='__main__')\n"
        "    except SystemExit as stop:\n"
        "        print('exit', stop.code, 'torch' in sys.modules, 'lightning' in sys.modules, flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    ends = proc.stdout.strip().splitlines()
    errs = proc.stderr.split("case\n")[1:]
    assert proc.returncode == 0 and len(ends) == len(errs) == len(REFUSED_BEFORE_TORCH), (
        proc.stdout + proc.stderr
    )
    for (args, first), end, err in zip(REFUSED_BEFORE_TORCH, ends, errs):
        assert end == "exit 2 False False", (args, end, err)
        assert err.strip().startswith(first) and err.count("\n") == 1, (args, err)


@pytest.mark.slow
def test_more_refusals_exit_2_with_one_line_and_write_nothing(tmp_path):
    _refused_in_one_line(REFUSED_MORE, tmp_path)
