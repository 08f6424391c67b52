"""docs/examples/figure1.ipynb runs as written: every code cell, in order, in one namespace (what a
kernel does with it; no Jupyter needed), and gives the default run's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "examples" / "figure1.ipynb"


def test_the_example_notebook_runs_and_matches_the_default_run(capsys):
    matplotlib.use("Agg")  # plt.show() draws nothing
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    namespace: dict = {}
    for i, cell in enumerate(cells):
        exec(compile("".join(cell["source"]), f"{NOTEBOOK.name}[{i}]", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "GD recorded at the flow's times: True" in printed
    assert float(namespace["dist"].max()) == pytest.approx(0.1978, rel=2e-3)  # the default run's max distance
    for t_exit in ("6.574", "15.907", "49.522", "119.678"):  # the flow leaves its four plateaus
        assert f"at t = {t_exit}" in printed
