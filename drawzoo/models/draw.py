"""DRAW (Gregor et al. 2015) as a Pyro model/guide pair with one latent site per time step."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor, nn

from ..attention import FullRead, FullWrite, GaussianRead, GaussianWrite, Glimpse
from ..config import check_fields, check_image_shape, check_positive, param
from ..errors import ConfigError
from .base import GaussianPosterior, ZooModel, pixel_likelihood, standard_normal


@dataclass(frozen=True)
class DrawConfig:
    """DRAW's hyper-parameters; the defaults are the paper's binarized-MNIST setup."""

    image_shape: tuple[int, int, int] = param((1, 28, 28), "image size (C, H, W)")
    T: int = param(64, "glimpses (time steps), one latent site z_t each")
    hidden_dim: int = param(256, "LSTM size, encoder and decoder")
    latent_dim: int = param(100, "size of each z_t")
    attention: bool = param(True, "Gaussian-filterbank read/write (else whole-image read/write)")
    read_size: int = param(2, "read grid: N x N filters")
    write_size: int = param(5, "write grid: N x N filters")

    def __post_init__(self):
        check_fields(self)
        check_image_shape(self.image_shape)
        check_positive(self, "T", "hidden_dim", "latent_dim", "read_size", "write_size")
        if self.attention:
            _, H, W = self.image_shape
            for name in ("read_size", "write_size"):
                if getattr(self, name) > min(H, W):
                    raise ConfigError(
                        f"config {name!r}={getattr(self, name)} is larger than the image "
                        f"({H}x{W}): a grid of N x N filters needs N <= {min(H, W)}"
                    )


@dataclass
class Trajectory:
    """What one pass drew: canvas logits c_0..c_T ``[B, C, H, W]`` and each step's glimpses."""

    canvases: list[Tensor] = field(default_factory=list)
    reads: list[Glimpse] = field(default_factory=list)
    writes: list[Glimpse] = field(default_factory=list)


class GuidePass:
    """The z_t the guide sampled and the decoder state and canvas it ended with, for the model.

    Under ``poutine.replay`` (every ELBO, `Predictive` with a guide, `drawzoo.evaluate`) the model
    receives the very tensors z_t that the guide sampled, so its decoder would recompute exactly
    what the guide already computed. While the model meets the guide's z_t objects in order (and
    no parameter changed in between) it takes the guide's final state instead; on the first other
    z_t (e.g. one set by ``poutine.condition``) it decodes the steps so far again from the guide's
    z's and goes on by itself, as the plain model does. Only the z's and the final state are kept.
    """

    def __init__(self, version: int):
        self.version, self.zs, self.final = version, [], None
        self.followed = 0  #: z_t the model has met in order so far
        self.left = False  #: the model met another z_t and decodes by itself from there

    def record(self, z: Tensor, dec, canvas: Tensor) -> None:
        self.zs.append(z)
        self.final = (dec, canvas)

    def follows(self, z: Tensor) -> bool:
        """Whether `z` is the guide's next z_t (once False, always False)."""
        if not self.left and self.followed < len(self.zs) and self.zs[self.followed] is z:
            self.followed += 1
            return True
        self.left = True
        return False


class Reconstruction(NamedTuple):
    """DRAW at work on given images (see `DRAW.reconstruct`)."""

    canvases: Tensor  #: ``[T+1, B, C, H, W]`` in [0, 1], the initial canvas first
    reads: Glimpse | None  #: read attention per step, each field ``[T, B]`` (None without attention)
    writes: Glimpse | None  #: write attention per step, each field ``[T, B]``


