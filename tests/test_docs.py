"""The docs that are generated or executed: docs/config.md is the schema's, every key has a meaning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dlnlab.lab.config import _doc as config_doc

ROOT = Path(__file__).resolve().parents[1]


def test_config_page_is_current():
    """docs/config.md is what scripts/config_doc.py writes from the schema today."""
    assert (ROOT / "docs" / "config.md").read_text() == config_doc.render(), (
        "run: python scripts/config_doc.py"
    )


def test_the_summary_tables_in_the_results_page_are_current():
    """docs/results.md's summary.json tables are what the records (dlnlab.lab.results) say today."""
    from dlnlab.lab.results import with_tables

    page = (ROOT / "docs" / "results.md").read_text()
    assert page == with_tables(page), "run: python scripts/config_doc.py"


def test_every_schema_key_says_what_it_means():
    missing = []
    for _, prefix, classes in config_doc.GROUPS:
        for cls in classes:
            docs = config_doc.field_docs(cls)
            for f in dataclasses.fields(cls):
                if dataclasses.is_dataclass(f.default_factory) or f.name in ("data", "init") and not prefix:
                    continue  # a group: its own table
                if not docs.get(f.name):
                    missing.append(f"{prefix}.{f.name}" if prefix else f.name)
    assert not missing, f"schema fields without a comment: {missing}"


def test_no_script_shadows_an_installed_module():
    """``python scripts/x.py`` puts scripts/ first on sys.path: a script named like a package it imports
    (tensorboard.py, hydra.py, ...) would be imported in its place."""
    import importlib.util
    import sys

    path = [p for p in sys.path if Path(p or ".").resolve() != (ROOT / "scripts").resolve()]
    clashes = [
        s.stem
        for s in (ROOT / "scripts").glob("*.py")
        if importlib.machinery.PathFinder.find_spec(s.stem, path)
    ]
    assert not clashes, clashes
    assert importlib.util.find_spec("tensorboard") is not None  # the check can see installed packages


def test_the_refusals_quoted_in_the_docs_are_what_the_command_line_says(tmp_path):
    """docs/cli.md quotes `$ python scripts/train.py ...` and its `error: ...` line: the preflight says it."""
    import re
    import shlex

    from dlnlab.lab.cli import preflight

    text = (ROOT / "docs" / "cli.md").read_text()
    pairs = re.findall(r"^\$ python scripts/train.py (.*)\nerror: (.*)$", text, re.M)
    assert len(pairs) >= 4
    for args, message in pairs:
        argv = [*shlex.split(args), f"hydra.run.dir={tmp_path / 'x'}"]
        assert preflight(argv, ROOT / "conf") == message, args
