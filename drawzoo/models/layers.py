"""Network parts that zoo models share, written for any leading batch shape ``[..., B, ...]``
(Pyro's particles and samples left of the data plate): LSTM steps, feature concatenation, and
the Gaussian posterior head of DRAW and the VAE."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..attention import bounded_exp


def cat_features(*tensors: Tensor) -> Tensor:
    """Concatenate ``[..., n_i]`` tensors along the last dimension, broadcasting their batch shapes."""
    batch = tensors[0].shape[:-1]
    if any(t.shape[:-1] != batch for t in tensors):
        batch = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
        tensors = tuple(t.expand(*batch, t.shape[-1]) for t in tensors)
    return torch.cat(tensors, dim=-1)


def lstm_step(cell: nn.LSTMCell, inputs: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """One `nn.LSTMCell` step for inputs ``[..., in]`` and a state ``(h, c)`` each ``[..., hidden]``
    of any batch shapes that broadcast (e.g. a zero state ``[B, hidden]`` and inputs
    ``[K, B, in]`` of K vectorised particles): the batch is flattened for the cell, not looped over."""
    h, c = state
    if inputs.dim() == 2 and inputs.shape[:-1] == h.shape[:-1] == c.shape[:-1]:
        return cell(inputs, state)
    batch = torch.broadcast_shapes(inputs.shape[:-1], h.shape[:-1], c.shape[:-1])
    flat = [t.expand(*batch, t.shape[-1]).reshape(-1, t.shape[-1]) for t in (inputs, h, c)]
    h, c = cell(flat[0], (flat[1], flat[2]))
    return h.view(*batch, -1), c.view(*batch, -1)


def lstm_update(gates: Tensor, cell: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """`nn.LSTMCell`'s update from its gate pre-activations ``W_ih x + b_ih + W_hh h + b_hh``
    ``[..., 4 hidden]`` (i, f, g, o) and the cell ``[..., hidden]``: returns ``(h, cell)``. The
    gates are stacked along `dim` (a convolutional LSTM's ``[..., 4 hidden, H, W]``: ``dim=-3``)."""
    i, f, g, o = gates.chunk(4, dim=dim)
    cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(cell), cell


class GaussianPosterior(nn.Linear):
    """``h [..., in] -> (mu, sigma)`` each ``[..., latent_dim]``, with ``sigma = exp(W h + b)``.

    The log-scale is clamped to [-10, 10] so that sigma stays finite and positive.
    """

    def __init__(self, in_dim: int, latent_dim: int):
        super().__init__(in_dim, 2 * latent_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.split(super().forward(h))

    @staticmethod
    def split(out: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
        """``W h + b`` ``[..., 2 latent_dim]`` -> ``(mu, sigma)``, halves of `dim` (a feature map's
        channels: ``dim=-3``)."""
        mu, log_sigma = out.chunk(2, dim=dim)
        return mu, bounded_exp(log_sigma)
