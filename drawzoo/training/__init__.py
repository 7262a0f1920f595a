"""Training a zoo model by stochastic variational inference: `train` and what a run is made of.

- `loop`: `train` and the step loop, which calls each concern of a run at named points;
- `loss`: the loss a step takes (`~drawzoo.training.loss.ELBOLoss`, any Pyro ELBO per image) and how the loop takes it
  (`loss.StepLoss`); `step_capture`: the fast path of a whole step, recorded once per batch shape;
- `config`: `TrainConfig`, the one source of the training settings; `recipes`: `load_recipe`;
- `state`: where a run stands (`state.Progress`) and its checkpoint (`state.RunCheckpoint`);
- `validation` (and the best weights), `divergence`, `stopping` (time limit, signals), `report`
  (messages, TensorBoard): the concerns the loop calls;
- `callbacks`: the user's own code at the same points (`Callback`, ``train(..., callbacks=[...])``).
"""

from .callbacks import Callback
from .config import TrainConfig
from .divergence import DivergenceError, TrainingError
from .loop import resolve_device, train
from .loss import ELBOLoss
from .recipes import load_recipe
from .stopping import Interrupted

__all__ = ["Callback", "DivergenceError", "ELBOLoss", "Interrupted", "TrainConfig", "TrainingError", "load_recipe",
           "resolve_device", "train"]
