"""DRAW's Gaussian-filterbank attention (read/write) and the no-attention variants."""

from .gaussian import (
    LOG_BOUND,
    MAX_COORD,
    MAX_SIGMA2,
    MIN_SIGMA2,
    Glimpse,
    attention_params,
    filterbank,
    filterbanks,
    read,
    bounded_exp,
    write,
)
from .heads import FullRead, FullWrite, GaussianRead, GaussianWrite, covering_glimpse_bias

__all__ = [
    "LOG_BOUND", "MAX_COORD", "MAX_SIGMA2", "MIN_SIGMA2", "Glimpse", "attention_params", "filterbank", "filterbanks", "read",
    "bounded_exp", "write", "FullRead", "FullWrite", "GaussianRead", "GaussianWrite",
    "covering_glimpse_bias",
]
