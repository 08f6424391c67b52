"""One line for what OmegaConf refuses: a key the schema does not have (with the closest one it has)
or a value of the wrong type, named by its full key (``dlnlab.lab.config._schema`` uses these)."""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import typing
from collections.abc import Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

__all__ = [
    "describe_omegaconf_error",
    "key_in_file_message",
    "plain_group_message",
    "unknown_key_message",
    "unknown_keys",
]


def unknown_keys(node: DictConfig, prefix: str = "") -> list[tuple[str, list[str]]]:
    """Keys of ``node`` that its dataclass schema does not have (added with ``+key=value``)."""
    out = []
    schema = OmegaConf.get_type(node)
    names = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        full = f"{prefix}{key}"
        if names is not None and key not in names:
            out.append((full, names))
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            out += unknown_keys(child, full + ".")
    return out


def unknown_key_message(full_key: str, allowed: list[str]) -> str:
    group, _, key = full_key.rpartition(".")
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {group + '.' if group else ''}{close[0]}?" if close else ""
    where = group or "the top level"
    return f"{full_key}: no such key; {where} has: {', '.join(allowed)}{hint}"


# OmegaConf's "Value 'abc' of type 'str' could not be converted to Integer", said as what is allowed
_NOT_CONVERTED = re.compile(r"[Vv]alue '(.*)' of type '\w+' could not be converted to (\w+)")
_NOT_BOOL = re.compile(r"[Vv]alue '(.*)' is not a valid (bool)")
# OmegaConf's "Value ['a'] (ListConfig) is not a valid input for <enum 'E'>": a list or mapping where a
# choice goes, said with the choices
_INVALID_ENUM = re.compile(r"Invalid value '(.*)', expected one of (\[.*\])$")  # OmegaConf's own wording
_NOT_ENUM_INPUT = re.compile(r"[Vv]alue (.*) \((\w+)\) is not a valid input for <enum '\w+'>")
_TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "bool": "true or false",
               "String": "a string"}  # fmt: skip


def describe_omegaconf_error(err: BaseException) -> str:
    """One line for an OmegaConf error: ``<full key>: <what is wrong>``."""
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        InterpolationResolutionError,
        MissingMandatoryValue,
        ValidationError,
    )

    key = getattr(err, "full_key", None) or ""
    msg = (getattr(err, "msg", None) or str(err)).strip().splitlines()[0]
    if isinstance(err, MissingMandatoryValue):
        what = "missing (required); give it on the command line, e.g. " + f"{key}=..."
    elif isinstance(err, InterpolationResolutionError):
        what = f"the interpolation does not resolve: {msg}"
    elif isinstance(err, (ConfigKeyError, ConfigAttributeError)):
        schema = getattr(err, "object_type", None)
        if key and dataclasses.is_dataclass(schema):
            message = unknown_key_message(key, [f.name for f in dataclasses.fields(schema)])
            group, _, name = key.rpartition(".")
            if others := _options_with(schema, name):  # data.path without data=file
                message += f"; {key} is a key of {' or '.join(f'{group}={o}' for o in others)}"
            return message
        what = "no such key"
    elif isinstance(err, ValidationError) and "is not Optional" in msg:
        what = "cannot be null"
    elif isinstance(err, ValidationError) and (m := _NOT_CONVERTED.match(msg) or _NOT_BOOL.match(msg)):
        what = f"{m.group(1)!r} is not {_TYPE_WORDS.get(m.group(2), m.group(2))}"
    elif (
        isinstance(err, ValidationError)
        and (m := _NOT_ENUM_INPUT.match(msg))
        and (choices := _enum_choices(err))
    ):
        kind = {"ListConfig": "a list", "list": "a list", "DictConfig": "a mapping", "dict": "a mapping"}
        what = f"expected one of [{', '.join(choices)}], got {kind.get(m.group(2), m.group(2))} {m.group(1)}"
    elif isinstance(err, ValidationError) and (m := _INVALID_ENUM.match(msg)):
        what = f"expected one of {m.group(2)}, got {m.group(1)!r}"  # as a list or mapping given is said
    elif isinstance(err, ValidationError):
        what = msg.replace("Value ", "value ", 1)
    else:
        what = msg
    return f"{key}: {what}" if key else what


