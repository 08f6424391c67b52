"""Refusals before work: a table of bad inputs, each through dlnlab.lab.cli.preflight, the very check
``scripts/train.py`` makes before Hydra runs (Hydra's composition included); ``tests/test_cli_refusals.py`` sends a
handful of the same through the CLI and checks the exit code 2 and that nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dlnlab.lab.cli import preflight
from tests._bad_files import write_bad_files
from tests._helpers import refusal_argv

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY = ["experiment=tiny"]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    """One file per way a data or weights file can be wrong (the tiny net: dims [4, 3, 3, 2]; written by
    tests/_bad_files.py)."""
    d = tmp_path_factory.mktemp("files")
    write_bad_files(d)
    return d


# (id, overrides, fragment of the one-line reason); "{d}" is the folder of bad files
BAD = [
    # Hydra and OmegaConf: keys, options, types, grammar
    ("unknown_key", ["sgd.lr=0.1"], "sgd.lr: no such key; sgd has: lrs,"),
    ("plus_unknown_key", ["+sgd.lr=0.1"], "sgd.lr: no such key; sgd has: lrs,"),
    ("plusplus_unknown_key", ["++flow.foo=1"], "flow.foo: no such key"),
    ("unknown_top_key", ["+lr=0.1"], "lr: no such key; the top level has: model, data"),
    ("unknown_option", ["init=foo"], "init=foo: no such option; allowed: aligned, balanced, file, gaussian"),
    ("unknown_experiment", ["experiment=nope"], "experiment=nope: no such option; allowed: eos, figure1_far"),
    ("malformed_override", ["model.dims=[1,2"], "malformed override 'model.dims=[1,2'"),
    ("override_without_key", ["="], "'=': the override has no key; an override is key=value"),
    ("add_without_key", ["+=1"], "'+=1': the override has no key"),
    (
        "group_given_a_number",
        ["logger=5"],
        "logger: expected the name of an option, got 5; allowed: csv, none, tensorboard",
    ),
    ("group_given_null", ["logger=null"], "logger: expected the name of an option, got null; allowed: csv"),
    ("group_in_one_job_of_a_sweep", ["-m", "logger=csv,5"], "job 1 (logger=5 experiment=tiny): logger: "),
    ("logger_not_importable", ["logger._target_=nonexistent.Logger"], "logger._target_: cannot import"),
    ("callback_not_importable", ["+callbacks.x._target_=nope.Nope"], "callbacks.x._target_: cannot import"),
    ("bad_interpolation", ["flow.t_max=${oops}"], "flow.t_max: the interpolation does not resolve"),
    (
        "not_a_number",
        ["init.scale=abc"],
        "init.scale: 'abc' is not a number",
    ),
    ("not_an_integer", ["log.analysis_points=1.5"], "log.analysis_points: '1.5' is not an integer"),
    ("not_a_list", ["sgd.lrs=0.1"], "sgd.lrs: expected a list"),
    (
        "comma_list_without_brackets",
        ["model.dims=4,3,2"],
        "model.dims: '4,3,2' holds commas: a list is model.dims=[4,3,2]; to sweep over the values, add -m",
    ),
    ("group_as_value", ["log=default"], "log: is a group of keys, not an option"),
    (
        "bad_choice",
        ["sgd.sampling=sometimes"],
        "sgd.sampling: expected one of [with_replacement, without_replacement, reshuffle], got 'sometimes'",
    ),
    ("bad_method", ["flow.method=rk23"], "flow.method: expected one of [auto, dopri5, dopri8"),
    ("bad_bool", ["data.whiten=notabool"], "data.whiten: 'notabool' is not true or false"),
    ("choice_given_a_list", ["flow.method=[lsoda]"], "flow.method: expected one of [auto, dopri5, dopri8, "),
    ("choice_given_a_mapping", ["sgd.sampling={a:1}"], "sgd.sampling: expected one of [with_replacement, "),
    (
        "class_misspelt",
        ["+callbacks.t._target_=dlnlab.lab.callbacks.TopLayerNrm"],
        "'dlnlab.lab.callbacks' has no 'TopLayerNrm'; did you mean dlnlab.lab.callbacks.TopLayerNorm?",
    ),
    (
        "key_of_other_option",
        ["init=balanced", "init.scale=0.1"],
        "init.scale: no such key; init has: kind, u0, seed; init.scale is a key of init=gaussian or init=orthogonal",
    ),
    ("key_of_two_other_options", ["init.u0=0.1"], "; init.u0 is a key of init=balanced or init=aligned"),
    (
        "kind_not_the_option",
        ["init.kind=balanced"],
        "init.kind: balanced does not match the chosen option init=gaussian",
    ),
    ("missing_data_path", ["data=file"], "data.path: missing (required)"),
    ("missing_init_path", ["init=file"], "init.path: missing (required)"),
    # ranges and rules across keys
    ("dims_one_width", ["model.dims=[5]"], "model.dims: need at least two widths"),
    ("dims_zero_width", ["model.dims=[4,0,2]"], "model.dims: every width must be a positive integer"),
    ("negative_seed", ["seed=-1"], "seed: a seed must be in 0 .. 2^63 - 1"),
    (
        "too_many_singular_values",
        ["data.singular_values=[3,2,1]"],
        "data.singular_values: at most min(d_x, d_y) = 2",
    ),
    (
        "negative_singular_value",
        ["data.singular_values=[2,-1]"],
        "data.singular_values: every singular value must be finite and >= 0",
    ),
    (
        "no_singular_values",
        ["data.singular_values=[]"],
        "data.singular_values: the teacher needs at least one",
    ),
    ("whitened_too_few_samples", ["data.n_samples=3"], "data.n_samples: 3 < d_x = 4"),
    ("negative_noise", ["data.noise=-1"], "data.noise: must be finite and >= 0"),
    ("negative_scale", ["init.scale=-0.1"], "init.scale: must be >= 0"),
    (
        "u0_not_numbers",
        ["init=balanced", "init.u0=[a,b]"],
        "init.u0: expected a number or a non-empty list of numbers",
    ),
    (
        "u0_negative_balanced",
        ["init=balanced", "init.u0=[0.001,-0.5]"],
        "init.u0: singular values of a balanced init must be >= 0",
    ),
    (
        "u0_one_per_mode",
        ["init=aligned", "init.u0=[0.001]"],
        "init.u0: expected a number or 2 values (one per mode)",
    ),
    ("zero_horizon", ["flow.t_max=0"], "flow.t_max: must be > 0"),
    ("infinite_horizon", ["flow.t_max=inf"], "flow.t_max: must be finite"),
    ("coarse_rtol", ["flow.rtol=0.1"], "flow.rtol: 0.1 is above 0.001"),
    ("coarse_atol", ["flow.atol=0.01"], "flow.atol: 0.01 is above 0.001"),
    ("negative_rtol", ["flow.rtol=-1"], "flow.rtol: must be finite and > 0"),
    (
        "fixed_step_needs_a_step",
        ["flow.method=rk4"],
        "flow.step_size: required for the fixed-step method rk4",
    ),
    (
        "adaptive_takes_no_step",
        ["flow=dopri5", "flow.step_size=0.1"],
        "flow.step_size: only the fixed-step methods",
    ),
    ("tb_points_zero", ["log.tb_max_points=0"], "log.tb_max_points: must be >= 2"),
    (
        "sme_without_an_ensemble",
        ["sgd.sme=true", "sgd.batch_size=10"],
        "sgd.sme: the stochastic modified equation",
    ),
    (
        "sme_with_full_batches",
        ["sgd.sme=true", "ensemble.size=4"],
        "sgd.sme: the stochastic modified equation",
    ),
    (
        "sme_of_reshuffled_epochs",
        ["sgd.sme=true", "ensemble.size=4", "sgd.batch_size=10", "sgd.sampling=reshuffle"],
        "sgd.sme: the SME models independent minibatches",
    ),
    (
        "modified_with_minibatches",
        ["flow.modified=true", "sgd.batch_size=10"],
        "flow.modified: the modified flow is full-batch GD's",
    ),
    (
        "modified_with_momentum",
        ["flow.modified=true", "sgd.momentum=0.5"],
        "flow.modified: the modified flow is full-batch GD's",
    ),
    (
        "modified_without_lrs",
        ["flow.modified=true", "sgd.lrs=[]"],
        "flow.modified: the modified flow is full-batch GD's",
    ),
    (
        "central_with_minibatches",
        ["flow.central=true", "sgd.batch_size=10"],
        "flow.central: the edge of stability and the central flow are full-batch GD's",
    ),
    (
        "central_with_momentum",
        ["flow.central=true", "sgd.momentum=0.5"],
        "flow.central: the edge of stability and the central flow are full-batch GD's",
    ),
    (
        "central_with_an_ensemble",
        ["flow.central=true", "ensemble.size=2"],
        "flow.central: the edge of stability and the central flow are full-batch GD's",
    ),
    (
        "edge_with_minibatches",
        ["sgd.edge=true", "sgd.batch_size=10"],
        "sgd.edge: the edge of stability and the central flow are full-batch GD's",
    ),
    (
        "central_too_many_evaluations",
        ["flow.central=true", "sgd.lrs=[1e-4]", "flow.t_max=300", "limits.flow_nfe=1e6"],
        "flow.central: the central flows need about",
    ),
    ("top_eigs_zero", ["log.top_eigs=0"], "log.top_eigs: must be >= 1"),
    ("theta_limit_negative", ["log.theta_max_mb=-1"], "log.theta_max_mb: must be"),
    (
        "auto_takes_no_step",
        ["flow.step_size=0.1"],
        "flow.step_size: flow.method=auto chooses an adaptive method",
    ),
    (
        "step_beyond_horizon",
        ["flow.method=euler", "flow.step_size=10"],
        "flow.step_size: 10 is larger than the horizon",
    ),
    (
        "step_above_stability",
        ["flow.method=euler", "flow.step_size=0.5"],
        "flow.step_size: 0.5 is above the stability bound of euler",
    ),
    ("zero_nfe_budget", ["flow.max_nfe=0"], "flow.max_nfe: must be a positive integer"),
    (
        "negative_chunk_members",
        ["flow.chunk_members=-1"],
        "flow.chunk_members: -1 members per chunk; allowed: an integer >= 1, 0 (the whole ensemble in one chunk) or null",
    ),
    ("negative_lr", ["sgd.lrs=[0.01,-0.1]"], "sgd.lrs: every learning rate must be finite and > 0"),
    ("zero_lr", ["sgd.lrs=[0.0]"], "sgd.lrs: every learning rate must be finite and > 0"),
    ("nan_lr", ["sgd.lrs=[nan]"], "sgd.lrs: every learning rate must be finite and > 0"),
    ("repeated_lr", ["sgd.lrs=[0.01,0.01]"], "sgd.lrs: learning rates must be distinct"),
    (
        "lr_beyond_horizon",
        ["sgd.lrs=[10]"],
        "sgd.lrs: one step at lr = 10 stands for time 10 > flow.t_max = 4",
    ),
    ("zero_batch", ["sgd.batch_size=0"], "sgd.batch_size: must be >= 1"),
    (
        "batch_above_n",
        ["sgd.batch_size=50", "sgd.sampling=without_replacement"],
        "sgd.batch_size: 50 > N = 20",
    ),
    ("momentum_one", ["sgd.momentum=1.0"], "sgd.momentum: must be in [0, 1)"),
    ("order_fit_two", ["sgd.order_fit=2"], "sgd.order_fit: the slope is fitted over at least 3"),
    ("zero_blowup", ["sgd.blowup=0"], "sgd.blowup: must be > 0"),
    ("zero_dt", ["log.dt=0"], "log.dt: must be > 0"),
    ("dt_beyond_horizon", ["log.dt=10"], "log.dt: 10 is larger than flow.t_max = 4"),
    ("negative_analysis_points", ["log.analysis_points=-1"], "log.analysis_points: must be >= 0"),
    ("zero_sv_A_top", ["log.sv_A_top=0"], "log.sv_A_top: must be >= 1"),
    ("zero_limit", ["limits.memory_gb=0"], "limits.memory_gb: must be > 0"),
    # impossible work
    (
        "billions_of_grid_points",
        ["log.dt=1e-9"],
        "log.dt: the grid t_m = m * log.dt up to flow.t_max = 4 has 4e+09 points, above limits.grid_points",
    ),
    ("horizon_of_1e12", ["flow.t_max=1e12"], "above limits.grid_points"),
    ("billions_of_steps", ["sgd.lrs=[1e-9]"], "sgd.lrs: the series at lr = 1e-09 needs 4e+09 steps"),
    (
        "huge_widths",
        ["model.dims=[20000,20000,2]", "data.singular_values=[1]", "data.n_samples=20000"],
        "limits.memory_gb: this run needs about",
    ),
    ("billions_of_samples", ["data.n_samples=1000000000"], "(largest: data X, Y"),
    (
        "series_file_of_gigabytes",
        [
            "model.dims=[64,64,64]",
            "data.singular_values=[1]",
            "data.n_samples=64",
            "flow.t_max=100",
            "log.dt=0.002",
            "log.theta_max_mb=1e6",
            "sgd.lrs=[]",
            "limits.memory_gb=1000",
            "flow=dopri5",
        ],
        "limits.series_file_gb: each series file would hold about 3.32 GB (50001 grid points)",
    ),
    (
        "tiny_fixed_steps",
        ["flow.method=euler", "flow.step_size=1e-8"],
        "flow.method: euler needs about 4e+08 evaluations",
    ),
    (
        "explicit_on_a_long_stiff_flow",
        ["flow=dopri5", "flow.t_max=1e7", "log.dt=100", "sgd.lrs=[]"],
        "flow.method: dopri5 needs about",
    ),
    (
        "dense_jacobian_of_a_big_net",
        [
            "model.dims=[80,80]",
            "data.singular_values=[1]",
            "data.n_samples=80",
            "sgd.lrs=[]",
            "flow.method=lsoda",
        ],
        "flow.method: lsoda factorises the dense 6400 x 6400",
    ),
    # data files
    ("data_no_such_file", ["data.path={d}/nope.npz"], "data.path: no such file"),
    ("data_a_directory", ["data.path={d}/a_dir.npz"], "is a directory"),
    ("data_empty_file", ["data.path={d}/empty.npz"], "is empty (0 bytes)"),
    ("data_text_file", ["data.path={d}/text.npz"], "is not an .npz archive"),
    ("data_single_npy", ["data.path={d}/single.npz"], "is not an .npz archive"),
    ("data_pickled", ["data.path={d}/pickled.npz"], "holds object arrays that only pickle can load"),
    ("data_strings", ["data.path={d}/strings.npz"], "has dtype <U1; expected real numbers"),
    ("data_complex", ["data.path={d}/complex.npz"], "is complex (complex128)"),
    ("data_booleans", ["data.path={d}/bools.npz"], "has dtype bool; expected real numbers"),
    ("data_nan", ["data.path={d}/nan.npz"], "holds 1 NaN or infinite value(s)"),
    ("data_inf", ["data.path={d}/inf.npz"], "holds 1 NaN or infinite value(s)"),
    ("data_huge_values", ["data.path={d}/huge.npz"], "holds |value| = 1e+200 > 1e+100"),
    ("data_no_y", ["data.path={d}/no_y.npz"], "must hold arrays X (d_x x N) and Y (d_y x N); missing Y"),
    (
        "data_wrong_shape",
        ["data.path={d}/shape.npz"],
        "X (3, 20) and Y (2, 20) do not fit model.dims=[4, 3, 3, 2]: need X of shape (4, N) and Y of shape "
        "(2, N) with the same number of samples N (columns); for this file set model.dims=[3, <hidden widths>, 2]",
    ),
    (
        "data_samples_as_rows",
        ["data.path={d}/rows.npz"],
        "X (20, 4) and Y (20, 2) do not fit model.dims=[4, 3, 3, 2]: need X of shape (4, N) and Y of shape "
        "(2, N) with the same number of samples N (columns); the file holds the samples as rows: save X.T and Y.T",
    ),
    ("data_sample_mismatch", ["data.path={d}/n_mismatch.npz"], "X (4, 20) and Y (2, 10) do not fit"),
    ("data_one_dimensional", ["data.path={d}/one_d.npz"], "X (20,) and Y (20,) do not fit"),
    (
        "data_no_samples",
        ["data.path={d}/zero_samples.npz"],
        "data.path: X and Y have no columns (N = 0 samples)",
    ),
    ("data_zip_without_arrays", ["data.path={d}/plain.zip.npz"], "missing X, Y (found: nothing)"),
    # initial weights from a file
    (
        "weights_missing_layer",
        ["init.path={d}/w_missing.npz"],
        "init.path: model.dims=[4, 3, 3, 2] has depth h = 3: missing W_3",
    ),
    ("weights_beyond_depth", ["init.path={d}/w_extra.npz"], "W_4 beyond the layers W_1 .. W_3"),
    (
        "weights_wrong_shape",
        ["init.path={d}/w_shape.npz"],
        "W_2 has shape (2, 3); model.dims=[4, 3, 3, 2] needs (3, 3)",
    ),
    ("weights_nan", ["init.path={d}/w_nan.npz"], "holds 9 NaN or infinite value(s)"),
    ("weights_complex", ["init.path={d}/w_complex.npz"], "is complex"),
    (
        "weights_A0_shape",
        ["init.path={d}/a0_shape.npz"],
        "A0 has shape (11, 11); model.dims=[4, 3, 3, 2] has n = 12 nodes",
    ),
    ("weights_A0_off_the_blocks", ["init.path={d}/a0_offmask.npz"], "A0 has entries outside the blocks W_j"),
    ("weights_A0_and_W", ["init.path={d}/both.npz"], "holds both A0 and W_j arrays"),
    ("weights_neither", ["init.path={d}/neither.npz"], "holds neither W_1 .. W_3 nor A0 (found: B)"),
    ("weights_a_directory", ["init.path={d}/a_dir.npz"], "init.path: "),
    # output directories
    ("run_dir_of_another_run", ["hydra.run.dir={d}/old_run"], "hydra.run.dir: "),
    ("sweep_dir_of_another_run", ["-m", "seed=0,1", "hydra.sweep.dir={d}/old_run"], "hydra.sweep.dir: "),
    (
        "run_dir_that_cannot_be_made",
        ["hydra.run.dir=/proc/audit8"],
        "hydra.run.dir: /proc/audit8 cannot be created",
    ),
    ("run_dir_under_a_file", ["hydra.run.dir={d}/empty.npz/run"], "empty.npz is not a directory"),
    ("run_dir_a_file", ["hydra.run.dir={d}/empty.npz"], "empty.npz is a file, not a directory: choose a new"),
    (
        "claimed_run_dir_under_a_file",
        ["hydra.run.dir=${dlnlab_unique:{d}/empty.npz/run}"],
        "empty.npz/run cannot be created: ",
    ),
    (
        "sweep_dir_under_a_file",
        ["-m", "seed=0,1", "hydra.sweep.dir={d}/empty.npz/sweep"],
        "hydra.sweep.dir: ",
    ),
    (
        "one_bad_job_in_a_sweep",
        ["-m", "init.scale=0.1,-1"],
        "job 1 (init.scale=-1 experiment=tiny): init.scale: must be >= 0",
    ),
]


def test_the_table_covers_every_category():
    assert len(BAD) >= 40
    assert len({case[0] for case in BAD}) == len(BAD)


@pytest.mark.parametrize("overrides, fragment", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_refused_in_one_line_naming_the_key(overrides, fragment, bad_files):
    argv = refusal_argv(overrides, bad_files)
    before = sorted(p.name for p in (bad_files / "old_run").iterdir())
    reason = preflight(argv, CONF)
    assert reason is not None, f"accepted: {argv}"
    assert "\n" not in reason, reason
    assert fragment in reason, reason
    assert sorted(p.name for p in (bad_files / "old_run").iterdir()) == before  # nothing written


def test_a_good_command_line_passes_the_preflight(tmp_path):
    assert preflight([*TINY, f"hydra.run.dir={tmp_path / 'new'}"], CONF) is None
    assert preflight(["-m", *TINY, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"], CONF) is None
    assert list(tmp_path.iterdir()) == []  # the probe that the directory can be made is gone too
