"""The data sets the zoo trains and evaluates on, read from a data folder and cached per user.

Where data lives (`data_root`): the ``root`` argument, else ``$DRAWZOO_DATA``, else
``<cache>/data``, where ``<cache>`` (`cache_dir`) is ``$DRAWZOO_CACHE``, else
``$XDG_CACHE_HOME/drawzoo``, else ``~/.cache/drawzoo``. The data folder is only read (it may be
read-only); parsed arrays are cached under ``<cache>``.

- `binarized_mnist`: the fixed binarization of Larochelle & Murray (2011), the standard NLL
  benchmark: ``<root>/binarized_mnist/binarized_mnist_{train,valid,test}.amat[.gz]``,
  downloaded (and checked against its sha256) when missing.
- `mnist`: MNIST through torchvision (``<root>/MNIST/raw``), grey, thresholded, or binarized
  afresh at every access ("dynamic").
- `load_split`: either of them by name, for ``--data binarized_mnist`` / ``--data mnist``.
- `load_array_file`: the user's own images from a ``.npy`` / ``.npz`` file.

Every image is a float32 tensor ``[1, 28, 28]`` (a batch ``[N, 1, 28, 28]``) with values in [0, 1].
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import secrets
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from .errors import DataError

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

# MNIST's training set is split into its first 60000 - MNIST_VALID_SIZE images ("train") and
# its last MNIST_VALID_SIZE ("valid").
MNIST_VALID_SIZE = 10_000
MNIST_SPLITS = ("train", "valid", "test", "full_train")
BINARIZE = (None, "threshold", "dynamic")


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """This user's drawzoo cache: ``$DRAWZOO_CACHE``, else ``$XDG_CACHE_HOME/drawzoo``, else
    ``~/.cache/drawzoo``."""
    xdg = _env_path("XDG_CACHE_HOME")
    return _env_path("DRAWZOO_CACHE") or (xdg or Path.home() / ".cache") / "drawzoo"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: `root` if given, else ``$DRAWZOO_DATA``, else ``cache_dir() / "data"``."""
    if root is not None:
        return Path(root).expanduser()
    return _env_path("DRAWZOO_DATA") or cache_dir() / "data"


# ---------------------------------------------------------------------------- binarized MNIST


def binarized_mnist(root: str | os.PathLike | None = None, split: str = "train", *,
                    download: bool = True) -> torch.Tensor:
    """The `split` ("train", "valid" or "test") of binarized MNIST as float32 ``[N, 1, 28, 28]``
    in {0, 1}, N = 50000, 10000 or 10000.

    Reads ``binarized_mnist_{split}.amat`` or ``.amat.gz`` from ``<root>/binarized_mnist/``,
    ``<root>/`` (root: see `data_root`) or ``cache_dir()/data/binarized_mnist/`` (where downloads
    go when root is not writable), through a cache in ``cache_dir()/binarized_mnist/``. A missing
    file is downloaded when `download` is true. Raises `DataError` for a missing,
    truncated or malformed file, naming the file, the line and the problem.

    The test split is sorted by label: its first rows are no fair sample, so evaluate a subset
    drawn at random (with a fixed seed) or every k-th row.
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
    return torch.from_numpy(bits).to(torch.float32).view(-1, 1, 28, 28)


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


def _fetch(url: str) -> Iterator[bytes]:
    """The body of `url`, in chunks; raises OSError when the network fails."""
    with urllib.request.urlopen(url, timeout=60) as response:
        while chunk := response.read(1 << 20):
            yield chunk


@contextlib.contextmanager
def _atomic_write(dest: Path) -> Iterator[BinaryIO]:
    """A binary file that replaces `dest` when the block succeeds and vanishes when it fails, so
    that no reader ever sees a partial `dest`."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with tmp.open("xb") as f:  # unlike mkstemp, keeps the umask's permissions
            yield f
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
        with _atomic_write(dest) as f:
            digest = hashlib.sha256()
            for chunk in _fetch(url):
                digest.update(chunk)
                f.write(chunk)
            if digest.hexdigest() != SHA256[split]:
                raise DataError(f"{url} downloaded with sha256 {digest.hexdigest()}, expected "
                                f"{SHA256[split]}; the file was not kept")
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
            with _atomic_write(cache) as f:
                np.save(f, np.packbits(bits, axis=1))
            for stale in folder.glob(f"{path.name}.{tag}.*.npy"):
                if stale != cache:
                    stale.unlink(missing_ok=True)
        return bits
    return np.unpackbits(packed, axis=1, count=PIXELS)


