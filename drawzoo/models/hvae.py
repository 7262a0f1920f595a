"""The VAEs of the IWAE paper (Burda, Grosse & Salakhutdinov 2016, appendix): one or two layers of
Gaussian latents, tanh MLPs, Bernoulli pixels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
from torch import Tensor, nn

from ..config import check_fields, check_image_shape, param
from ..errors import ConfigError
from .base import ZooModel, one_step_generate, pixel_likelihood, standard_normal
from .layers import GaussianPosterior


@dataclass(frozen=True)
class HVAEConfig:
    """HVAE hyper-parameters; the defaults are the IWAE paper's two-layer MNIST model, with the widths
    of the authors' code (github.com/yburda/iwae, experiments.py: 200/200 next to x, 100/100 between
    z_1 and z_2); one layer: ``latent_dims=(50,), hidden_dims=(200,)``."""

    image_shape: tuple[int, int, int] = param((1, 28, 28), "image size (C, H, W)")
    latent_dims: tuple[int, ...] = param((100, 50), "size of each stochastic layer z_1, z_2, ... (z_1 next to x)")
    hidden_dims: tuple[int, ...] = param(
        (200, 100), "units of the two tanh layers of each stochastic layer's networks (q(z_l | z_l-1) and "
        "p(z_l-1 | z_l), z_0 = x), one per entry of latent_dims")

    def __post_init__(self):
        check_fields(self)
        check_image_shape(self.image_shape)
        if len(self.hidden_dims) != len(self.latent_dims):
            raise ConfigError(f"config 'hidden_dims' needs one width per stochastic layer of latent_dims "
                              f"{self.latent_dims}, got {self.hidden_dims}")
        for name in ("latent_dims", "hidden_dims"):
            if min(getattr(self, name)) < 1:
                raise ConfigError(f"config {name!r} must be positive, got {getattr(self, name)}")


def _mlp(in_dim: int, hidden: int, head: nn.Module) -> nn.Sequential:
    """``in -> hidden -> hidden`` (tanh after each) ``-> head``: the paper's deterministic layers."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), head)


class HVAE(ZooModel):
    """The IWAE paper's VAE with L stochastic layers of diagonal Gaussians (sites ``"z_1"`` ...
    ``"z_L"``, z_1 next to the pixels; the one-layer model's only site is ``"z_1"``)::

        z_L ~ Normal(0, I)                                             site "z_L"
        z_l ~ Normal(mu, sigma)(MLP_p,l(z_l+1)),  l = L-1, ..., 1       site "z_l"
        x ~ Bernoulli(sigmoid(MLP_x(z_1)))                             site "x"
        q: z_1 ~ Normal(mu, sigma)(MLP_q,1(x)),  z_l ~ Normal(mu, sigma)(MLP_q,l(z_l-1))

    Each MLP has two tanh layers of ``hidden_dims[l]`` units; a Gaussian head gives mu and
    ``sigma = exp(.)`` (as in the paper). Partially observed images (``mask``, True where a pixel
    is observed): the likelihood counts the observed pixels only, and the encoder sees the
    unobserved ones as 0 (zero imputation, as the VAE does).
    """

    Config = HVAEConfig
    zoo_name = "hvae"
    traceable = True
    step_functions = ("encode", "prior", "decode")

    def __init__(self, config: HVAEConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        cfg = self.config
        pixels = math.prod(cfg.image_shape)
        below = (pixels, *cfg.latent_dims[:-1])  # what layer l is drawn from in the guide: x, z_1, ...
        self.encoders = nn.ModuleList(
            _mlp(d_in, h, GaussianPosterior(h, d)) for d_in, h, d in zip(below, cfg.hidden_dims, cfg.latent_dims))
        self.encoders[0].insert(0, nn.Flatten(-3))
        # p(z_l | z_l+1) for l = 1 .. L-1: the network of layer l+1
        self.priors = nn.ModuleList(_mlp(cfg.latent_dims[l + 1], cfg.hidden_dims[l + 1],
                                         GaussianPosterior(cfg.hidden_dims[l + 1], cfg.latent_dims[l]))
                                    for l in range(len(cfg.latent_dims) - 1))
        self.decoder = _mlp(cfg.latent_dims[0], cfg.hidden_dims[0], nn.Sequential(
            nn.Linear(cfg.hidden_dims[0], pixels), nn.Unflatten(-1, cfg.image_shape)))

    @property
    def layers(self) -> int:
        """L, the number of stochastic layers."""
        return len(self.config.latent_dims)

    def model(self, x=None, *, batch_size=None, num_data=None, mask=None) -> Tensor:
        """p(x, z_1, ..., z_L), top-down; `x`, `batch_size`, `num_data` and `mask` as for
        `drawzoo.models.VAE.model`. Returns the pixel logits ``[..., B, C, H, W]``."""
        x, B = self._data(x, batch_size)
        mask = self.check_mask(mask, B)
        self.register()
        L = self.layers
        with self.data_plate(B, num_data):
            z = pyro.sample(f"z_{L}", standard_normal(B, self.config.latent_dims[-1], self.decoder[0].weight))
            for l in pyro.markov(range(L - 1, 0, -1)):
                mu, sigma = self.step_fn("prior")(z, l)
                z = pyro.sample(f"z_{l}", dist.Normal(mu, sigma).to_event(1))
            logits = self.step_fn("decode")(z)
            pyro.sample("x", pixel_likelihood(logits, mask), obs=x)
        return logits

    def guide(self, x, *, num_data=None, mask=None) -> None:
        """q(z_1 | x) q(z_2 | z_1) ... for images `x` ``[B, C, H, W]`` in [0, 1]; with `mask` (as for
        `model`) the encoder sees the unobserved pixels as 0: their values in `x` are never used."""
        x = self.check_images(x)
        mask = self.check_mask(mask, x.shape[0])
        if mask is not None:
            x = x.masked_fill(~mask, 0.0)
        self.register()
        h = x
        with self.data_plate(x.shape[0], num_data):
            for l in pyro.markov(range(1, self.layers + 1)):
                mu, sigma = self.step_fn("encode")(h, l)
                h = pyro.sample(f"z_{l}", dist.Normal(mu, sigma).to_event(1))

    def encode(self, h: Tensor, layer: int) -> tuple[Tensor, Tensor]:
        """``(mu, sigma)`` ``[..., B, latent_dims[layer - 1]]`` of q(z_layer | h), h the images
        ``[..., B, C, H, W]`` for layer 1, else z_(layer - 1) (a step function)."""
        return self.encoders[layer - 1](h)

    def prior(self, z: Tensor, layer: int) -> tuple[Tensor, Tensor]:
        """``(mu, sigma)`` of p(z_layer | z_(layer + 1)) for ``z [..., B, latent_dims[layer]]``
        (a step function)."""
        return self.priors[layer - 1](z)

    def decode(self, z: Tensor) -> Tensor:
        """Pixel logits ``[..., B, C, H, W]`` of p(x | z_1) for ``z_1 [..., B, latent_dims[0]]`` (a step function)."""
        return self.decoder(z)

    def generate(self, n: int) -> Tensor:
        """Pixel means of `n` prior samples, ``[1, n, C, H, W]`` in [0, 1] (one "step")."""
        return one_step_generate(self, n)
