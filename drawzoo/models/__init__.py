"""The zoo's own models; each is registered under ``[project.entry-points."drawzoo.models"]``."""

from .base import ZooModel
from .conv_vae import ConvVAE, ConvVAEConfig
from .conv_draw import ConvDRAW, ConvDrawConfig
from .draw import DRAW, DrawConfig
from .hvae import HVAE, HVAEConfig
from .vae import VAE, VAEConfig

__all__ = ["ZooModel", "ConvDRAW", "ConvDrawConfig", "ConvVAE", "ConvVAEConfig", "DRAW", "DrawConfig", "HVAE", "HVAEConfig",
           "VAE", "VAEConfig"]
