"""The default run's grouping holds: under ``-n 2 --dist loadgroup`` (pyproject.toml) the tests that share a
module fixture (a lab run) carry an ``xdist_group`` mark and must run on one worker, or each worker makes
the run again. pytest-xdist tells the scheduler a test's group by appending ``@<group>`` to its node id; with
pytest 9.2 and pytest-xdist 3.8 that append has no effect (pytest-dev/pytest-xdist#1386) and nothing fails:
the groups are dealt out like single tests (measured: the CLI's two shared runs made twice, ~20 CPU s)."""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("grouping_check")
def test_an_xdist_group_reaches_the_scheduler(request):
    # a pytest-xdist worker (workerinput) sets option.loadgroup from --dist
    if not hasattr(request.config, "workerinput") or not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run by pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@grouping_check"), (
        f"node id {request.node.nodeid!r}: this pytest does not let pytest-xdist group tests "
        "(pytest-dev/pytest-xdist#1386); install the versions pyproject.toml's dev extra allows"
    )
