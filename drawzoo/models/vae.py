"""A one-latent-layer VAE (Kingma & Welling 2014) with MLP encoder and decoder: the baseline."""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
from torch import Tensor, nn

from ..config import check_fields, check_image_shape, check_positive, param
from . import likelihoods
from .base import ZooModel, one_step_generate, standard_normal
from .layers import GaussianPosterior


@dataclass(frozen=True)
class VAEConfig:
    """VAE hyper-parameters; the defaults are the usual binarized-MNIST sizes (Pyro's VAE example)."""

    image_shape: tuple[int, int, int] = param((1, 28, 28), "image size (C, H, W)")
    hidden_dim: int = param(400, "units of the hidden layer, encoder and decoder")
    latent_dim: int = param(50, "size of z")
    likelihood: str = likelihoods.config_field()

    def __post_init__(self):
        check_fields(self)
        check_image_shape(self.image_shape)
        check_positive(self, "hidden_dim", "latent_dim")
        likelihoods.get(self.likelihood)


class VAE(ZooModel):
    """Variational auto-encoder with one Gaussian latent site ``"z"``::

        z ~ Normal(0, I)                                   site "z"
        x ~ Bernoulli(sigmoid(MLP_dec(z)))                 site "x"
        q: z ~ Normal(mu(MLP_enc(x)), sigma(MLP_enc(x)))

    with ``likelihood="logistic"`` the decoder outputs a location and a log-scale per pixel and
    channel, and x ~ DiscretizedLogistic(loc, log_scale) (`drawzoo.models.likelihoods`).

    Partially observed images (``mask``, True where a pixel is observed): the likelihood counts the
    observed pixels only, and the encoder sees the unobserved ones as 0 (zero imputation, as in
    MIWAE, Mattei & Frellsen 2019): q(z | x_obs) is an encoder trained on whole images fed the
    zero-filled image, a proposal whose mismatch importance weights correct.
    """

    Config = VAEConfig
    zoo_name = "vae"
    traceable = True
    step_functions = ("encode", "decode")

    def __init__(self, config: VAEConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.encoder, self.posterior, self.decoder = self.networks()

    def networks(self) -> tuple[nn.Module, GaussianPosterior, nn.Module]:
        """``(encoder, posterior, decoder)``: the MLPs of `encode` and `decode` and q's Gaussian head."""
        cfg = self.config
        C, H, W = cfg.image_shape
        pixels, maps = C * H * W, self.likelihood.params_per_channel * C
        encoder = nn.Sequential(nn.Flatten(-3), nn.Linear(pixels, cfg.hidden_dim), nn.Softplus())
        posterior = GaussianPosterior(cfg.hidden_dim, cfg.latent_dim)
        decoder = nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.hidden_dim), nn.Softplus(), nn.Linear(cfg.hidden_dim, maps * H * W),
            nn.Unflatten(-1, (maps, H, W)),
        )
        return encoder, posterior, decoder

    def model(self, x=None, *, batch_size=None, num_data=None, mask=None) -> Tensor:
        """p(x, z); `x` ``[B, C, H, W]`` in [0, 1] is observed, or sampled if None.

        `num_data`: the size of the data set the batch is drawn from (sites scaled by N / B).
        `mask`: bool, broadcastable to ``[B, C, H, W]``, True where a pixel of x is observed: the
        likelihood counts those only. Returns the decoder's output ``[..., B, k*C, H, W]`` (the
        likelihood's k parameter maps per channel: the logits for "bernoulli")."""
        x, B = self._data(x, batch_size)
        mask = self.check_mask(mask, B)
        self.register()
        with self.data_plate(B, num_data):
            z = pyro.sample("z", standard_normal(B, self.config.latent_dim, self.posterior.weight))
            out = self.step_fn("decode")(z)
            pyro.sample("x", self.likelihood.distribution(out, mask), obs=x)
        return out

    def guide(self, x, *, num_data=None, mask=None) -> None:
        """q(z | x) for images `x` ``[B, C, H, W]`` in [0, 1]; with `mask` (as for `model`) the
        encoder sees the unobserved pixels as 0: their values in `x` are never used."""
        x = self.check_images(x)
        mask = self.check_mask(mask, x.shape[0])
        if mask is not None:
            x = x.masked_fill(~mask, 0.0)
        self.register()
        with self.data_plate(x.shape[0], num_data):
            mu, sigma = self.step_fn("encode")(x)
            pyro.sample("z", dist.Normal(mu, sigma).to_event(1))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, sigma)`` ``[..., B, latent_dim]`` of q(z | x) for images ``[..., B, C, H, W]`` (a step function)."""
        return self.posterior(self.encoder(x))

    def decode(self, z: Tensor) -> Tensor:
        """The parameters ``[..., B, k*C, H, W]`` of p(x | z) for ``z [..., B, latent_dim]`` (a step function)."""
        return self.decoder(z)

    def generate(self, n: int) -> Tensor:
        """Pixel means of `n` prior samples, ``[1, n, C, H, W]`` in [0, 1] (one "step")."""
        return one_step_generate(self, n)
