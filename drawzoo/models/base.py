"""What every zoo model shares: a typed config, input checks, and the Pyro building blocks.

A zoo model is a `torch.nn.Module` with

- ``Config``: a frozen dataclass of its hyper-parameters (``model.config`` is an instance);
- ``model(x=None, *, batch_size=None)``: the generative story, ``x`` observed at site ``"x"``
  (sampled when ``x`` is None), every site inside ``pyro.plate("data", B)``;
- ``guide(x)``: the amortised posterior over the same latent sites;
- ``generate(n)``: images through time ``[steps, n, C, H, W]`` in [0, 1].

Subclassing `ZooModel` gives a third-party model the same checks and naming for free.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict
from typing import ClassVar

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from ..attention import bounded_exp
from ..config import build_config
from ..errors import ConfigError, InputError
from ..images import check_images

_instances: defaultdict[str, itertools.count] = defaultdict(itertools.count)


def _pyro_name(zoo_name: str) -> str:
    """A per-instance name for `pyro.module`: ``draw``, then ``draw_1``, ``draw_2``, ...

    Pyro's param store is global and keyed by name; two live models sharing one name would
    silently train each other's parameters.
    """
    n = next(_instances[zoo_name])
    return zoo_name if n == 0 else f"{zoo_name}_{n}"


def pixel_likelihood(logits: Tensor) -> dist.Distribution:
    """``Bernoulli(logits)`` over every pixel of ``[B, C, H, W]``, one event per image.

    Its log-probability is the negative binary cross-entropy, which is also defined for grey
    values in [0, 1] (then it is a reconstruction score, not a normalised likelihood), so
    support validation is off.
    """
    return dist.Bernoulli(logits=logits, validate_args=False).to_event(3)


def standard_normal(batch_size: int, dim: int, like: Tensor) -> dist.Distribution:
    """The prior ``Normal(0, I)`` over ``[batch_size, dim]``, one event per row."""
    zeros = like.new_zeros(batch_size, dim)
    return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)


class GaussianPosterior(nn.Linear):
    """``h [B, in] -> (mu, sigma)`` each ``[B, latent_dim]``, with ``sigma = exp(W h + b)``.

    The log-scale is clamped to [-10, 10] so that sigma stays finite and positive.
    """

    def __init__(self, in_dim: int, latent_dim: int):
        super().__init__(in_dim, 2 * latent_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_sigma = super().forward(h).chunk(2, dim=-1)
        return mu, bounded_exp(log_sigma)


class ZooModel(nn.Module):
    """Base class of zoo models; see the module docstring for the interface."""

    Config: ClassVar[type]
    zoo_name: ClassVar[str]

    def __init__(self, config=None, **overrides):
        super().__init__()
        if config is None:
            config = build_config(self.Config, overrides, model_name=self.zoo_name)
        elif not isinstance(config, self.Config):
            raise ConfigError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}")
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.pyro_name = _pyro_name(self.zoo_name)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.config.image_shape)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def check_images(self, x, name: str = "x") -> Tensor:
        """`x` checked against ``image_shape`` and moved to the model's device and dtype."""
        return check_images(x, self.image_shape, device=self.device, dtype=self.dtype, name=name)

    def _data(self, x, batch_size: int | None) -> tuple[Tensor | None, int]:
        """``(checked x or None, B)`` for ``model(x=None, *, batch_size=None)``."""
        if x is None:
            if batch_size is None or batch_size < 1:
                raise InputError("model(x=None) samples images: give batch_size >= 1")
            return None, int(batch_size)
        x = self.check_images(x)
        if batch_size is not None and batch_size != x.shape[0]:
            raise InputError(f"batch_size={batch_size} contradicts x with {x.shape[0]} images")
        return x, x.shape[0]

    def extra_repr(self) -> str:
        return f"config={self.config}"

    def model(self, x=None, *, batch_size=None):
        raise NotImplementedError

    def guide(self, x):
        raise NotImplementedError

    def generate(self, n: int) -> Tensor:
        raise NotImplementedError
