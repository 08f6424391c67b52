"""The core as a notebook uses it: arguments of the wrong kind, shape or dtype are refused at the
boundary with one line naming the argument (an ArgumentError), or taken as documented; never a
traceback from deep inside torch, never a silently wrong result. Tiny nets: each test well under 1 s."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import bad_argument

import dlnlab
from dlnlab.errors import ArgumentError
from dlnlab.saddles import detect_plateaus

DIMS = [5, 4, 3]


@pytest.fixture(scope="module")
def problem():
    return dlnlab.RegressionProblem.teacher([2.0, 1.0], d_x=5, d_y=3, n_samples=20, seed=0)


@pytest.fixture(scope="module")
def theta0():
    return dlnlab.pack(dlnlab.gaussian(DIMS, 0.1, seed=1))


def test_an_argument_error_names_its_argument_in_its_one_line(problem, theta0):
    with pytest.raises(ArgumentError) as info:
        dlnlab.gd(problem, DIMS, theta0, lr=0.1, steps=10, momentum=1.0)
    assert str(info.value) == "momentum: must be in [0, 1), got 1.0"
    assert info.value.argument == "momentum" and info.value.message == "must be in [0, 1), got 1.0"
    with pytest.raises(ArgumentError, match=r"^rtol: must be finite and > 0, got -1$"):
        dlnlab.Solver(rtol=-1)
    # a message that starts with its argument's name is not given the name twice
    assert str(ArgumentError("theta0", "theta0 has shape (3,)")) == "theta0 has shape (3,)"
    assert str(ArgumentError("events", "events[0] must be callable")) == "events[0] must be callable"
    # ... as a word: an argument whose name begins the message's first word is still named
    assert str(ArgumentError("t", "the arrays disagree")) == "t: the arrays disagree"
    with pytest.raises(ArgumentError, match=r"^t: the series' arrays disagree"):
        detect_plateaus([0.0, 1.0], [1.0, 1.0, 1.0], [[1.0], [1.0]], [0.1, 0.1], problem, 2)


def test_integrate_refuses_bad_times_and_states_with_an_argument_error(problem, theta0):
    grid = [0.0, 1.0]
    with bad_argument("theta0", r"theta0 has 31 entries, dims \[5, 4, 3\] need p = 32"):
        dlnlab.integrate(problem, DIMS, theta0[:-1], grid)
    net = dlnlab.DeepLinearNetwork(DIMS)  # A (12, 12) handed in for theta: the message says the shape
    with bad_argument("theta0", r"12 entries in its last dimension \(shape \(12, 12\)\).* need p = 32"):
        dlnlab.integrate(problem, DIMS, net.A, grid)
    with bad_argument("theta0", r"shape \(p,\) or \(B, p\), got \(1, 1, 32\)"):
        dlnlab.integrate(problem, DIMS, theta0[None, None], grid)
    with bad_argument("t_eval", "1-D sequence"):
        dlnlab.integrate(problem, DIMS, theta0, 5.0)
    with bad_argument("t_eval", "strictly increasing"):
        dlnlab.integrate(problem, DIMS, theta0, [0.0, 2.0, 1.0])
    with bad_argument("dims", "must be a sequence of widths"):
        dlnlab.integrate(problem, 5, theta0, grid)
    with bad_argument("theta", "theta has 31 entries"):
        dlnlab.unpack(theta0[:-1], DIMS)
    with bad_argument("n", "must be an integer >= 2"):
        dlnlab.time_grid(5.0, n=10.0)


def test_gd_checks_its_arguments_at_the_boundary_as_integrate_does(problem, theta0):
    other = [5, 4, 4]  # p = 36: widths that do not end in the data's d_y = 3
    with bad_argument("dims", r"dims \[5, 4, 4\] do not fit the data \(d_x = 5, d_y = 3\)"):
        dlnlab.gd(problem, other, dlnlab.pack(dlnlab.gaussian(other, 0.1)), lr=0.1, steps=10)
    with bad_argument("batch_size", "must be an integer >= 1"):
        dlnlab.gd(problem, DIMS, theta0, lr=0.1, steps=10, batch_size=5.0)
    want = dlnlab.gd(problem, DIMS, theta0, lr=0.1, steps=10, batch_size=5, seed=3)
    # numpy's arrays and integers are taken as torch's tensors and Python's ints: the same numbers
    got = dlnlab.gd(
        problem, DIMS, theta0.numpy(), lr=0.1, steps=np.int64(10), batch_size=np.int64(5), seed=np.int64(3)
    )
    assert torch.equal(got.theta, want.theta) and torch.equal(got.t, want.t)
    assert torch.equal(dlnlab.gd(problem, DIMS, theta0.tolist(), lr=0.1, steps=10).theta[-1],
                       dlnlab.gd(problem, DIMS, theta0, lr=0.1, steps=10).theta[-1])  # fmt: skip


def test_integrate_takes_a_list_theta0_in_the_problems_dtype_not_torchs_float32(problem, theta0):
    grid = [0.0, 0.5]
    want = dlnlab.integrate(problem, DIMS, theta0, grid)
    assert torch.equal(dlnlab.integrate(problem, DIMS, theta0.tolist(), grid).theta, want.theta)
    assert torch.equal(dlnlab.integrate(problem, DIMS, theta0.numpy(), grid).theta, want.theta)


def test_user_data_make_a_float64_problem_unless_asked_otherwise():
    gen = torch.Generator().manual_seed(0)
    x32, y32 = torch.randn(5, 30, generator=gen), torch.randn(3, 30, generator=gen)  # torch's float32
    problem = dlnlab.RegressionProblem.from_data(x32, y32)
    assert problem.X.dtype == problem.modes.dtype == torch.float64
    assert torch.equal(problem.Y, y32.double())
    assert dlnlab.RegressionProblem.from_data(x32.numpy(), y32.numpy()).X.dtype == torch.float64
    assert dlnlab.RegressionProblem.from_data(x32, y32, dtype=torch.float32).X.dtype == torch.float32
    # the constructor keeps the data's precision: a float64 Y is not rounded to a float32 X's
    mixed = dlnlab.RegressionProblem(x32, y32.double() / 3)
    assert mixed.Y.dtype == torch.float64 and torch.equal(mixed.Y, y32.double() / 3)
    assert dlnlab.RegressionProblem(x32.numpy(), y32.numpy()).X.dtype == torch.float32


def test_a_float32_problem_is_refused_by_the_float64_solvers_and_solved_by_the_others(theta0):
    problem = dlnlab.RegressionProblem.teacher(
        [2.0, 1.0], 5, 3, 20, whiten=False, seed=0, dtype=torch.float32
    )
    with bad_argument("solver", "lsoda solves in float64 and the problem is torch.float32"):
        dlnlab.integrate(problem, DIMS, theta0, [0.0, 0.5])  # was a dtype RuntimeError in a matmul
    with bad_argument("solver", "bdf_batch solves in float64"):
        dlnlab.integrate(problem, DIMS, theta0, [0.0, 0.5], dlnlab.Solver("bdf_batch"))
    flow = dlnlab.integrate(problem, DIMS, theta0, [0.0, 0.5], dlnlab.Solver("rk45", rtol=1e-5, atol=1e-7))
    assert flow.status == "ok" and flow.theta.dtype == torch.float32


def test_dims_as_a_list_a_tuple_or_a_layout_and_u0_as_any_scalar(problem):
    layout = dlnlab.Layout((5, 4, 3))
    for init in (dlnlab.gaussian, dlnlab.orthogonal):
        want = init(DIMS, 0.1, seed=2)
        for dims in (tuple(DIMS), layout, np.array(DIMS)):
            assert all(torch.equal(a, b) for a, b in zip(init(dims, 0.1, seed=2), want))
    want = dlnlab.balanced(DIMS, 0.1, seed=2)
    for u0 in (np.float64(0.1), torch.tensor(0.1, dtype=torch.float64), np.array(0.1)):
        assert all(torch.equal(a, b) for a, b in zip(dlnlab.balanced(layout, u0, seed=2), want))
    want = dlnlab.aligned(DIMS, problem, [0.1, 0.2], seed=2)
    got = dlnlab.aligned(layout, problem, torch.tensor([0.1, 0.2], dtype=torch.float64), seed=2)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_a_network_from_numpy_weights_or_theta(theta0):
    net = dlnlab.DeepLinearNetwork.from_theta(DIMS, theta0.numpy())
    assert net.A.dtype == torch.float64 and torch.equal(net.theta(), theta0)
    weights = dlnlab.unpack(theta0, DIMS)
    assert torch.equal(dlnlab.DeepLinearNetwork.from_weights([w.numpy() for w in weights]).theta(), theta0)


def test_the_stability_threshold_refuses_a_depth_below_one_and_has_none_without_a_mode():
    assert dlnlab.gd_stability_threshold(4.0, 5) == pytest.approx(2 / (5 * 4.0**1.6), rel=1e-15)
    assert dlnlab.gd_stability_threshold(0.0, 3) == float("inf")  # was a ZeroDivisionError
    assert dlnlab.gd_stability_threshold(0.0, 1) == 2.0  # h = 1: the Hessian is Sxx whatever the data's modes
    with bad_argument("h", "the depth must be an integer >= 1, got 0"):
        dlnlab.gd_stability_threshold(4.0, 0)
    with bad_argument("s1", "finite and >= 0"):
        dlnlab.balanced_sharpness(-1.0, 3)


def test_the_method_says_whether_steps_used_minibatches_and_momentum(problem, theta0):
    def method(**kw):
        return dlnlab.gd(problem, DIMS, theta0, lr=0.01, steps=2, **kw).method

    assert method() == "gd" and method(batch_size=5) == "sgd"
    assert method(momentum=0.5) == "gd_heavy_ball"  # it was "heavy_ball" for both of these
    assert method(momentum=0.5, batch_size=5) == "sgd_heavy_ball"


def test_a_solver_given_by_its_methods_name_is_that_method_at_its_defaults(problem, theta0):
    """torchdiffeq's users write method="dopri5": the name alone was refused ("must be a Solver or a
    mapping"); it is Solver(name), so an unknown name is refused as Solver refuses it."""
    by_name = dlnlab.integrate(problem, DIMS, theta0, [0.0, 0.5], "dopri5")
    explicit = dlnlab.integrate(problem, DIMS, theta0, [0.0, 0.5], dlnlab.Solver("dopri5"))
    assert by_name.method == "dopri5" and torch.equal(by_name.theta, explicit.theta)
    with pytest.raises(ArgumentError, match=r"^method: .*dopri6"):
        dlnlab.integrate(problem, DIMS, theta0, [0.0, 0.5], "dopri6")
    with bad_argument("solver", "must be a Solver, a mapping of its fields or a method's name, got int"):
        dlnlab.integrate(problem, DIMS, theta0, [0.0, 0.5], 5)


