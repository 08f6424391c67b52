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


@pytest.mark.parametrize(
    "batch, sampling, warned, lrs",
    [(50, "with_replacement", ">", "[0.04]"), (20, "with_replacement", "=", "[0.04]"),
     (19, "with_replacement", None, "[0.04]"), (20, "without_replacement", None, "[0.04]"),
     (20, "reshuffle", None, "[0.04]"), (50, "with_replacement", None, "[]")],
)  # fmt: skip
def test_a_batch_of_n_or_more_drawn_with_replacement_is_warned_as_not_full_batch(
    batch, sampling, warned, lrs
):
    """With replacement a batch of B >= N samples is B i.i.d. draws, still SGD's noise; without
    replacement B = N is the whole set each step (full batch: nothing to say), B > N refused
    (tests/test_refusals.py). sgd.lrs=[] runs the flow alone: no step, nothing to say (it said "each step
    averages 50 i.i.d. draws"). The line's place on the CLI's console, before the run's first block:
    tests/test_cli.py (one of its two shared runs)."""
    from dlnlab.lab.config import prepare
    from tests._helpers import TINY, make_cfg

    plan = prepare(make_cfg([*TINY, f"sgd.batch_size={batch}", f"sgd.sampling={sampling}", f"sgd.lrs={lrs}"]))
    notes = [n for n in plan.notes if n.startswith("sgd.batch_size")]
    assert notes == ([] if warned is None else [
        f"sgd.batch_size: {batch} {warned} data.n_samples = 20 with sgd.sampling=with_replacement: each step "
        f"averages {batch} i.i.d. draws (repeats included), noisy minibatch SGD, not full-batch GD; for "
        "full-batch GD write sgd.batch_size=null"
    ])  # fmt: skip
