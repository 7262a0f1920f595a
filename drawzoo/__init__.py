"""drawzoo: DRAW and other deep generative models of images as Pyro model/guide pairs.

>>> import drawzoo
>>> drawzoo.available()
['draw', 'vae']
>>> m = drawzoo.load("draw", attention=True)       # the paper's MNIST configuration
>>> m = drawzoo.load("draw", pretrained=True)      # trained weights that ship with drawzoo
"""

from importlib import metadata as _metadata

from .errors import (CheckpointError, ConfigError, DataError, DrawzooError, InputError, MemoryLimitError,
                     NoLatentSitesError, ObjectiveError, PretrainedError, RecipeError, UnknownModelError, WriteError)
from .evaluation import evaluate
from .pretrained import list_pretrained
from .recipes import load_recipe
from .registry import available, load, model_class
from .stopping import Interrupted
from .train_config import TrainConfig
from .training import DivergenceError, TrainingError, train

try:
    __version__: str = _metadata.version("drawzoo")
except _metadata.PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "available", "load", "model_class", "list_pretrained", "train", "TrainConfig", "load_recipe", "evaluate",
    "DrawzooError", "TrainingError", "DivergenceError", "UnknownModelError", "ConfigError", "InputError",
    "CheckpointError", "DataError", "ObjectiveError", "PretrainedError", "RecipeError", "WriteError", "NoLatentSitesError",
    "MemoryLimitError",
    "Interrupted",
]
