"""What DRAW's guide keeps of one pass, for its own steps and for the model.

- `GuidePass`: the z_t the guide sampled and its final decoder state, which the model takes
  instead of decoding again when it replays those very z's (`DRAW.reuse_guide_decoder`);
- `PassWeights`: the encoder's, posterior's and decoder's per-step products as `StepLinear` maps
  (`DRAW._pass_weights`), what each step takes of them (`encoder_weights`, `decoder_weights`)
  and hands back (`keep`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .fast_path import StepLinear


class GuidePass:
    """The z_t the guide sampled and the decoder state and canvas it ended with, for the model.

    Under ``poutine.replay`` (every ELBO, `Predictive` with a guide, `drawzoo.evaluate`) the model
    receives the very tensors z_t that the guide sampled, so its decoder would recompute what the
    guide already computed. The guide's final state is a function of the z values, the values of
    the decoder's and writer's parameters, and the autograd mode, and nothing else while both are
    drawzoo's own modules with no hooks or parametrizations. So the model takes the guide's final
    state instead of decoding again only if, once it has met all T z's:

    - it met the guide's very z_t objects, in order, and their values are still the ones the guide
      decoded (compared with copies: in-place and ``.data`` edits are caught);
    - every decoder/writer parameter is the same object with the same value, dtype, device and
      ``requires_grad`` (compared with copies: optimizer steps, ``.data`` writes,
      ``vector_to_parameters``, ``load_state_dict(assign=True)``, ``.to()`` are caught);
    - grad mode, inference mode and autocast are as they were in the guide;
    - the modules are still plain (no hooks, parametrizations or replaced submodules).

    Otherwise (or on the first z_t that is not the guide's, e.g. one set by ``poutine.condition``)
    it decodes the steps so far again from the same z's and goes on by itself, as the plain model
    does: the loss and gradients are always those of the plain computation. Only the z's, copies of
    their values and of the parameters, and the final state are kept.
    """

    def __init__(self, parameters: Iterable[nn.Parameter], device: torch.device):
        """At the start of the guide's pass: the decoder's and writer's `parameters` on `device`."""
        self.context = _autograd_context(device)
        self.params = [(p, p.detach().clone(), p.requires_grad) for p in parameters]
        self.zs: list[Tensor] = []
        self.values: list[Tensor] = []
        self.final = None
        self.followed = 0  #: z_t the model has met in order so far
        self.left = False  #: the model decodes by itself from here on

    def record(self, z: Tensor, dec, canvas: Tensor) -> None:
        self.zs.append(z)
        self.values.append(z.detach().clone())
        self.final = (dec, canvas)

    def follow(self, z: Tensor) -> bool:
        """Whether `z` is the guide's next z_t (then counted as met)."""
        if self.followed < len(self.zs) and self.zs[self.followed] is z:
            self.followed += 1
            return True
        return False

    @property
    def complete(self) -> bool:
        return self.followed == len(self.zs)

    def valid(self, parameters: Iterable[nn.Parameter], device: torch.device, plain: bool) -> bool:
        """Whether the guide's final state is exactly what the model would compute now with these
        decoder and writer `parameters` on `device`, `plain` if they are still drawzoo's own modules."""
        current = list(parameters)
        return (
            self.context == _autograd_context(device)
            and plain
            and len(current) == len(self.params)
            and all(p is q and p.requires_grad == grad and _same(p, value)
                    for q, (p, value, grad) in zip(current, self.params))
            and all(_same(z, value) for z, value in zip(self.zs, self.values))
        )

    def leave(self, met_current: bool) -> list[Tensor]:
        """Stop following; the z's met before the current one, for the model to decode itself."""
        self.left = True
        return self.zs[:self.followed - 1 if met_current else self.followed]


def _same(a: Tensor, b: Tensor) -> bool:
    """Same dtype, device, shape and bits."""
    return a.dtype == b.dtype and a.device == b.device and a.shape == b.shape and torch.equal(a.detach(), b)


def _autograd_context(device: torch.device) -> tuple:
    """What decides how a pass is recorded: grad mode, inference mode, autocast (on `device`)."""
    return (torch.is_grad_enabled(), torch.is_inference_mode_enabled(),
            torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))


class PassWeights(NamedTuple):
    """The encoder's, posterior's and decoder's per-step products of one guide pass as `StepLinear`
    maps of their concatenated weights (None: the step runs that module as it is; `DRAW._pass_weights`)."""

    encoder: StepLinear  #: ``[r_t, h_dec_{t-1}, h_enc_{t-1}] -> gates`` (its part with x in e, if `x_in_e`)
    posterior: StepLinear | None  #: ``h_enc_t -> (mu_t, log sigma_t)``
    decoder: StepLinear | None  #: ``[z_t, h_dec_{t-1}] -> gates``
    x_in_e: bool  #: the encoder's product with x is in its e: its steps get no x


def encoder_weights(weights: PassWeights | None, *batch_shapes) -> tuple:
    """``(W_enc, e_enc, W_post, e_post)`` for the next `DRAW.encode_step`, whose inputs have these
    batch shapes (those its decoder part has first, in `DRAW.decode_encode_step`)."""
    if weights is None:
        return None, None, None, None
    batch = _broadcast(batch_shapes)
    post = (None, None) if weights.posterior is None else weights.posterior.step(batch)
    return (*weights.encoder.step(batch), *post)


def decoder_weights(weights: PassWeights | None, *batch_shapes) -> tuple:
    """``(W_dec, e_dec)`` for the next `DRAW.decode_step`, whose inputs have these batch shapes."""
    if weights is None or weights.decoder is None:
        return None, None
    return weights.decoder.step(_broadcast(batch_shapes))


def keep(weights: PassWeights | None, encoder=None, posterior=None, decoder=None) -> None:
    """Hand each `StepLinear` of the pass the inputs of the step that just ran."""
    if weights is None:
        return
    for linear, inputs in ((weights.encoder, encoder), (weights.posterior, posterior),
                           (weights.decoder, decoder)):
        if linear is not None and inputs is not None:
            linear.keep(inputs)


def _broadcast(shapes) -> torch.Size:
    """``torch.broadcast_shapes(*shapes)``, quicker where all are the same (the usual case)."""
    first = shapes[0]
    return first if all(shape == first for shape in shapes) else torch.broadcast_shapes(*shapes)
