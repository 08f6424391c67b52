"""One test per private Hydra part the command line relies on (dlnlab/lab/_hydra.py): a Hydra upgrade
that changes one fails here, by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, MissingConfigException

import dlnlab.lab.cli  # noqa: F401 - registers the schema in Hydra's ConfigStore, as train.py does
from dlnlab.lab import _hydra

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_args_parser_is_hydras_command_line():
    """hydra._internal.utils.get_args_parser: the flags the preflight reads, the overrides after them."""
    args = _hydra.args_parser().parse_args(["-m", "--cfg", "job", "seed=1", "sgd.lrs=[0.1]"])
    assert args.multirun and args.cfg == "job" and args.overrides == ["seed=1", "sgd.lrs=[0.1]"]
    for flag in ("help", "hydra_help", "info", "shell_completion", "config_path", "config_dir", "config_name",
                 "experimental_rerun"):  # fmt: skip
        assert hasattr(args, flag), flag


def test_sweep_jobs_is_the_basic_sweepers_expansion():
    """BasicSweeper.split_arguments: the product of the sweeps, the last key varying fastest."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(
        ["seed=0,1", "sgd.lrs=[0.1]", "flow.rtol=1e-6,1e-8"]
    )  # values as Hydra writes them back
    assert _hydra.sweep_jobs(parsed) == [
        ["seed=0", "sgd.lrs=[0.1]", "flow.rtol=1e-06"],
        ["seed=0", "sgd.lrs=[0.1]", "flow.rtol=1e-08"],
        ["seed=1", "sgd.lrs=[0.1]", "flow.rtol=1e-06"],
        ["seed=1", "sgd.lrs=[0.1]", "flow.rtol=1e-08"],
    ]


def test_the_config_loaders_repository_knows_the_groups_and_their_options():
    """GlobalHydra's config loader: its repository's group_exists, and get_group_options."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        assert _hydra.group_exists("logger") and not _hydra.group_exists("seed")
        assert _hydra.group_options("logger") == sorted(p.stem for p in (CONF / "logger").glob("*.yaml"))


def test_a_missing_options_message_names_the_group_the_option_and_the_options():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        with pytest.raises(MissingConfigException) as err:
            compose(config_name="train", overrides=["logger=nope"])
    group, option, options = _hydra.missing_option(str(err.value))
    assert (group, option) == ("logger", "nope") and set(options) >= {"csv", "none", "tensorboard"}


def test_an_unknown_key_set_in_a_config_file_is_found_in_hydras_message(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "experiment" / "bad.yaml").write_text("# @package _global_\nflow:\n  no_such_key: 1\n")
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        with pytest.raises(HydraException) as err:
            compose(config_name="train", overrides=["experiment=bad"])
    assert _hydra.unknown_key_in_file(str(err.value)) == ("experiment/bad", "FlowConfig", "flow.no_such_key")
