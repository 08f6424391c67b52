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


def _read(name: str, rec: type, box: str, value: Any) -> Any:
    """A field's value read into its ``rec`` (an enum, or a record nested alone or in its ``box``)."""
    if value is None:
        return value
    if box == "enum":
        return rec(value)
    if box == "list":
        return [_nested(rec, v, name, i) for i, v in enumerate(value)]
    if box == "dict":
        return {k: _nested(rec, v, name, k) for k, v in value.items()}
    if box == "dict of lists":  # sgd_limit.sme.exit_spread: per lr, rows
        return {k: [_nested(rec, v, name, k, i) for i, v in enumerate(values)] for k, values in value.items()}
    return _nested(rec, value, name)


def _nested(rec: type[Record], value: dict, name: str, *item: str | int) -> Record:
    """A nested record, a refusal inside it naming its place (``members[3]``, ``ensemble.final_loss``,
    ``exit_spread.0.04[1]``: ``item``, the keys and indices to it, made a string only on a refusal,
    not for every member read)."""
    try:
        return rec.from_dict(value)
    except (UnknownKeys, MissingKeys) as err:
        place = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in item)
        raise err.inside(name + place) from None


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
def _key_sets(cls: type) -> tuple[frozenset[str], frozenset[str]]:
    """(its keys, its required keys) as sets: a dict's keys are checked against them at once, the keys
    at fault listed only when some are (with :func:`_nested_fields`' list made once per class: reading
    a 1000-member summary 0.045 -> 0.038 s; measured)."""
    return frozenset(_fields(cls)), frozenset(_required(cls))


@functools.cache
def _nested_fields(cls: type) -> tuple[tuple[str, type, str], ...]:
    """(name, record, container) of the fields that hold records (nested, in a list or map, or an enum:
    container "enum"): the only values ``from_dict`` converts; the others are taken as they are (a call
    per field per record was half of reading a summary whose members hold plateaus; measured)."""
    out = []
    for f in _fields(cls).values():
        rec = f.metadata.get("record")
        if rec is not None:
            enum = isinstance(rec, type) and issubclass(rec, Enum)
            out.append((f.name, rec, "enum" if enum else f.metadata.get("container")))
    return tuple(out)


_SCALARS = frozenset({float, int, str, bool, type(None)})  # what JSON writes as it is


def _plain(value: Any) -> Any:
    if type(value) in _SCALARS:  # most values: before the isinstance tests (to_dict: see Record.to_dict)
        return value
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
        names, required = _key_sets(cls)
        keys = data.keys()
        unknown = [] if keys <= names else [k for k in data if k not in names]
        if unknown and not cls.open:
            raise UnknownKeys(cls.__name__, unknown)
        if not keys >= required:  # before the constructor, whose TypeError named neither record nor dict
            raise MissingKeys(cls.__name__, [k for k in _required(cls) if k not in data])
        values = {k: v for k, v in data.items() if k in names} if unknown else dict(data)
        for name, rec, box in _nested_fields(cls):
            if name in values:
                values[name] = _read(name, rec, box, values[name])
        made = cls(**values)
        if unknown:
            made.extra = {k: data[k] for k in unknown}
        return made

    def to_dict(self) -> dict:
        # the fields' values read from __dict__, _plain's scalars first: a 1000-member summary's to_dict
        # 0.038 -> 0.025 s (getattr per field, and three isinstance tests per number; measured)
        held = self.__dict__
        out = {name: _plain(held[name]) for name in _fields(type(self)) if held[name] is not ABSENT}
        out.update(held.get("extra") or {})
        return out
