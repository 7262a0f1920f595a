"""DRAW's selective attention: an N x N grid of 2-D Gaussian filters (Gregor et al. 2015, sec. 3.2).

All functions take any leading batch dimensions ``[...]`` (the images of a batch, and left of them
whatever Pyro adds: vectorised particles, parallel `Predictive` samples) and work on grey or
colour images; the same filters are applied to every channel. Coordinates are in pixels, 1-based as in the paper, so that
the grid centre ``g~ = 0`` maps to the image centre ``(size + 1) / 2``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

#: Bound on the log-scale attention parameters (log sigma^2, log delta~, log gamma) before ``exp``:
#: keeps them finite for any decoder state (``|h_dec|`` up to 1e4 and beyond); values inside
#: (-10, 10), a factor of 22026 either way, pass unchanged.
LOG_BOUND = 10.0

#: Range of sigma^2 and of filter centres inside the filterbank. Within it every term of the
#: Gaussian and of its gradient is a finite float32, so extreme parameters give zero weights
#: and zero gradients instead of inf * 0 = NaN.
MIN_SIGMA2, MAX_SIGMA2 = 1e-4, 1e8
MAX_COORD = 1e6


class Glimpse(NamedTuple):
    """Attention parameters of a grid, in pixel units; each ``[...]`` (``[T, ...]`` when stacked)."""

    g_x: Tensor  #: grid centre, x (column), 1-based
    g_y: Tensor  #: grid centre, y (row), 1-based
    delta: Tensor  #: stride between neighbouring filters
    sigma2: Tensor  #: isotropic variance of every filter
    gamma: Tensor  #: intensity: read multiplies by gamma, write divides by it

    @classmethod
    def stack(cls, glimpses: list["Glimpse"]) -> "Glimpse":
        """Stack per-step glimpses ``[...]`` into one of ``[T, ...]`` tensors."""
        return cls(*(torch.stack(field) for field in zip(*glimpses)))


def bounded_exp(v: Tensor, bound: float = LOG_BOUND) -> Tensor:
    """``exp(v)`` with `v` clamped to [-bound, bound]."""
    return torch.exp(v.clamp(-bound, bound))


def attention_params(raw: Tensor, N: int, height: int, width: int) -> Glimpse:
    """Map ``raw = W h_dec`` ``[..., 5]`` = (g~x, g~y, log sigma^2, log delta~, log gamma) to a Glimpse.

    The paper's scalings, per axis (the x axis spans the width, the y axis the height)::

        g_x   = (W + 1) / 2 * (g~x + 1)
        g_y   = (H + 1) / 2 * (g~y + 1)
        delta = (max(H, W) - 1) / (N - 1) * delta~

    (for N = 1 the stride is irrelevant and the divisor is taken as 1). The three log-scale values
    are clamped to +-`LOG_BOUND` before ``exp``.
    """
    gx_t, gy_t, log_sigma2, log_delta_t, log_gamma = raw.unbind(-1)
    g_x = (width + 1) / 2 * (gx_t + 1)
    g_y = (height + 1) / 2 * (gy_t + 1)
    delta = (max(height, width) - 1) / max(N - 1, 1) * bounded_exp(log_delta_t)
    sigma2 = bounded_exp(log_sigma2)
    gamma = bounded_exp(log_gamma)
    return Glimpse(g_x, g_y, delta, sigma2, gamma)


def filterbank(center: Tensor, delta: Tensor, sigma2: Tensor, N: int, size: int, eps: float = 1e-8) -> Tensor:
    """One axis of the filterbank, ``[..., N, size]``; `center`, `delta`, `sigma2` are ``[...]``.

    Filter i (1..N) is centred at ``mu_i = center + (i - N/2 - 0.5) * delta`` and weighs pixel
    a (1..size) by ``exp(-(a - mu_i)^2 / (2 sigma^2))``; each row is divided by its sum (+ eps).
    Centres and sigma^2 are clamped to the finite ranges above (`MAX_COORD`, `MIN_SIGMA2`,
    `MAX_SIGMA2`), where the weights are 0 (or uniform) anyway.
    """
    i = torch.arange(1, N + 1, device=center.device, dtype=center.dtype)
    a = torch.arange(1, size + 1, device=center.device, dtype=center.dtype)
    mu = (center[..., None] + (i - N / 2 - 0.5) * delta[..., None]).clamp(-MAX_COORD, MAX_COORD)  # [..., N]
    sigma2 = sigma2.clamp(MIN_SIGMA2, MAX_SIGMA2)[..., None, None]
    F = torch.exp(-((a - mu[..., None]) ** 2) / (2 * sigma2))  # [..., N, size]
    return F / (F.sum(-1, keepdim=True) + eps)


def filterbanks(glimpse: Glimpse, N: int, height: int, width: int) -> tuple[Tensor, Tensor]:
    """``(F_x [..., N, W], F_y [..., N, H])`` for a Glimpse."""
    F_x = filterbank(glimpse.g_x, glimpse.delta, glimpse.sigma2, N, width)
    F_y = filterbank(glimpse.g_y, glimpse.delta, glimpse.sigma2, N, height)
    return F_x, F_y


def read(x: Tensor, F_x: Tensor, F_y: Tensor, gamma: Tensor) -> Tensor:
    """The glimpse ``gamma * F_y x F_x^T`` of images ``x [..., C, H, W]``, per channel: ``[..., C, N, N]``."""
    F_x, F_y = F_x.unsqueeze(-3), F_y.unsqueeze(-3)  # [..., 1, N, W], [..., 1, N, H]: every channel
    if torch.compiler.is_compiling():  # products and sums, which inductor fuses into a few loops
        Fy_x = (F_y[..., None] * x[..., None, :, :]).sum(-2)  # [..., C, N, W]
        return gamma[..., None, None, None] * (Fy_x[..., None, :] * F_x[..., None, :, :]).sum(-1)
    # eagerly: (F_y x) F_x^T, written as (F_x (F_y x)^T)^T so that F_x's gradient comes out in F_x's own layout
    return gamma[..., None, None, None] * (F_x @ (F_y @ x).mT).mT


def write(w: Tensor, F_x: Tensor, F_y: Tensor, gamma: Tensor) -> Tensor:
    """The canvas update ``(1 / gamma) * F_y^T w F_x`` of patches ``w [..., C, N, N]``: ``[..., C, H, W]``."""
    F_x, F_y = F_x.unsqueeze(-3), F_y.unsqueeze(-3)  # [..., 1, N, W], [..., 1, N, H]: every channel
    if torch.compiler.is_compiling():  # as in `read`: 1.6x as fast as two batched products there
        w_Fx = (w[..., None] * F_x[..., None, :, :]).sum(-2)  # [..., C, N, W]
        return (F_y[..., None] * w_Fx[..., None, :]).sum(-3) / gamma[..., None, None, None]
    # eagerly: F_y^T (w F_x), written as ((w F_x)^T F_y)^T so that F_y's gradient comes out in F_y's own layout
    return ((w @ F_x).mT @ F_y).mT / gamma[..., None, None, None]
