"""Convolutional DRAW (Gregor, Besse, Rezende, Danihelka & Wierstra 2016, "Towards Conceptual
Compression") as a Pyro model/guide pair with one latent feature map per time step."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor

from ..config import check_fields, check_image_shape, check_positive, param
from ..errors import ConfigError
from . import likelihoods
from .base import ZooModel
from .conv_layers import ConvGaussian, ConvLSTMCell, cat_maps, coarse_size, downsample, on_maps, upsample


@dataclass(frozen=True)
class ConvDrawConfig:
    """Conv DRAW's hyper-parameters; the defaults are a small one-layer model for 28x28 binarized
    MNIST that trains on a CPU (the paper's networks are larger and stacked: docs/conv_draw.md)."""

    image_shape: tuple[int, int, int] = param((1, 28, 28), "image size (C, H, W)")
    T: int = param(8, "time steps, one latent feature map z_t each")
    hidden_channels: int = param(16, "channels of the encoder's and decoder's ConvLSTM states")
    latent_channels: int = param(4, "channels of each z_t")
    kernel_size: int = param(3, "side of every convolution's kernel (odd)")
    stride: int = param(2, "downsampling of z_t and the LSTM states: ceil(H/stride) x ceil(W/stride)")
    likelihood: str = likelihoods.config_field()

    def __post_init__(self):
        check_fields(self)
        check_image_shape(self.image_shape)
        check_positive(self, "T", "hidden_channels", "latent_channels", "kernel_size", "stride")
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"config 'kernel_size' must be odd (a centred kernel keeps the grids aligned), "
                              f"got {self.kernel_size}")
        if self.stride > self.kernel_size:
            raise ConfigError(f"config 'stride'={self.stride} is larger than 'kernel_size'={self.kernel_size}: "
                              f"the write would leave pixels no kernel reaches")
        likelihoods.get(self.likelihood)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(latent_channels, ceil(H / stride), ceil(W / stride))``: the shape of each z_t."""
        _, H, W = self.image_shape
        return self.latent_channels, coarse_size(H, self.stride), coarse_size(W, self.stride)


class ConvDRAW(ZooModel):
    """Convolutional DRAW: DRAW's recurrent refinement of a canvas, with convolutional LSTMs,
    latent feature maps and a learned prior.

    Generative story (`model`), for t = 0..T-1, every state a feature map ``[hidden, h, w]``
    on the latent grid (``h, w = ceil(H / stride), ceil(W / stride)``)::

        z_t     ~ Normal(mu_p(h_dec_{t-1}), sigma_p(h_dec_{t-1}))     site "z_{t}", [latent, h, w]
        h_dec_t = ConvLSTM_dec(z_t, h_dec_{t-1})
        c_t     = c_{t-1} + write(h_dec_t)                           transposed conv to [k*C, H, W]
        x       ~ Bernoulli(sigmoid(c_T))  (or a discretised logistic)  site "x"

    Inference (`guide`), sharing the decoder::

        x_hat_t = x - sigmoid(c_{t-1})  (logistic: x - loc(c_{t-1}))  error image
        r_t     = read([x, x_hat_t])                                  stride conv to the latent grid
        h_enc_t = ConvLSTM_enc([r_t, h_dec_{t-1}], h_enc_{t-1})
        z_t     ~ Normal(mu_q(h_enc_t), sigma_q(h_enc_t))             site "z_{t}"

    The canvas holds the likelihood's k parameter maps per channel (`drawzoo.models.likelihoods`):
    the logits for "bernoulli" (k = 1), locations and log-scales for "logistic" (k = 2, 8-bit
    images, bits/dim). ``h_dec_{-1}`` = 0, so p(z_0) is a learned constant. Under the ``elbo`` objective the loss per
    image is ``-log p(x | c_T) + sum_t KL(q(z_t | ...) || p(z_t | h_dec_{t-1}))`` in nats, each KL
    between two Gaussians that both depend on the z's before.

    Partially observed images (``mask``, True where a pixel is observed): the likelihood counts
    the observed pixels only; the encoder reads x and the error image as 0 at unobserved pixels,
    so their values are never used. The decoder computes the same as without a mask.
    """

    Config = ConvDrawConfig
    zoo_name = "conv_draw"
    _transient = ("_canvases",)
    step_functions = ("prior_step", "encode_step", "decode_step")

    def __init__(self, config: ConvDrawConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        cfg = self.config
        C, H, W = cfg.image_shape
        n, L, k, s = cfg.hidden_channels, cfg.latent_channels, cfg.kernel_size, cfg.stride
        self.reader = downsample(2 * C, n, k, s)
        self.encoder = ConvLSTMCell(2 * n, n, k)
        self.posterior = ConvGaussian(n, L, k)
        self.prior = ConvGaussian(n, L, k)
        self.decoder = ConvLSTMCell(L, n, k)
        self.writer = upsample(n, self.likelihood.params_per_channel * C, k, s, (H, W))
        self._canvases: list[Tensor] | None = None

    # -- the Pyro model and guide -------------------------------------------------------------

    def model(self, x=None, *, batch_size=None, num_data=None, mask=None) -> Tensor:
        """p(x, z_0..z_{T-1}) with the learned prior; images `x` ``[B, C, H, W]`` in [0, 1] observed
        at site "x" (sampled when None, `batch_size` of them), `num_data` and `mask` as the
        `ZooModel` interface says. Returns the final canvas c_T ``[..., B, k*C, H, W]`` (the logits for
        "bernoulli")."""
        x, B = self._data(x, batch_size)
        mask = self.check_mask(mask, B)
        self.register()
        dec, canvas = self._initial_state(B), self._blank_canvas(B)
        with self.data_plate(B, num_data):
            for t in pyro.markov(range(self.config.T)):
                mu, sigma = self.step_fn("prior_step")(dec[0])
                z = pyro.sample(f"z_{t}", dist.Normal(mu, sigma).to_event(3))
                *dec, canvas = self.step_fn("decode_step")(z, *dec, canvas)
                if self._canvases is not None:
                    self._canvases.append(canvas)
            pyro.sample("x", self.pixels(canvas, mask), obs=x)
        return canvas

    def guide(self, x, *, num_data=None, mask=None) -> Tensor:
        """q(z_0..z_{T-1} | x) for images `x` ``[B, C, H, W]`` in [0, 1]; returns c_T ``[..., B, k*C, H, W]``.

        With `mask` (as for `model`) the encoder reads x and the error image as 0 at the
        unobserved pixels: their values in `x` are never used."""
        x = self.check_images(x)
        B = x.shape[0]
        mask = self.check_mask(mask, B)
        if mask is not None:
            x = x.masked_fill(~mask, 0.0)
        self.register()
        dec, enc, canvas = self._initial_state(B), self._initial_state(B), self._blank_canvas(B)
        with self.data_plate(B, num_data):
            for t in pyro.markov(range(self.config.T)):
                *enc, mu, sigma = self.step_fn("encode_step")(x, canvas, dec[0], *enc, mask)
                z = pyro.sample(f"z_{t}", dist.Normal(mu, sigma).to_event(3))
                *dec, canvas = self.step_fn("decode_step")(z, *dec, canvas)
        return canvas

    def pixels(self, canvas: Tensor, mask: Tensor | None = None) -> dist.Distribution:
        """p(x | c) for a canvas ``[..., B, k*C, H, W]``, one event per image (`mask` as for
        `model`): the one place where the canvas becomes a distribution over pixels."""
        return self.likelihood.distribution(canvas, mask)

    # -- one step, pure tensor functions (what `compile_steps` compiles) ----------------------

    def prior_step(self, h_dec: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, sigma)`` ``[..., latent, h, w]`` of p(z_t | h_dec_{t-1}) for ``h_dec [..., hidden, h, w]``."""
        return self.prior(h_dec)

    def encode_step(self, x: Tensor, canvas: Tensor, h_dec: Tensor, h_enc: Tensor, cell_enc: Tensor,
                    mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One step of the encoder: ``x_hat = x - sigmoid(c_{t-1})`` (the likelihood's `point`
        reading of the canvas; 0 where a bool `mask` is False),
        ``r_t = read([x, x_hat])``, ``h_enc_t = ConvLSTM_enc([r_t, h_dec_{t-1}], h_enc_{t-1})``.
        Any batch shape ``[..., B]``; returns ``(h_enc_t, cell_enc_t, mu_t, sigma_t)`` of q(z_t | ...)."""
        error = x - self.likelihood.point(canvas)
        if mask is not None:
            error = torch.where(mask, error, 0.0)
        r = on_maps(self.reader, cat_maps(x, error))
        h_enc, cell_enc = self.encoder(cat_maps(r, h_dec), (h_enc, cell_enc))
        mu, sigma = self.posterior(h_enc)
        return h_enc, cell_enc, mu, sigma

    def decode_step(self, z: Tensor, h_dec: Tensor, cell_dec: Tensor, canvas: Tensor
                    ) -> tuple[Tensor, Tensor, Tensor]:
        """One step of the decoder: ``h_dec_t = ConvLSTM_dec(z_t, h_dec_{t-1})``,
        ``c_t = c_{t-1} + write(h_dec_t)``. Any batch shape ``[..., B]``; returns ``(h_dec_t, cell_dec_t, c_t)``."""
        h_dec, cell_dec = self.decoder(z, (h_dec, cell_dec))
        return h_dec, cell_dec, canvas + on_maps(self.writer, h_dec)

    def _initial_state(self, B: int) -> tuple[Tensor, Tensor]:
        """A zero ConvLSTM state ``(h, cell)``, each ``[B, hidden, h, w]``."""
        _, h, w = self.config.latent_shape
        zeros = torch.zeros(B, self.config.hidden_channels, h, w, device=self.device, dtype=self.dtype)
        return zeros, torch.zeros_like(zeros)

    def _blank_canvas(self, B: int) -> Tensor:
        """c_0 = 0 ``[B, k*C, H, W]`` (grey 0.5 after the sigmoid; logistic: loc 0, scale 1)."""
        C, H, W = self.image_shape
        k = self.likelihood.params_per_channel
        return torch.zeros(B, k * C, H, W, device=self.device, dtype=self.dtype)

    # -- watching it draw ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _recording(self):
        """Keep the canvases c_1..c_T of the model run inside; yields the list."""
        self._canvases = canvases = []
        try:
            yield canvases
        finally:
            self._canvases = None

    @torch.no_grad()
    def generate(self, n: int) -> Tensor:
        """Sample `n` images from the prior, through time: the pixel means of the canvases c_1..c_T,
        ``[T, n, C, H, W]`` in [0, 1]."""
        with self._recording() as canvases, poutine.block():
            self.model(batch_size=n)
        return self.likelihood.mean(torch.stack(canvases))