def _load_cache(cache: Path, rows: int) -> np.ndarray | None:
    """The packed uint8 ``[rows, 98]`` array in `cache`, or None if it is missing or unreadable."""
    try:
        packed = np.load(cache, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    ok = packed.dtype == np.uint8 and packed.shape == (rows, (PIXELS + 7) // 8)
    return packed if ok else None


def read_amat(path: str | os.PathLike, rows: int) -> np.ndarray:
    """The `rows` x 784 values in {0, 1} of an ``.amat`` or ``.amat.gz`` file, as uint8
    ``[rows, 784]``.

    The exact layout (784 digits separated by single spaces, each row ending in a newline) is
    checked at numpy speed; any other file is read line by line, which accepts trailing
    whitespace and '\\r\\n' and raises `DataError` naming the file, the line and the problem.
    """
    path = Path(path)
    data = _read_bytes(path)
    if not data:
        raise DataError(f"{path} is empty")
    if len(data) == rows * ROW_BYTES:
        table = np.frombuffer(data, np.uint8).reshape(rows, ROW_BYTES)
        bits = table[:, 0::2] - ord("0")  # uint8: anything below '0' wraps past 1
        if (table[:, 1:-1:2] == ord(" ")).all() and (table[:, -1] == ord("\n")).all() and (bits <= 1).all():
            return bits
    return _parse_lines(data, path, rows)


def _read_bytes(path: Path) -> bytes:
    """The content of `path`, decompressed when it ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as f:
                return f.read()
        return path.read_bytes()
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


# --------------------------------------------------------------------------------- MNIST


class ImageDataset(torch.utils.data.Dataset):
    """Images float32 ``[1, H, W]`` in [0, 1], optionally binarized, with their labels.

    `images` is float32 ``[N, 1, H, W]``, the grey values in [0, 1]; `labels` is int64 ``[N]``.
    An item is ``images[i]`` for ``binarize=None``, ``(images[i] >= 0.5)`` for "threshold", and
    for "dynamic" a fresh Bernoulli sample with probability ``images[i]`` at every access (from
    torch's global RNG: `torch.manual_seed` makes it reproducible). Indexing with a slice or an
    index tensor gives a batch ``[B, 1, H, W]``; a DataLoader draws each batch at once
    (`__getitems__`).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, binarize: str | None = "dynamic"):
        if binarize not in BINARIZE:
            raise DataError(f"unknown binarize {binarize!r}; valid: {', '.join(map(repr, BINARIZE))}")
        self.images, self.labels, self.binarize = images, labels, binarize

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index) -> torch.Tensor:
        x = self.images[index]
        if self.binarize == "threshold":
            return (x >= 0.5).to(x.dtype)
        if self.binarize == "dynamic":
            return torch.bernoulli(x)
        return x

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        return list(self[torch.as_tensor(indices)].unbind(0))


def mnist(root: str | os.PathLike | None = None, split: str = "train", binarize: str | None = "dynamic", *,
          download: bool = True) -> ImageDataset:
    """The `split` of MNIST as an `ImageDataset` of float32 ``[1, 28, 28]`` images.

    Splits: "train" is the first 50000 images of MNIST's training set, "valid" its last 10000,
    "full_train" all 60000, "test" the 10000 test images. `binarize`: None (grey values),
    "threshold" (1 where the intensity is >= 0.5) or "dynamic" (a new Bernoulli sample at each
    access). Read by torchvision from ``<root>/MNIST/raw`` (root: see `data_root`), which it
    downloads when missing if `download` is true.
    """
    if split not in MNIST_SPLITS:
        raise DataError(f"unknown mnist split {split!r}; valid splits: {', '.join(MNIST_SPLITS)}")
    if binarize not in BINARIZE:
        raise DataError(f"unknown binarize {binarize!r}; valid: {', '.join(map(repr, BINARIZE))}")
    from torchvision.datasets import MNIST

    root = data_root(root)
    try:
        source = MNIST(root, train=split != "test", download=download)
    except Exception as e:  # torchvision raises RuntimeError, OSError, ValueError... for missing or bad files
        how = "" if download else " (download=False)"
        raise DataError(f"MNIST could not be read from {root / 'MNIST' / 'raw'}{how}: {e}; "
                        f"point DRAWZOO_DATA (or root=) at a folder holding MNIST/raw") from e
    images, labels = source.data, source.targets
    part = {"train": slice(None, -MNIST_VALID_SIZE), "valid": slice(-MNIST_VALID_SIZE, None)}.get(split, slice(None))
    images = images[part].unsqueeze(1).to(torch.float32) / 255
    return ImageDataset(images, labels[part], binarize)


# ------------------------------------------------------------------------------ dispatch


LOADERS = {"binarized_mnist": binarized_mnist, "mnist": mnist}


def load_split(name: str, split: str, root: str | os.PathLike | None = None, **kw):
    """The `split` of the data set `name` ("binarized_mnist" or "mnist"): a float32 tensor
    ``[N, 1, 28, 28]`` for binarized_mnist, an `ImageDataset` for mnist; `kw` go to the loader."""
    if name not in LOADERS:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(LOADERS)}")
    return LOADERS[name](root, split, **kw)


def load_array_file(path: str | os.PathLike) -> torch.Tensor:
    """Images from a ``.npy`` file, or a ``.npz`` file's array "images", else "x", else its first,
    as float32 ``[N, C, H, W]``.

    The array is ``[N, C, H, W]`` or ``[N, H, W]`` (one channel) of floats in [0, 1], bools, or
    uint8 bytes, which are divided by 255. Anything else is a `DataError` naming the file.
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
    return _as_images(loaded, path)


def _as_images(x: np.ndarray, path: Path) -> torch.Tensor:
    """`x` from `path` as float32 ``[N, C, H, W]`` in [0, 1] (see `load_array_file`)."""
    if x.ndim not in (3, 4) or x.shape[0] == 0:
        raise DataError(f"{path} holds an array of shape {list(x.shape)}, expected [N, C, H, W] or [N, H, W] "
                        f"with N > 0")
    if x.ndim == 3:
        x = x[:, None]
    if x.dtype == np.uint8:
        return torch.from_numpy(x).to(torch.float32) / 255
    if x.dtype == np.bool_:
        return torch.from_numpy(x).to(torch.float32)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{path} holds {x.dtype} values; expected floats in [0, 1] or uint8 bytes 0..255")
    x = torch.from_numpy(x).to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{path} has NaN or infinite values")
    if x.min() < 0 or x.max() > 1:
        raise DataError(f"{path} has values outside [0, 1] (min {x.min().item():.4g}, max {x.max().item():.4g})")
    return x
