"""Files: initial weights from a file, and atomic writes that a kill or a signal cannot leave half-written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from dlnlab.init import gaussian
from dlnlab.lab.config import load_weights, prepare
from dlnlab.lab.runner import run
from dlnlab.network import adjacency_from_weights
from tests._helpers import TINY, make_cfg


def test_weights_from_W_arrays_or_A0_are_the_same_weights(tmp_path):
    dims = (4, 3, 3, 2)
    ws = gaussian(dims, 0.2, seed=5)
    np.savez(tmp_path / "w.npz", **{f"W_{j + 1}": w.numpy() for j, w in enumerate(ws)})
    np.savez(tmp_path / "w_nounderscore.npz", **{f"W{j + 1}": w.numpy() for j, w in enumerate(ws)})
    np.savez(
        tmp_path / "a0.npz", A0=adjacency_from_weights(ws).numpy(), X=np.zeros(3)
    )  # other arrays ignored
    for name in ("w.npz", "w_nounderscore.npz", "a0.npz"):
        loaded = load_weights(str(tmp_path / name), dims)
        assert all(torch.equal(a, b) for a, b in zip(loaded, ws)), name
    plan = prepare(make_cfg([*TINY, "init=file", f"init.path={tmp_path / 'w.npz'}"]))
    assert all(torch.equal(a, b) for a, b in zip(plan.weights0, ws)) and plan.seeds.init is None


def test_minibatches_of_a_data_file_are_announced_with_its_n(tmp_path):
    """The start block names N from the data (a data file has no data.n_samples key: it crashed)."""
    from dlnlab.lab.results import start_block

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.standard_normal((4, 30)), Y=rng.standard_normal((2, 30)))
    args = ["model.dims=[4,3,2]", "data=file", f"data.path={tmp_path / 'd.npz'}", "sgd.batch_size=5",
            "sgd.sampling=without_replacement", "flow.t_max=1", "sgd.lrs=[0.05]"]  # fmt: skip
    text = start_block(prepare(make_cfg(args)), tmp_path / "run")
    assert "minibatch SGD (batch 5 of 30, without replacement)" in text


def test_the_start_block_says_where_the_grid_ends_when_t_max_is_not_a_multiple_of_dt(tmp_path):
    from dlnlab.lab.results import start_block

    text = start_block(prepare(make_cfg([*TINY, "flow.t_max=1.05", "log.dt=0.1"])), tmp_path / "run")
    assert (
        "the gradient flow over t <= 1, the grid's last point (grid dt = 0.1, 11 points; flow.t_max = 1.05"
        in text
    )
    text = start_block(prepare(make_cfg([*TINY, "flow.t_max=1", "log.dt=0.1"])), tmp_path / "run")
    assert "the gradient flow over t <= 1 (grid dt = 0.1, 11 points)" in text


def test_the_start_block_gives_heavy_balls_own_stability_threshold(tmp_path):
    """Heavy ball is linearly stable for eta lambda < 2 (1 + beta): the start line said GD's 2 / lambda
    (0.2646 on the tiny net at momentum 0.5, where the run's warning and summary use 0.3969)."""
    from dlnlab.lab.results import start_block

    h, m_1 = 3, 2.0  # the tiny experiment: depth 3, whitened teacher s = [2, 1]
    gd = 2 / (h * m_1 ** (2 - 2 / h))
    text = start_block(prepare(make_cfg(TINY)), tmp_path / "run")
    assert f"stability threshold 2 / (h m_1^(2-2/h)) = {gd:.4g})" in text
    text = start_block(prepare(make_cfg([*TINY, "sgd.momentum=0.5"])), tmp_path / "run")
    assert f"stability threshold 2 (1 + momentum) / (h m_1^(2-2/h)) = {gd * 1.5:.4g})" in text


def test_the_threshold_of_data_not_whitened_is_the_balanced_minimums_computed_sharpness(tmp_path):
    """data.whiten=false: h m_1^(2-2/h) is not the balanced minimum's sharpness (tests/test_analysis.py);
    the plan's threshold, its stiffness and the start line take the computed one."""
    from dlnlab.analysis import balanced_minimum_sharpness, balanced_sharpness
    from dlnlab.lab.results import start_block

    plan = prepare(make_cfg([*TINY, "data.whiten=false", "sgd.lrs=[0.3,0.01]"]))
    dims = tuple(plan.cfg.model.dims)
    s_bal = balanced_minimum_sharpness(plan.problem, dims)
    closed = balanced_sharpness(float(plan.problem.modes[0]), len(dims) - 1)
    assert abs(s_bal / closed - 1) > 0.05  # the closed form would be off here
    assert plan.gd_threshold == pytest.approx(2 / s_bal, rel=1e-12) and plan.lam_max >= s_bal
    text = start_block(plan, tmp_path / "run")
    label = "S_bal (computed at the balanced minimum: data not whitened)"
    assert f"GD's stability threshold 2 / {label} = {2 / s_bal:.4g})" in text
    # the warning names the balanced minimum, not every minimum (it said "the balanced minimum is stable")
    [note] = [n for n in plan.notes if n.startswith("sgd.lrs")]
    assert f"0.3 above the GD stability threshold {2 / s_bal:.4g} (2 (1 + momentum) / {label}): the balanced " \
        "global minimum is not stable there (an unbalanced one may be); " in note  # fmt: skip


def test_the_warning_and_the_summary_take_heavy_balls_threshold_from_the_plan():
    """The warning before the run and the summary's flag "unstable" use the start line's threshold,
    Plan.stability_threshold, against the closed form 2 (1 + momentum) / (h m_1^(2-2/h)): 0.3969 on the
    tiny net at momentum 0.5, between which and GD's 0.2646 lies lr 0.35 (neither warned nor flagged)."""
    from dlnlab.lab.results import finish_sgd_entry
    from dlnlab.status import Status

    h, m_1 = 3, 2.0
    bound = 1.5 * 2 / (h * m_1 ** (2 - 2 / h))
    plan = prepare(make_cfg([*TINY, "sgd.momentum=0.5", "sgd.lrs=[0.45,0.35,0.02]"]))
    assert plan.stability_threshold == pytest.approx(bound, rel=1e-12)
    [note] = [n for n in plan.notes if n.startswith("sgd.lrs")]
    assert note.startswith(f"sgd.lrs: 0.45 above the GD stability threshold {bound:.4g} (2 (1 + momentum)")
    # stalled on the origin's plateau, far from the flow's 0.9, its sharpness 1 under 2 (1 + momentum) / eta
    n = 11
    arrays = {"t": np.linspace(0.0, 4.0, n), "loss": np.full(n, 2.4), "dist_to_flow": np.zeros(n),
              "step": np.arange(n), "sharpness": np.ones(n)}  # fmt: skip
    for lr, flagged in ((0.45, True), (0.35, False)):
        entry = {"lr": lr, "momentum": 0.5, "status": Status.OK, "message": "", "steps": n - 1}
        finish_sgd_entry(
            entry, arrays, lr / 0.5, plan.problem.plateau_levels(2), plan.stability_threshold, 0.9,
            plan.stability_threshold_name,
        )  # fmt: skip
        assert (entry["status"] == Status.UNSTABLE) is flagged, entry
        if flagged:
            name = "2 (1 + momentum) / (h m_1^(2-2/h))"
            assert f"eta = 0.45 is above GD's stability threshold {name} = {bound:.4g}," in entry["message"]
            assert entry["message"].startswith("the loss stays up at 2.4")


@pytest.mark.lab
def test_a_run_of_heavy_ball_between_the_two_thresholds_is_not_flagged_above_them(tmp_path):
    """The runner hands the summary Plan.stability_threshold (the test above calls finish_sgd_entry by
    hand, so a runner that handed GD's 0.2646 passed it): lr 0.35 at momentum 0.5 on the tiny net stalls
    at 2.43 and is ok, not "unstable: eta = 0.35 is above the GD stability threshold 0.2646"."""
    res = run(make_cfg([*TINY, "sgd.momentum=0.5", "sgd.lrs=[0.35]"]), output_dir=tmp_path / "run")
    entry = res["series"]["sgd_lr_0.35"]
    assert entry["status"] == "ok" and "stability threshold" not in entry["message"], entry["message"]


@pytest.mark.lab
def test_a_run_restarted_from_its_own_problem_npz_is_the_same_run(tmp_path):
    a = run(make_cfg([*TINY, "init.scale=0.3"]), output_dir=tmp_path / "a")
    b = run(
        make_cfg([*TINY, "init=file", f"init.path={tmp_path / 'a' / 'problem.npz'}"]),
        output_dir=tmp_path / "b",
    )
    assert a.exit_code == b.exit_code == 0 and b["config"]["init"]["kind"] == "file"
    np.testing.assert_array_equal(
        np.load(tmp_path / "a/problem.npz")["A0"], np.load(tmp_path / "b/problem.npz")["A0"]
    )
    for name in a["series"]:  # the same ops in the same order from the same weights: bit for bit
        np.testing.assert_array_equal(
            np.load(tmp_path / "a" / "series" / f"{name}.npz")["theta"],
            np.load(tmp_path / "b" / "series" / f"{name}.npz")["theta"],
        )


WRITER = """
import sys, numpy as np
from dlnlab.rundir import save_npz
path, n = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
i = 0
while True:
    save_npz(path, x=np.full(n, float(i % 2)), i=np.array(i))
    i += 1
"""


@pytest.mark.parametrize("trials", [2, pytest.param(8, marks=pytest.mark.slow)])
def test_a_kill_during_a_write_never_leaves_a_broken_file(tmp_path, trials):
    """SIGKILL (no handler can run) at random moments of repeated 16 MB writes: the file is always a
    complete npz, the old one or the new one."""
    path = tmp_path / "series.npz"
    rng = np.random.default_rng(trials)
    for trial in range(trials):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), "2000000"], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3 + float(rng.uniform(0, 0.5)))
        proc.kill()
        proc.wait(timeout=30)
        if not path.exists():  # killed before the first rename
            continue
        with np.load(path) as f:
            x, i = f["x"], int(f["i"])
        assert x.shape == (2_000_000,) and (x == float(i % 2)).all(), trial


