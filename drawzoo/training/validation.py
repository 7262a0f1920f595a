"""Validation during training, and the best weights so far (model selection).

After each epoch (and a part that `max_steps` ends) `drawzoo.train` scores the model on the
validation data with `evaluate` (the negative ELBO, nats per image, from ``valid_samples``
samples per image; with a ``log_dir``, also the KL per step), and writes the weights to the train
config's ``best`` path whenever their validation loss is the lowest so far. (Pyro's own checks of
a step are `drawzoo.TrainConfig`'s ``validate``'s, not this.)
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoints import save_checkpoint
from ..errors import NoLatentSitesError
from ..evaluation.scoring import evaluate


class Validation:
    """The validation of one `train` call of `model` with train config `config`; `main`: whether
    this process is rank 0 (the only one that writes)."""

    def __init__(self, model, config, main: bool):
        self.model, self.config, self.main = model, config, main
        self.best = None if config.best is None else Path(config.best)
        self.per_step = config.log_dir is not None  #: whether validation reports the KL per step (to TensorBoard)

    def scores(self, valid) -> dict:
        """`evaluate`'s figures on the validation data `valid`, with the KL per step while
        `per_step` (until a model turns out to have no latent site)."""
        kwargs = dict(num_samples=self.config.valid_samples, seed=self.config.seed)
        if self.per_step:
            try:
                return evaluate(self.model, valid, per_step=True, **kwargs)
            except NoLatentSitesError:  # raised before any work, on every process
                self.per_step = False
        return evaluate(self.model, valid, **kwargs)

    def keep_best(self, progress, loss: float, epoch: float) -> None:
        """After validation loss `loss` (nats per image) at `epoch`: if it is the lowest so far,
        note it in `progress` (a `Progress`) and write the weights to `best`, if given."""
        if loss < progress.best_valid:
            progress.best_valid = loss
            if self.best is not None and self.main:
                save_checkpoint(self.best, self.model, valid_loss=progress.best_valid, epoch=epoch)
