"""Binarized MNIST (Larochelle & Murray 2011), the standard NLL benchmark: its ``.amat`` files,
found in the data folder or downloaded there (checked by sha256), parsed and cached bit-packed."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..files import DigestMismatch, atomic_write, note_read, save_verified
from ..files import fetch as _fetch  # the tests serve downloads through it
from .dataset import ImageDataset
from .locations import cache_dir, data_root

# Rows of each split of binarized MNIST.
SPLIT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
# sha256 of each split's uncompressed .amat text, as published.
SHA256 = {
    "train": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "valid": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "test": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}
URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{split}.amat"
PIXELS = 28 * 28
ROW_BYTES = 2 * PIXELS  # 784 digits, each followed by a space, the last by a newline
# A file may hold (once decompressed) at most this many times its rows' bytes in the exact layout
# (room for '\r\n', trailing and double spaces); more is refused before it is read any further.
MAX_SIZE_FACTOR = 2
IMAGE_SHAPE = (1, 28, 28)


# ---------------------------------------------------------------------------- binarized MNIST


def binarized_mnist(root: str | os.PathLike | None = None, split: str = "train", *,
                    download: bool = True) -> ImageDataset:
    """Binarized MNIST (the fixed binarization of Larochelle and Murray), without labels.

    Reads ``binarized_mnist_{split}.amat`` or ``.amat.gz`` from ``<root>/binarized_mnist/``,
    ``<root>/`` or ``cache_dir()/data/binarized_mnist/`` (where downloads go when root is not
    writable), through a cache in ``cache_dir()/binarized_mnist/``.

    The test split is sorted by label: its first rows are no fair sample, so evaluate a subset
    drawn at random (with a fixed seed, `drawzoo.data.batching.random_subset`) or every k-th row.

    Args:
        root: the data folder (see `drawzoo.data.data_root`; None: its default).
        split: "train", "valid" or "test".
        download: download the files into ``root`` when they are missing (needs internet).

    Returns:
        An `ImageDataset` of N = 50000, 10000 or 10000 images ``[1, 28, 28]`` in {0, 1}
        (``binarized_mnist(split="valid")[:]`` is the float32 tensor ``[10000, 1, 28, 28]``).

    Raises:
        DataError: an unknown split, or a missing (and not downloaded), truncated or malformed
            file, naming the file, the line and the problem.
    """
    if split not in SPLIT_SIZES:
        raise DataError(f"unknown binarized_mnist split {split!r}; valid splits: {', '.join(SPLIT_SIZES)}")
    root = data_root(root)
    path = _find_amat(root, split)
    if path is None:
        if not download:
            raise DataError(_missing_message(root, split) + "; pass download=True to download it")
        path = _download(root, split)
    bits = _cached_amat(path, SPLIT_SIZES[split])
    return ImageDataset(torch.from_numpy(bits).view(-1, *IMAGE_SHAPE).to(torch.bool))


def _folders(root: Path) -> list[Path]:
    """Where a split's file is looked for, in order."""
    return list(dict.fromkeys((root / "binarized_mnist", root, _download_fallback())))


def _download_fallback() -> Path:
    """Where downloads go when the data folder is not writable."""
    return cache_dir() / "data" / "binarized_mnist"


def _find_amat(root: Path, split: str) -> Path | None:
    """The first of ``binarized_mnist_{split}.amat[.gz]`` in `_folders(root)` that exists."""
    name = f"binarized_mnist_{split}.amat"
    for folder in _folders(root):
        for path in (folder / name, folder / f"{name}.gz"):
            if path.is_file():
                return path
    return None


def _missing_message(root: Path, split: str) -> str:
    folders = ", ".join(str(f) for f in _folders(root))
    return (f"binarized_mnist_{split}.amat (or .amat.gz) not found in {folders}; get it from "
            f"{URL.format(split=split)}, or point DRAWZOO_DATA (or root=) at a folder holding it")


# ------------------------------------------------------------------------------ download


def _writable(folder: Path) -> bool:
    """Whether files can be created in `folder` (made if missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _download(root: Path, split: str) -> Path:
    """Download the `split`'s .amat into ``<root>/binarized_mnist/`` (or, if that is not writable,
    into ``cache_dir()/data/binarized_mnist/``) and check its sha256; the file's path."""
    url = URL.format(split=split)
    folders = (root / "binarized_mnist", _download_fallback())
    folder = next((f for f in folders if _writable(f)), None)
    if folder is None:
        raise DataError(_missing_message(root, split) + f"; cannot download it: neither {folders[0]} "
                        f"nor {folders[1]} is writable")
    dest = folder / f"binarized_mnist_{split}.amat"
    try:
        save_verified(_fetch(url), dest, SHA256[split])
    except DigestMismatch as e:
        raise DataError(f"{url} downloaded with sha256 {e.sha256}, expected {SHA256[split]}; the file was not "
                        "kept") from None
    except (OSError, http.client.HTTPException) as e:
        raise DataError(_missing_message(root, split) + f"; downloading it failed: {e}") from e
    return dest


