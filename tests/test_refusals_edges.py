"""Refusals at float64's edges, of unbounded work, of loggers that could not be made, of files and paths
(issue 16, and the classes found by trying beyond it): a second table, each row through
dlnlab.lab.cli.preflight like tests/test_refusals.py's, and the checks that need more than a row."""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dlnlab.lab.cli import preflight
from tests._helpers import CONF, FILE_BASE, refusal_argv
from tests._helpers import TINY_EXPERIMENT as TINY


@pytest.fixture(scope="module")
def edge_files(tmp_path_factory) -> Path:
    """Files for the rows below (the tiny net: dims [4, 3, 3, 2])."""
    d = tmp_path_factory.mktemp("edges")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 20)), rng.normal(size=(2, 20))
    w = [rng.normal(size=s) * 0.1 for s in ((3, 4), (3, 3), (2, 3))]
    _forged(d / "forged_header.npz", {"X": (4, 10**12), "Y": (2, 20)})
    _forged(d / "w_forged_header.npz", {"W_1": (3, 10**12), "W_2": (3, 3), "W_3": (2, 3)})
    np.savez(d / "w_two_names.npz", W_1=w[0], W1=2 * w[0], W_2=w[1], W_3=w[2])
    x_99 = x.copy()
    x_99[0, 0] = 1e99  # inside the data rule (1e100), far outside what a flow can follow
    np.savez(d / "x_1e99.npz", X=x_99, Y=y)
    np.savez(d / "w_1e40.npz", W_1=w[0] * 1e40, W_2=w[1] * 1e40, W_3=w[2] * 1e40)
    np.savez(d / "good.npz", X=x, Y=y)
    np.savez(d / "good_2.npz", X=-x, Y=y)
    with zipfile.ZipFile(d / "bad_header.npz", "w") as zf:
        zf.writestr("X.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': oops}\n")
        zf.writestr("Y.npy", _npy(y))
    with zipfile.ZipFile(d / "two_x.npz", "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name it writes
        zf.writestr("X.npy", _npy(x))
        zf.writestr("X.npy", _npy(2 * x))
        zf.writestr("Y.npy", _npy(y))
    raw = bytearray((d / "good.npz").read_bytes())
    raw[raw.find(b"X.npy") + 5 + 200] ^= 1  # one bit of X's data: zip's CRC no longer matches
    (d / "bad_crc.npz").write_bytes(bytes(raw))
    return d


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _forged(path: Path, shapes: dict) -> None:
    """An npz whose .npy headers claim ``shapes`` over 80 bytes of data each."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, shape in shapes.items():
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                buf, {"descr": "<f8", "fortran_order": False, "shape": shape}
            )
            buf.write(np.zeros(10).tobytes())
            zf.writestr(f"{name}.npy", buf.getvalue())


LONG_LIST = "[" + ",".join(f"{1e-3 * (1 + i / 20000):.9f}" for i in range(20000)) + "]"
SWEEP_LRS = (
    "[" + ",".join(f"0.0{i + 10}" for i in range(40)) + "]"
)  # 300 characters: one job's directory name

# (id, overrides, fragment of the one-line reason); "{d}" is the folder of edge_files
EDGES = [
    # A. numbers at the edge of float64: counts that overflow, values that would overflow later
    (
        "horizon_of_1e308",
        ["flow.t_max=1e308"],
        "log.dt: the grid t_m = m * log.dt up to flow.t_max = 1e+308 has inf",
    ),
    (
        "grid_of_1e600_points",
        ["flow.t_max=1e300", "log.dt=1e-300"],
        "has inf points, above limits.grid_points",
    ),
    ("denormal_dt", ["log.dt=5e-324"], "has inf points, above limits.grid_points"),
    ("denormal_lr", ["sgd.lrs=[5e-324]"], "sgd.lrs: the series at lr = 4.94066e-324 needs inf steps"),
    (
        "denormal_fixed_step",
        ["flow.method=euler", "flow.step_size=1e-320"],
        "flow.method: euler needs about inf",
    ),
    ("limit_beyond_exact_counts", ["limits.sgd_steps=1e300"], "limits.sgd_steps: 1e+300 is above 2^53"),
    (
        "huge_singular_value",
        ["data.singular_values=[1e200,1]"],
        "data.singular_values: 1e+200 is above 1e+100",
    ),
    ("huge_noise", ["data.noise=1e308"], "data.noise: 1e+308 is above 1e+100"),
    (
        "loss_beyond_1e150",
        ["data.singular_values=[1e90,1]"],
        "data.singular_values: the loss at zero weights",
    ),
    (
        "init_scale_1e300",
        ["init.scale=1e300"],
        "init.scale: at the initial weights the loss is up to 6.07e+1802",
    ),
    ("u0_1e300", ["init=balanced", "init.u0=1e300"], "init.u0: at the initial weights the loss is up to"),
    (
        "seed_of_5000_digits",
        ["seed=" + "7" * 5000],
        "seed: cannot read the value: Exceeds the limit (4300 digits)",
    ),
    ("seed_of_4000_digits", ["seed=" + "7" * 4000], "seed: a seed must be in 0 .. 2^63 - 1, got 77777"),
    (
        "huge_theta_limit",
        ["log.theta_max_mb=1e308", "limits.memory_gb=1e300", "sgd.lrs=[1e-300]"],
        "sgd.lrs: ",
    ),
    # B. work no limit bounded: a flow float64 cannot follow, explicit work from lambda_max at theta0
    ("init_scale_3000", ["init.scale=3000"], "init.scale: the flow's Hessian reaches lambda_max = 3.23e+16"),
    ("data_with_x_1e99", ["data.path={d}/x_1e99.npz"], "data.path: at the initial weights the loss is up to"),
    ("weights_of_1e40", ["init.path={d}/w_1e40.npz"], "init.path: at the initial weights the loss is up to"),
    (
        "explicit_on_a_large_init",
        ["flow=dopri5", "init.scale=30"],
        "flow.method: dopri5 needs about 1.03e+09 evaluations",
    ),
    ("list_of_20000_lrs", ["sgd.lrs=" + LONG_LIST], "sgd.lrs: the override is 240,009 characters long"),
    (
        "list_of_40000_values",
        ["data.singular_values=[" + ",".join(["1"] * 40000) + "]"],
        "the override has 40,000 items",
    ),
    (
        "sweep_of_2000_seeds",
        ["-m", "seed=" + ",".join(map(str, range(2000)))],
        "seed: the override has 2,000 items",
    ),
    # C. loggers and callbacks that could not be made
    (
        "logger_argument_unknown",
        ["logger=csv", "+logger.bogus=1"],
        "logger.bogus: no such key; logger has: flush_logs",
    ),
    (
        "logger_argument_typo",
        ["+logger.flush_sec=30"],
        "did you mean logger.flush_secs? (the arguments of TensorBoardLogger)",
    ),
    (
        "callback_argument_unknown",
        ["+callbacks.x._target_=lightning.pytorch.callbacks.LearningRateMonitor", "+callbacks.x.bogus=1"],
        "callbacks.x.bogus: no such key",
    ),  # fmt: skip
    (
        "callback_argument_missing",
        ["+callbacks.x._target_=lightning.pytorch.callbacks.EarlyStopping"],
        "callbacks.x.monitor: required by EarlyStopping and not given",
    ),  # fmt: skip
    ("logger_a_function", ["logger._target_=os.path.join"], "logger._target_: cannot import 'os.path.join'"),
    # D. files and paths
    (
        "data_forged_header",
        ["data.path={d}/forged_header.npz"],
        "array 'X' claims shape (4, 1000000000000) (float64, 32 TB)",
    ),
    (
        "weights_forged_header",
        ["init.path={d}/w_forged_header.npz"],
        "array 'W_1' claims shape (3, 1000000000000)",
    ),
    (
        "weights_two_names_one_layer",
        ["init.path={d}/w_two_names.npz"],
        "holds W1 and W_1, 2 arrays for layer 1; keep one",
    ),
    (
        "data_path_of_5000_characters",
        ["data.path=/tmp/" + "a" * 5000 + ".npz"],
        "data.path: the path has a name of 5004 bytes",
    ),
    (
        "run_dir_name_of_300",
        ["hydra.run.dir={d}/" + "b" * 300],
        "hydra.run.dir: the run directory has a name of 300 bytes",
    ),
    (
        "run_dir_of_4200_bytes",
        ["hydra.run.dir={d}/" + "/".join(["c" * 200] * 21)],
        "above this file system's limit of 4095",
    ),
    ("unicode_run_dir_name", ["hydra.run.dir='{d}/" + "\u00e9" * 200 + "'"], "has a name of 400 bytes"),
    ("unquoted_unicode", ["hydra.run.dir={d}/" + "\u00e9" * 200], "malformed override 'hydra.run.dir="),
    ("key_of_100000_characters", ["+" + "k" * 100_000 + "=1"], "a key of 100000 bytes; allowed: at most 250"),
    ("key_of_300_characters", ["k" * 300 + "=1"], "a key of 300 bytes; allowed: at most 250"),
    (
        "run_dir_from_a_missing_variable",
        ["hydra.run.dir=/tmp/${oc.env:DLNLAB_NOT_SET_ANYWHERE}/x"],
        "hydra.run.dir: the interpolation does not resolve: ",
    ),  # fmt: skip
    (
        "sweep_job_directory_too_long",
        ["-m", "seed=0,1", "sgd.lrs=" + SWEEP_LRS],
        "hydra.sweep.subdir: job 0's directory",
    ),
    (
        "sweep_jobs_in_one_directory",
        ["-m", "seed=0,1", "hydra.sweep.subdir=same"],
        "job 1 (seed=1 hydra.sweep.subdir=same experiment=tiny): hydra.sweep.subdir: jobs 0 and 1 would both write to",
    ),
    (
        "sweep_jobs_named_without_their_data_files",  # the two files left out of override_dirname
        ["-m", "data.path={d}/good.npz,{d}/good_2.npz", "hydra.sweep.subdir=${hydra.job.override_dirname}"],
        "/data=file,flow.t_max=4,log.dt=0.05,model=tiny,sgd.lrs=[0.04]; make it differ per job, e.g. hydra.sweep.subdir=${hydra.job.num} (the default names each job by its "
        "number and overrides); ${hydra.job.override_dirname} leaves out data.path "
        "(hydra.job.config.override_dirname.exclude_keys)",
    ),
    # found by trying beyond the cases
    ("nested_list", ["sgd.lrs=[[0.1]]"], "sgd.lrs: expected a list of numbers (float), got an element [0.1]"),
    (
        "nested_dims",
        ["model.dims=[[4,3],2]"],
        "model.dims: expected a list of numbers (int), got an element [4, 3]",
    ),
    (
        "rtol_below_rounding",
        ["flow=dopri5", "flow.rtol=1e-300"],
        "flow.rtol: 1e-300 is below 100 eps = 2.22e-14",
    ),
    (
        "horizon_below_any_step",
        ["flow.t_max=1e-300", "log.dt=1e-300", "sgd.lrs=[]"],
        "flow.t_max: 1e-300 is shorter",
    ),
    (
        "huge_minibatch",
        ["sgd.batch_size=1000000000000000000"],
        "(largest: a minibatch (1000000000000000000 samples)",
    ),
    (
        "joblib_without_processes",
        ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "seed=0,1"],
        "hydra.launcher.n_jobs: '0' is not a number of processes",
    ),
    (
        "joblib_processes_not_a_number",
        ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=many", "seed=0,1"],
        "hydra.launcher.n_jobs: 'many' is not an integer",
    ),
    (  # joblib's demand for threads sharing one process: joblib raised once the sweep had started (a trace)
        "joblib_threads_sharing_memory",
        ["-m", "hydra/launcher=joblib", "hydra.launcher.require=sharedmem", "seed=0,1"],
        "hydra.launcher.require: 'sharedmem' asks for the jobs as threads sharing one process, and Hydra's "
        "joblib launcher runs each in a process of loky's",
    ),
    (
        "joblib_hint_unknown",
        ["-m", "hydra/launcher=joblib", "hydra.launcher.prefer=fast", "seed=0,1"],
        "hydra.launcher.prefer: 'fast' is not a joblib backend hint; allowed: processes, threads, null",
    ),
    ("sweep_of_a_billion_jobs", ["-m", "seed=range(0,1000000000)"], "seed: the sweep has 1,000,000,000 jobs"),
    ("empty_group_option", ["data="], "data=: no such option; allowed: file, teacher"),
    ("data_bad_header", ["data.path={d}/bad_header.npz"], "array 'X' has no readable .npy header"),
    ("data_bad_crc", ["data.path={d}/bad_crc.npz"], "Bad CRC-32 for file 'X.npy'"),
    ("data_two_arrays_one_name", ["data.path={d}/two_x.npz"], "holds two arrays named 'X'"),
    (
        "logger_save_dir_elsewhere",
        ["logger=csv", "+logger.save_dir=/tmp/elsewhere"],
        "logger.save_dir: set by the lab",
    ),
    ("logger_one_version_for_all", ["+logger.version=v"], "logger.version: set by the lab"),
    (
        "logger_partial",
        ["logger=csv", "+logger._partial_=true"],
        "logger._partial_: the lab needs the Logger itself",
    ),
    (
        "output_subdir_outside",
        ["hydra.output_subdir=/tmp/x"],
        "hydra.output_subdir: '/tmp/x' is outside the run",
    ),
    ("job_name_with_a_slash", ["hydra.job.name=a/b"], "hydra.job.name: 'a/b' is not a file name"),
    (
        "job_name_too_long",
        ["hydra.job.name=" + "n" * 300],
        "hydra.job.name: the job's log file has a name of 304",
    ),
    ("experimental_rerun", ["--experimental-rerun=/x"], "--experimental-rerun: not supported here"),
    ("config_path_missing", ["--config-path=/nonexistent"], "--config-path: /nonexistent is not a directory"),
]


def test_the_table_covers_every_class():
    assert len(EDGES) >= 50
    assert len({case[0] for case in EDGES}) == len(EDGES)


@pytest.mark.parametrize("overrides, fragment", [c[1:] for c in EDGES], ids=[c[0] for c in EDGES])
def test_bad_input_is_refused_in_one_line_naming_the_key(overrides, fragment, edge_files):
    reason = preflight(refusal_argv(overrides, edge_files), CONF)
    assert reason is not None and "\n" not in reason, reason
    assert fragment in reason, reason


def test_values_at_the_edges_that_are_fine_pass():
    """A denormal mode (its GD threshold underflows), weights of -0.0, the shortest horizon allowed."""
    for edge in (
        ["data.singular_values=[5e-324]"],
        ["init.scale=-0.0"],
        ["flow.t_max=1e-10", "log.dt=1e-11"],
    ):
        assert preflight([*TINY, *edge, "sgd.lrs=[]"], CONF) is None, edge


def test_a_refusal_prints_no_warning_first(edge_files):
    """numpy's RuntimeWarnings (overflow in a division, an invalid cast) came before the refusal of
    sgd.lrs=[1e-300]: the counts are now floats compared with their limits first."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for overrides in (
            ["sgd.lrs=[1e-300]"],
            ["sgd.lrs=[5e-324]"],
            ["flow.t_max=1e308"],
            ["init.scale=1e300"],
        ):
            assert preflight([*TINY, *overrides], CONF) is not None


