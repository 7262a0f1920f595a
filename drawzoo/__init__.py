"""drawzoo: DRAW and other deep generative models of images as Pyro model/guide pairs.

>>> import drawzoo
>>> drawzoo.available()
['draw', 'vae']
>>> m = drawzoo.load("draw", attention=True)       # the paper's MNIST configuration
"""

from .errors import (CheckpointError, ConfigError, DataError, DrawzooError, InputError, ObjectiveError,
                     RecipeError, UnknownModelError)
from .evaluation import evaluate
from .recipes import load_recipe
from .registry import available, load, model_class
from .train_config import TrainConfig
from .training import TrainingError, train

__version__ = "0.1.0"

__all__ = [
    "available", "load", "model_class", "train", "TrainConfig", "load_recipe", "evaluate",
    "DrawzooError", "TrainingError", "UnknownModelError", "ConfigError", "InputError", "CheckpointError", "DataError",
    "ObjectiveError", "RecipeError",
]
