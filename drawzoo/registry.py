"""The model zoo: every model any installed package declares under the ``drawzoo.models``
entry-point group, found through `importlib.metadata`.

A package adds a model by declaring, in its pyproject.toml::

    [project.entry-points."drawzoo.models"]
    mymodel = "mypackage.models:MyModel"

where ``MyModel`` has a ``Config`` dataclass attribute and is built as ``MyModel(config)``
(subclassing `drawzoo.models.ZooModel` provides this).
"""

from __future__ import annotations

import dataclasses
import os
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

import torch

from . import pretrained as pretrained_models
from .checkpoints import check_matches, check_model, config_mismatches, load_weights, read_checkpoint, with_defaults
from .config import as_dict, build_config
from .errors import CheckpointError, ConfigError, DrawzooError, PretrainedError, UnknownModelError
from .memory import check_config_fits

if TYPE_CHECKING:
    from .models.base import ZooModel

GROUP = "drawzoo.models"


def _entry_points() -> dict[str, EntryPoint]:
    """Registered models by name; the same name pointing at two objects is an error."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        other = found.setdefault(ep.name, ep)
        if other.value != ep.value:
            raise DrawzooError(f"model {ep.name!r} is registered twice: {other.value} and {ep.value}")
    return found


def available() -> list[str]:
    """Sorted names of every registered model.

    Returns:
        The names `load` and `model_class` take, e.g. ``['conv_draw', 'draw', ...]``.
    """
    return sorted(_entry_points())


def model_class(name: str) -> type:
    """The class registered as `name`.

    Args:
        name: a registered model's name (one of `available`).

    Returns:
        The model's class, a `drawzoo.models.ZooModel` with a ``Config`` dataclass.

    Raises:
        UnknownModelError: no model is registered as `name` (the message lists the available ones).
        DrawzooError: the registered class fails to import, or has no ``Config`` dataclass.
    """
    eps = _entry_points()
    if name not in eps:
        raise UnknownModelError(
            f"unknown model {name!r}; available: {', '.join(sorted(eps)) or '(none installed)'}"
        )
    try:
        cls = eps[name].load()
    except Exception as e:  # a broken third-party package must not look like a drawzoo bug
        raise DrawzooError(f"model {name!r} ({eps[name].value}) failed to import: {e}") from e
    if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
        raise DrawzooError(f"model {name!r} ({eps[name].value}) has no Config dataclass attribute")
    return cls


def load(name: str | None = None, *, checkpoint: str | os.PathLike | None = None, pretrained: str | bool | None = None,
         seed: int | None = None, **config) -> ZooModel:
    """Build the registered model `name`, its config being the defaults updated by ``config``.

    Args:
        name: a registered model's name (one of `available`); may be omitted with a checkpoint.
        checkpoint: a path written by `drawzoo.train`: rebuild the model from the config stored
            there and load its weights; any ``config`` given must agree with the stored one. The
            stored weights are checked against a model built on the ``meta`` device (names,
            shapes), so a checkpoint whose config and weights disagree is refused before it takes
            any memory.
        pretrained: a tag of `drawzoo.list_pretrained`, ``MODEL.NAME`` or just ``NAME``, or True:
            the model's default tag. Load the weights that tag names, its file checked against the
            manifest (`drawzoo.pretrained`); ``config`` must then agree with the tag's, as with a
            checkpoint.
        seed: draw the initial weights from torch's RNG seeded with it (in a fork: the global RNG
            is left as it was), so one seed gives the same weights every time; else from the
            global RNG.
        **config: fields of the model's config (its ``Config`` dataclass) that differ from the
            defaults.

    Returns:
        The model, a `drawzoo.models.ZooModel`.

    Raises:
        UnknownModelError: neither a registered `name` nor a checkpoint.
        ConfigError: both a checkpoint and a pretrained tag, a seed that is no integer >= 0, or a
            config field the model does not have or a value it refuses.
        CheckpointError: the checkpoint is unreadable, or is not of the model `name`, or the
            ``config`` given contradicts it (each mismatched field named, with both values).
        PretrainedError: an unknown tag, or a ``config`` that contradicts the tag's.

    >>> m = load("draw", attention=False, T=10, seed=7)
    >>> m = load("draw", checkpoint="runs/draw.pt")
    >>> m = load("draw", pretrained=True)
    """
    if pretrained is not None and pretrained is not False:
        if checkpoint is not None:
            raise ConfigError("load() takes a checkpoint or a pretrained tag, not both")
        entry = pretrained_models.choose(name, pretrained, config)
        try:
            return load(entry.model, checkpoint=pretrained_models.weights_file(entry), seed=seed, **config)
        except CheckpointError as e:  # the file is the manifest's: the config given contradicts the tag's
            raise PretrainedError(f"pretrained {entry.tag}: {e}") from None
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    if checkpoint is None:
        if name is None:
            raise UnknownModelError(f"load() needs a model name or a checkpoint; available: {', '.join(available())}")
        return _build(name, build_config(model_class(name).Config, config, model_name=name), seed)
    payload = read_checkpoint(checkpoint)
    stored_name = payload["model"]
    if name is not None:
        check_model(payload, checkpoint, name)
    config_cls = model_class(stored_name).Config
    stored = with_defaults(payload["config"], config_cls)  # fields the model gained since keep their defaults
    given = as_dict(build_config(config_cls, {**stored, **config}, model_name=stored_name))
    diffs = config_mismatches(stored, {key: given[key] for key in config})
    if diffs:
        raise CheckpointError(f"{checkpoint}: given config contradicts the checkpoint's: " + "; ".join(diffs))
    stored_config = build_config(config_cls, stored, model_name=stored_name)
    with torch.device("meta"):  # the weights must fit the config before the model takes any memory
        check_matches(payload, checkpoint, _build(stored_name, stored_config))
    model = _build(stored_name, stored_config)
    load_weights(model, payload, checkpoint)
    return model


def _build(name: str, config, seed: int | None = None) -> ZooModel:
    if torch.get_default_device().type != "meta":  # weights that cannot fit are refused before they are allocated
        check_config_fits(model_class(name), config, name)
    if seed is None:
        model = model_class(name)(config)
    else:
        with torch.random.fork_rng(devices=[]):  # models are built on the CPU
            torch.default_generator.manual_seed(seed)
            model = model_class(name)(config)
    model.zoo_name = name
    return model