def test_a_relative_data_path_with_chdir_is_refused_before_hydra_runs(edge_files):
    rel = os.path.relpath(edge_files / "good.npz")
    base = [*FILE_BASE, "data=file", f"data.path={rel}"]
    assert preflight(base, CONF) is None
    reason = preflight([*base, "hydra.job.chdir=true"], CONF)
    assert reason.startswith(f"data.path: {rel!r} is relative, and with hydra.job.chdir=true"), reason
    assert (
        preflight(
            [*FILE_BASE, "data=file", f"data.path={edge_files / 'good.npz'}", "hydra.job.chdir=true"], CONF
        )
        is None
    )


def test_print_the_config_with_a_bad_override_is_one_line():
    """--cfg, --info and --help compose the config: Hydra's own 7-line error becomes the preflight's."""
    for flags in (["--cfg", "job"], ["--help"]):
        assert preflight([*flags, *TINY, "sgd.lr=0.1"], CONF).startswith("sgd.lr: no such key; sgd has: lrs")
        assert preflight([*flags, *TINY, "sgd.lrs=[0.1]"], CONF) is None


def test_user_config_files_through_config_dir(tmp_path):
    """--config-dir adds a directory of config groups (the primary config stays conf/train.yaml): its
    experiments are found; a YAML alias bomb (4.8 million values from 0.5 kB, 470 s in OmegaConf) and
    files Hydra cannot read are refused in one line naming the file."""
    exp = tmp_path / "experiment"
    exp.mkdir()
    head = "# @package _global_\ndefaults:\n  - override /model: tiny\ndata:\n  singular_values: [2.0, 1.0]\n"
    (exp / "mine.yaml").write_text(head + "  n_samples: 20\nflow:\n  t_max: 4.0\nlog:\n  dt: 0.05\n")
    (exp / "python_tag.yaml").write_text("# @package _global_\nseed: !!python/object/apply:os.system [ls]\n")
    (exp / "tab.yaml").write_text("# @package _global_\nseed:\t1\n")
    (exp / "latin1.yaml").write_bytes(b"# @package _global_\nseed: 1 # \xe9\xe8\n")
    flags = [f"--config-dir={tmp_path}"]
    assert preflight([*flags, "experiment=mine"], CONF) is None
    # a key the experiment sets that the chosen option lacks: what clashes, in the words of the command line
    assert preflight([*flags, "experiment=mine", "data=file", "data.path=/x.npz"], CONF) == (
        "experiment=mine sets data.singular_values (in experiment/mine.yaml), a key of data=teacher; "
        "with data=file, data has: kind, path"
    )
    (exp / "typo.yaml").write_text("# @package _global_\nflow:\n  t_mx: 4.0\n")  # a key of no option
    assert preflight([*flags, "experiment=typo"], CONF) == (
        "flow.t_mx: no such key; flow has: t_max, method, rtol, atol, step_size, modified, central, max_nfe, "
        "chunk_members; did you mean flow.t_max? (set in experiment/typo.yaml)"
    )
    assert preflight([*flags, "experiment=python_tag"], CONF).endswith("line 2: not a YAML config Hydra can read: "
        "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'")  # fmt: skip
    assert "tab.yaml line 2: not a YAML config Hydra can read: found character" in preflight(
        [*flags, "experiment=tab"], CONF
    )
    assert preflight([*flags, "experiment=latin1"], CONF).startswith("a config file is not UTF-8 text")
    levels = ["a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]"] + [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdef", "bcdefg")
    ]
    (exp / "bomb.yaml").write_text("# @package _global_\n" + "\n".join(levels) + "\n")
    reason = preflight([*flags, "experiment=mine"], CONF)
    assert reason == f"{exp / 'bomb.yaml'}: expands to more than 100,000 values (YAML aliases copy what they name); "\
        "allowed: at most 100,000 values per config file"  # fmt: skip
    (exp / "bomb.yaml").unlink()  # a file counted once is counted again once it changes (the counts are kept)
    (exp / "mine.yaml").write_text("# @package _global_\n" + "\n".join(levels) + "\n")  # passed above
    assert preflight([*flags, "experiment=mine"], CONF).startswith(
        f"{exp / 'mine.yaml'}: expands to more than"
    )
    assert (
        preflight(["--config-dir=/nonexistent", *TINY], CONF)
        == "--config-dir: /nonexistent is not a directory of config files"
    )
