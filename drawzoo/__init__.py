"""drawzoo: DRAW and other deep generative models of images as Pyro model/guide pairs.

>>> import drawzoo
>>> drawzoo.available()
['conv_draw', 'conv_vae', 'draw', 'hvae', 'vae']
>>> m = drawzoo.load("draw", attention=True)       # the paper's MNIST configuration
>>> m = drawzoo.load("draw", pretrained=True)      # trained weights that ship with drawzoo

The package's parts: `drawzoo.models` (one module per zoo model), `drawzoo.attention`,
`drawzoo.data` (every data source, batching), `drawzoo.training` (`train` and what a run is made
of), `drawzoo.evaluation` (`evaluate` and its estimators), `drawzoo.figures` (pictures and plots),
``drawzoo.cli`` (the ``drawzoo`` command); at the top level, what they share: the zoo
(`drawzoo.registry`), configs, checkpoints, pretrained tags, files, memory, errors, processes.
"""

import importlib as _importlib
import sys as _sys
import warnings as _warnings
from importlib import metadata as _metadata

from .errors import (CheckpointError, ConfigError, DataError, DrawzooError, InputError, MemoryLimitError,
                     NoLatentSitesError, ObjectiveError, PretrainedError, RecipeError, UnknownModelError, WriteError)
from .evaluation.scoring import evaluate
from .pretrained import list_pretrained
from .registry import available, load, model_class
from .training.callbacks import Callback
from .training.config import TrainConfig
from .training.loop import DivergenceError, TrainingError, train
from .training.recipes import load_recipe
from .training.stopping import Interrupted

try:
    __version__: str = _metadata.version("drawzoo")
except _metadata.PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "available", "load", "model_class", "list_pretrained", "train", "TrainConfig", "Callback", "load_recipe",
    "evaluate",
    "DrawzooError", "TrainingError", "DivergenceError", "UnknownModelError", "ConfigError", "InputError",
    "CheckpointError", "DataError", "ObjectiveError", "PretrainedError", "RecipeError", "WriteError", "NoLatentSitesError",
    "MemoryLimitError",
    "Interrupted",
]

#: Modules that moved into the packages, by their old names: ``import drawzoo.masks`` (and ``from
#: drawzoo.masks import ...``) still work and give the module at its new home, with a DeprecationWarning.
MOVED = {
    "loss": "training.loss", "step_capture": "training.step_capture", "train_state": "training.state",
    "train_config": "training.config", "train_log": "training.report", "validation": "training.validation",
    "divergence": "training.divergence", "stopping": "training.stopping", "recipes": "training.recipes",
    "importance": "models.importance", "objectives": "evaluation.objectives", "masks": "data.masks",
    "batching": "data.batching", "images": "data.images", "pictures": "figures.pictures", "plots": "figures.plots",
}


class _MovedModules:
    """The import finder and loader of `MOVED`'s old names: the module at the old name is the one at the new."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package == __name__ and name in MOVED:
            return _importlib.util.spec_from_loader(fullname, _MovedModules)

    @staticmethod
    def create_module(spec):
        return None  # the default module, replaced in exec_module

    @staticmethod
    def exec_module(module):
        new = f"{__name__}.{MOVED[module.__name__.partition('.')[2]]}"
        _warnings.warn(f"{module.__name__} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        _sys.modules[module.__name__] = _importlib.import_module(new)  # what the import statement gets


def __getattr__(name):  # drawzoo.masks without an import statement, as before
    if name in MOVED:
        new = f"{__name__}.{MOVED[name]}"
        _warnings.warn(f"{__name__}.{name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return _importlib.import_module(new)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_sys.meta_path.append(_MovedModules)
