"""Masks of partially observed images: True where a pixel is observed, False where it is missing.

A mask is a bool tensor broadcastable to the images ``[B, C, H, W]`` it goes with (`check_mask`);
``model(x, mask=m)`` and ``guide(x, mask=m)`` of every zoo model take one. The named masks
(`NAMES`, what ``--mask`` takes) say which part is *missing*:

- ``top`` / ``bottom``: rows ``0 .. H//2 - 1`` / rows ``H//2 .. H-1`` missing (complements of each other);
- ``left`` / ``right``: columns ``0 .. W//2 - 1`` / columns ``W//2 .. W-1`` missing;
- ``centre``: the centred rectangle of ``H//2`` by ``W//2`` pixels missing;
- ``random:P``: each pixel (all its channels) missing with probability P in (0, 1), independently per
  image, from a generator seeded with `seed`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError

#: The masks `named_mask` makes, by name: the half of the image hidden, the centre, or ``random:P``
#: (each pixel hidden with probability P)
NAMES = ("top", "bottom", "left", "right", "centre", "random:P")


def check_mask(mask, shape, *, device=None, name: str = "mask") -> Tensor:
    """`mask` as a bool tensor expanded (a view, no copy) to `shape` ``[B, C, H, W]``, on `device`.

    Raises `InputError` unless it is a bool tensor or numpy array whose shape broadcasts to `shape`.
    """
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    if not isinstance(mask, Tensor):
        raise InputError(f"{name} must be a bool tensor (True where a pixel is observed), got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise InputError(f"{name} must be a bool tensor (True where a pixel is observed), got dtype {mask.dtype}"
                         + (" (use mask > 0.5 or mask.bool())" if mask.is_floating_point() or mask.dtype == torch.uint8
                            else ""))
    shape = tuple(shape)
    try:
        fits = mask.dim() <= len(shape) and torch.broadcast_shapes(mask.shape, shape) == shape
    except RuntimeError:
        fits = False
    if not fits:
        raise InputError(f"{name} of shape {list(mask.shape)} does not broadcast to the images {list(shape)} "
                         "[B, C, H, W]")
    return mask.to(device).expand(shape)


def named_mask(name: str, image_shape, n: int = 1, seed: int = 0) -> Tensor:
    """The mask `name` (one of `NAMES`) for `n` images of `image_shape` (C, H, W): bool ``[n, 1, H, W]``."""
    _, H, W = image_shape
    if check_name(name).startswith("random:"):
        g = torch.Generator().manual_seed(seed)
        return torch.rand(n, 1, H, W, generator=g) >= float(name.split(":", 1)[1])
    rows, cols = torch.arange(H)[:, None], torch.arange(W)[None, :]
    missing = {
        "top": rows < H // 2, "bottom": rows >= H // 2, "left": cols < W // 2, "right": cols >= W // 2,
        "centre": ((rows >= H // 4) & (rows < H // 4 + H // 2) & (cols >= W // 4) & (cols < W // 4 + W // 2)),
    }[name]
    return ~missing.expand(H, W)[None, None].expand(n, 1, H, W)


def check_name(name: str) -> str:
    """`name` if it names a mask (`NAMES`; ``random:P`` with P in (0, 1)), else `InputError`."""
    if isinstance(name, str) and name.startswith("random:"):
        try:
            p = float(name.split(":", 1)[1])
        except ValueError:
            p = float("nan")
        if not 0 < p < 1:
            raise InputError(f"mask {name!r}: random:P needs P in (0, 1), the fraction of pixels missing "
                             "(e.g. random:0.5)")
    elif name not in NAMES:
        raise InputError(f"unknown mask {name!r}; one of {', '.join(NAMES)} (P: the fraction of pixels missing)")
    return name