def test_record_steps_outside_the_run_are_named_not_the_list_cut_in_two(problem, theta0):
    """A short list was printed twice ("got [0, 20] .. [0, 20]"); the steps outside 0 .. steps are named."""
    with bad_argument("record_steps", re.escape("must be steps in 0 .. 10, got 1 outside, e.g. [20]")):
        dlnlab.gd(problem, DIMS, theta0, lr=0.01, steps=10, record_steps=[0, 20])
    with bad_argument("record_steps", "must be steps in 0 .. 10, got none"):
        dlnlab.gd(problem, DIMS, theta0, lr=0.01, steps=10, record_steps=[])


def test_gd_stops_as_interrupted_when_stop_says_so_as_integrate_does(problem, theta0):
    """integrate had stop=; gd only Ctrl+C. stop() is asked at every recorded step: True raises
    Interrupted with the trajectory so far, its status interrupted (not a KeyboardInterrupt's message)."""
    asked = []
    with pytest.raises(dlnlab.Interrupted) as info:
        dlnlab.gd(problem, DIMS, theta0, lr=0.01, steps=100, record_steps=range(0, 101, 10),
                  stop=lambda: asked.append(1) or len(asked) == 3)  # fmt: skip
    run = info.value.result
    assert run.status == dlnlab.Status.INTERRUPTED and run.message == "stopped at step 20"
    assert run.steps.tolist() == [0, 10, 20] and run.theta.shape == (3, theta0.numel())
    whole = dlnlab.gd(problem, DIMS, theta0, lr=0.01, steps=100, record_steps=[0, 10, 20])
    assert torch.equal(run.theta, whole.theta)  # the same steps
    assert dlnlab.gd(problem, DIMS, theta0, lr=0.01, steps=20, stop=lambda: False).status == "ok"


