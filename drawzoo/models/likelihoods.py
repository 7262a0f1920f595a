"""The named pixel likelihoods p(x | z) of a model's ``likelihood`` config field.

A decoder outputs ``params_per_channel`` maps per image channel, ``[..., B, k*C, H, W]``, and the
likelihood turns them into the distribution of the images, one event per image (``to_event(3)``);
with a bool mask broadcastable to the pixels, only those where it is True count (``.mask`` before
``to_event``: an unobserved pixel adds 0 to the log-probability). Log-probabilities are in nats.

- ``"bernoulli"`` (k = 1, logits): for binary images; on grey values it is the cross-entropy
  reconstruction score (not a normalised likelihood), as DRAW's paper uses it.
- ``"logistic"`` (k = 2: locations, then log-scales): `DiscretizedLogistic` over the 256 levels
  k/255 of 8-bit grey or colour images (Salimans et al. 2017, PixelCNN++; Kingma et al. 2016,
  IAF), a normalised likelihood, so that its figures are those of the colour literature (bits per
  dimension). Data off that grid is an `InputError` (`PixelLikelihood.check_data`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all
from torch.nn.functional import logsigmoid

from ..config import param
from ..data.images import has_values
from ..errors import ConfigError, InputError

LEVELS = 256  #: the values k / 255, k = 0..255, of an 8-bit image
HALF_BIN = 0.5 / (LEVELS - 1)  #: half the width of a level's bin, in [0, 1] units
#: `DiscretizedLogistic`'s log-scale is clamped to this range: a scale of at least e^-8 ~ 0.09 of a
#: level (a bin may hold up to 99.4% of the mass), at most e^8 (flat: the probability stays finite).
LOG_SCALE_RANGE = (-8.0, 8.0)
GRID_TOLERANCE = 1e-2  #: how far (in levels) a value may be from k / 255 and still be k / 255


class _EightBit(constraints.Constraint):
    """The values k / 255, k = 0..255."""

    is_discrete = True
    event_dim = 0

    def check(self, value: Tensor) -> Tensor:
        levels = value * (LEVELS - 1)
        return (value >= 0) & (value <= 1) & ((levels - levels.round()).abs() <= GRID_TOLERANCE)


eight_bit = _EightBit()


def off_grid(x: Tensor) -> Tensor:
    """Bool ``x.shape``: where `x` is not one of the 8-bit values k / 255."""
    return ~eight_bit.check(x)


class DiscretizedLogistic(dist.TorchDistribution):
    """The discretised logistic over the 256 levels k / 255 of a pixel: the logistic
    ``Y ~ Logistic(loc, exp(log_scale))`` rounded to the nearest level, with the tails below 0 and
    above 1 falling on levels 0 and 255 (Salimans et al. 2017, eq. 2). One value per element of
    the batch shape (``loc`` and ``log_scale`` broadcast); `log_prob` in nats.

    With bin edges ``a, b = (x -+ 0.5/255 - loc) / s``, an inner level has probability
    ``sigmoid(b) - sigmoid(a)``, taken in log space as ``logsigmoid(b) + logsigmoid(-a) + log(1 - e^(a - b))``
    (exact, also where the difference is below float precision: this is why PixelCNN++
    switches to the density at the bin centre there; here no switch is needed), level 0
    ``logsigmoid(b)`` and level 255 ``logsigmoid(-a)``. ``log_scale`` is clamped to
    `LOG_SCALE_RANGE`.
    """

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    support = eight_bit
    has_rsample = False

    def __init__(self, loc, log_scale, validate_args=None):
        self.loc, log_scale = broadcast_all(loc, log_scale)
        self.log_scale = log_scale.clamp(*LOG_SCALE_RANGE)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc, new.log_scale = self.loc.expand(batch_shape), self.log_scale.expand(batch_shape)
        super(DiscretizedLogistic, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        inv_scale = torch.exp(-self.log_scale)
        lower = inv_scale * (value - HALF_BIN - self.loc)
        upper = inv_scale * (value + HALF_BIN - self.loc)
        below, above = logsigmoid(upper), logsigmoid(-lower)  # log P(Y < upper edge), log P(Y > lower edge)
        width = inv_scale * (2 * HALF_BIN)  # upper - lower, > 0
        inner = below + above + torch.log(-torch.expm1(-width))
        level = torch.round(value * (LEVELS - 1))
        return torch.where(level <= 0, below, torch.where(level >= LEVELS - 1, above, inner))

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            tiny = torch.finfo(self.loc.dtype).tiny
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(tiny, 1 - 1e-7)
            y = self.loc + torch.exp(self.log_scale) * (torch.log(u) - torch.log1p(-u))
            return torch.round(y * (LEVELS - 1)).clamp(0, LEVELS - 1) / (LEVELS - 1)

    @property
    def mean(self) -> Tensor:
        """``E[X] = sum_k P(X >= k / 255) / 255`` over k = 1..255, exactly (a sum of 255 sigmoids)."""
        inv_scale = torch.exp(-self.log_scale)
        total = torch.zeros_like(self.loc)
        for k in range(1, LEVELS):
            total = total + torch.sigmoid(inv_scale * (self.loc - (k / (LEVELS - 1) - HALF_BIN)))
        return total / (LEVELS - 1)


@dataclasses.dataclass(frozen=True)
class PixelLikelihood:
    """A named pixel likelihood: the decoder outputs `params_per_channel` maps per image channel."""

    name: str
    params_per_channel: int
    help: str
    _pixels: Callable[[Tensor], dist.Distribution]
    #: a cheap point reading ``[..., B, C, H, W]`` of the images from the decoder's output (for the
    #: error images of DRAW-like encoders): the sigmoid of the logits, or the logistic's locations
    _point: Callable[[Tensor], Tensor]
    on_grid: bool = False  #: whether the images must be 8-bit values k / 255 (`check_data`)

    def distribution(self, out: Tensor, mask: Tensor | None = None) -> dist.Distribution:
        """The images' distribution from the decoder's output `out` ``[..., B, k*C, H, W]``, one event
        per image ``[C, H, W]``; with a bool `mask` only the pixels where it is True count."""
        pixels = self._pixels(out)
        return (pixels if mask is None else pixels.mask(mask)).to_event(3)

    def point(self, out: Tensor) -> Tensor:
        """A cheap point reading of the images ``[..., B, C, H, W]`` from the decoder's output:
        ``sigmoid(logits)`` for "bernoulli" (its mean), the locations for "logistic" (its median
        before the rounding; the mean is a sum of 255 sigmoids)."""
        return self._point(out)

    def mean(self, out: Tensor) -> Tensor:
        """The images' mean ``[..., B, C, H, W]`` in [0, 1] from the decoder's output."""
        return self._pixels(out).mean

    def check_data(self, x: Tensor, name: str = "x") -> Tensor:
        """`x` (images in [0, 1]), or an `InputError` if this likelihood cannot score it (a cheap check;
        none on a tensor without values, `drawzoo.data.images.has_values`)."""
        if self.on_grid and has_values(x):
            bad = off_grid(x)
            if bool(bad.any()):
                raise InputError(
                    f"{name} has {int(bad.sum())} values that are not 8-bit levels k/255 (e.g. {x[bad][0].item():.6g}): "
                    f"the {self.name!r} likelihood scores 256-level images; quantise them (torch.round(x * 255) / 255) "
                    f"or use likelihood='bernoulli'")
        return x


def _bernoulli(logits: Tensor) -> dist.Distribution:
    # support validation off: on grey values its log-probability is the cross-entropy score
    return dist.Bernoulli(logits=logits, validate_args=False)


def _logistic(out: Tensor) -> dist.Distribution:
    loc, log_scale = out.unflatten(-3, (2, -1)).unbind(-4)
    return DiscretizedLogistic(loc, log_scale)


def _logistic_loc(out: Tensor) -> Tensor:
    return out.unflatten(-3, (2, -1))[..., 0, :, :, :]


LIKELIHOODS = {
    "bernoulli": PixelLikelihood("bernoulli", 1, "Bernoulli(logits) per pixel and channel", _bernoulli, torch.sigmoid),
    "logistic": PixelLikelihood("logistic", 2, "discretised logistic over the 256 levels of 8-bit images "
                                "(PixelCNN++), loc and log-scale maps", _logistic, _logistic_loc, on_grid=True),
}
DEFAULT = "bernoulli"


def get(name: str) -> PixelLikelihood:
    """The likelihood `name` of `LIKELIHOODS`; `ConfigError` naming the valid ones otherwise."""
    try:
        return LIKELIHOODS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"config 'likelihood' must be one of {', '.join(map(repr, LIKELIHOODS))}, "
                          f"got {name!r}") from None


def config_field(default: str = DEFAULT):
    """A model config's ``likelihood`` field (`drawzoo.config.param`: its help line and choices);
    check it in ``__post_init__`` with `get`. A checkpoint written before a model had the field
    loads with its default, "bernoulli", which is what models computed before."""
    return param(default, "p(x | z) of each pixel and channel: bernoulli (logits), or logistic (a discretised "
                 "logistic over 256 levels, for 8-bit grey or colour images)", choices=tuple(LIKELIHOODS))
