"""The zoo's own models; each is registered under ``[project.entry-points."drawzoo.models"]``."""

from .base import ZooModel
from .draw import DRAW, DrawConfig
from .vae import VAE, VAEConfig

__all__ = ["ZooModel", "DRAW", "DrawConfig", "VAE", "VAEConfig"]
