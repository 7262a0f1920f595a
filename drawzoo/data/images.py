"""Validation of image batches before any model work is done.

Every zoo model takes images as a float tensor ``[B, C, H, W]`` with values in [0, 1].
`check_images` enforces that, converting only where the conversion is lossless and obvious:

- a numpy array becomes a tensor; float64 (or any float) becomes the model's dtype;
- a tensor on another device is moved to the model's device;
- non-contiguous / channels-last tensors are accepted as they are (same result);
- everything else that is off (integer pixels, wrong rank or shape, an empty batch, NaN/inf,
  values outside [0, 1]) is an `InputError` that says what is wrong and, where it can, how to fix it.

A tensor without values (a fake tensor, while `drawzoo.training.step_capture` records a training step) has
its type, shape and dtype checked; its values are the real batch's, which the recorded step's
caller checks before every replay.
"""

from __future__ import annotations

import numpy as np
import torch
from torch._subclasses.fake_tensor import is_fake

from ..errors import InputError


def _shape(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def check_images(x, image_shape, *, device=None, dtype=torch.float32, name: str = "x") -> torch.Tensor:
    """`x` as a float tensor ``[B, C, H, W]`` (``(C, H, W) == image_shape``) with values in [0, 1].

    Raises `InputError` naming the problem: wrong type, rank, shape, empty batch, NaN/inf, or
    values outside [0, 1].
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor or numpy array [B, C, H, W], got {type(x).__name__}")
    expected = (x.shape[0] if x.dim() else 0, *image_shape)
    if x.dtype == torch.bool:
        x = x.to(dtype)
    elif not x.is_floating_point():
        hint = " (bytes 0..255? divide by 255 first: x / 255)" if x.dtype == torch.uint8 else ""
        raise InputError(f"{name} must hold floats in [0, 1], got dtype {x.dtype}{hint}")
    if x.dim() != 4:
        hint = " (a single image? add a batch dimension: x[None])" if tuple(x.shape) == tuple(image_shape) else ""
        raise InputError(
            f"{name} must have 4 dimensions [B, C, H, W] = {_shape(('B', *image_shape))}, "
            f"got {x.dim()}: {_shape(x.shape)}{hint}"
        )
    if tuple(x.shape[1:]) != tuple(image_shape):
        C, H, W = image_shape
        hint = (" (channels last? use x.permute(0, 3, 1, 2))"
                if tuple(x.shape[1:]) == (H, W, C) and C != W else "")
        raise InputError(
            f"{name} has shape {_shape(x.shape)} but the model expects {_shape(expected)} "
            f"(image_shape={tuple(image_shape)}){hint}"
        )
    if x.shape[0] == 0:
        raise InputError(f"{name} is an empty batch (shape {_shape(x.shape)}); give at least one image")
    x = x.to(device=device, dtype=dtype)
    if not has_values(x):
        return x
    lo, hi = torch.aminmax(x)  # one pass; NaN propagates into both, and fails both comparisons
    if not (lo >= 0 and hi <= 1):
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            bad = (~finite).sum().item()
            kinds = ", ".join(k for k, m in (("NaN", torch.isnan(x)), ("inf", torch.isinf(x))) if bool(m.any()))
            raise InputError(f"{name} contains {bad} non-finite value{'s' if bad > 1 else ''} ({kinds})")
        hint = " (bytes? divide by 255 first)" if hi > 1 and hi <= 255 and lo >= 0 else ""
        raise InputError(f"{name} must have values in [0, 1], got min {lo.item():.4g}, max {hi.item():.4g}{hint}")
    return x


def has_values(x: torch.Tensor) -> bool:
    """Whether `x` holds values that can be checked (not a fake tensor of a recorded step)."""
    return not is_fake(x)
