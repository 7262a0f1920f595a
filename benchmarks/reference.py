"""The yardstick for `speed.py`: the paper's loss in one plain PyTorch pass, no Pyro.

`draw_loss` runs the same modules (same weights) as the zoo's DRAW -- read, encoder, posterior,
decoder, write -- once per step and returns L^x + L^z per image (nats) with the KL in closed form,
as a hand-written DRAW would. `vae_loss` is the same for the VAEs (`vae`, `conv_vae`, `hvae` with
one or more stochastic layers, through their pure tensor step functions), on the bound that
drawzoo's objective computes: ``particles=1``, the objective "elbo" (L^x + the analytic KL of the
top layer, Monte Carlo terms for the layers below); ``particles=K``, "iwae" with K particles drawn
in one vectorised pass. Not part of the package.
"""

from __future__ import annotations

import math

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


def normal_log_prob(z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log Normal(z; mu, sigma) summed over the last dimension (nats)."""
    return (-0.5 * ((z - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(-1)


def vae_loss(m, x: torch.Tensor, particles: int = 1) -> torch.Tensor:
    """Mean over the batch of a VAE's bound (nats) for images `x` [B, C, H, W] with Bernoulli
    pixels: the negative ELBO with the top layer's KL analytic (``particles=1``), or the IWAE bound
    -log mean_k w_k over K particles ``[K, B, ...]`` (``particles=K > 1``)."""
    layers = getattr(m, "layers", None)  # hvae: L stochastic layers, z_1 next to x; vae, conv_vae: one
    encoders = [m.encode] if layers is None else [lambda h, l=l: m.encode(h, l) for l in range(1, layers + 1)]
    h, zs = x.expand(particles, *x.shape) if particles > 1 else x, []
    for encode in encoders:
        mu, sigma = encode(h)
        h = mu + sigma * torch.randn_like(mu)
        zs.append((h, mu, sigma))
    logits = m.decode(zs[0][0])
    log_w = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(-3).sum(-1)
    for l in range(1, len(zs)):  # log p(z_l | z_l+1) - log q(z_l | z_l-1), Monte Carlo
        log_w = log_w + normal_log_prob(zs[l - 1][0], *m.prior(zs[l][0], l)) - normal_log_prob(*zs[l - 1])
    z, mu, sigma = zs[-1]
    if particles == 1:
        return (analytic_kl(mu, sigma) - log_w).mean()
    log_w = log_w - 0.5 * (z ** 2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi) - normal_log_prob(z, mu, sigma)
    return (math.log(particles) - torch.logsumexp(log_w, 0)).mean()


LOSSES = {"draw": draw_loss, "vae": vae_loss, "hvae": vae_loss, "conv_vae": vae_loss}
