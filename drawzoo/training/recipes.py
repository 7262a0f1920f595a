"""Recipes: a training run in one TOML file, for ``drawzoo train --recipe`` and the benchmarks.

    model = "draw"           # a registered model (or leave it out: `drawzoo train MODEL --recipe ...`)
    [config]                 # the model's config fields
    T = 6
    read_size = 12
    [train]                  # drawzoo.TrainConfig fields
    epochs = 5
    lr = 3e-3
    lr_min = 1e-4
    [data]                   # what to train and validate on: `Data`
    valid_limit = 2000
    [benchmark]              # read by benchmark scripts (benchmarks/nll_mnist.py); drawzoo ignores it
    [campaign]               # read by benchmarks/campaign.py (the converged rows' plans); drawzoo ignores it

Every table is optional; what a recipe leaves out keeps its default. `load_recipe` is the one
reader: an unknown table or key, or a value of the wrong type, is a `RecipeError` naming the file
and the key, raised before any work.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from ..config import build_config, check_fields, check_positive, param
from ..errors import DrawzooError, RecipeError, first_line
from ..files import note_read
from ..registry import model_class
from .config import TrainConfig

TABLES = ("model", "config", "train", "data", "benchmark", "campaign")


@dataclasses.dataclass(frozen=True)
class Data:
    """What a run trains and validates on: a recipe's ``[data]`` table, ``drawzoo train --data ...``."""

    train: str = param("binarized_mnist", "training data: a data set (its train split) or a .npy/.npz file")
    valid: str | None = param(None, "validation data, as train [a data set's valid split; none for a file]")
    valid_limit: int | None = param(None, "validate on a seeded random subset of this many images [all]")

    def __post_init__(self):
        check_fields(self, "data")
        check_positive(self, "valid_limit", kind="data")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A checked recipe: the settings its file gives (``config``, ``train``: only those), the data,
    and the ``[benchmark]`` and ``[campaign]`` tables as they are."""

    path: str | None = None
    model: str | None = None  #: a registered name
    config: dict = dataclasses.field(default_factory=dict)  #: fields of the model's config
    train: dict = dataclasses.field(default_factory=dict)  #: fields of TrainConfig
    data: Data = Data()
    benchmark: dict = dataclasses.field(default_factory=dict)
    campaign: dict = dataclasses.field(default_factory=dict)

    def train_config(self, **overrides) -> TrainConfig:
        """The recipe's TrainConfig, `overrides` taking precedence."""
        return TrainConfig.from_dict({**self.train, **overrides})


def load_recipe(path) -> Recipe:
    """The recipe in the TOML file at `path`, checked: its model is registered, and its ``[config]``,
    ``[train]`` and ``[data]`` tables make valid configs.

    Args:
        path: a TOML file (``str`` or path-like).

    Returns:
        The recipe, its tables as they are written (`Recipe.train_config` makes its
        `TrainConfig`).

    Raises:
        RecipeError: the file is missing, unreadable or no valid TOML, or a table, key, model name
            or config field is wrong (one line, naming the file).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        note_read(path, "recipe")
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not a valid TOML file: {first_line(e)}") from None
    except OSError as e:
        raise RecipeError(f"{path}: cannot read it: {e.strerror or first_line(e)}") from None
    unknown = [key for key in doc if key not in TABLES]
    if unknown:
        raise RecipeError(f"{path}: unknown table or key {', '.join(map(repr, unknown))}; valid: {', '.join(TABLES)}")
    for table in TABLES[1:]:
        if not isinstance(doc.get(table, {}), dict):
            raise RecipeError(f"{path}: {table!r} must be a table ([{table}]), got {doc[table]!r}")
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise RecipeError(f"{path}: 'model' must be a registered model's name, got {model!r}")
    if model is None and doc.get("config"):
        raise RecipeError(f"{path}: [config] holds a model's config fields: it needs model = \"...\"")
    try:
        if model is not None:
            build_config(model_class(model).Config, doc.get("config", {}), model_name=model)
        TrainConfig.from_dict(doc.get("train", {}))
        data = build_config(Data, doc.get("data", {}), kind="data")
    except DrawzooError as e:
        raise RecipeError(f"{path}: {e}") from None
    return Recipe(str(path), model, dict(doc.get("config", {})), dict(doc.get("train", {})), data,
                  dict(doc.get("benchmark", {})), dict(doc.get("campaign", {})))
