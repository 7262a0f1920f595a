"""The loss a training step takes: a Pyro ELBO of a zoo model's model/guide pair, per image (nats).

`ELBOLoss` is the loss and its gradients for any ELBO (`drawzoo.evaluation.objectives` names the common
ones); `StepLoss` is how `drawzoo.train`'s steps take it: with Pyro's own checks (site shapes,
model/guide match, distribution arguments) on the first step of each batch shape only, a failure
of the very first step reported as the objective's (`ObjectiveError`), and on the fast path the
later steps of a traceable model replayed from a recording (`drawzoo.training.step_capture`).
"""

from __future__ import annotations

import contextlib

import torch
from pyro.infer import TraceTailAdaptive_ELBO
from torch import nn

from ..errors import ObjectiveError, first_line
from ..evaluation import objectives
from .step_capture import StepCapture, validation_off


class ELBOLoss(nn.Module):
    """A Pyro ELBO of a zoo model's model/guide pair, per image (nats).

    ``forward(x, **kwargs)`` = ``elbo.differentiable_loss(model.model, model.guide, x, **kwargs) / B``
    for an ELBO that has one (what ``torch.compile`` takes); `loss_and_grads` works for every ELBO.
    Keyword arguments (e.g. ``mask``, ``num_data``) go to model and guide.
    """

    def __init__(self, model: nn.Module, elbo=None):
        super().__init__()
        self.net = model
        self.elbo = elbo if elbo is not None else objectives.make_elbo()

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.elbo.differentiable_loss(self.net.model, self.net.guide, x, **kwargs) / x.shape[0]

    def loss_and_grads(self, x: torch.Tensor, **kwargs) -> float:
        """Pyro's ``loss_and_grads`` per image: adds the gradient of the loss / B to the parameters'
        ``.grad`` and returns the loss / B (nats per image) for images `x` ``[B, C, H, W]``
        (`kwargs` go to model and guide).

        The loss of `ReweightedWakeSleep` is its model (wake-theta) loss. `TraceTailAdaptive_ELBO`
        has no estimate of its objective (Pyro's loss is +inf): its loss is the surrogate whose
        gradient Pyro takes, times K: the tail-weighted mean of -log w over the K particles.
        """
        return float(self.step(x, kwargs))

    def step(self, x: torch.Tensor, kwargs: dict):
        """`loss_and_grads`'s work; its loss as a number, or a 0-dim tensor where Pyro's ``.item()``
        gives one (while `drawzoo.training.step_capture` records the step)."""
        B, model, guide = x.shape[0], self.net.model, self.net.guide
        if isinstance(self.elbo, TraceTailAdaptive_ELBO):  # Pyro's differentiable_loss, without its +inf
            surrogate = sum(self.elbo._differentiable_loss_particle(model_trace, guide_trace)[1]
                            for model_trace, guide_trace in self.elbo._get_traces(model, guide, (x,), kwargs))
            (surrogate / (self.elbo.num_particles * B)).backward()
            return surrogate.item() / B
        if hasattr(self.elbo, "differentiable_loss"):
            loss = self(x, **kwargs)
            loss.backward()
            return loss.item()
        loss = self.elbo.loss_and_grads(model, guide, x, **kwargs)
        for p in self.net.parameters():
            if p.grad is not None:
                p.grad /= B
        return (loss[0] if isinstance(loss, tuple) else loss) / B


class StepLoss:
    """`loss`'s `ELBOLoss.loss_and_grads` for one training step after another; `validate`: the
    train config's (``"first"``: Pyro's checks on the first step of each batch shape only,
    ``"every"``: on every step); `fast`: the fast path (``compile=True``): a traceable model's
    steps after the first of each batch shape are replayed from a recording (`StepCapture`),
    the same loss and gradients."""

    def __init__(self, loss: ELBOLoss, validate: str, fast: bool = False):
        self.loss, self.validate = loss, validate
        self.checked = False  #: whether the objective has run once: its first failure is an ObjectiveError
        self.validated = set()  #: the batch shapes stepped with Pyro's validation (`validate="first"`)
        self.capture = StepCapture(loss.net, loss.elbo, loss.step) if fast else None  #: the recorded steps

    def __call__(self, x: torch.Tensor) -> float:
        """Add the gradient of the loss on images `x` ``[B, C, H, W]`` (checked by the model's
        ``check_images``) to the parameters' ``.grad``; the loss (nats per image). `ObjectiveError`
        if the first call fails."""
        shape = tuple(x.shape)
        try:
            loss = self._replayed(x, shape)
            if loss is None:
                with self._pyro_checks(shape):
                    loss = self.loss.loss_and_grads(x)
        except Exception as e:
            if self.checked:
                raise
            description = objectives.label(objectives.describe(self.loss.elbo))
            raise ObjectiveError(f"elbo {description} cannot train model {self.loss.net.zoo_name!r}: "
                                 f"{first_line(e)}") from e
        self.checked = True
        return loss

    def _replayed(self, x: torch.Tensor, shape: tuple[int, ...]) -> float | None:
        """The loss of a step replayed on the fast path, or None where the plain path runs: the
        first step of each batch shape (Pyro's checks run on it), every step with
        ``validate="every"`` (one warning), a model the fast path cannot record (`StepCapture`)."""
        if self.capture is None or shape not in self.validated:
            return None
        if self.validate == "every":
            if self.capture.refusal({}) is None:
                self.capture.warn_once("validate='every' runs Pyro's checks on every step, which a recorded step "
                                       "does not")
            return None
        return self.capture(x)

    def _pyro_checks(self, shape: tuple[int, ...]):
        """Pyro's validation for a step on a batch of `shape`: left as it is on the first step of
        each shape (on every step with ``validate="every"``), off on the others."""
        if self.validate == "every" or shape not in self.validated:
            self.validated.add(shape)
            return contextlib.nullcontext()
        return validation_off()

