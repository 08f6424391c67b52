"""``docs/config.md`` from the schema: every key, its type, its default and what it means.

The schema (:mod:`dlnlab.lab.config._schema`) is the one place a key is defined; what a key means is the
comment on its line there, or the comment lines just above it. This module reads those comments
from the schema's source (``tokenize``), the types and defaults from the dataclasses themselves, and
the options of each config group from ``conf/<group>/*.yaml`` (their first comment line).
``python scripts/config_doc.py`` writes the page; a test checks that it is current.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import tokenize
import typing
from enum import Enum
from pathlib import Path

from omegaconf import MISSING

from dlnlab.lab.config import _schema as schema

__all__ = ["field_docs", "render", "CONF"]

CONF = Path(__file__).resolve().parents[3] / "conf"

GROUPS = [  # (title, key prefix, dataclasses): in the order a reader needs them
    ("The run", "", [schema.TrainConfig]),
    ("model", "model", [schema.ModelConfig]),
    ("data (`data=teacher`, `data=file`)", "data", [schema.TeacherData, schema.FileData]),
    ("init (`init=gaussian`, `orthogonal`, `balanced`, `aligned`, `file`)", "init",
     [schema.GaussianInit, schema.OrthogonalInit, schema.BalancedInit, schema.AlignedInit, schema.FileInit]),
    ("flow", "flow", [schema.FlowConfig]),
    ("sgd", "sgd", [schema.SGDConfig]),
    ("ensemble", "ensemble", [schema.EnsembleConfig]),
    ("log", "log", [schema.LogConfig]),
    ("limits", "limits", [schema.LimitsConfig]),
    ("checkpoint", "checkpoint", [schema.CheckpointConfig]),
    ("run", "run", [schema.RunConfig]),
]  # fmt: skip


def _comments() -> dict[int, str]:
    """line number -> the comment on it, in the schema's source."""
    src = inspect.getsource(schema)
    return {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(src).readline)
        if tok.type == tokenize.COMMENT
    }


def field_docs(cls: type) -> dict[str, str]:
    """{field: its comment} for a schema dataclass (its own fields and those it inherits)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass.__module__ != schema.__name__:
            continue
        comments = _comments()
        src_lines = inspect.getsource(schema).splitlines()
        tree = ast.parse(inspect.getsource(schema))
        node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == klass.__name__)
        for stmt in node.body:
            if not isinstance(stmt, ast.AnnAssign):
                continue
            text = comments.get(stmt.lineno, "")  # the comment on the field's line, else those just above
            line = stmt.lineno - 1
            while not text and line >= 1 and src_lines[line - 1].strip().startswith("#"):
                block = [comments[line]]
                while line - 1 >= 1 and src_lines[line - 2].strip().startswith("#"):
                    line -= 1
                    block.insert(0, comments[line])
                text = " ".join(block)
            if text:
                docs[stmt.target.id] = text
    return docs


def _type(tp) -> str:
    if isinstance(tp, str):
        tp = eval(tp, vars(schema))  # noqa: S307 - the schema's own annotations
    if isinstance(tp, type) and issubclass(tp, Enum):
        return " \\| ".join(m.name for m in tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join("null" if a is type(None) else _type(a) for a in args)
    if origin is list:
        return f"list[{_type(args[0])}]" if args else "list"
    if origin is dict:
        return "mapping"
    return {typing.Any: "any"}.get(tp, getattr(tp, "__name__", str(tp)))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if value is MISSING or value == MISSING:
        return "(required)"
    return _yaml(value)


def _yaml(value) -> str:
    """A default as it is written on the command line."""
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return "null" if value is None else str(value)


def _rows(prefix: str, classes: list[type]) -> list[str]:
    rows, seen = [], set()
    for cls in classes:
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            hints = typing.get_type_hints(cls)
            if f.name in seen or (prefix == "" and dataclasses.is_dataclass(f.default_factory)):
                continue
            if prefix == "" and f.name in ("data", "init"):
                continue
            seen.add(f.name)
            key = f"{prefix}.{f.name}" if prefix else f.name
            where = "" if len(classes) == 1 or f.name == "kind" else f" ({_owner(f.name, classes)})"
            rows.append(
                f"| `{key}` | {_type(hints[f.name])} | {_default(f)} | {docs.get(f.name, '')}{where} |"
            )
    return rows


def _owner(name: str, classes: list[type]) -> str:
    return ", ".join(
        c.__name__.removesuffix("Data").removesuffix("Init").lower()
        for c in classes
        if name in {f.name for f in dataclasses.fields(c)}
    )


def _options() -> list[str]:
    lines = ["| group | option | what it chooses |", "|---|---|---|"]
    for group in sorted(p.name for p in CONF.iterdir() if p.is_dir()):
        for path in sorted((CONF / group).glob("*.yaml")):
            head = []  # the file's leading comment
            for ln in path.read_text().splitlines():
                if not ln.startswith("#"):
                    break
                if "@package" not in ln:
                    head.append(ln.lstrip("#").strip())
            lines.append(f"| `{group}` | `{group}={path.stem}` | {_short(' '.join(head))} |")
    return lines


def _short(text: str, limit: int = 200) -> str:
    """The text, cut after the last sentence that ends within ``limit`` characters if it is longer."""
    if len(text) <= limit:
        return text
    ends = [m.end() for m in re.finditer(r"[a-z0-9)]\.(?= [A-Z])", text[:limit])]
    if ends:
        return text[: ends[-1]]
    cut = text[: limit + 1]  # one more: a cut that falls on a space keeps the word before it
    cut = (
        cut[: cut.rfind("; ")] if cut.rfind("; ") > limit // 2 else cut[: cut.rfind(" ")]
    )  # a clause, or a word
    return cut.rstrip(",;:( ") + " ..."


def render() -> str:
    """The page, as ``scripts/config_doc.py`` writes it."""
    out = [
        "# Configuration keys",
        "",
        "Generated from the schema (`dlnlab/lab/config/_schema.py`) by `python scripts/config_doc.py`; a test",
        "checks that this page is current. Override any key on the command line",
        "(`python scripts/train.py flow.t_max=100 sgd.lrs=[0.01]`) or pass a plain dict to",
        "`dlnlab.lab.run` (docs/api.md). Types, unknown keys and missing values are checked by OmegaConf; ranges",
        "and rules across keys before any work (docs/cli.md).",
        "",
    ]
    for title, prefix, classes in GROUPS:
        out += [f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        out += _rows(prefix, classes) + [""]
    out += ["## Config groups: one YAML file per option", "", *_options(), ""]
    return "\n".join(out)
