"""The keys a run was given on the command line as HParams columns (dlnlab/lab/results/_override_columns.py):
which keys, named how, with which value and type. The columns of real runs, read back from their event
files: a sweep through the command line (tests/test_sweep_launchers.py), a resume (tests/test_runs.py), a run
from Python (tests/test_logging.py)."""

from __future__ import annotations

import math

import pytest

from dlnlab.errors import AnalysisWarning
from dlnlab.lab.config import typed_config
from dlnlab.lab.results._override_columns import GivenColumns, given_columns, run_overrides
from dlnlab.lab.results._report import _hparams
from tests._helpers import make_cfg


def _columns(overrides: list[str]) -> GivenColumns:
    """The columns of a run composed from ``overrides`` as the command line composes it."""
    return given_columns(typed_config(make_cfg(overrides)), overrides)


def test_each_given_key_is_a_column_of_the_value_the_run_ran_with_typed_by_its_schema():
    given = [
        "experiment=tiny",  # a group: the option's name
        "model.dims=[5,4,3]",  # a list: its text as Hydra writes it
        "seed=3",
        "init.scale=1",  # a float key given an int: the run's float
        "flow.max_nfe=10000",  # an optional int: a number
        "flow.modified=true",  # a switch: text (torch writes a bool as the number 1)
        "flow.method=lsoda",  # an enum: its name
        "data.seed=null",  # null: a number column without a value (NaN: declared, the cell empty)
        "log.dt=0.05",  # a log key that changes the numbers: a column
        "sgd.lrs=[0.04]",  # each row's lr already
        "sgd.momentum=0",  # the momentum column, 0 included
        "log.progress=never",  # changes no number
        "run.workers=1",
        "+callbacks.stop._target_=builtins.dict",
        "checkpoint.every_s=5",
        "hydra.run.dir=/tmp/elsewhere",  # the run's own place
        "hydra/launcher=joblib",
    ]
    cfg = typed_config(make_cfg([o for o in given if not o.startswith(("hydra", "+callbacks"))]))
    columns = given_columns(cfg, given)
    assert math.isnan(columns.columns.pop("data.seed"))
    assert columns.columns == {
        "experiment": "tiny",
        "model.dims": "[5,4,3]",
        "seed": 3,
        "init.scale": 1.0,
        "flow.max_nfe": 10000,
        "flow.modified": "true",
        "flow.method": "lsoda",
        "log.dt": 0.05,
    }
    assert [type(columns.columns[k]) for k in ("seed", "init.scale", "flow.max_nfe")] == [int, float, int]
    assert columns.keys == {o.lstrip("+").split("=")[0] for o in given}
    entry = {"lr": 0.04, "status": "ok"}
    row = _hparams(cfg, entry, columns)
    assert row == {**columns.columns, "lr": 0.04, "status": "ok", "momentum": 0.0}
    # not given, momentum 0 is no column (as before); nothing given: the columns of a run from Python
    assert _hparams(cfg, entry, GivenColumns()) == {"lr": 0.04, "status": "ok"}


def test_a_key_that_takes_a_number_or_a_list_is_text_in_every_job_so_a_sweep_of_both_is_one_column():
    """init.u0 (aligned init) takes a number or one per mode: as a number in one job and text in the
    other, TensorBoard would make the column text and its filter would never match the number."""
    base = ["experiment=tiny", "init=aligned"]
    one, per_mode = _columns([*base, "init.u0=0.001"]), _columns([*base, "init.u0=[0.01,0.001]"])
    assert one.columns == {"experiment": "tiny", "init": "aligned", "init.u0": "0.001"}
    assert per_mode.columns["init.u0"] == "[0.01,0.001]"


def test_a_null_or_infinite_number_is_declared_without_a_value_and_a_key_of_no_config_keeps_its_type():
    given = ["flow.t_max=inf", "sgd.batch_size=null"]  # inf: refused by prepare, not by the schema
    cfg = typed_config(make_cfg(["experiment=tiny", *given]))
    columns = given_columns(cfg, given)
    assert math.isnan(columns.columns["flow.t_max"])  # declared, no value
    batch_size = _hparams(cfg, {"lr": 0.04, "status": "ok"}, columns)["batch_size"]  # today's column
    assert math.isnan(batch_size)
    # another program's keys (a run(cfg) inside a user's own Hydra app): as Hydra parsed them
    other = given_columns(cfg, ["+trainer.gpus=2", "+name=abc", "+flag=false", "+sizes=[1,2]"]).columns
    assert other == {"trainer.gpus": 2, "name": "abc", "flag": "false", "sizes": "[1,2]"}


def test_the_overrides_come_from_the_runs_own_record_and_a_damaged_one_is_said_and_read_as_none(tmp_path):
    assert run_overrides(tmp_path) == []  # no .hydra/: a run from Python
    (tmp_path / ".hydra").mkdir()
    record = tmp_path / ".hydra" / "overrides.yaml"
    record.write_text("- seed=1\n- 'data.path=''/tmp/a b.npz'''\n")  # as Hydra's yaml dump quotes it
    assert run_overrides(tmp_path) == ["seed=1", "data.path='/tmp/a b.npz'"]
    for damaged in ("- [unclosed\n", "seed: 1\n"):
        record.write_text(damaged)
        with pytest.warns(AnalysisWarning, match="cannot read the run's overrides"):
            assert run_overrides(tmp_path) == []


def test_a_nan_hyperparameter_is_a_declared_number_column_without_a_value(tmp_path):
    """TensorBoard takes the table's columns from the experiment summary of the first run it lists: a
    run whose key is null declares it all the same (a number column), and has no value for it."""
    from dlnlab.lab.record import TensorBoardLogger, log_hparams
    from tests._helpers import hparams_declared, hparams_of

    for name, seed in (("none", math.nan), ("three", 3)):
        logger = TensorBoardLogger(tmp_path, name="", version=name)
        log_hparams(logger, {"data.seed": seed, "status": "ok"}, {"hp/final_loss": 0.5})
        logger.finalize("success")
        declared = hparams_declared(tmp_path / name)
        assert declared == {"data.seed": "DATA_TYPE_FLOAT64", "status": "DATA_TYPE_STRING"}
    assert hparams_of(tmp_path / "none") == {"status": "ok"}
    assert hparams_of(tmp_path / "three") == {"data.seed": 3.0, "status": "ok"}
