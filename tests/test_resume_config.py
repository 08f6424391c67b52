"""A resume's config against the one problem.npz recorded when the run started
(dlnlab/lab/runner/_resume_config.py): a key the lab added since then is no change; a recorded key the lab
no longer knows is refused in one line. (The refusals of edited keys, on a real interrupted run:
tests/test_runs.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlnlab.lab.config import ConfigError, prepare, to_plain
from dlnlab.lab.runner._resume_config import check_config
from tests._helpers import TINY, make_cfg


def _recorded(tmp_path, config: dict):
    np.savez(tmp_path / "problem.npz", config=np.array(json.dumps(config).encode()))
    return tmp_path


def test_a_key_added_to_the_lab_since_the_run_started_is_no_change(tmp_path):
    now = to_plain(prepare(make_cfg(TINY)).cfg)
    started = json.loads(json.dumps(now))
    del started["flow"]["chunk_members"], started["log"]["top_eigs"]  # as a run from before those keys
    check_config(_recorded(tmp_path, started), now)  # not refused: they take their defaults
    started["flow"]["rtol"] = 1e-6  # but a value that differs still is
    _recorded(tmp_path, started)
    with pytest.raises(ConfigError, match=r"in flow.rtol: 1e-06 when it started, 1e-09 now"):
        check_config(tmp_path, now)


def test_a_recorded_key_the_lab_no_longer_knows_is_refused_in_one_line(tmp_path):
    now = to_plain(prepare(make_cfg(TINY)).cfg)
    started = json.loads(json.dumps(now))
    started["flow"]["retired_option"] = 3
    with pytest.raises(ConfigError) as info:
        check_config(_recorded(tmp_path, started), now)
    assert "the config it recorded no longer builds" in str(info.value) and "retired_option" in str(
        info.value
    )
    assert "\n" not in str(info.value)
