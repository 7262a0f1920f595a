"""Array files of images as an `ImageDataset`: a ``.npy`` file, or an array of a ``.npz`` file
(`load_array_file`)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .dataset import ImageDataset, own_split


def load_array_file(path: str | os.PathLike, split: str = "all",
                    image_shape: tuple[int, int, int] | None = None) -> ImageDataset:
    """The `split` (`own_split`: "train", "valid" or "all") of the images in a ``.npy`` file, or in
    a ``.npz`` file's array "images", else "x", else its first, as an `ImageDataset`.

    The array is ``[N, C, H, W]`` or ``[N, H, W]`` (one channel) of floats in [0, 1], bools, or
    uint8 bytes (read as byte / 255). Anything else, or images of another shape than
    `image_shape` (when given), is a `DataError` naming the file.
    """
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = [k for k in ("images", "x") if k in loaded.files] or loaded.files
                loaded = loaded[keys[0]] if keys else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path} as .npy/.npz: {e}") from e
    if loaded is None:
        raise DataError(f"{path} holds no arrays")
    images = _as_images(loaded, path)
    if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
        raise DataError(f"{path} holds images {list(images.shape[1:])}, not the image_shape {list(image_shape)} "
                        f"asked for; arrays are not resized (a folder of pictures is)")
    return ImageDataset(images).subset(own_split(len(images), split, path))


def _as_images(x: np.ndarray, path: Path) -> torch.Tensor:
    """`x` from `path` as a tensor ``[N, C, H, W]``: uint8 or bool as they are, floats as float32
    checked to lie in [0, 1] (see `load_array_file`)."""
    if x.ndim not in (3, 4) or x.shape[0] == 0:
        raise DataError(f"{path} holds an array of shape {list(x.shape)}, expected [N, C, H, W] or [N, H, W] "
                        f"with N > 0")
    if x.ndim == 3:
        x = x[:, None]
    if x.dtype in (np.uint8, np.bool_):
        return torch.from_numpy(np.ascontiguousarray(x))
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{path} holds {x.dtype} values; expected floats in [0, 1] or uint8 bytes 0..255")
    x = torch.from_numpy(x).to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{path} has NaN or infinite values")
    if x.min() < 0 or x.max() > 1:
        raise DataError(f"{path} has values outside [0, 1] (min {x.min().item():.4g}, max {x.max().item():.4g})")
    return x
