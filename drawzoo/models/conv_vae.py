"""A convolutional VAE: the VAE's story with a conv encoder and a transposed-conv decoder."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..config import check_fields, check_image_shape, check_positive, param
from ..errors import ConfigError
from . import likelihoods
from .layers import GaussianPosterior
from .vae import VAE


@dataclass(frozen=True)
class ConvVAEConfig:
    """Conv VAE hyper-parameters; the defaults are sized for 28x28 MNIST and fit 32x32x3 colour too."""

    image_shape: tuple[int, int, int] = param((1, 28, 28), "image size (C, H, W)")
    channels: tuple[int, int] = param((32, 64), "channels of the encoder's two stride-2 convolutions "
                                      "(the decoder's two transposed convolutions mirror them)")
    latent_dim: int = param(32, "size of z")
    likelihood: str = likelihoods.config_field()

    def __post_init__(self):
        check_fields(self)
        check_image_shape(self.image_shape)
        check_positive(self, "latent_dim")
        if min(self.channels) < 1:
            raise ConfigError(f"config 'channels' must be positive, got {self.channels}")
        likelihoods.get(self.likelihood)


def downsampled(size: int) -> int:
    """The size after the encoder's two stride-2 convolutions (3x3, padding 1): ceil(size / 4)."""
    return -(-size // 4)


class ConvVAE(VAE):
    """Variational auto-encoder with one Gaussian latent site ``"z"`` and convolutional networks::

        z ~ Normal(0, I)                                          site "z"
        x ~ Bernoulli(sigmoid(Deconv(z)))  (or a discretised logistic)  site "x"
        q: z ~ Normal(mu(Conv(x)), sigma(Conv(x)))

    ``Conv``: two 3x3 convolutions of stride 2 (ELU), then a linear map to q's mean and log-scale.
    ``Deconv``: a linear map to the feature maps of the smallest size, two 4x4 transposed
    convolutions of stride 2 (each doubles the size), the output cropped to (H, W): any image
    size works, (1, 6, 7) as (3, 32, 32). The decoder outputs the likelihood's parameter maps
    (`drawzoo.models.likelihoods`): the logits for "bernoulli", locations and log-scales for
    "logistic".

    Partially observed images (``mask``): as the VAE, the likelihood counts the observed pixels
    only, and the encoder sees the unobserved ones as 0 (zero imputation): their values are never read.
    """

    Config = ConvVAEConfig
    zoo_name = "conv_vae"
    traceable = True

    def networks(self) -> tuple[nn.Module, GaussianPosterior, nn.Module]:
        cfg = self.config
        C, H, W = cfg.image_shape
        c1, c2 = cfg.channels
        h, w = downsampled(H), downsampled(W)
        encoder = nn.Sequential(
            nn.Conv2d(C, c1, 3, stride=2, padding=1), nn.ELU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ELU(), nn.Flatten(-3),
        )
        posterior = GaussianPosterior(c2 * h * w, cfg.latent_dim)
        decoder = nn.Sequential(
            nn.Linear(cfg.latent_dim, c2 * h * w), nn.ELU(), nn.Unflatten(-1, (c2, h, w)),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ELU(),
            nn.ConvTranspose2d(c1, self.likelihood.params_per_channel * C, 4, stride=2, padding=1),
        )
        return encoder, posterior, decoder

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, sigma)`` ``[..., B, latent_dim]`` of q(z | x) for images ``[..., B, C, H, W]`` (a step
        function; the leading dimensions are flattened for the convolutions)."""
        features = self.encoder(x.reshape(-1, *x.shape[-3:]))
        return self.posterior(features.view(*x.shape[:-3], -1))

    def decode(self, z: Tensor) -> Tensor:
        """The parameters ``[..., B, k*C, H, W]`` of p(x | z) for ``z [..., B, latent_dim]`` (a step function)."""
        _, H, W = self.config.image_shape
        out = self.decoder(z.reshape(-1, z.shape[-1]))[..., :H, :W]
        return out.reshape(*z.shape[:-1], *out.shape[-3:])