JSON_WRITER = """
import sys
from dlnlab.rundir import signals
from dlnlab.rundir import write_json
signals.install()
path = sys.argv[1]
print("ready", flush=True)
i = 0
try:
    while True:
        write_json(path, {"i": i, "payload": list(range(300000))})
        i += 1
except signals.Interrupted as err:
    print("interrupted", err.signum, flush=True)
    sys.exit(128 + err.signum)
"""


def test_a_signal_during_a_write_waits_for_the_write(tmp_path):
    path = tmp_path / "summary.json"
    proc = subprocess.Popen([sys.executable, "-c", JSON_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60  # signal once the first write is done, the writer in its next one
    while not path.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)  # (a fixed sleep of 1 s came before the first write under load)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "interrupted 15" in out
    data = json.loads(path.read_text())
    assert data["payload"][-1] == 299999 and data["i"] >= 0
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("bad", ["nan", "shape"])
@pytest.mark.lab
def test_bad_user_files_are_refused_before_the_run_directory_exists(bad, tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 20))
    y = np.random.default_rng(1).normal(size=(2, 20))
    if bad == "nan":
        y[0, 3] = np.nan
    else:
        y = y[:1]
    np.savez(tmp_path / "d.npz", X=x, Y=y)
    from dlnlab.lab.config import ConfigError

    cfg = make_cfg(
        ["model=tiny", "flow.t_max=4", "sgd.lrs=[0.04]", "data=file", f"data.path={tmp_path / 'd.npz'}"]
    )
    with pytest.raises(ConfigError, match="^data.path: "):
        run(cfg, output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_json_files_read_back_as_written_with_long_lists_one_element_a_line(tmp_path):
    """write_json's layout (dlnlab/rundir/_write.py): the same values as json.dumps gives (NaN as null),
    short lists on one line, a long list of records one record a line, a long list of numbers on one."""
    from dlnlab.rundir import write_json

    members = [
        {"status": "ok", "final_loss": 0.1 * k, "seeds": {"sgd": k}, "plateaus": []} for k in range(30)
    ]
    obj = {
        "series": {"sgd": {"members": members, "modes": [2.0, 1.0], "loss": [float("nan"), 1.5] * 400}},
        "empty": {"d": {}, "l": [], "nested": [[]]},
        "long_record": [{"text": "x" * 500, "at": [1, 2]}],
        "np": np.float64(0.25),
        "other": [
            np.int64(3),
            np.bool_(True),
            True,
            float("-inf"),
            (1, 2),
            torch.tensor([1.0, float("nan")]),
        ],
    }
    write_json(tmp_path / "a.json", obj)
    text = (tmp_path / "a.json").read_text()
    back = json.loads(text)
    plain = {**obj, "np": 0.25, "other": [3, True, True, None, [1, 2], [1.0, None]]}
    assert back == json.loads(json.dumps(plain).replace("NaN", "null"))
    assert [type(v) for v in back["other"][:3]] == [int, bool, bool]
    lines = text.splitlines()
    assert '      "modes": [2.0, 1.0],' in lines and "NaN" not in text
    assert sum(line.strip().startswith('{"status": "ok"') for line in lines) == 30  # a member a line
    assert sum(line.strip().startswith('"loss": [null, 1.5, null') for line in lines) == 1
    assert '      "text": "' + "x" * 500 + '",' in lines  # a record too long for one line is laid out


def test_the_end_blocks_tensorboard_command_is_one_argument_for_the_shell(tmp_path):
    """A sweep job's run directory holds '=', ',' and '[...]' (zsh refuses an unmatched glob) and a
    chosen one may hold a space: the printed command gives tensorboard the path as one argument."""
    import shlex

    from dlnlab.lab.results import end_block

    run_dir = tmp_path / "my runs" / "0_model.dims=[4,3,2],seed=1"
    (run_dir / "tensorboard").mkdir(parents=True)
    line = next(x for x in end_block({"run_dir": str(run_dir)}).splitlines() if x.startswith("tensorboard "))
    assert shlex.split(line)[1:] == ["tensorboard", "--logdir", str(run_dir / "tensorboard")]
