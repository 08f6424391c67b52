"""scripts/limit.py end to end (slow: its three lab runs, with small ensembles about two minutes)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_limit_script_draws_the_figure_and_redraws_it_from_kept_runs(tmp_path, capsys):
    main = runpy.run_path(str(ROOT / "scripts" / "limit.py"))["main"]
    out, runs = tmp_path / "limit.png", tmp_path / "runs"
    assert main(["--members", "32", "--plateau-members", "64", "--out", str(out), "--runs", str(runs)]) == 0
    assert out.stat().st_size > 50_000
    text = capsys.readouterr().out
    assert "GD: order" in text and "the flow's saddle escapes at t =" in text
    assert {p.name for p in runs.iterdir()} == {"gd", "plateau", "escape"}
    out.unlink()
    assert main(["--runs", str(runs), "--replot", "--out", str(out)]) == 0
    assert out.stat().st_size > 50_000
    (runs / "escape" / "series" / "sme_lr_0.01.npz").unlink()  # what panel (c) reads: refused up front
    with pytest.raises(SystemExit) as refused:
        main(["--runs", str(runs), "--replot", "--out", str(tmp_path / "again.png")])
    assert refused.value.code == 2 and not (tmp_path / "again.png").exists()
    assert "sme_lr_0.01.npz is missing" in capsys.readouterr().err