class DRAW(ZooModel):
    """Deep Recurrent Attentive Writer.

    Generative story (`model`), for t = 0..T-1::

        z_t     ~ Normal(0, I)                                  site "z_{t}"
        h_dec_t = LSTM_dec(z_t, h_dec_{t-1})
        c_t     = c_{t-1} + write(h_dec_t)
        x       ~ Bernoulli(sigmoid(c_T))                       site "x"

    Inference (`guide`), sharing the decoder::

        x_hat_t = x - sigmoid(c_{t-1})                          error image
        r_t     = read(x, x_hat_t, h_dec_{t-1})
        h_enc_t = LSTM_enc([r_t, h_dec_{t-1}], h_enc_{t-1})
        z_t     ~ Normal(mu(h_enc_t), sigma(h_enc_t))           site "z_{t}"

    With ``TraceMeanField_ELBO`` the loss per image is the paper's L^x + L^z in nats.
    """

    Config = DrawConfig
    zoo_name = "draw"
    #: Let the model reuse the guide's decoder steps when it replays the guide's z_t (see
    #: `GuidePass`): the same loss and gradients, one decoder pass per step instead of two.
    reuse_guide_decoder = True

    def __init__(self, config: DrawConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        cfg = self.config
        Read, Write = (GaussianRead, GaussianWrite) if cfg.attention else (FullRead, FullWrite)
        self.reader = Read(cfg.hidden_dim, cfg.image_shape, cfg.read_size)
        self.writer = Write(cfg.hidden_dim, cfg.image_shape, cfg.write_size)
        self.encoder = nn.LSTMCell(self.reader.out_dim + cfg.hidden_dim, cfg.hidden_dim)
        self.posterior = GaussianPosterior(cfg.hidden_dim, cfg.latent_dim)
        self.decoder = nn.LSTMCell(cfg.latent_dim, cfg.hidden_dim)
        self._trajectory: Trajectory | None = None
        self._guide_pass: GuidePass | None = None

    # -- the Pyro model and guide -------------------------------------------------------------

    def model(self, x=None, *, batch_size=None) -> Tensor:
        """p(x, z_0..z_{T-1}); `x` ``[B, C, H, W]`` in [0, 1] is observed, or sampled if None.

        Returns the final canvas logits c_T ``[B, C, H, W]``.
        """
        x, B = self._data(x, batch_size)
        pyro.module(self.pyro_name, self)
        guide_pass = self._claim_guide_pass()
        dec, canvas = self._initial_decoder(B)
        with pyro.plate("data", B):
            for t in pyro.markov(range(self.config.T)):
                z = pyro.sample(f"z_{t}", standard_normal(B, self.config.latent_dim, self.decoder.weight_ih))
                dec, canvas = self._decode(z, dec, canvas, guide_pass)
            pyro.sample("x", pixel_likelihood(canvas), obs=x)
        return canvas

    def guide(self, x) -> Tensor:
        """q(z_0..z_{T-1} | x) for images `x` ``[B, C, H, W]`` in [0, 1]; returns c_T."""
        x = self.check_images(x)
        B = x.shape[0]
        pyro.module(self.pyro_name, self)
        self._guide_pass = None
        guide_pass = GuidePass(self._param_version())
        dec, canvas = self._initial_decoder(B)
        enc = self._zero_state(B)
        with pyro.plate("data", B):
            for t in pyro.markov(range(self.config.T)):
                h_dec = dec[0]
                x_hat = x - torch.sigmoid(canvas)
                r = self._read(x, x_hat, h_dec)
                enc = self.encoder(torch.cat([r, h_dec], dim=-1), enc)
                mu, sigma = self.posterior(enc[0])
                z = pyro.sample(f"z_{t}", dist.Normal(mu, sigma).to_event(1))
                dec, canvas = self._decode(z, dec, canvas)
                guide_pass.record(z, dec, canvas)
        self._guide_pass = guide_pass if self.reuse_guide_decoder else None
        return canvas

    # -- one step, shared by model and guide ----------------------------------------------------

    def _zero_state(self, B: int) -> tuple[Tensor, Tensor]:
        h = torch.zeros(B, self.config.hidden_dim, device=self.device, dtype=self.dtype)
        return h, torch.zeros_like(h)

    def _initial_decoder(self, B: int) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """``(h_dec_0, cell_0)`` = 0 and the blank canvas c_0 = 0 (grey 0.5 after the sigmoid)."""
        canvas = torch.zeros(B, *self.image_shape, device=self.device, dtype=self.dtype)
        if self._trajectory is not None:
            self._trajectory.canvases.append(canvas)
        return self._zero_state(B), canvas

    def _read(self, x: Tensor, x_hat: Tensor, h_dec: Tensor) -> Tensor:
        r, glimpse = self.reader(x, x_hat, h_dec)
        if self._trajectory is not None and glimpse is not None:
            self._trajectory.reads.append(glimpse)
        return r

    def _decode(self, z: Tensor, dec, canvas: Tensor, guide_pass: GuidePass | None = None):
        """``h_dec_t = LSTM_dec(z_t, h_dec_{t-1})``; ``c_t = c_{t-1} + write(h_dec_t)``.

        Replaying a `guide_pass` that decoded this very z_t, the state stays with the guide
        (None) until its last step, which returns the guide's final state."""
        if guide_pass is not None and not guide_pass.left:
            if guide_pass.follows(z):
                return guide_pass.final if guide_pass.followed == len(guide_pass.zs) else (None, None)
            dec, canvas = self._initial_decoder(z.shape[0])  # catch up on the steps left with the guide
            for z_s in guide_pass.zs[:guide_pass.followed]:
                dec, canvas = self._decode(z_s, dec, canvas)
        dec = self.decoder(z, dec)
        update, glimpse = self.writer(dec[0])
        canvas = canvas + update
        if self._trajectory is not None:
            self._trajectory.canvases.append(canvas)
            if glimpse is not None:
                self._trajectory.writes.append(glimpse)
        return dec, canvas

    def _param_version(self) -> int:
        """Changes whenever a parameter is modified in place (e.g. by an optimizer step)."""
        return sum(p._version for p in self.parameters())

    def _claim_guide_pass(self) -> GuidePass | None:
        """The last guide pass, once, if no parameter changed since."""
        guide_pass, self._guide_pass = self._guide_pass, None
        if guide_pass is not None and guide_pass.version == self._param_version():
            return guide_pass
        return None

    @contextlib.contextmanager
    def _recording(self):
        """Record canvases and glimpses of the model or guide run inside; yields a Trajectory."""
        self._trajectory = trajectory = Trajectory()
        try:
            yield trajectory
        finally:
            self._trajectory = None

    # -- watching DRAW draw -------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, n: int, return_attention: bool = False):
        """Sample `n` images from the prior, through time.

        Returns the canvases ``[T+1, n, C, H, W]`` in [0, 1] (the blank initial canvas first);
        with ``return_attention=True`` also the write Glimpse of every step (fields ``[T, n]``,
        pixel units).
        """
        if return_attention and not self.config.attention:
            raise ConfigError("return_attention=True needs a model with attention=True")
        with self._recording() as trajectory, poutine.block():
            self.model(batch_size=n)
        canvases = torch.sigmoid(torch.stack(trajectory.canvases))
        return (canvases, Glimpse.stack(trajectory.writes)) if return_attention else canvases

    @torch.no_grad()
    def reconstruct(self, x) -> Reconstruction:
        """Run the guide on images `x` ``[B, C, H, W]`` (z sampled from q) and return what it drew:
        canvases ``[T+1, B, C, H, W]`` and the read and write glimpses per step."""
        with self._recording() as trajectory, poutine.block():
            self.guide(x)
        self._guide_pass = None
        canvases = torch.sigmoid(torch.stack(trajectory.canvases))
        if not self.config.attention:
            return Reconstruction(canvases, None, None)
        return Reconstruction(canvases, Glimpse.stack(trajectory.reads), Glimpse.stack(trajectory.writes))