# ---------------------------------------------------------------------------- parse and cache


def _cached_amat(path: Path, rows: int) -> np.ndarray:
    """`read_amat(path, rows)` through a bit-packed cache keyed by `path` (its location, name,
    size and mtime), so that a changed file is parsed again."""
    stat = path.stat()
    tag = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    folder = cache_dir() / "binarized_mnist"
    cache = folder / f"{path.name}.{tag}.{stat.st_size}.{stat.st_mtime_ns}.npy"
    packed = _load_cache(cache, rows)
    if packed is None:
        bits = read_amat(path, rows)
        with contextlib.suppress(OSError):  # an unwritable cache only costs time
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_write(cache) as f:
                np.save(f, np.packbits(bits, axis=1))
            for stale in folder.glob(f"{path.name}.{tag}.*.npy"):
                if stale != cache:
                    stale.unlink(missing_ok=True)
        return bits
    return np.unpackbits(packed, axis=1, count=PIXELS)


def _load_cache(cache: Path, rows: int) -> np.ndarray | None:
    """The packed uint8 ``[rows, 98]`` array in `cache`, or None if it is missing or unreadable."""
    try:
        packed = np.load(cache, mmap_mode="r", allow_pickle=False)  # a header declaring too much: ValueError
    except (OSError, ValueError, EOFError):
        return None
    ok = packed.dtype == np.uint8 and packed.shape == (rows, (PIXELS + 7) // 8)
    return np.array(packed) if ok else None


def read_amat(path: str | os.PathLike, rows: int) -> np.ndarray:
    """The `rows` x 784 values in {0, 1} of an ``.amat`` or ``.amat.gz`` file, as uint8
    ``[rows, 784]``.

    The exact layout (784 digits separated by single spaces, each row ending in a newline) is
    checked at numpy speed; any other file is read line by line, which accepts trailing
    whitespace and '\\r\\n' and raises `DataError` naming the file, the line and the problem.
    """
    path = Path(path)
    data = _read_bytes(path, rows)
    note_read(path, "data")
    if not data:
        raise DataError(f"{path} is empty")
    if len(data) == rows * ROW_BYTES:
        table = np.frombuffer(data, np.uint8).reshape(rows, ROW_BYTES)
        bits = table[:, 0::2] - ord("0")  # uint8: anything below '0' wraps past 1
        if (table[:, 1:-1:2] == ord(" ")).all() and (table[:, -1] == ord("\n")).all() and (bits <= 1).all():
            return bits
    return _parse_lines(data, path, rows)


def _read_bytes(path: Path, rows: int) -> bytes:
    """The content of `path`, decompressed when it ends in ``.gz``; `DataError` for more than
    `MAX_SIZE_FACTOR` times the bytes of `rows` rows, found before reading past that."""
    limit = MAX_SIZE_FACTOR * rows * ROW_BYTES
    too_big = DataError(f"{path} holds more than {limit:,} bytes{' decompressed' if path.suffix == '.gz' else ''}, "
                        f"{MAX_SIZE_FACTOR} times the {rows * ROW_BYTES:,} of {rows:,} rows of {PIXELS} values: not "
                        f"a binarized MNIST split")
    try:
        if path.suffix != ".gz":
            if path.stat().st_size > limit:
                raise too_big
            return path.read_bytes()
        chunks, size = [], 0
        with gzip.open(path) as f:
            while chunk := f.read(1 << 20):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise too_big
        return b"".join(chunks)
    except (OSError, EOFError, zlib.error) as e:
        kind = "a readable gzip file" if path.suffix == ".gz" else "readable"
        raise DataError(f"{path} is not {kind}: {e}") from e


def _parse_lines(data: bytes, path: Path, rows: int) -> np.ndarray:
    """`read_amat`'s line-by-line reader, for files that are not in the exact layout."""
    lines = data.split(b"\n")
    while lines and not lines[-1].strip():  # the final newline, and blank lines after it
        lines.pop()
    ends_open = not data.rstrip(b" \t\r").endswith(b"\n")
    for number, line in enumerate(lines, 1):
        values = line.split()
        if len(values) != PIXELS:
            if number == len(lines) and ends_open and len(values) < PIXELS:
                raise DataError(f"{path}: line {number} stops after {len(values)} of {PIXELS} values "
                                f"at the end of the file: the file is truncated")
            raise DataError(f"{path}: line {number} has {len(values)} values, expected {PIXELS}")
        joined = b"".join(values)
        if len(joined) != PIXELS or joined.translate(None, b"01"):
            column, bad = next((j, v) for j, v in enumerate(values, 1) if v not in (b"0", b"1"))
            shown = bad[:20].decode("utf-8", "replace")
            raise DataError(f"{path}: line {number}, value {column} is {shown!r}, expected 0 or 1")
        lines[number - 1] = joined
    if len(lines) != rows:
        hint = ": the file is truncated" if len(lines) < rows else ""
        raise DataError(f"{path} has {len(lines)} rows, expected {rows}{hint}")
    return np.frombuffer(b"".join(lines), np.uint8).reshape(rows, PIXELS) - ord("0")
