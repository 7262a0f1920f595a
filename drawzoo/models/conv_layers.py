"""Convolutional network parts for feature maps of any leading batch shape ``[..., B, C, H, W]``
(Pyro's particles and samples left of the data plate): channel concatenation, convolutions on
such maps, a convolutional LSTM cell, a Gaussian head, and the stride arithmetic that takes an
image down to a coarser grid and back to its exact size (odd sizes too)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import GaussianPosterior, lstm_update


def cat_maps(*maps: Tensor) -> Tensor:
    """Concatenate feature maps ``[..., C_i, H, W]`` along the channels, broadcasting their batch shapes."""
    batch = maps[0].shape[:-3]
    if any(m.shape[:-3] != batch for m in maps):
        batch = torch.broadcast_shapes(*(m.shape[:-3] for m in maps))
        maps = tuple(m.expand(*batch, *m.shape[-3:]) for m in maps)
    return torch.cat(maps, dim=-3)


def on_maps(layer: nn.Module, x: Tensor) -> Tensor:
    """`layer`, a 2-d convolution of ``[N, C, H, W]``, applied to ``[..., C, H, W]``: the leading
    dimensions are flattened around it."""
    if x.dim() == 4:
        return layer(x)
    y = layer(x.reshape(-1, *x.shape[-3:]))
    return y.view(*x.shape[:-3], *y.shape[-3:])


def coarse_size(size: int, stride: int) -> int:
    """The side ``ceil(size / stride)`` that a stride-`stride` convolution with odd kernel and
    ``kernel // 2`` padding takes a side of `size` pixels to."""
    return -(-size // stride)


def downsample(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Conv2d:
    """A convolution taking ``[..., in, H, W]`` to ``[..., out, ceil(H / stride), ceil(W / stride)]`` (odd kernel)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)


def upsample(in_channels: int, out_channels: int, kernel_size: int, stride: int,
             size: tuple[int, int]) -> nn.ConvTranspose2d:
    """The transposed convolution taking `downsample`'s grid ``[..., in, ceil(H / s), ceil(W / s)]``
    back to exactly ``[..., out, H, W]``, `size` = ``(H, W)`` (odd kernel; its output padding, in
    ``[0, stride - 1]``, makes up what the rounding up lost)."""
    padding = kernel_size // 2
    extra = tuple(n - 1 - (coarse_size(n, stride) - 1) * stride for n in size)
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              output_padding=extra)


class ConvLSTMCell(nn.Conv2d):
    """A convolutional LSTM cell (Shi et al. 2015, without peepholes): one convolution of
    ``[input, h]`` gives the four gates (i, f, g, o, as `nn.LSTMCell`) at every position.

    ``cell(inputs, (h, c))`` with inputs ``[..., in, H, W]`` and a state ``(h, c)`` each
    ``[..., hidden, H, W]``, of batch shapes that broadcast; returns the new ``(h, c)``.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int):
        super().__init__(in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, inputs: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = on_maps(super().forward, cat_maps(inputs, h))
        return lstm_update(gates, c, dim=-3)


class ConvGaussian(nn.Conv2d):
    """``h [..., in, H, W] -> (mu, sigma)`` each ``[..., latent, H, W]``: a convolution giving the
    mean and log-scale maps, ``sigma = exp(log-scale)`` clamped as `GaussianPosterior` does."""

    def __init__(self, in_channels: int, latent_channels: int, kernel_size: int):
        super().__init__(in_channels, 2 * latent_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return GaussianPosterior.split(on_maps(super().forward, h), dim=-3)
