"""A setting is what its runs ran: summary.json's config without the seeds and the keys that change no
number (dlnlab/lab/results/_setting_config.py), named by the overrides its runs share, else by the keys
where its config differs from the defaults; the same rule names scripts/tb.py's runs (seeds kept).

The runs are copies of the session's tiny run whose summary's config (and .hydra/overrides.yaml) are set
by hand; the configs come from Hydra's composition, as the command line composes them. Before, a run
without overrides.yaml (from Python, scripts/eos_lab.py) was in the setting "(defaults)" whatever it ran,
and one config spelled two ways was two settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from dlnlab.lab import aggregate_runs
from dlnlab.lab.view import run_labels
from tests._helpers import make_cfg

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("tiny_run")]  # the session's tiny run

TINY_KEYS = ["model=tiny", "data.singular_values=[2.0,1.0]", "data.n_samples=20", "flow.t_max=4",
             "sgd.lrs=[0.01,0.02,0.04]", "log.dt=0.05", "log.analysis_points=10"]  # fmt: skip


def _plain(overrides: list[str]) -> dict:
    """The config the command line composes from ``overrides``, as plain JSON types."""
    return OmegaConf.to_container(make_cfg(overrides), resolve=True, enum_to_str=True)


def _flat(config: dict, prefix: str = "") -> dict:
    """dotted key -> value (the test's own flattening)."""
    out = {}
    for k, v in config.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def _copy(tiny_run: Path, where: Path, config: dict | None = None, overrides=None, **edits) -> Path:
    """The tiny run's files with its summary's config replaced by ``config`` (None: kept; ``{}``: none,
    as older summaries) and its keys ``edits`` (``flow__t_max=20.0``) set; ``overrides``: its
    .hydra/overrides.yaml (None: no such file, a run from Python)."""
    shutil.copytree(tiny_run, where, ignore=shutil.ignore_patterns("figures", "tensorboard"))
    summary = json.loads((where / "summary.json").read_text())
    if config is not None:
        summary["config"] = config
    for key, value in edits.items():
        *path, last = key.split("__")
        node = summary["config"]
        for part in path:
            node = node[part]
        node[last] = value
    if not summary["config"]:
        del summary["config"]
    (where / "summary.json").write_text(json.dumps(summary))
    if overrides is not None:
        (where / ".hydra").mkdir()
        (where / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    return where


def _legend(agg) -> list[str]:
    """The console's legend of the settings (its lines before the first blank one), each entry's lines
    wrapped at 100 columns joined."""
    lines = agg.report().splitlines()
    return " ".join(lines[1 : lines.index("")]).replace("     ", " ").replace(" #", "\n#").splitlines()


def test_the_runs_config_is_the_composed_one(tiny_run):
    """What these tests build on: a run records the config the command line composes (its logger
    aside, which a run from Python sets to none and which changes no number)."""
    recorded = json.loads((tiny_run / "summary.json").read_text())["config"]
    composed = _plain(["experiment=tiny", "log.progress=never"])
    assert {k: v for k, v in recorded.items() if k != "logger"} == {
        k: v for k, v in composed.items() if k != "logger"
    }


def test_two_runs_from_python_with_different_nets_are_two_settings(tiny_run, tmp_path):
    """The reviewer's case: a run from Python with another net and horizon beside the tiny one. Both
    had no overrides.yaml: one setting, the flow's numbers a mean over two nets."""
    a = _copy(tiny_run, tmp_path / "a")
    b = _copy(tiny_run, tmp_path / "b", model__dims=[4, 4, 4, 3], flow__t_max=20.0)
    agg = aggregate_runs(tmp_path)
    assert [s.runs for s in agg.settings] == [[str(a.resolve())], [str(b.resolve())]]
    assert (
        agg.row("flow", agg.settings[0].label).samples == agg.row("flow", agg.settings[1].label).samples == 1
    )
    legend = _legend(agg)
    assert legend[0].startswith("every setting: data.singular_values=[2.0,1.0] data.n_samples=20 ")
    assert [line.split(": 1 run")[0] for line in legend[1:]] == [
        "#0  model.dims=[4,3,3,2] flow.t_max=4.0",
        "#1  model.dims=[4,4,4,3] flow.t_max=20.0",
    ]
    folders = [s.folder for s in agg.settings]
    assert folders[0] != folders[1] and all(f.startswith("model.dims=_4_") for f in folders)
    assert agg.settings[1].config["model.dims"] == [4, 4, 4, 3]
    assert agg.settings[1].to_dict()["config"] == agg.settings[1].config  # setting.json says what it ran


def test_one_config_spelled_three_ways_is_one_setting_named_by_what_differs_from_the_defaults(
    tiny_run, tmp_path
):
    """experiment=tiny, its keys given one by one (the learning rates in another order, a ``++`` form)
    and a run from Python: one config, one setting. Its runs' overrides differ, so it is named by the
    keys where its config differs from the defaults (the test's own comparison of the two composed)."""
    spelled = [["experiment=tiny", "sgd.batch_size=5"], [*TINY_KEYS, "++sgd.batch_size=5"]]
    configs = [_plain(o) for o in spelled]
    assert configs[0]["sgd"]["lrs"] != configs[1]["sgd"]["lrs"]  # the same rates in another order
    for i, (config, given) in enumerate(zip([*configs, configs[0]], [*spelled, None])):
        _copy(tiny_run, tmp_path / f"r{i}", config=config, overrides=given, seed=i)
    agg = aggregate_runs(tmp_path)
    (st,) = agg.settings
    assert len(st.runs) == 3 and agg.row("flow").samples == 3
    ran, defaults = _flat(configs[0]), _flat(_plain([]))
    differ = [k for k in ran if ran[k] != defaults[k] and k not in ("seed", "logger._target_")]
    assert differ == ["model.dims", "data.singular_values", "data.n_samples", "flow.t_max", "sgd.lrs",
                      "sgd.batch_size", "log.dt", "log.analysis_points"]  # fmt: skip
    words = st.label.split(" ")
    assert [w.split("=")[0] for w in words] == differ
    assert [yaml.safe_load(w.split("=")[1]) for w in words] == [ran[k] for k in differ]


def test_seeds_and_what_changes_no_number_leave_one_setting_named_by_its_shared_overrides(tiny_run, tmp_path):
    """Seeds, run.workers (the same files bit for bit), log.progress, log.figures, the logger and Hydra's
    launcher differ: one setting, named by the overrides every run was given. A run that says the same
    overrides but ran another config (log.dt) is another setting; the two names, which would clash, are
    then each setting's keys that differ from the defaults."""
    given = ["sgd.batch_size=5"]
    _copy(tiny_run, tmp_path / "a", overrides=[*given, "seed=1"], seed=1, sgd__batch_size=5)
    _copy(
        tiny_run, tmp_path / "b", overrides=[*given, "seed=2", "run.workers=1", "log.progress=never",
        "hydra/launcher=joblib", "logger=csv"], seed=2, data__seed=7, init__seed=8, sgd__seed=9,
        sgd__batch_size=5, run__workers=1, log__progress="never", log__figures=False, logger=None,
    )  # fmt: skip
    agg = aggregate_runs(tmp_path)
    assert [(s.label, len(s.runs)) for s in agg.settings] == [("sgd.batch_size=5", 2)]
    _copy(tiny_run, tmp_path / "c", overrides=given, sgd__batch_size=5, log__dt=0.1)
    labels = [s.label for s in aggregate_runs(tmp_path).settings]
    assert len(labels) == 2 and "log.dt=0.05" in labels[0].split() and "log.dt" not in labels[1]
    assert all("sgd.batch_size=5" in label.split() for label in labels)


def test_summaries_without_a_config_fall_back_to_their_overrides(tiny_run, tmp_path):
    """Runs older than summary.json's config: grouped by their overrides without the seeds, as before;
    a run with a config is never grouped with them."""
    _copy(tiny_run, tmp_path / "a", config={}, overrides=["sgd.batch_size=5", "seed=1"])
    _copy(tiny_run, tmp_path / "b", config={}, overrides=["seed=2", "sgd.batch_size=5"])
    _copy(tiny_run, tmp_path / "c", config={})
    agg = aggregate_runs(tmp_path)
    assert [(s.label, len(s.runs), s.config) for s in agg.settings] == [
        ("sgd.batch_size=5", 2, None),
        ("(defaults)", 1, None),
    ]
    _copy(tiny_run, tmp_path / "d", overrides=["sgd.batch_size=5"], sgd__batch_size=5)
    assert [len(s.runs) for s in aggregate_runs(tmp_path).settings] == [2, 1, 1]


def test_the_defaults_config_is_named_defaults_by_the_aggregate_and_by_tb(tiny_run, tmp_path):
    """(defaults) only for the defaults' config: a command-line run given only what changes no number
    and a run from Python with that config are one setting; TensorBoard names both ``default``."""
    defaults = _plain([])
    _copy(tiny_run, tmp_path / "a", config=defaults, overrides=["log.progress=never"])
    _copy(tiny_run, tmp_path / "b", config=defaults)
    agg = aggregate_runs(tmp_path)
    assert [(s.label, len(s.runs)) for s in agg.settings] == [("(defaults)", 2)]
    for r in ("a", "b"):
        (tmp_path / r / "tensorboard" / "flow").mkdir(parents=True)
    assert run_labels([tmp_path / "a", tmp_path / "b"]) == ([], ["default", "default"])


def _tb_run(where: Path, config: dict, overrides: list[str] | None = None) -> Path:
    """A run directory as tb.py finds it: tensorboard/, summary.json's config, overrides.yaml if given."""
    (where / "tensorboard" / "flow").mkdir(parents=True)
    (where / "summary.json").write_text(json.dumps({"config": config, "series": {}}))
    if overrides is not None:
        (where / ".hydra").mkdir()
        (where / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return where


def test_tb_names_a_run_without_overrides_by_what_its_config_sets(tmp_path):
    """tb.py named every run without overrides.yaml ``default`` (an EoS run from scripts/eos_lab.py beside
    the default run: ``default (03-49-51)``, ``default (03-45-12)``). Now: by the keys where its config
    differs from the defaults, with its values (the test's own comparison), a seed included."""
    defaults = _plain([])
    eos = _plain(["experiment=eos", "flow.t_max=2"])
    runs = [
        _tb_run(tmp_path / "default", defaults),
        _tb_run(tmp_path / "eos", eos),
        _tb_run(tmp_path / "cli", _plain(["experiment=tiny"]), ["experiment=tiny", "log.progress=never"]),
        _tb_run(tmp_path / "seed", {**defaults, "seed": 3}),
    ]
    shared, labels = run_labels(runs)
    assert shared == [] and [labels[0], *labels[2:]] == ["default", "experiment=tiny", "seed=3"]
    ran, base = _flat(eos), _flat(defaults)
    differ = [k for k in ran if ran[k] != base[k] and k != "logger._target_"]
    assert "model.dims" in differ and "flow.t_max" in differ
    words = labels[1].split(" ")
    assert [w.split("=")[0] for w in words] == differ
    assert [yaml.safe_load(w.split("=")[1].replace(";", ",")) for w in words] == [ran[k] for k in differ]
