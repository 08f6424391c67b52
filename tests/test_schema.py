"""Typed configs: the schema, its defaults, the numbers the rules rely on, the core's own errors."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchdiffeq
import yaml

from dlnlab.lab.config import (
    DATA_OPTIONS,
    FIXED_STEP_STABILITY,
    INIT_OPTIONS,
    TrainConfig,
    prepare,
    typed_config,
)
from dlnlab.lab.results import flow_loss_rise
from tests._helpers import make_cfg

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY = ["experiment=tiny"]
# tiny without the experiment (whose data keys a data file does not have)
FILE_BASE = ["model=tiny", "flow.t_max=4", "sgd.lrs=[0.04]", "log.dt=0.05"]


# ---- the schema ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "group", sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "experiment")
)
def test_every_option_composes_and_prepares(group, tmp_path):
    x, y = np.random.default_rng(0).normal(size=(11, 30)), np.random.default_rng(1).normal(size=(4, 30))
    np.savez(tmp_path / "d.npz", X=x, Y=y)
    w = [np.full(s, 0.1) for s in ((6, 11), (6, 6), (6, 6), (6, 6), (4, 6))]
    np.savez(tmp_path / "w.npz", **{f"W_{j + 1}": v for j, v in enumerate(w)})
    for opt in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        extra = {
            ("data", "file"): [f"data.path={tmp_path / 'd.npz'}"],
            ("init", "file"): [f"init.path={tmp_path / 'w.npz'}"],
            ("model", "tiny"): ["data.singular_values=[2,1]"],
        }.get((group, opt), [])
        plan = prepare(make_cfg([f"{group}={opt}", *extra]))
        assert plan.cfg.flow.t_max > 0 and len(plan.weights0) == len(plan.cfg.model.dims) - 1


def test_the_yaml_options_hold_no_default_of_the_schema():
    """conf/<group>/<option>.yaml sets only what the option changes: every default lives in the schema."""
    schema = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for path in sorted(CONF.glob("*/*.yaml")):
        group = path.parent.name
        if group == "experiment":
            continue
        values = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "defaults"}
        classes = {"data": DATA_OPTIONS, "init": INIT_OPTIONS}.get(group)
        cls = classes[path.stem] if classes else schema[group].default_factory
        if not dataclasses.is_dataclass(cls):  # logger: a _target_ and its options, no schema
            continue
        defaults = {
            f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
        }
        defaults |= {
            f.name: f.default_factory()
            for f in dataclasses.fields(cls)
            if f.default_factory is not dataclasses.MISSING
        }
        for key, value in values.items():
            assert key in {f.name for f in dataclasses.fields(cls)}, (path, key)
            assert defaults.get(key, dataclasses.MISSING) != value, (
                f"{path} restates the default {key}={value}"
            )


def test_default_is_the_figure1_setting():
    cfg = prepare(make_cfg([])).cfg
    assert cfg.model.dims == [11, 6, 6, 6, 6, 4]
    assert cfg.data.singular_values == [4, 3, 2, 1] and cfg.data.whiten and cfg.data.noise == 0
    assert cfg.init.kind.name == "gaussian" and cfg.init.scale == 0.1
    assert len(cfg.sgd.lrs) >= 3 and max(cfg.sgd.lrs) < 0.0435 / 4
    assert cfg.flow.t_max >= 300


def test_typed_config_of_a_plain_dict_fills_the_schema_defaults():
    cfg = typed_config(
        {"model": {"dims": [3, 2]}, "data": {"kind": "teacher"}, "init": {"kind": "orthogonal"}}
    )
    assert isinstance(cfg, TrainConfig) and type(cfg.init).__name__ == "OrthogonalInit"
    assert cfg.init.scale == 0.1 and cfg.flow.method.name == "auto" and cfg.limits.memory_gb == 8.0
    # no data: what the command line's defaults choose (a teacher), as for model and init
    assert typed_config({"model": {"dims": [3, 2]}, "init": {"kind": "gaussian"}}).data.kind.name == "teacher"


@pytest.mark.parametrize(
    "plain, key",
    [
        ({"experiment": "tiny"}, "experiment"),  # the lab's docstring showed this; it was an unknown key
        ({"model": "tiny"}, "model"),  # was a bare ValueError from dict("tiny")
        ({"model": [4, 3, 3, 2]}, "model"),  # was a TypeError
        ({"sgd": "minibatch"}, "sgd"),  # was "Merge error: str is not a subclass of SGDConfig", no key
        ({"init": "orthogonal"}, "init"),
    ],
)
def test_a_plain_dict_given_a_command_line_option_is_refused_naming_the_group(plain, key):
    """A plain dict has no conf/ files to read ``model=tiny`` or ``experiment=tiny`` from: one line
    naming the group, saying a dict takes the group's keys and Hydra's compose takes the options."""
    from dlnlab.lab.config import ConfigError

    with pytest.raises(ConfigError) as err:
        typed_config(plain)
    line = str(err.value)
    assert line.startswith(f"{key}: ") and "\n" not in line
    assert "command-line option" in line and "compose" in line


# ---- numbers the rules rely on -------------------------------------------------------------------
# the steps each method takes: the Adams methods' growth 3 % above the bound is slow (|y| after 1000 and
# 3000 steps: explicit 3e5 and 5e22, implicit 1e-4 and 2e6), the one-step methods' fast (|y| > 3e7 after
# 300 steps, and < 1e-8 3 % below); 3000 for all cost 2.7 s more
STABILITY_STEPS = {"explicit_adams": 1000, "implicit_adams": 3000}


@pytest.mark.parametrize("method", sorted(FIXED_STEP_STABILITY))
def test_fixed_step_stability_bounds(method):
    """dy/dt = -lam y decays for step * lam 3 % below the bound and grows 3 % above it."""
    c, lam = FIXED_STEP_STABILITY[method], 10.0
    opts = {"max_order": 5} if method == "explicit_adams" else {}
    for factor, decays in ((0.97, True), (1.03, False)):
        h = factor * c / lam
        t = torch.tensor([0.0, STABILITY_STEPS.get(method, 300) * h], dtype=torch.float64)
        with warnings.catch_warnings():  # implicit Adams warns when its functional iteration diverges
            warnings.simplefilter("ignore")
            y = torchdiffeq.odeint(
                lambda t, y: -lam * y, torch.ones(1, dtype=torch.float64), t, method=method,
                options={"step_size": h, **opts},
            )  # fmt: skip
        assert (abs(float(y[-1])) < 1.0) == decays, (method, factor, float(y[-1]))


def test_a_rising_flow_loss_is_caught():
    t = np.linspace(0, 1, 11)
    assert flow_loss_rise(np.linspace(2.0, 1.0, 11), t, 1e-6) is None
    loss = np.linspace(2.0, 1.0, 11)
    loss[7] = 1.5
    msg = flow_loss_rise(loss, t, 1e-6)
    assert msg is not None and "rises from 1.4 (t = 0.6) to 1.5 (t = 0.7)" in msg
    assert "not finite" in flow_loss_rise(np.array([1.0, np.nan]), t[:2], 1e-6)


def test_the_core_names_no_config_key_in_its_errors():
    """network, problem, init, flow, analysis and saddles raise in their own words; the lab maps keys."""
    import ast

    from _helpers import CONFIG_KEY

    core = [
        ROOT / "dlnlab" / f"{m}.py"
        for m in ("network", "problem", "init", "descent", "metrics", "analysis", "errors")
    ]
    core += sorted((ROOT / "dlnlab" / "saddles").glob("*.py")) + sorted(
        (ROOT / "dlnlab" / "flow").glob("*.py")
    )
    found = []
    for path in core:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise):
                for const in ast.walk(node):
                    if (
                        isinstance(const, ast.Constant)
                        and isinstance(const.value, str)
                        and CONFIG_KEY.search(const.value)
                    ):
                        found.append(f"{path.name}:{node.lineno}: {const.value!r}")
    assert not found, found


def test_a_run_made_before_a_class_moved_resumes_with_the_class_where_it_is_now():
    from dlnlab.lab.config import current_targets
    from dlnlab.lab.config._targets import MOVED_TARGETS, import_class

    old = {"logger": {"_target_": "dlnlab.lab.logging.TensorBoardLogger"}, "callbacks": {}, "seed": 1}
    assert current_targets(old) == {
        "logger": {"_target_": "dlnlab.lab.record.TensorBoardLogger"},
        "callbacks": {},
        "seed": 1,
    }
    for now in MOVED_TARGETS.values():
        assert import_class(now).__name__ == now.rsplit(".", 1)[1]
