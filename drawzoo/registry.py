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
from importlib.metadata import EntryPoint, entry_points

from .config import build_config
from .errors import DrawzooError, UnknownModelError

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
    """Sorted names of every registered model."""
    return sorted(_entry_points())


def model_class(name: str) -> type:
    """The class registered as `name`; `UnknownModelError` listing the available ones if none."""
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


def load(name: str, **config):
    """Build the registered model `name`, its config being the defaults updated by `config`.

    >>> m = load("draw", attention=False, T=10)
    """
    cls = model_class(name)
    model = cls(build_config(cls.Config, config, model_name=name))
    model.zoo_name = name
    return model
