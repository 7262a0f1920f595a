"""Typed, validated model configurations.

Every zoo model describes its hyper-parameters as a frozen dataclass. `check_fields` enforces the
annotated types (so ``T=2.5`` or ``attention="yes"`` fail loudly), `build_config` turns keyword
arguments into a config and rejects unknown keys, naming the valid ones.
"""

from __future__ import annotations

import dataclasses
import numbers
import typing

from .errors import ConfigError


def param(default, help: str):
    """A config field with a default and a one-line help (shown by the CLI's ``--help``)."""
    return dataclasses.field(default=default, metadata={"help": help})


def config_fields(config_cls) -> list[str]:
    """The field names of a config dataclass, in declaration order."""
    return [f.name for f in dataclasses.fields(config_cls)]


def build_config(config_cls, overrides: dict, *, model_name: str = "model"):
    """`config_cls(**overrides)`, with an error naming any unknown key and the valid ones."""
    valid = config_fields(config_cls)
    unknown = [k for k in overrides if k not in valid]
    if unknown:
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} for {model_name!r}: "
            f"{', '.join(map(repr, unknown))}; valid keys are: {', '.join(valid)}"
        )
    return config_cls(**overrides)


def _coerce(name: str, value, hint):
    """`value` as type `hint`, or a ConfigError naming the field."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ConfigError(f"config {name!r} must be a tuple of {len(args)} values, got {value!r}")
        items = tuple(value)
        if len(items) != len(args):
            raise ConfigError(f"config {name!r} must have {len(args)} values, got {len(items)}: {value!r}")
        return tuple(_coerce(f"{name}[{i}]", v, h) for i, (v, h) in enumerate(zip(items, args)))
    if hint is bool:
        if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy.bool_ too
            return bool(value)
        raise ConfigError(f"config {name!r} must be True or False, got {value!r}")
    if hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise ConfigError(f"config {name!r} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config {name!r} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config {name!r} must be a string, got {value!r}")
    return value


def check_fields(config) -> None:
    """Coerce each field of a frozen config dataclass to its annotated type, in place."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = _coerce(field.name, getattr(config, field.name), hints[field.name])
        object.__setattr__(config, field.name, value)


def check_positive(config, *names: str) -> None:
    """ConfigError unless each named integer field is >= 1."""
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise ConfigError(f"config {name!r} must be >= 1, got {value}")


def check_image_shape(image_shape: tuple[int, int, int]) -> None:
    """ConfigError unless `image_shape` is a positive (C, H, W)."""
    if min(image_shape) < 1:
        raise ConfigError(f"config 'image_shape' must be positive (C, H, W), got {image_shape}")


def as_dict(config) -> dict:
    """The config as a plain dict of builtins (tuples as lists), for JSON and checkpoints."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}
