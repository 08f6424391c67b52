"""dlnlab's warnings go through the warnings module, in categories a user can filter, and show on the
console as one line each."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import dlnlab
from dlnlab.errors import AnalysisWarning, DlnlabWarning, FileWarning, SeriesWarning
from dlnlab.lab.config import console_warnings
from dlnlab.rundir import load_run, save_npz, write_json


def test_every_category_is_a_dlnlab_warning_and_exported():
    for cat in (dlnlab.ConfigWarning, dlnlab.SeriesWarning, dlnlab.AnalysisWarning, dlnlab.FileWarning):
        assert issubclass(cat, DlnlabWarning) and issubclass(cat, UserWarning)


def test_the_console_shows_each_once_on_one_line(capsys):
    with console_warnings():
        for _ in range(3):
            warnings.warn("sgd_lr_0.1: diverged: ||theta|| = 1e9", SeriesWarning, stacklevel=1)
        warnings.warn("figures failed: ValueError: x", AnalysisWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == "warning: sgd_lr_0.1: diverged: ||theta|| = 1e9\nwarning: figures failed: ValueError: x\n"


def test_a_user_filter_wins_over_the_console(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeriesWarning)
        with console_warnings():
            warnings.warn("hidden", SeriesWarning, stacklevel=1)
            warnings.warn("shown", AnalysisWarning, stacklevel=1)
    assert capsys.readouterr().err == "warning: shown\n"
    with warnings.catch_warnings(), console_warnings():
        warnings.simplefilter("error", DlnlabWarning)
        with pytest.raises(AnalysisWarning):
            warnings.warn("an error now", AnalysisWarning, stacklevel=1)


def test_a_damaged_file_is_a_file_warning_and_the_reader_goes_on(tmp_path):
    run = tmp_path / "run"
    save_npz(run / "series" / "flow.npz", t=np.arange(3.0), loss=np.ones(3))
    (run / "series" / "sgd_lr_0.1.npz").write_bytes(b"not an npz")
    write_json(run / "summary.json", {"series": {"flow": {"lr": None}, "sgd_lr_0.1": {"lr": 0.1}}})
    with pytest.warns(FileWarning, match="cannot read .*sgd_lr_0.1.npz"):
        data = load_run(run)
    assert data.flow.n == 3 and data.series["sgd_lr_0.1"].n == 0
