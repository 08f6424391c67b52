"""The machinery of summary.json's typed records (:mod:`dlnlab.lab.results._records` holds the records):
:class:`Record` reads a dict into its fields, refusing a key it has no field for (:class:`UnknownKeys`),
and writes it back in field order, and refuses a dict that lacks a key it requires (:class:`MissingKeys`);
:func:`key` declares a field with what it means; a field holding :data:`ABSENT` is a key the JSON leaves
out. Both refusals name where in the dict they are (``series.flow``, ``sgd_limit.sme``)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import field
from enum import Enum
from typing import Any, ClassVar

from dlnlab.errors import ArgumentError
from dlnlab.rundir import json_kind

__all__ = ["ABSENT", "MissingKeys", "NotAnObject", "Record", "UnknownKeys", "given", "key"]


class _Absent:
    """A key the JSON leaves out."""

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Any = _Absent()


def given(value: Any) -> Any:
    """A key a summary may leave out (written before it existed, or one that applies only sometimes) as
    None: ABSENT is no number (the console's readers of the records)."""
    return None if value is ABSENT else value


class UnknownKeys(KeyError):
    """A dict with keys its record has no field for (``where``: its place in the dict read, "" at the top)."""

    def __init__(self, record: str, keys: list[str], where: str = "") -> None:
        self.record, self.keys, self.where = record, keys, where
        super().__init__(f"{_at(record, where)}: no field for {keys}")

    def __str__(self) -> str:  # the message itself: KeyError's str() is its repr, in quotes
        return str(self.args[0])

    def inside(self, outer: str) -> UnknownKeys:
        return UnknownKeys(self.record, self.keys, _joined(outer, self.where))

    def __reduce__(self):  # pickled whole (a worker process's error): args holds the message only
        return type(self), (self.record, self.keys, self.where)


class MissingKeys(ArgumentError):
    """A dict that lacks keys its record requires: a damaged summary.json, or one written by another
    version of dlnlab. ``str(err)``: ``data: series.flow (FlowEntry) lacks the key status``."""

    def __init__(self, record: str, keys: list[str], where: str = "") -> None:
        self.record, self.keys, self.where = record, keys, where
        plural = "s" if len(keys) > 1 else ""
        super().__init__("data", f"{_at(record, where)} lacks the key{plural} {', '.join(keys)}")

    def inside(self, outer: str) -> MissingKeys:
        return MissingKeys(self.record, self.keys, _joined(outer, self.where))

    def __reduce__(self):
        return type(self), (self.record, self.keys, self.where)


class NotAnObject(MissingKeys):
    """A value that is not a dict where a record's dict belongs (``"flow": null``): it lacks every key,
    so it is a MissingKeys, caught and said alike (it was a raw TypeError naming neither the record nor
    where). ``str(err)``: ``data: series.flow (FlowEntry) is null, not an object``."""

    def __init__(self, record: str, got: str, where: str = "") -> None:
        self.record, self.keys, self.where, self.got = record, [], where, got
        ArgumentError.__init__(self, "data", f"{_at(record, where)} is {got}, not an object")

    def inside(self, outer: str) -> NotAnObject:
        return NotAnObject(self.record, self.got, _joined(outer, self.where))

    def __reduce__(self):
        return type(self), (self.record, self.got, self.where)


def _at(record: str, where: str) -> str:
    return f"{where} ({record})" if where else record


def _joined(outer: str, inner: str) -> str:
    return f"{outer}.{inner}" if inner else outer


def key(doc: str, *, required: bool = False, record: type | None = None, container: str = "") -> Any:
    """A record's field: ``doc`` says what it means (the docs' tables); ``record`` a nested record class,
    in a ``container`` ("list", "dict" or "dict of lists") or alone; not ``required``: ABSENT until set."""
    meta = {"doc": doc, "record": record, "container": container}
    return field(metadata=meta) if required else field(default=ABSENT, metadata=meta)


def _read(f: dataclasses.Field, value: Any) -> Any:
    rec, box = f.metadata.get("record"), f.metadata.get("container")
    if value is None or rec is None:
        return value
    if isinstance(rec, type) and issubclass(rec, Enum):
        return rec(value)
    if box == "list":
        return [_nested(rec, v, f.name, f"[{i}]") for i, v in enumerate(value)]
    if box == "dict":
        return {k: _nested(rec, v, f.name, f".{k}") for k, v in value.items()}
    if box == "dict of lists":  # sgd_limit.sme.exit_spread: per lr, rows
        return {
            k: [_nested(rec, v, f.name, f".{k}[{i}]") for i, v in enumerate(values)]
            for k, values in value.items()
        }
    return _nested(rec, value, f.name)


def _nested(rec: type[Record], value: dict, name: str, item: str = "") -> Record:
    """A nested record, a refusal inside it naming its place (``members[3]``, ``ensemble.final_loss``)."""
    try:
        return rec.from_dict(value)
    except (UnknownKeys, MissingKeys) as err:
        raise err.inside(name + item) from None


@functools.cache
def _fields(cls: type) -> dict[str, dataclasses.Field]:
    """A record class's fields by name, but ``extra``: once per class (``dataclasses.fields`` for every
    record of every summary write was a fifth of a 1000-member ensemble's writes; measured)."""
    return {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}


@functools.cache
def _required(cls: type) -> tuple[str, ...]:
    """The keys a record's dict must hold: its fields without a default (once per class)."""
    return tuple(n for n, f in _fields(cls).items() if f.default is dataclasses.MISSING)


@functools.cache
def _nested_fields(cls: type) -> tuple[dataclasses.Field, ...]:
    """The fields that hold records (nested, in a list or map, or an enum): the only values ``from_dict``
    converts; the others are taken as they are (a call per field per record was half of reading a
    summary whose members hold plateaus; measured)."""
    return tuple(f for f in _fields(cls).values() if f.metadata.get("record") is not None)


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
        if not isinstance(data, dict):
            raise NotAnObject(cls.__name__, json_kind(data))
        fields = _fields(cls)
        unknown = [k for k in data if k not in fields]
        if unknown and not cls.open:
            raise UnknownKeys(cls.__name__, unknown)
        missing = [k for k in _required(cls) if k not in data]
        if missing:  # before the constructor, whose TypeError named neither the record nor the dict
            raise MissingKeys(cls.__name__, missing)
        values = {k: v for k, v in data.items() if k in fields} if unknown else dict(data)
        for f in _nested_fields(cls):
            if f.name in values:
                values[f.name] = _read(f, values[f.name])
        made = cls(**values)
        if unknown:
            made.extra = {k: data[k] for k in unknown}
        return made

    def to_dict(self) -> dict:
        values = ((name, getattr(self, name)) for name in _fields(type(self)))
        out = {name: _plain(value) for name, value in values if value is not ABSENT}
        out.update(getattr(self, "extra", None) or {})
        return out