def key_in_file_message(where: str, schema: type | None, key: str) -> str:
    """One line for a config file (``where``: ``experiment/tiny``) that sets ``key``, which the chosen
    option's dataclass ``schema`` (None: unknown) does not have.

    Where another option of the group has the key, the line says what clashes, in the words the user
    typed: ``experiment=tiny sets data.singular_values (in experiment/tiny.yaml), a key of data=teacher;
    with data=file, data has: kind, path`` (the file sets a teacher's key, the command line chose a file)."""
    allowed = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else []
    group, _, name = key.rpartition(".")
    others = _options_with(schema, name) if allowed else []
    chosen = _option_name(schema) if allowed else None
    if not (others and chosen and group):
        message = unknown_key_message(key, allowed) if allowed else f"{key}: no such key"
        return f"{message} (set in {where}.yaml)"
    setter = where.replace("/", "=", 1) if "/" in where else f"{where}.yaml"
    owners = " or ".join(f"{group}={o}" for o in others)
    has = ", ".join(allowed)
    return (
        f"{setter} sets {key} (in {where}.yaml), a key of {owners}; with {group}={chosen}, {group} has: {has}"
    )


def _option_name(schema: type) -> str | None:
    """The option a dataclass of a config group stands for (its ``kind``'s default: FileData -> file)."""
    kind = next((f.default for f in dataclasses.fields(schema) if f.name == "kind"), None)
    return kind.name if isinstance(kind, enum.Enum) else None


def _options_with(schema: type, name: str) -> list[str]:
    """The other options of ``schema``'s config group (its dataclass siblings, each naming itself by its
    ``kind``: TeacherData and FileData for ``data``) that have the key ``name``."""
    base = schema.__mro__[1]
    if not dataclasses.is_dataclass(base):
        return []
    out = []
    for option in base.__subclasses__():
        fields = {f.name: f for f in dataclasses.fields(option)} if option is not schema else {}
        kind = fields["kind"].default if "kind" in fields else None
        if name in fields and isinstance(kind, enum.Enum):
            out.append(kind.name)
    return out


def _enum_choices(err: BaseException) -> list[str] | None:
    """The names of the enum the schema field of ``err`` holds, or None where it cannot be found."""
    schema, name = getattr(err, "object_type", None), getattr(err, "key", None)
    if not dataclasses.is_dataclass(schema) or not isinstance(name, str):
        return None
    try:
        hint = typing.get_type_hints(schema).get(name)
    except (NameError, TypeError):
        return None
    enums = [t for t in (hint, *typing.get_args(hint)) if isinstance(t, type) and issubclass(t, enum.Enum)]
    return [member.name for member in enums[0]] if enums else None


def plain_group_message(cfg: Mapping, groups: Iterable[str]) -> str | None:
    """Why a plain dict cannot take ``cfg``'s value of a config group, or None: the command line's
    options (``model=tiny``, ``sgd=minibatch``, ``experiment=tiny``) are files of conf/ that Hydra's
    compose reads; a plain dict has no files to read them from, so a group there is a mapping of its
    keys. Without this ``{"model": "tiny"}`` raised a bare ValueError from ``dict("tiny")`` and
    ``{"sgd": "minibatch"}`` a merge error that named no key."""
    compose = "or compose the config with Hydra to use the command line's options (docs/api.md)"
    if "experiment" in cfg:
        return (
            f"experiment: not a key of a plain dict: experiment={cfg['experiment']} is a command-line "
            f"option (conf/experiment/) that sets several keys; give those keys, {compose}"
        )
    for group in groups:
        value = cfg.get(group)
        if value is not None and not isinstance(value, Mapping):
            return (
                f"{group}: expected a mapping of {group}'s keys in a plain dict, got {value!r}; "
                f"{group}=<option> is a command-line option (conf/{group}/), {compose}"
            )
    return None
