"""Command-line options generated from the settings dataclasses, so that every setting is defined once:
its name, type, default and help text come from its dataclass field (as TRL's HfArgumentParser does for
its configs). A field's flag is its name with dashes (`probe_set_size` -> `--probe-set-size`); metadata
`aliases` adds short forms, `internal` keeps a field off the command line, and a field whose type is a
dataclass contributes that dataclass's options (flattened)."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

_MISSING = dataclasses.MISSING


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation):
    """(the type, whether None is allowed) of `int`, `float | None`, `typing.Optional[str]`, ..."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return inner[0], len(inner) != len(args)
    return annotation, False


def _default(field: dataclasses.Field):
    if field.default is not _MISSING:
        return field.default
    if field.default_factory is not _MISSING:
        return field.default_factory()
    return _MISSING


def option_fields(cls) -> list[tuple[dataclasses.Field, tuple[str, ...]]]:
    """(field, path of nested dataclass fields) of every command-line setting of cls, flattened."""
    result = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.metadata.get("internal"):
            continue
        kind, _ = _base_type(hints[field.name])
        if dataclasses.is_dataclass(kind):
            result += [(inner, (field.name, *path)) for inner, path in option_fields(kind)]
        else:
            result.append((field, ()))
    return result


def add_options(parser: argparse.ArgumentParser, cls, *, skip: tuple = (), defaults: dict | None = None) -> None:
    """One option per setting of cls (flattened), typed and defaulted as the dataclass says. `defaults`
    overrides a default for this command only (e.g. a required value made optional)."""
    for field, path in option_fields(cls):
        if field.name in skip:
            continue
        owner = cls
        for name in path:
            owner = _base_type(typing.get_type_hints(owner)[name])[0]
        kind, _ = _base_type(typing.get_type_hints(owner)[field.name])
        default = (defaults or {}).get(field.name, _default(field))
        names = [_flag(field.name), *field.metadata.get("aliases", ())]
        help_text = field.metadata.get("help", "")
        required = default is _MISSING
        shown = "" if required else f" (default: {default})"
        if kind is bool:
            parser.add_argument(*names, dest=field.name, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text + shown)
            continue
        if kind not in (int, float, str):       # float() also reads inf and -inf (write --nthr-beta=-inf)
            raise TypeError(f"{cls.__name__}.{field.name}: no command-line type for {field.type}")
        parser.add_argument(*names, dest=field.name, type=kind, required=required,
                            default=None if required else default, help=help_text + shown,
                            metavar=field.name.upper())


def settings_from(args: argparse.Namespace, cls, **values):
    """An instance of cls from parsed options (nested dataclasses built too); `values` set the rest."""
    own = {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind, _ = _base_type(hints[field.name])
        if field.name in values:
            own[field.name] = values[field.name]
        elif field.metadata.get("internal"):
            continue
        elif dataclasses.is_dataclass(kind):
            own[field.name] = settings_from(args, kind)
        elif hasattr(args, field.name):
            own[field.name] = getattr(args, field.name)
    return cls(**own)
