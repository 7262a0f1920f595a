"""Dynamic binarization as a seeded protocol (the IWAE paper's MNIST benchmark, Burda et al. 2016):
a training run sees a fresh Bernoulli draw of the grey levels each epoch, and the valid and test
splits are scored on one fixed draw.

Pixel j of the image with key k (its index in its source file, ``keys`` of `ImageDataset`) is 1 where
``u < p``, p its grey level and u a uniform number that a counter-based hash makes of
``(draw, k, j)``: no RNG state, so the draw is the same at every access, in every process and on
every platform, whatever the batches, their order, the number of training processes or a resume.
A draw is `FIXED` (the scoring draw) or ``epoch(seed, e)``: epoch e of a run seeded `seed`.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The draw that valid and test splits (and any data set outside training) are binarized with.
FIXED = None
_M32 = 0xFFFFFFFF
_CHUNK = 4096  #: images hashed at a time (bounds the int64 temporaries of ``ds[:]``)


def epoch(seed: int, e: int) -> tuple[int, int]:
    """The draw of epoch `e` (0-based) of a training run seeded `seed`."""
    return int(seed), int(e)


def _hash32(x: Tensor) -> Tensor:
    """A 32-bit integer hash of int64 values in [0, 2^32) (lowbias32's xor-shifts; multipliers below
    2^31, so that no int64 product overflows)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _M32
    return x ^ (x >> 16)


def _stream(draw) -> int:
    """A 32-bit code of `draw`: `FIXED` is ``epoch(0, -1)``."""
    seed, e = (0, -1) if draw is FIXED else draw
    h = _hash32(torch.tensor(seed & _M32))
    return int(_hash32(h ^ ((e + 1) & _M32)))


def uniform_codes(keys: Tensor, pixels: int, draw) -> Tensor:
    """The integers ``[B, pixels]`` in [0, 2^32) of images with `keys` ``[B]`` in `draw`: u * 2^32."""
    per_image = _hash32((keys.to(torch.int64) & _M32) ^ _stream(draw))
    return _hash32(per_image[:, None] ^ torch.arange(pixels))


def bernoulli(x: Tensor, keys: Tensor, draw) -> Tensor:
    """A float32 Bernoulli draw of the probabilities `x` ``[C, H, W]`` or ``[B, C, H, W]`` of the
    images with `keys` (a scalar or ``[B]``) in `draw` (`FIXED` or an `epoch`)."""
    flat = x.reshape(keys.numel(), -1)
    out = torch.empty_like(flat)
    keys = keys.reshape(-1)
    for start in range(0, len(flat), _CHUNK):
        p = flat[start:start + _CHUNK].to(torch.float64)
        codes = uniform_codes(keys[start:start + _CHUNK], flat.shape[1], draw)
        out[start:start + _CHUNK] = (codes.to(torch.float64) + 0.5 < p * 2.0 ** 32).to(out.dtype)
    return out.view_as(x)
