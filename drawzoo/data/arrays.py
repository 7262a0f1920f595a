"""Array files of images as an `ImageDataset`: a ``.npy`` file, or an array of a ``.npz`` file
(`load_array_file`).

An array's header (shape, dtype) is checked against what its file holds before the array is read
(`_check_header`), so that a small file declaring a huge array is a `DataError`, not an allocation.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from numpy.lib import format as npy

from ..errors import DataError
from ..files import note_read
from .dataset import ImageDataset, check_bytes, own_split

# How a .npy header is read, by format version (3.0 is 2.0 with a utf-8 header).
HEADER_READERS = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0,
                  (3, 0): npy.read_array_header_2_0}
# The most a deflated zip member (np.savez_compressed) can expand: deflate's limit is 1032 to 1.
DEFLATE_MAX_RATIO = 1032


def load_array_file(path: str | os.PathLike, split: str = "all",
                    image_shape: tuple[int, int, int] | None = None) -> ImageDataset:
    """The `split` (`own_split`: "train", "valid" or "all") of the images in a ``.npy`` file, or in
    a ``.npz`` file's array "images", else "x", else its only array, as an `ImageDataset`.

    The array is ``[N, C, H, W]`` or ``[N, H, W]`` (one channel) of floats in [0, 1], bools, or
    uint8 bytes (read as byte / 255). Anything else, or images of another shape than
    `image_shape` (when given), is a `DataError` naming the file; so is a header that declares
    more bytes than the file holds, checked before the array is read.
    """
    path = source = Path(path)
    try:
        with open(path, "rb") as f:
            if f.read(len(npy.MAGIC_PREFIX)) == npy.MAGIC_PREFIX:
                f.seek(0)
                _check_header(f, os.fstat(f.fileno()).st_size, path)
        loaded = np.load(path, allow_pickle=False)
        note_read(path, "data")
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                key = _npz_key(loaded.files, path)
                if key not in NPZ_KEYS:  # its only array: say which, and what was looked for
                    source = f"{path}'s only array, {key!r} (none named {' or '.join(map(repr, NPZ_KEYS))}),"
                _check_member(loaded.zip, key, source)
                loaded = loaded[key]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path} as .npy/.npz: {e}") from e
    images = _as_images(loaded, source)
    if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
        raise DataError(f"{path} holds images {list(images.shape[1:])}, not the image_shape {list(image_shape)} "
                        f"asked for; arrays are not resized (a folder of pictures is)")
    return ImageDataset(images).subset(own_split(len(images), split, path))


NPZ_KEYS = ("images", "x")  #: the arrays of a .npz file that hold its images, in order of preference


def _npz_key(keys: list[str], path: Path) -> str:
    """The array of a .npz file holding `keys` that `load_array_file` reads: the first of
    `NPZ_KEYS`, else its only array; `DataError` naming both lists if there is none to choose."""
    found = [k for k in NPZ_KEYS if k in keys]
    if found or len(keys) == 1:
        return (found or keys)[0]
    held = f"the arrays {', '.join(map(repr, keys))}" if keys else "no arrays"
    raise DataError(f"{path} holds {held}, none of the keys looked for ({' or '.join(map(repr, NPZ_KEYS))}): save "
                    "the images as np.savez(path, images=x)")


def _check_layout(shape: tuple[int, ...], dtype: np.dtype, path: Path) -> None:
    """Refuse an array of `shape` and `dtype` from `path` that is not images (see `load_array_file`)."""
    if len(shape) not in (3, 4) or shape[0] == 0 or min(shape) < 0:
        raise DataError(f"{path} holds an array of shape {list(shape)}, expected [N, C, H, W] or [N, H, W] "
                        f"with N > 0")
    if dtype not in (np.uint8, np.bool_) and not np.issubdtype(dtype, np.floating):
        raise DataError(f"{path} holds {dtype} values; expected floats in [0, 1] or uint8 bytes 0..255")


def _check_header(f: BinaryIO, size: int, path: Path, array: str | None = None) -> None:
    """Read the .npy header at the start of `f`, a file (or, for `array`, a zip member of `path`)
    that holds `size` bytes, and refuse what `_check_layout` refuses or an array of more bytes than
    `size` leaves after the header; reads the header only."""
    version = npy.read_magic(f)
    if version not in HEADER_READERS:
        raise ValueError(f"unsupported .npy format version {version}")
    shape, _, dtype = HEADER_READERS[version](f)
    _check_layout(shape, dtype, path)
    declared, held = math.prod(shape) * dtype.itemsize, size - f.tell()
    if declared > held:
        where, most = ("its header", "") if array is None else (f"its array {array!r}", "at most ")
        raise DataError(f"{path}: {where} declares {list(shape)} {dtype} values ({declared:,} bytes) but holds "
                        f"{most}{held:,} bytes of them: the file is truncated or its header is wrong")


def _check_member(archive: zipfile.ZipFile, key: str, path: Path | str) -> None:
    """`_check_header` for the array `key` of the .npz `archive` at `path`, the member's size being its
    uncompressed size from the zip's directory, and at most `DEFLATE_MAX_RATIO` times its
    compressed size (once for a stored member): a directory can claim more than a member holds."""
    name = key if key in archive.namelist() else f"{key}.npy"  # as np.load's NpzFile reads it
    info = archive.getinfo(name)
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_MAX_RATIO
    with archive.open(info) as member:
        if member.read(len(npy.MAGIC_PREFIX)) != npy.MAGIC_PREFIX:
            raise DataError(f"{path}: its member {name!r} is not a .npy array")
        member.seek(0)
        _check_header(member, min(info.file_size, ratio * info.compress_size), path, key)


def _as_images(x: np.ndarray, path: Path | str) -> torch.Tensor:
    """`x` from `path` as a tensor ``[N, C, H, W]``: uint8 or bool as they are, floats as float32
    checked to lie in [0, 1] (see `load_array_file`)."""
    _check_layout(x.shape, x.dtype, path)
    if x.ndim == 3:
        x = x[:, None]
    if x.dtype in (np.uint8, np.bool_):
        x = torch.from_numpy(np.ascontiguousarray(x))
        check_bytes(x, str(path), DataError)
        return x
    x = torch.from_numpy(x).to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{path} has NaN or infinite values")
    if x.min() < 0 or x.max() > 1:
        raise DataError(f"{path} has values outside [0, 1] (min {x.min().item():.4g}, max {x.max().item():.4g})")
    return x
