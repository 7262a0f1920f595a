"""Typed, validated configurations: every zoo model's hyper-parameters, and `drawzoo.TrainConfig`.

Each is a frozen dataclass whose fields are declared with `param` (a default and a help line, which
the CLI turns into an option). `check_fields` enforces the annotated types (so ``T=2.5`` or
``attention="yes"`` fail loudly; ``int | None`` takes None too), `build_config` turns keyword
arguments into a config and rejects unknown keys, naming the valid ones.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import types
import typing

from .errors import ConfigError


def param(default, help: str, **metadata):
    """A config field with a default and a one-line help (shown by the CLI's ``--help``); `metadata`
    such as ``choices=(...)`` (the CLI's choices) goes into the field's metadata too."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def config_fields(config_cls) -> list[str]:
    """The field names of a config dataclass, in declaration order."""
    return [f.name for f in dataclasses.fields(config_cls)]


def build_config(config_cls, overrides: dict, *, model_name: str | None = None, kind: str = "config"):
    """`config_cls(**overrides)`, with an error naming any unknown key and the valid ones (`kind` and
    `model_name` say whose keys, e.g. "unknown config key for 'draw'")."""
    valid = config_fields(config_cls)
    unknown = [k for k in overrides if k not in valid]
    if unknown:
        whose = "" if model_name is None else f" for {model_name!r}"
        raise ConfigError(
            f"unknown {kind} key{'s' if len(unknown) > 1 else ''}{whose}: "
            f"{', '.join(map(repr, unknown))}; valid keys are: {', '.join(valid)}"
        )
    return config_cls(**overrides)


def optional_type(hint):
    """``int`` for ``int | None`` (or ``Optional[int]``); None for a hint that does not take None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


def _coerce(kind: str, name: str, value, hint):
    """`value` as type `hint`, or a ConfigError naming the field (e.g. "config 'T' must be ...")."""
    where = f"{kind} {name!r}"
    inner = optional_type(hint)
    if inner is not None:
        return None if value is None else _coerce(kind, name, value, inner)
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[int, ...]: one or more values of one type
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or not tuple(value):
                raise ConfigError(f"{where} must be a tuple of one or more values, got {value!r}")
            return tuple(_coerce(kind, f"{name}[{i}]", v, args[0]) for i, v in enumerate(value))
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ConfigError(f"{where} must be a tuple of {len(args)} values, got {value!r}")
        items = tuple(value)
        if len(items) != len(args):
            raise ConfigError(f"{where} must have {len(args)} values, got {len(items)}: {value!r}")
        return tuple(_coerce(kind, f"{name}[{i}]", v, h) for i, (v, h) in enumerate(zip(items, args)))
    if hint is bool:
        if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy.bool_ too
            return bool(value)
        raise ConfigError(f"{where} must be True or False, got {value!r}")
    if hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, os.PathLike)):  # a path given as a Path is kept as its text
            return os.fspath(value)
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def check_fields(config, kind: str = "config") -> None:
    """Coerce each field of a frozen config dataclass to its annotated type, in place; errors say
    ``<kind> '<field>' must be ...``."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = _coerce(kind, field.name, getattr(config, field.name), hints[field.name])
        object.__setattr__(config, field.name, value)


def check_positive(config, *names: str, kind: str = "config") -> None:
    """ConfigError unless each named integer field is >= 1 (or None, for an optional field)."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(f"{kind} {name!r} must be >= 1, got {value}")


def check_image_shape(image_shape: tuple[int, int, int]) -> None:
    """ConfigError unless `image_shape` is a positive (C, H, W)."""
    if min(image_shape) < 1:
        raise ConfigError(f"config 'image_shape' must be positive (C, H, W), got {image_shape}")


def _builtin(value):
    return list(value) if isinstance(value, tuple) else value


def as_dict(config) -> dict:
    """The config as a plain dict of builtins (tuples as lists), for JSON and checkpoints."""
    return {k: _builtin(v) for k, v in dataclasses.asdict(config).items()}


def config_defaults(config_cls) -> dict:
    """The defaults of a config dataclass's fields (those that have one), as `as_dict` writes them."""
    return {f.name: _builtin(f.default) for f in dataclasses.fields(config_cls) if f.default is not dataclasses.MISSING}
