"""No status strings: every status is compared, passed and keyed as an enum member (dlnlab.status.Status,
the run's RunStatus, a sweep job's JobState), never as its string. Found by walking the syntax tree of
every module of dlnlab/ and scripts/ (a grep would also flag messages and docstrings)."""

from __future__ import annotations

import ast
from pathlib import Path

from dlnlab.lab.results import RunStatus
from dlnlab.lab.sweep import JobState
from dlnlab.status import Status

ROOT = Path(__file__).resolve().parents[1]
WORDS = {s.value for enum in (Status, RunStatus, JobState) for s in enum}
KEYS = {"status", "state"}


def _status_literals(node: ast.AST) -> list[str]:
    """The status words among the string constants of ``node`` (a constant, or a tuple/list/set of them)."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [e.value for e in items if isinstance(e, ast.Constant) and e.value in WORDS]


def _uses(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):  # x == "ok", x in ("ok", "unstable")
            for side in [node.left, *node.comparators]:
                found += [(node.lineno, w) for w in _status_literals(side)]
        elif isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            for kw in node.keywords:  # status="ok", state="killed"
                if kw.arg in KEYS:
                    found += [(node.lineno, w) for w in _status_literals(kw.value)]
            if (
                func in ("Status", "RunStatus", "JobState", "result") and node.args
            ):  # Status("ok"), run.result("ok", ...)
                found += [(node.lineno, w) for w in _status_literals(node.args[0])]
            if func in ("get", "setdefault") and len(node.args) == 2:  # entry.get("status", "ok")
                key = node.args[0]
                if isinstance(key, ast.Constant) and key.value in KEYS:
                    found += [(node.lineno, w) for w in _status_literals(node.args[1])]
        elif isinstance(node, ast.Dict):  # {"ok": ..., "diverged": ...}: a mapping keyed by statuses
            words = [w for k in node.keys if k is not None for w in _status_literals(k)]
            if len(words) > 1 and len(words) == len(node.keys):
                found += [(node.lineno, w) for w in words]
        elif isinstance(node, ast.BoolOp):  # entry.get("status") or "ok"
            found += [(node.lineno, w) for v in node.values[1:] for w in _status_literals(v)]
    return found


def test_no_status_is_written_as_a_string():
    files = sorted([*(ROOT / "dlnlab").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")])
    assert len(files) > 50
    bad = []
    for path in files:
        for line, word in _uses(ast.parse(path.read_text())):
            bad.append(f"{path.relative_to(ROOT)}:{line}: {word!r}")
    assert not bad, "status strings where an enum member belongs:\n" + "\n".join(bad)


def test_the_check_finds_each_kind_of_use():
    source = """
if s == "ok": pass
if s.status in ("diverged", "error"): pass
entry.update(status="unstable")
run.result("interrupted", "msg")
entry.get("status", "ok")
NOTE = {"ok": "", "diverged": " (diverged)"}
x = e.get("status") or "ok"
"""
    assert [w for _, w in _uses(ast.parse(source))] == [
        "ok",
        "diverged",
        "error",
        "unstable",
        "interrupted",
        "ok",
        "ok",
        "diverged",
        "ok",
    ]
    assert _uses(ast.parse('print("ok"); msg = "interrupted while recording"; warn("diverged")')) == []
