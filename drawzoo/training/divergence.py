"""Stopping a training run that diverges.

A run diverges when a loss is above the train config's ``divergence_threshold`` (nats per image;
NaN too, while the threshold is finite) -- a step's, a validation's, or that of the weights about
to be checkpointed on the last batch --, or when its weights are not finite: `DivergenceError`,
before anything diverged is written. A step whose loss or gradient is not finite is skipped
instead (the loop logs the first); ``max_bad_steps`` of them in a row stop the run with
`TrainingError`. The loop ends these errors' messages with what the last checkpoint holds.
"""

from __future__ import annotations

import math

import torch

from ..errors import DrawzooError
from ..evaluation.scoring import evaluate


class TrainingError(DrawzooError):
    """Training cannot go on (e.g. the loss stays non-finite)."""


class DivergenceError(TrainingError):
    """The run diverged: a loss above the train config's `divergence_threshold`, or non-finite weights."""


class Divergence:
    """The divergence checks of one `train` call with train config `config`. Their errors name the
    optimizer step `step` the run is at."""

    def __init__(self, config):
        self.config = config
        self.bad_in_a_row = 0  #: non-finite steps skipped in a row

    def check(self, what: str, loss: float, step: int) -> None:
        """`DivergenceError` if `loss` (of `what`, nats per image) is above the divergence
        threshold, or NaN while it is on."""
        threshold = self.config.divergence_threshold
        if loss > threshold or (math.isnan(loss) and math.isfinite(threshold)):
            raise self.error(what, step, loss)

    def check_weights(self, model, what: str, step: int) -> None:
        """`DivergenceError` saying `what` if a weight of `model` is not finite."""
        if not finite_weights(model):
            raise self.error(what, step)

    def check_saveable(self, model, batch, step: int) -> None:
        """Before a checkpoint: `model`'s weights are finite, and their loss on `batch` (the last
        step's, None before any) is at most the divergence threshold."""
        self.check_weights(model, "the weights are not finite", step)
        if batch is not None and math.isfinite(self.config.divergence_threshold):
            loss = evaluate(model, batch, seed=self.config.seed)["neg_elbo"]  # leaves the RNG alone
            self.check("the weights after it have loss", loss, step)

    def stepped(self, model, step: int) -> None:
        """After an optimizer step: `DivergenceError` if it left a weight not finite."""
        self.check_weights(model, "the step left weights that are not finite", step)
        self.bad_in_a_row = 0

    def skipped(self, step: int) -> None:
        """A step skipped for a non-finite loss or gradient: `TrainingError` once ``max_bad_steps``
        come in a row."""
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= self.config.max_bad_steps:
            raise TrainingError(f"stopped: {self.bad_in_a_row} non-finite losses in a row, up to step {step}")

    def error(self, what: str, step: int, loss: float | None = None) -> DivergenceError:
        """The error that stops a diverging run at `step`: `what` happened (the loss, `loss` nats
        per image, is above the divergence threshold, if given)."""
        if loss is not None:
            what += f" {loss:.4g} nats per image, above divergence_threshold {self.config.divergence_threshold:g}"
        return DivergenceError(f"diverged at step {step}: {what}")


def finite_weights(model) -> bool:
    """Whether every weight of `model` is finite (the same on every process)."""
    weights = [p.detach() for p in model.parameters()]
    # a sum is finite unless a weight is not, or it overflows: then look at every weight
    return bool(torch.isfinite(torch.stack([w.sum() for w in weights])).all()) or all(
        bool(torch.isfinite(w).all()) for w in weights)