def test_user_data_are_refused_at_the_boundary_naming_the_array():
    """RegressionProblem's data checks were plain ValueErrors; complex data lost their imaginary part
    (torch's cast, with only a warning). Each is an ArgumentError naming X or Y."""
    x, y = torch.randn(3, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    with bad_argument("X", "X and Y must be real, got complex data"):
        dlnlab.RegressionProblem(x.to(torch.complex128), y)
    with bad_argument("Y", re.escape("X and Y must be 2-D (features x samples), got (3, 5), (2, 5, 1)")):
        dlnlab.RegressionProblem(x, y[..., None])
    with bad_argument("Y", "X has 5 samples and Y has 4: they must match"):
        dlnlab.RegressionProblem(x, y[:, :4])
    with bad_argument("X", "^X: the data need at least one sample$"):
        dlnlab.RegressionProblem(x[:, :0], y[:, :0])
    y[1, 2] = float("nan")
    with bad_argument("Y", "X and Y must be finite"):
        dlnlab.RegressionProblem(x, y)


def test_the_work_done_is_a_typed_record_that_prints_on_one_line(problem, theta0):
    """``traj.stats`` was a dict of strings to numbers; it is a ``SolveStats`` whose fields are the
    trajectory's own counts, for the flow and for GD alike."""
    flow = dlnlab.integrate(problem, DIMS, theta0, [0.0, 0.5, 20.0], "lsoda")  # stiff by t = 20: Jacobians
    run = dlnlab.gd(problem, DIMS, theta0, lr=0.01, steps=7)
    for traj in (flow, run):
        stats = traj.stats
        assert isinstance(stats, dlnlab.SolveStats)
        assert (stats.nfe, stats.njev, stats.n_steps, stats.wall_time_s) == (
            traj.nfe, traj.njev, traj.n_steps, traj.wall_time_s)  # fmt: skip
        assert (
            str(stats) == f"nfe {traj.nfe}, njev {traj.njev}, {traj.n_steps} steps, {traj.wall_time_s:.3g} s"
        )
    assert run.stats.n_steps == 7 and flow.stats.nfe > 0 and flow.stats.njev > 0


def test_the_command_lines_config_from_python_is_composed_and_checked_as_the_command_line_does():
    """``dlnlab.lab.compose``: a notebook had to find the checkout's conf/ and call Hydra's compose API
    itself (docs/api.md). It gives what tests/_helpers.make_cfg composes (the same Hydra call the CLI
    makes), and refuses what the command line refuses, in its one line."""
    from omegaconf import OmegaConf

    import dlnlab.lab
    from tests._helpers import make_cfg

    words = ["experiment=tiny", "sgd=minibatch", "sgd.batch_size=5", "sgd.lrs=[0.04]"]
    assert OmegaConf.to_container(dlnlab.lab.compose(words)) == OmegaConf.to_container(make_cfg(words))
    for bad, said in (
        (["model.dim=[4,3]"], r"^model.dim: no such key; model has: dims; did you mean model.dims\?$"),
        (["experiment=tinny"], "^experiment=tinny: no such option; allowed: eos, "),
        (["hydra.run.dir=x"], r"^hydra.run.dir: not a key of a run from Python: run\(cfg, output_dir=...\)"),
        ("experiment=tiny", r"^overrides: a list of the command line's words, e.g. \['experiment=tiny'\]"),
    ):
        with pytest.raises(dlnlab.lab.ConfigError, match=said):
            dlnlab.lab.compose(bad)
    with pytest.raises(dlnlab.lab.ConfigError, match="^conf_dir: .* holds no train.yaml"):
        dlnlab.lab.compose([], conf_dir=Path(__file__).parent)
