"""Read and write heads: the learned maps from the decoder state to what DRAW reads and writes.

Each reader returns ``(r [..., out_dim], Glimpse | None)`` for images, error images and the
previous decoder state; each writer returns ``(update [..., C, H, W], Glimpse | None)`` for the
current decoder state. ``[...]`` is any batch shape: the images, and Pyro's particle or sample
dimensions left of them; inputs of different batch shapes are broadcast. The ``Full*`` heads are the paper's no-attention variants.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .gaussian import Glimpse, attention_params, filterbanks, read, write


def covering_glimpse_bias(N: int, height: int, width: int, *, write: bool = False) -> Tensor:
    """Bias ``[5]`` of the h_dec -> attention map whose grid tiles the whole image.

    Centred (g~ = 0), stride ``delta = max(H, W) / N`` (N filters span the image) and
    ``sigma = delta / 2`` (neighbours overlap). Starting from here every filter sees a region of
    the image, so the encoder gets information at the first step. The default ``nn.Linear`` bias
    (about 0: delta~ = 1, sigma^2 = 1) puts a 2 x 2 read grid on the image border, where MNIST is
    blank, and DRAW then stalls at the pixel-marginal loss.

    Reading, gamma = 1 (a glimpse is a weighted mean). Writing (`write=True`),
    ``gamma = 1 / (2 pi sigma^2)``: a unit patch value then adds about one logit at a filter's
    centre, where gamma = 1 would add ``1 / (2 pi sigma^2)`` (0.02 for a 5 x 5 grid on 28 x 28)
    and the writes would take thousands of Adam steps to grow.
    """
    size = max(height, width)
    delta = size / N
    delta_t = delta * max(N - 1, 1) / (size - 1) if size > 1 else 1.0
    sigma2 = (delta / 2) ** 2
    log_gamma = -math.log(2 * math.pi * sigma2) if write else 0.0
    return torch.tensor([0.0, 0.0, math.log(sigma2), math.log(delta_t), log_gamma])


class _GlimpseMap(nn.Linear):
    """``h_dec [..., hidden] -> Glimpse`` for an N x N grid on an H x W image."""

    def __init__(self, hidden_dim: int, N: int, height: int, width: int, *, write: bool = False):
        super().__init__(hidden_dim, 5)
        self.N, self.height, self.width = N, height, width
        with torch.no_grad():
            self.bias.copy_(covering_glimpse_bias(N, height, width, write=write))

    def forward(self, h_dec: Tensor) -> Glimpse:
        return attention_params(super().forward(h_dec), self.N, self.height, self.width)


class GaussianRead(nn.Module):
    """``read(x, x_hat, h_dec_{t-1}) = [gamma F_y x F_x^T, gamma F_y x_hat F_x^T]``, flattened."""

    def __init__(self, hidden_dim: int, image_shape: tuple[int, int, int], N: int):
        super().__init__()
        C, H, W = image_shape
        self.N = N
        self.glimpse = _GlimpseMap(hidden_dim, N, H, W)
        self.out_dim = 2 * C * N * N

    def forward(self, x: Tensor, x_hat: Tensor, h_dec: Tensor) -> tuple[Tensor, Glimpse]:
        g = self.glimpse(h_dec)
        F_x, F_y = filterbanks(g, self.N, x.shape[-2], x.shape[-1])
        patches = read(torch.cat(torch.broadcast_tensors(x, x_hat), dim=-3), F_x, F_y, g.gamma)  # [..., 2C, N, N]
        return patches.flatten(-3), g


class GaussianWrite(nn.Module):
    """``write(h_dec_t) = (1 / gamma) F_y^T w_t F_x`` with the patch ``w_t = W(h_dec_t)`` ``[..., C, N, N]``."""

    def __init__(self, hidden_dim: int, image_shape: tuple[int, int, int], N: int):
        super().__init__()
        self.image_shape, self.N = tuple(image_shape), N
        C, H, W = image_shape
        self.glimpse = _GlimpseMap(hidden_dim, N, H, W, write=True)
        self.patch = nn.Linear(hidden_dim, C * N * N)

    def forward(self, h_dec: Tensor) -> tuple[Tensor, Glimpse]:
        C, H, W = self.image_shape
        g = self.glimpse(h_dec)
        F_x, F_y = filterbanks(g, self.N, H, W)
        w = self.patch(h_dec).unflatten(-1, (C, self.N, self.N))
        return write(w, F_x, F_y, g.gamma), g


class FullRead(nn.Module):
    """No attention: ``read(x, x_hat, h_dec_{t-1}) = [x, x_hat]``, flattened."""

    def __init__(self, hidden_dim: int, image_shape: tuple[int, int, int], N: int | None = None):
        super().__init__()
        self.out_dim = 2 * math.prod(image_shape)

    def forward(self, x: Tensor, x_hat: Tensor, h_dec: Tensor) -> tuple[Tensor, None]:
        return torch.cat(torch.broadcast_tensors(x, x_hat), dim=-3).flatten(-3), None


class FullWrite(nn.Module):
    """No attention: ``write(h_dec_t) = W(h_dec_t)``, a full-size canvas update."""

    def __init__(self, hidden_dim: int, image_shape: tuple[int, int, int], N: int | None = None):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.linear = nn.Linear(hidden_dim, math.prod(image_shape))

    def forward(self, h_dec: Tensor) -> tuple[Tensor, None]:
        return self.linear(h_dec).unflatten(-1, self.image_shape), None
