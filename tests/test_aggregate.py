"""scripts/aggregate.py's logic: runs of one setting across seeds, and an ensemble's members, alike."""

from __future__ import annotations

import numpy as np
import pytest

from dlnlab.lab.results import aggregate, collect
from dlnlab.lab.runner import run
from tests._helpers import TINY, make_cfg

pytestmark = pytest.mark.lab  # every test here runs the lab (in-process or its CLI)

BASE = [*TINY, "flow.t_max=4", "sgd.lrs=[0.04,0.02,0.01]"]


def test_seeds_of_a_setting_and_members_of_an_ensemble_are_samples_alike(tmp_path):
    runs = [run(make_cfg([*BASE, f"seed={s}"]), output_dir=tmp_path / "sweep" / f"job{s}") for s in (0, 1, 2)]
    settings, skipped = collect([tmp_path / "sweep"])
    assert skipped == [] and len(settings) == 1
    rows = {r["series"]: r for r in aggregate(settings, tmp_path / "agg")}
    sgd = rows["sgd_lr_0.02"]
    assert sgd["samples"] == 3
    finals = [r["series"]["sgd_lr_0.02"]["final_loss"] for r in runs]
    assert sgd["final_loss"]["mean"] == pytest.approx(np.mean(finals), rel=1e-12)
    assert sgd["final_loss"]["std"] == pytest.approx(np.std(finals, ddof=1), rel=1e-9)
    per = [r["convergence_order"] for r in runs]  # each seed's own fitted order
    assert sgd["orders"]["to_flow"]["per_sample"]["mean"] == pytest.approx(np.mean(per), rel=1e-9)
    folder = next((tmp_path / "agg").iterdir())
    curves = np.load(folder / "sgd_lr_0.02.npz")
    losses = np.stack(
        [np.load(tmp_path / "sweep" / f"job{s}" / "series" / "sgd_lr_0.02.npz")["loss"] for s in (0, 1, 2)]
    )
    np.testing.assert_allclose(curves["loss_mean"], losses.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(curves["loss_q50"], np.median(losses, axis=0), rtol=1e-12)
    assert (folder / "loss.png").is_file()
    # an ensemble of 3 whose members have the seeds of... its own: 3 samples of its one setting
    ens = run(make_cfg([*BASE, "ensemble.size=3"]), output_dir=tmp_path / "ens")
    settings, _ = collect([tmp_path / "ens"])
    rows = {r["series"]: r for r in aggregate(settings, tmp_path / "agg_ens")}
    assert rows["sgd_lr_0.02"]["samples"] == 3
    members = [m["final_loss"] for m in ens["series"]["sgd_lr_0.02"]["members"]]
    assert rows["sgd_lr_0.02"]["final_loss"]["mean"] == pytest.approx(np.mean(members), rel=1e-12)
    exits = rows["flow"]["plateau_exits"]
    assert exits and all(e["t_exit"]["n"] >= 1 for e in exits)


def test_overrides_hydra_quotes_or_folds_are_read_back_as_given_by_every_reader(tmp_path):
    """Hydra writes .hydra/overrides.yaml with OmegaConf.to_yaml: an override holding ': ' is quoted
    and one with spaces longer than a line is folded over two. aggregate.py read the file line by line
    (it got "'data.path=''/d/a: b.npz'''" and half of the long one); read_overrides, which aggregate,
    tb.py's names and the HParams columns share, reads the YAML."""
    from omegaconf import OmegaConf

    from dlnlab.lab.results._aggregate import _overrides, _setting_key
    from dlnlab.lab.view import run_label
    from dlnlab.rundir import read_overrides

    given = ["data.path='/d/a: b.npz'", "seed=1", "init.path=/a b/" + "x " * 45 + "w.npz", "data.path='#h'"]
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(given)))
    assert len((tmp_path / ".hydra" / "overrides.yaml").read_text().splitlines()) == len(given) + 1  # folded
    assert read_overrides(tmp_path) == given
    assert _setting_key(_overrides(tmp_path)) == " ".join(sorted(o for o in given if o != "seed=1"))
    assert run_label(tmp_path).startswith("data.path='/d/a- b.npz' seed=1 init.path=/a b/x x")
    (tmp_path / ".hydra" / "overrides.yaml").write_text("seed: 1\n")  # not a list: named, not guessed
    with pytest.raises(ValueError, match=r"overrides.yaml: cannot read the run's overrides \(not a list: dict\)$"):
        read_overrides(tmp_path)
    assert read_overrides(tmp_path / "none") == []


@pytest.mark.xdist_group("tiny_run")
def test_one_root_given_as_a_str_is_one_directory_not_its_characters(tiny_run, tmp_path, monkeypatch):
    """``collect("outputs/multirun/...")`` from a notebook: the str was iterated as a list of roots, one
    character each (an absolute path walked ``/``, the whole disk; a relative one found nothing). A
    str or a Path is one root; a root that is not a directory is refused naming ``roots``."""
    from dlnlab.errors import ArgumentError
    from dlnlab.lab.results._aggregate import run_dirs

    (tmp_path / "ab").symlink_to(tiny_run)
    monkeypatch.chdir(tmp_path)
    for roots in ("ab", tmp_path / "ab", ["ab"]):
        settings, skipped = collect(roots)
        assert [st.runs for st in settings.values()] == [[str(tiny_run.resolve())]] and skipped == []
    assert run_dirs("ab") == [tiny_run.resolve()]
    for bad, said in (("nowhere", "nowhere is not a directory"), (3, "expected a directory")):
        with pytest.raises(ArgumentError, match=f"^roots: {said}"):
            collect(bad)


def test_the_aggregate_loss_figure_names_series_as_the_run_figures_do_and_says_how_many_samples():
    """The aggregate's loss.png had the setting's key alone as its title, the raw series names in its
    legend (sgd_lr_0.04) and no number of samples. Reference: the names a run's loss figure gives the
    same series (Series.label, the run figures' legend)."""
    from dlnlab.lab.results._aggregate_figure import loss_figure
    from dlnlab.plots import style
    from dlnlab.rundir import Series

    t = np.linspace(0.0, 2.0, 5)

    def curves(n):
        return {"t": t, "loss_q25": np.exp(-t), "loss_q50": 2 * np.exp(-t), "loss_q75": 3 * np.exp(-t),
                "loss_n": np.full(5, n)}  # fmt: skip

    names = {"sgd_lr_0.02": 0.02, "flow": None, "sgd_lr_0.04": 0.04}
    want = [Series(name, names[name], {}).label for name in ("flow", "sgd_lr_0.04", "sgd_lr_0.02")]
    with style():
        fig = loss_figure("experiment=tiny", {name: curves(3) for name in names})
        (legend,) = fig.legends
        assert [x.get_text() for x in legend.get_texts()] == want == ["gradient flow", "η = 0.04", "η = 0.02"]
        assert "over 3 samples" in fig.axes[0].get_title() and "experiment=tiny" in fig._suptitle.get_text()
        fig = loss_figure("k", {"flow": curves(3), "sgd_lr_0.04": curves(2)})
        assert [x.get_text() for x in fig.legends[0].get_texts()] == ["gradient flow (n = 3)", "η = 0.04 (n = 2)"]
