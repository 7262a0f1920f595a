"""DRAW (Gregor et al. 2015) as a Pyro model/guide pair with one latent site per time step."""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor, nn
from torch.nn import functional as F

from ..attention import FullRead, FullWrite, GaussianRead, GaussianWrite, Glimpse
from ..config import check_fields, check_image_shape, check_positive, param
from ..errors import ConfigError
from .base import ZooModel, pixel_likelihood, standard_normal
from .draw_pass import GuidePass, PassWeights, decoder_weights, encoder_weights, keep
from .fast_path import StepLinear, has_hooks
from .layers import GaussianPosterior, cat_features, lstm_step, lstm_update


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


def _detached(glimpse: Glimpse | None) -> Glimpse | None:
    """A step's glimpse, detached: what it looked at, for pictures; no loss depends on it (as
    outputs of a compiled step, its fields then need no gradient bookkeeping)."""
    return None if glimpse is None else Glimpse(*(field.detach() for field in glimpse))


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

    Partially observed images (``mask``, True where a pixel is observed): the model's likelihood
    counts the observed pixels only; the guide reads, at each unobserved pixel, the canvas's own
    current belief ``sigmoid(c_{t-1})`` in place of x, so the error image is 0 where nothing is
    known. The decoder computes the same as without a mask.
    """

    Config = DrawConfig
    zoo_name = "draw"
    _transient = ("_trajectory", "_guide_pass")
    step_functions = ("encode_step", "decode_step", "decode_encode_step")
    #: Let the model reuse the guide's decoder steps when it replays the guide's z_t (see
    #: ``GuidePass``): the same loss and gradients, one decoder pass per step instead of two.
    reuse_guide_decoder = True
    #: On the fast path (`compile_steps`), sum the per-step gradients of the encoder's, posterior's
    #: and decoder's weights in place as they arrive, instead of one new tensor per step and weight
    #: (`StepLinear`, deferred): the same gradients up to float rounding.
    defer_weight_gradients = True

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

    def model(self, x=None, *, batch_size=None, num_data=None, mask=None) -> Tensor:
        """p(x, z_0..z_{T-1}).

        Args:
            x: images ``[B, C, H, W]`` in [0, 1], observed; sampled if None.
            batch_size: B when ``x`` is None.
            num_data: the size of the data set the batch is drawn from (sites scaled by N / B).
            mask: bool, broadcastable to ``[B, C, H, W]``, True where a pixel of x is observed: the
                likelihood of site "x" counts those only.

        Returns:
            The final canvas logits c_T ``[..., B, C, H, W]``.
        """
        x, B = self._data(x, batch_size)
        mask = self.check_mask(mask, B)
        self.register()
        guide_pass = self._claim_guide_pass()
        dec, canvas = self._initial_decoder(B)
        prior = standard_normal(B, self.config.latent_dim, self.decoder.weight_ih)  # the same at every step
        with self.data_plate(B, num_data):
            for t in pyro.markov(range(self.config.T)):
                z = pyro.sample(f"z_{t}", prior)
                dec, canvas = self._decode(z, dec, canvas, guide_pass)
            pyro.sample("x", pixel_likelihood(canvas, mask), obs=x)
        return canvas

    def guide(self, x, *, num_data=None, mask=None) -> Tensor:
        """q(z_0..z_{T-1} | x).

        Args:
            x: images ``[B, C, H, W]`` in [0, 1].
            num_data: as for `model`.
            mask: as for `model`; the encoder reads ``sigmoid(c_{t-1})`` at the unobserved pixels
                instead of x: their values in ``x`` are never used.

        Returns:
            The final canvas logits c_T ``[..., B, C, H, W]``.
        """
        x = self.check_images(x)
        B = x.shape[0]
        mask = self.check_mask(mask, B)
        self.register()
        self._guide_pass = None
        reuse = self.reuse_guide_decoder and self._plain_decoder()
        guide_pass = GuidePass(self._decoder_parameters(), self.device) if reuse else None
        dec, canvas = self._initial_decoder(B)
        enc = self._zero_state(B)
        T = self.config.T
        decode, decode_encode = self.step_fn("decode_step"), self.step_fn("decode_encode_step")
        weights = self._pass_weights(x, mask)
        x_step = None if weights is not None and weights.x_in_e else x  # what the encoder step reads as x
        x_batch = x.shape[:-3] if mask is None else torch.broadcast_shapes(x.shape[:-3], mask.shape[:-3])
        with self.data_plate(B, num_data):
            on = encoder_weights(weights, x_batch, canvas.shape[:-3], dec[0].shape[:-1], enc[0].shape[:-1])
            *enc, mu, sigma, read, inputs = self.step_fn("encode_step")(x_step, canvas, dec[0], *enc, mask, *on)
            keep(weights, encoder=inputs, posterior=enc[0])
            for t in pyro.markov(range(T)):
                self._record(reads=read)
                z = pyro.sample(f"z_{t}", dist.Normal(mu, sigma).to_event(1))
                by = decoder_weights(weights, z.shape[:-1], dec[0].shape[:-1], dec[1].shape[:-1])
                if t + 1 < T:  # decode z_t and encode for z_{t+1}: one step function
                    on = encoder_weights(weights, x_batch, canvas.shape[:-3], z.shape[:-1],
                                         dec[0].shape[:-1], enc[0].shape[:-1], enc[1].shape[:-1])
                    h_dec, cell_dec, canvas, write, dec_inputs, *enc, mu, sigma, read, inputs = decode_encode(
                        z, *dec, canvas, x_step, *enc, mask, *by, *on)
                    keep(weights, encoder=inputs, posterior=enc[0])
                else:
                    h_dec, cell_dec, canvas, write, dec_inputs = decode(z, *dec, canvas, *by)
                keep(weights, decoder=dec_inputs)
                dec = (h_dec, cell_dec)
                self._record(canvas, writes=write)
                if guide_pass is not None:
                    guide_pass.record(z, dec, canvas)
        self._guide_pass = guide_pass
        return canvas.clone()  # not the recorded tensor: edits of the return value cannot reach the model

    # -- one step, shared by model and guide ----------------------------------------------------

    def _zero_state(self, B: int) -> tuple[Tensor, Tensor]:
        h = torch.zeros(B, self.config.hidden_dim, device=self.device, dtype=self.dtype)
        return h, torch.zeros_like(h)

    def _initial_decoder(self, B: int) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """``(h_dec_0, cell_0)`` = 0 and the blank canvas c_0 = 0 (grey 0.5 after the sigmoid)."""
        canvas = torch.zeros(B, *self.image_shape, device=self.device, dtype=self.dtype)
        self._record(canvas)
        return self._zero_state(B), canvas

    def encode_step(self, x: Tensor | None, canvas: Tensor, h_dec: Tensor, h_enc: Tensor, cell_enc: Tensor,
                    mask: Tensor | None = None, W_enc: Tensor | None = None, e_enc: Tensor | None = None,
                    W_post: Tensor | None = None, e_post: Tensor | None = None):
        """One step of the encoder: ``x_hat = x - sigmoid(c_{t-1})``, ``r_t = read(x, x_hat, h_dec_{t-1})``,
        ``h_enc_t = LSTM_enc([r_t, h_dec_{t-1}], h_enc_{t-1})``, ``(mu_t, sigma_t)`` of q(z_t | ...).
        With a bool `mask` (False: unobserved), x is ``sigmoid(c_{t-1})`` where it is False.

        Given the encoder's weights concatenated, ``W_enc`` = ``[W_ih, W_hh]``, and `e_enc` (its biases,
        `_pass_weights`), the gates are ``[r_t, h_dec_{t-1}, h_enc_{t-1}] W_enc^T + e_enc`` in one
        product. With `x` None (DRAW without attention: ``r_t = [x, x_hat_t]``) they are
        ``[-sigmoid(c_{t-1}), h_dec_{t-1}, h_enc_{t-1}] W_enc^T + e_enc``, ``W_enc`` without the columns
        of x and `e_enc` ``[B, 4 hidden]`` holding ``(W_x + W_xhat) x`` + biases: the same sum,
        re-associated, its part with x (the same at every step) computed once per pass. Given
        ``W_post`` and `e_post`, ``(mu, log sigma) = h_enc_t W_post^T + e_post``.

        A pure tensor function (what `compile_steps` compiles); any batch shape ``[..., B]``.
        Returns ``(h_enc_t, cell_enc_t, mu_t, sigma_t, read Glimpse or None, inputs)``, `inputs` the
        rows ``[..., in]`` the gates multiplied by ``W_enc`` (detached; None without it).
        """
        inputs, glimpse = None, None
        if x is None:
            r = -torch.sigmoid(canvas).flatten(-3)
        else:
            belief = torch.sigmoid(canvas)
            if mask is not None:
                x = torch.where(mask, x, belief)
            r, glimpse = self.reader(x, x - belief, h_dec)
        if W_enc is None:
            h_enc, cell_enc = lstm_step(self.encoder, cat_features(r, h_dec), (h_enc, cell_enc))
        else:
            rows = cat_features(r, h_dec, h_enc)
            gates = F.linear(rows, W_enc) + e_enc
            h_enc, cell_enc = lstm_update(gates, cell_enc)
            inputs = rows.expand(*gates.shape[:-1], rows.shape[-1]).detach()
        if W_post is None:
            mu, sigma = self.posterior(h_enc)
        else:
            mu, sigma = GaussianPosterior.split(F.linear(h_enc, W_post) + e_post)
        return h_enc, cell_enc, mu, sigma, _detached(glimpse), inputs

    def decode_step(self, z: Tensor, h_dec: Tensor, cell_dec: Tensor, canvas: Tensor,
                    W_dec: Tensor | None = None, e_dec: Tensor | None = None):
        """One step of the decoder: ``h_dec_t = LSTM_dec(z_t, h_dec_{t-1})``, ``c_t = c_{t-1} + write(h_dec_t)``;
        given ``W_dec`` = ``[W_ih, W_hh]`` and `e_dec` (`_pass_weights`), the gates are
        ``[z_t, h_dec_{t-1}] W_dec^T + e_dec`` in one product.

        A pure tensor function (what `compile_steps` compiles); any batch shape ``[..., B]``.
        Returns ``(h_dec_t, cell_dec_t, c_t, write Glimpse or None, inputs)``, `inputs` the rows the
        gates multiplied by ``W_dec`` (detached; None without it).
        """
        inputs = None
        if W_dec is None:
            h_dec, cell_dec = lstm_step(self.decoder, z, (h_dec, cell_dec))
        else:
            rows = cat_features(z, h_dec)
            gates = F.linear(rows, W_dec) + e_dec
            h_dec, cell_dec = lstm_update(gates, cell_dec)
            inputs = rows.expand(*gates.shape[:-1], rows.shape[-1]).detach()
        update, glimpse = self.writer(h_dec)
        return h_dec, cell_dec, canvas + update, _detached(glimpse), inputs

    def decode_encode_step(self, z: Tensor, h_dec: Tensor, cell_dec: Tensor, canvas: Tensor, x: Tensor | None,
                           h_enc: Tensor, cell_enc: Tensor, mask: Tensor | None = None,
                           W_dec: Tensor | None = None, e_dec: Tensor | None = None,
                           W_enc: Tensor | None = None, e_enc: Tensor | None = None,
                           W_post: Tensor | None = None, e_post: Tensor | None = None):
        """`decode_step` for z_t, then `encode_step` for z_{t+1}: the guide's work between two samples
        in one function. Returns ``(h_dec_t, cell_dec_t, c_t, write Glimpse, decoder inputs, h_enc_{t+1},
        cell_enc_{t+1}, mu_{t+1}, sigma_{t+1}, read Glimpse, encoder inputs)``."""
        h_dec, cell_dec, canvas, write, dec_inputs = self.decode_step(z, h_dec, cell_dec, canvas, W_dec, e_dec)
        return (h_dec, cell_dec, canvas, write, dec_inputs,
                *self.encode_step(x, canvas, h_dec, h_enc, cell_enc, mask, W_enc, e_enc, W_post, e_post))

    def _pass_weights(self, x: Tensor, mask: Tensor | None = None) -> PassWeights | None:
        """The per-step products the guide's pass on images `x` takes from concatenated weights
        (`StepLinear`); None where every step runs the modules as they are.

        Without attention and a mask, the encoder's product with ``r_t = [x, x_hat_t]``,
        ``x_hat_t = x - sigmoid(c_{t-1})``, is ``W_x x + W_xhat x_hat_t = (W_x + W_xhat) x - W_xhat
        sigmoid(c_{t-1})``: its first term (with the biases, ``[B, 4 hidden]``) is computed here,
        once per pass, and a step multiplies C*H*W + 2 hidden inputs instead of 2*C*H*W + 2 hidden,
        forward and backward. On the fast path, with gradients on (`defer_weight_gradients`), the
        posterior and decoder join, and the three weights' per-step gradients are summed in place
        as they arrive (`StepLinear`, deferred). Only for drawzoo's own modules without hooks or
        parametrizations (anything else may compute something else, or must run every step);
        with a mask the encoder's x changes every step (the canvas where unobserved).
        """
        enc, dec = self.encoder, self.decoder
        if not (type(self.reader) in (FullRead, GaussianRead) and type(enc) is nn.LSTMCell and enc.bias
                and type(self.posterior) is GaussianPosterior and type(dec) is nn.LSTMCell and dec.bias
                and not has_hooks(self)):
            return None
        x_in_e = mask is None and type(self.reader) is FullRead
        defer = (self.defer_weight_gradients and self.compile_options is not None and torch.is_grad_enabled()
                 and not torch._C._are_functorch_transforms_active())
        if not (x_in_e or defer):
            return None
        bias = enc.bias_ih + enc.bias_hh
        if x_in_e:
            D, W = self.reader.out_dim // 2, enc.weight_ih
            encoder = StepLinear([W[:, D:], enc.weight_hh], F.linear(x.flatten(-3), W[:, :D] + W[:, D:2 * D], bias),
                                 defer)
        else:
            encoder = StepLinear([enc.weight_ih, enc.weight_hh], bias, defer)
        if not defer:
            return PassWeights(encoder, None, None, x_in_e)
        return PassWeights(encoder, StepLinear([self.posterior.weight], self.posterior.bias, True),
                           StepLinear([dec.weight_ih, dec.weight_hh], dec.bias_ih + dec.bias_hh, True), x_in_e)

    def _record(self, canvas: Tensor | None = None, reads: Glimpse | None = None, writes: Glimpse | None = None):
        """Keep what a step drew, while `_recording`."""
        if self._trajectory is not None:
            for kept, new in ((self._trajectory.canvases, canvas), (self._trajectory.reads, reads),
                              (self._trajectory.writes, writes)):
                if new is not None:
                    kept.append(new)

    def _decode(self, z: Tensor, dec, canvas: Tensor, guide_pass: GuidePass | None = None):
        """`decode_step`: ``h_dec_t = LSTM_dec(z_t, h_dec_{t-1})``; ``c_t = c_{t-1} + write(h_dec_t)``.

        Replaying a `guide_pass` whose z_t these are, the steps are deferred (the state stays as it
        was) until the last, which takes the guide's final state if that is still exactly what
        this decoder would compute (``GuidePass.valid``); otherwise the deferred steps are decoded
        here first, as the plain model would have."""
        if guide_pass is not None and not guide_pass.left:
            met = guide_pass.follow(z)
            if met and not guide_pass.complete:
                return dec, canvas
            if met and guide_pass.valid(self._decoder_parameters(), self.device, self._plain_decoder()):
                return guide_pass.final
            for z_s in guide_pass.leave(met):
                dec, canvas = self._decode(z_s, dec, canvas)
        *dec, canvas, glimpse, _ = self.step_fn("decode_step")(z, *dec, canvas)
        self._record(canvas, writes=glimpse)
        return tuple(dec), canvas

    def _decoder_parameters(self):
        """The parameters the decoding of z's depends on."""
        return itertools.chain(self.decoder.parameters(), self.writer.parameters())

    def _plain_decoder(self) -> bool:
        """Whether decoding is drawzoo's own deterministic function of z's and parameters."""
        return (type(self.decoder) is nn.LSTMCell and type(self.writer) in (GaussianWrite, FullWrite)
                and not has_hooks(self.decoder) and not has_hooks(self.writer))

    def _claim_guide_pass(self) -> GuidePass | None:
        """The last guide pass, once (the model checks at its end whether it may use it)."""
        guide_pass, self._guide_pass = self._guide_pass, None
        return guide_pass if self.reuse_guide_decoder else None

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
        """Sample ``n`` images from the prior, through time.

        Args:
            n: how many images.
            return_attention: also return the write glimpses (a model with attention only).

        Returns:
            The canvases ``[T+1, n, C, H, W]`` in [0, 1] (the blank initial canvas first); with
            ``return_attention=True``, ``(canvases, writes)``: also the write Glimpse of every step
            (fields ``[T, n]``, pixel units).

        Raises:
            ConfigError: ``return_attention=True`` for a model without attention.
        """
        if return_attention and not self.config.attention:
            raise ConfigError("return_attention=True needs a model with attention=True")
        with self._recording() as trajectory, poutine.block():
            self.model(batch_size=n)
        canvases = torch.sigmoid(torch.stack(trajectory.canvases))
        return (canvases, Glimpse.stack(trajectory.writes)) if return_attention else canvases

    @torch.no_grad()
    def reconstruct(self, x) -> Reconstruction:
        """Run the guide on images ``x`` (z sampled from q) and return what it drew.

        Args:
            x: images ``[B, C, H, W]`` in [0, 1].

        Returns:
            The canvases ``[T+1, B, C, H, W]`` in [0, 1] and the read and write glimpses per step
            (None without attention).
        """
        with self._recording() as trajectory, poutine.block():
            self.guide(x)
        self._guide_pass = None
        canvases = torch.sigmoid(torch.stack(trajectory.canvases))
        if not self.config.attention:
            return Reconstruction(canvases, None, None)
        return Reconstruction(canvases, Glimpse.stack(trajectory.reads), Glimpse.stack(trajectory.writes))
