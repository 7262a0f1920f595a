"""The yardstick for `speed.py`: the paper's loss in one plain PyTorch pass, no Pyro.

`draw_loss` runs the same modules (same weights) as the zoo's DRAW -- read, encoder, posterior,
decoder, write -- once per step and returns L^x + L^z per image (nats) with the KL in closed form,
as a hand-written DRAW would. `vae_loss` is the same for the VAE. Not part of the package.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def analytic_kl(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(Normal(mu, sigma) || Normal(0, I)) per row, nats: 1/2 sum(mu^2 + sigma^2 - log sigma^2 - 1)."""
    return 0.5 * (mu ** 2 + sigma ** 2 - 2 * torch.log(sigma) - 1).sum(-1)


def draw_loss(m, x: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of L^x + L^z (nats) for DRAW module `m` and images `x` [B, C, H, W]."""
    B = x.shape[0]
    h_dec = x.new_zeros(B, m.config.hidden_dim)
    dec, enc = (h_dec, torch.zeros_like(h_dec)), (h_dec, torch.zeros_like(h_dec))
    canvas = torch.zeros_like(x)
    L_z = x.new_zeros(B)
    for _ in range(m.config.T):
        x_hat = x - torch.sigmoid(canvas)
        r, _ = m.reader(x, x_hat, dec[0])
        enc = m.encoder(torch.cat([r, dec[0]], dim=-1), enc)
        mu, sigma = m.posterior(enc[0])
        z = mu + sigma * torch.randn_like(mu)
        L_z = L_z + analytic_kl(mu, sigma)
        dec = m.decoder(z, dec)
        canvas = canvas + m.writer(dec[0])[0]
    L_x = F.binary_cross_entropy_with_logits(canvas, x, reduction="none").flatten(1).sum(-1)
    return (L_x + L_z).mean()


def vae_loss(m, x: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the VAE's negative ELBO (nats), analytic KL."""
    mu, sigma = m.posterior(m.encoder(x))
    z = mu + sigma * torch.randn_like(mu)
    L_x = F.binary_cross_entropy_with_logits(m.decoder(z), x, reduction="none").flatten(1).sum(-1)
    return (L_x + analytic_kl(mu, sigma)).mean()


LOSSES = {"draw": draw_loss, "vae": vae_loss}
