"""The machinery of summary.json's typed records (:mod:`dlnlab.lab.results._records` holds the records):
:class:`Record` reads a dict into its fields, refusing a key it has no field for (:class:`UnknownKeys`),
and writes it back in field order; :func:`key` declares a field with what it means; a field holding
:data:`ABSENT` is a key the JSON leaves out."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import field
from enum import Enum
from typing import Any, ClassVar

__all__ = ["ABSENT", "Record", "UnknownKeys", "key"]


class _Absent:
    """A key the JSON leaves out."""

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Any = _Absent()


class UnknownKeys(KeyError):
    """A dict with keys its record has no field for."""


def key(doc: str, *, required: bool = False, record: type | None = None, container: str = "") -> Any:
    """A record's field: ``doc`` says what it means (the docs' tables); ``record`` a nested record class,
    in a ``container`` ("list" or "dict") or alone; not ``required``: ABSENT until set."""
    meta = {"doc": doc, "record": record, "container": container}
    return field(metadata=meta) if required else field(default=ABSENT, metadata=meta)


def _read(f: dataclasses.Field, value: Any) -> Any:
    rec, box = f.metadata.get("record"), f.metadata.get("container")
    if value is None or rec is None:
        return value
    if isinstance(rec, type) and issubclass(rec, Enum):
        return rec(value)
    if box == "list":
        return [rec.from_dict(v) for v in value]
    if box == "dict":
        return {k: rec.from_dict(v) for k, v in value.items()}
    return rec.from_dict(value)


@functools.cache
def _fields(cls: type) -> dict[str, dataclasses.Field]:
    """A record class's fields by name, but ``extra``: once per class (``dataclasses.fields`` for every
    record of every summary write was a fifth of a 1000-member ensemble's writes; measured)."""
    return {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Record:
    """A part of summary.json: ``from_dict`` reads it (refusing keys it has no field for, unless ``open``),
    ``to_dict`` writes it, fields in order, ABSENT ones left out."""

    open: ClassVar[bool] = False  # keeps unknown keys in ``extra`` (after the fields, in their order)

    @classmethod
    def from_dict(cls, data: dict) -> Record:
        fields = _fields(cls)
        unknown = [k for k in data if k not in fields]
        if unknown and not cls.open:
            raise UnknownKeys(f"{cls.__name__}: no field for {unknown}")
        made = cls(**{k: _read(fields[k], v) for k, v in data.items() if k in fields})
        if unknown:
            made.extra = {k: data[k] for k in unknown}
        return made

    def to_dict(self) -> dict:
        values = ((name, getattr(self, name)) for name in _fields(type(self)))
        out = {name: _plain(value) for name, value in values if value is not ABSENT}
        out.update(getattr(self, "extra", None) or {})
        return out
