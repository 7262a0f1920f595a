"""Tiny instances of every zoo model: the tests every zoo model must pass (test_pyro_native.py,
test_masks.py, ...) parametrize over `tiny_models`. A new zoo model adds its entries here;
test_registry.py fails while a registered model has none."""

from __future__ import annotations

from typing import Callable

import drawzoo

TINY_DRAW = dict(T=3, hidden_dim=16, latent_dim=4, read_size=3, write_size=3)
TINY_CONV_VAE = dict(channels=(4, 8), latent_dim=4)
TINY_CONV_DRAW = dict(T=3, hidden_channels=4, latent_channels=2, kernel_size=3, stride=2)


def tiny_models(image_shape=(1, 28, 28)) -> dict[str, Callable[[], drawzoo.models.ZooModel]]:
    """``{case: factory}`` of small models of every registered kind, for images of `image_shape`."""
    s = tuple(image_shape)
    small_draw = dict(TINY_DRAW, read_size=min(3, s[1], s[2]), write_size=min(3, s[1], s[2]))
    return {
        "draw": lambda: drawzoo.load("draw", image_shape=s, **small_draw),
        "draw-no-attention": lambda: drawzoo.load("draw", image_shape=s, **small_draw, attention=False),
        "conv_draw": lambda: drawzoo.load("conv_draw", image_shape=s, **TINY_CONV_DRAW),
        "conv_draw-logistic": lambda: drawzoo.load("conv_draw", image_shape=s, **TINY_CONV_DRAW, likelihood="logistic"),
        "vae": lambda: drawzoo.load("vae", image_shape=s, hidden_dim=32, latent_dim=4),
        "hvae": lambda: drawzoo.load("hvae", image_shape=s, latent_dims=(6, 3), hidden_dims=(16, 8)),
        "hvae-one-layer": lambda: drawzoo.load("hvae", image_shape=s, latent_dims=(4,), hidden_dims=(16,)),
        "conv_vae": lambda: drawzoo.load("conv_vae", image_shape=s, **TINY_CONV_VAE),
        "conv_vae-logistic": lambda: drawzoo.load("conv_vae", image_shape=s, **TINY_CONV_VAE, likelihood="logistic"),
    }
