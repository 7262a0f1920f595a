"""The images the zoo trains and evaluates on: named data sets, folders of pictures, array files.

Every loader returns an `ImageDataset`: images ``[C, H, W]`` with values in [0, 1]. `load` is the
one entry point (``drawzoo train/eval --data``); it takes

- a name (`DATASETS`), read from the data folder and downloaded there on first use:

  ================  ===========  ===============================  ============================
  name              image shape  train / valid / test images      files under the data folder
  ================  ===========  ===============================  ============================
  binarized_mnist   1 x 28 x 28  50,000 / 10,000 / 10,000         binarized_mnist/*.amat[.gz]
  mnist             1 x 28 x 28  50,000 / 10,000 / 10,000         MNIST/raw/*-ubyte
  fashion_mnist     1 x 28 x 28  50,000 / 10,000 / 10,000         FashionMNIST/raw/*-ubyte
  cifar10           3 x 32 x 32  45,000 /  5,000 / 10,000         cifar-10-batches-py/
  svhn              3 x 32 x 32  68,257 /  5,000 / 26,032         SVHN/{train,test}_32x32.mat
  two_digit_mnist   1 x 60 x 60  50,000 / 10,000 / 10,000         MNIST/raw/*-ubyte (composed)
  ================  ===========  ===============================  ============================

  binarized_mnist is the fixed binarization of Larochelle & Murray (2011), the standard NLL
  benchmark; mnist is binarized afresh at every access ("dynamic"); the others are grey or colour
  values. The torchvision sets' "valid" split is the last `VALID_SIZES` images of their training
  set, "train" the ones before, "full_train" both. svhn needs scipy (``pip install scipy``);
- a folder of PNG / JPEG pictures of any size (`image_folder`), converted to grey or colour and
  resized and centre-cropped to the image shape asked for;
- a ``.npy`` / ``.npz`` file of images (`load_array_file`).

A folder or file is split by a fixed seed into "valid" (`VALID_FRACTION` of the images, at
least one) and "train" (the rest); "all" is every image (`own_split`).

Where data lives (`data_root`): the ``root`` argument, else ``$DRAWZOO_DATA``, else
``<cache>/data``, where ``<cache>`` (`cache_dir`) is ``$DRAWZOO_CACHE``, else
``$XDG_CACHE_HOME/drawzoo``, else ``~/.cache/drawzoo``. The data folder is only read once its
files are there (it may be read-only); parsed binarized MNIST is cached under ``<cache>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import http.client
import operator
import os
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import DataError, InputError
from .files import atomic_write
from .images import check_images
from .two_digit_mnist import IMAGE_SHAPE as TWO_DIGIT_MNIST_SHAPE, two_digit_mnist

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

# The torchvision sets: how many of the last training images are the "valid" split.
VALID_SIZES = {"mnist": 10_000, "fashion_mnist": 10_000, "cifar10": 5_000, "svhn": 5_000}
TORCHVISION_SPLITS = ("train", "valid", "test", "full_train")
BINARIZE = (None, "threshold", "dynamic")

# A folder of images or an array file: a fixed random VALID_FRACTION of it is "valid".
VALID_FRACTION = 0.1
OWN_SPLITS = ("train", "valid", "all")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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


# ------------------------------------------------------------------------------ the data set


class ImageDataset(torch.utils.data.Dataset):
    """Images ``[C, H, W]`` with values in [0, 1], optionally binarized at each access, with
    optional labels.

    `images` ``[N, C, H, W]`` is kept as given: floats in [0, 1], uint8 bytes (read as byte / 255,
    a quarter of float32's memory) or bools. `labels` is int64 ``[N]``, or None. `binarize`: None
    (the values), "threshold" (1 where the value is >= 0.5) or "dynamic" (a fresh Bernoulli sample
    with the value as probability at every access, from torch's global RNG: `torch.manual_seed`
    makes it reproducible).

    ``ds[i]`` is a float32 image ``[C, H, W]``; ``ds[a:b]`` and ``ds[indices]`` (a list or tensor)
    a float32 batch ``[B, C, H, W]``, ``ds[:]`` all the images. A DataLoader fetches each batch
    with one indexing (`__getitems__`).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, binarize: str | None = None):
        if binarize not in BINARIZE:
            raise DataError(f"unknown binarize {binarize!r}; valid: {', '.join(map(repr, BINARIZE))}")
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            what = f"shape {list(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise InputError(f"images must be a tensor [N, C, H, W], got {what}")
        if len(images) == 0:
            raise InputError("images is empty: an ImageDataset needs at least one image")
        if images.dtype not in (torch.uint8, torch.bool):
            images = check_images(images, images.shape[1:], device="cpu", name="images")
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.int64)
            if labels.shape != images.shape[:1]:
                raise InputError(f"labels must be [N] = [{len(images)}], got {list(labels.shape)}")
        self.images, self.labels, self.binarize = images, labels, binarize

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index) -> torch.Tensor:
        x = self.images[index]
        x = x.to(torch.float32).div_(255) if x.dtype == torch.uint8 else x.to(torch.float32)
        if self.binarize == "threshold":
            return (x >= 0.5).to(torch.float32)
        if self.binarize == "dynamic":
            return torch.bernoulli(x)
        return x

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        return list(self[torch.as_tensor(indices)].unbind(0))

    def subset(self, index) -> ImageDataset:
        """The images (and labels) at `index` (a slice, a list or an index tensor), binarized alike."""
        labels = None if self.labels is None else self.labels[index]
        return ImageDataset(self.images[index], labels, self.binarize)

    def __repr__(self) -> str:
        return (f"ImageDataset({len(self)} images {list(self.image_shape)}, stored as {self.images.dtype}, "
                f"binarize={self.binarize!r}{'' if self.labels is None else ', labelled'})")


# ---------------------------------------------------------------------------- binarized MNIST


def binarized_mnist(root: str | os.PathLike | None = None, split: str = "train", *,
                    download: bool = True) -> ImageDataset:
    """The `split` ("train", "valid" or "test") of binarized MNIST: an `ImageDataset` of N = 50000,
    10000 or 10000 images ``[1, 28, 28]`` in {0, 1} (``binarized_mnist(split="valid")[:]`` is the
    float32 tensor ``[10000, 1, 28, 28]``), without labels.

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
    return ImageDataset(torch.from_numpy(bits).view(-1, 1, 28, 28).to(torch.bool))


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
        with atomic_write(dest) as f:
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


# ------------------------------------------------------------------- torchvision's data sets


@dataclasses.dataclass(frozen=True)
class Source:
    """A data set that torchvision reads from ``<data folder>/<folder>/<files>``, and downloads
    there when missing; `read(root, train, download)` gives its training (or test) images as
    uint8 ``[N, C, H, W]`` and their labels ``[N]``."""

    title: str
    image_shape: tuple[int, int, int]
    folder: str
    files: str
    read: Callable[[Path, bool, bool], tuple[torch.Tensor, torch.Tensor]]


def _read_mnist_like(class_name: str):
    def read(root: Path, train: bool, download: bool):
        import torchvision.datasets

        source = getattr(torchvision.datasets, class_name)(root, train=train, download=download)
        return source.data.unsqueeze(1), source.targets
    return read


def _read_cifar10(root: Path, train: bool, download: bool):
    from torchvision.datasets import CIFAR10

    source = CIFAR10(root, train=train, download=download)
    return torch.from_numpy(source.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(source.targets)


def _read_svhn(root: Path, train: bool, download: bool):
    try:
        import scipy.io  # noqa: F401  (torchvision reads SVHN's .mat files with it)
    except ImportError:
        raise DataError("svhn needs scipy to read its .mat files: pip install scipy "
                        "(or pip install 'drawzoo[svhn]')") from None
    from torchvision.datasets import SVHN

    source = SVHN(root / "SVHN", split="train" if train else "test", download=download)
    return torch.from_numpy(source.data), torch.from_numpy(source.labels)  # digit 0 is label 0


MNIST_FILES = "{train,t10k}-{images-idx3,labels-idx1}-ubyte"
SOURCES = {
    "mnist": Source("MNIST", (1, 28, 28), "MNIST/raw", MNIST_FILES, _read_mnist_like("MNIST")),
    "fashion_mnist": Source("Fashion-MNIST", (1, 28, 28), "FashionMNIST/raw", MNIST_FILES,
                            _read_mnist_like("FashionMNIST")),
    "cifar10": Source("CIFAR-10", (3, 32, 32), "cifar-10-batches-py", "{data_batch_1..5,test_batch,batches.meta}",
                      _read_cifar10),
    "svhn": Source("SVHN", (3, 32, 32), "SVHN", "{train,test}_32x32.mat", _read_svhn),
}


def _torchvision_set(name: str, root, split: str, binarize: str | None, download: bool) -> ImageDataset:
    """`split` of `SOURCES[name]`: "train" is its training set but the last `VALID_SIZES[name]`
    images, "valid" those, "full_train" all of it, "test" its test set."""
    source = SOURCES[name]
    if split not in TORCHVISION_SPLITS:
        raise DataError(f"unknown {name} split {split!r}; valid splits: {', '.join(TORCHVISION_SPLITS)}")
    if binarize not in BINARIZE:
        raise DataError(f"unknown binarize {binarize!r}; valid: {', '.join(map(repr, BINARIZE))}")
    root = data_root(root)
    try:
        images, labels = source.read(root, split != "test", download)
    except DataError:
        raise
    except Exception as e:  # torchvision raises RuntimeError, OSError, ValueError... for missing or bad files
        reason = " ".join(str(e).split()) or type(e).__name__
        how = "" if download else " (download=False)"
        raise DataError(f"{source.title} could not be read from {root / source.folder}{how}: {reason}; point "
                        f"DRAWZOO_DATA (or --data-root, root=) at a folder holding {source.folder}/{source.files}, "
                        f"or let drawzoo download it there (download=True, the default; needs internet)") from e
    valid = VALID_SIZES[name]
    part = {"train": slice(None, -valid), "valid": slice(-valid, None)}.get(split, slice(None))
    return ImageDataset(images[part].contiguous(), labels[part], binarize)


def mnist(root: str | os.PathLike | None = None, split: str = "train", binarize: str | None = "dynamic", *,
          download: bool = True) -> ImageDataset:
    """The `split` ("train", "valid", "test" or "full_train") of MNIST, with labels. `binarize`:
    "dynamic" (a new Bernoulli sample at each access), "threshold" or None (grey values)."""
    return _torchvision_set("mnist", root, split, binarize, download)


def fashion_mnist(root: str | os.PathLike | None = None, split: str = "train", binarize: str | None = None, *,
                  download: bool = True) -> ImageDataset:
    """The `split` ("train", "valid", "test" or "full_train") of Fashion-MNIST (Xiao et al. 2017),
    with labels: grey values, unless `binarize` ("dynamic" or "threshold")."""
    return _torchvision_set("fashion_mnist", root, split, binarize, download)


def cifar10(root: str | os.PathLike | None = None, split: str = "train", *, download: bool = True) -> ImageDataset:
    """The `split` ("train", "valid", "test" or "full_train") of CIFAR-10, colour ``[3, 32, 32]``,
    with labels."""
    return _torchvision_set("cifar10", root, split, None, download)


def svhn(root: str | os.PathLike | None = None, split: str = "train", *, download: bool = True) -> ImageDataset:
    """The `split` ("train", "valid", "test" or "full_train") of SVHN's cropped digits (the 73,257
    training and 26,032 test images, not "extra"), colour ``[3, 32, 32]``, with labels (digit 0 is
    0). Needs scipy."""
    return _torchvision_set("svhn", root, split, None, download)


# ------------------------------------------------------------------------------ your own images


def own_split(n: int, split: str, what) -> torch.Tensor:
    """Indices ``[M]`` (ascending) of `split` of the n images of a folder or file `what`.

    "all": every image; "valid": a random `VALID_FRACTION` of them (at least one), drawn with a
    fixed seed, so that the same images always give the same split; "train": the others.
    """
    if split not in OWN_SPLITS:
        raise DataError(f"unknown split {split!r} of {what}; valid splits: {', '.join(OWN_SPLITS)}")
    if split == "all":
        return torch.arange(n)
    if n < 2:
        raise DataError(f"{what} holds {n} image: too few to hold some out as split {split!r}; use split 'all' "
                        f"(drawzoo eval --split all; drawzoo train --valid-data, which trains on all of it)")
    k = max(1, round(n * VALID_FRACTION))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return (order[:k] if split == "valid" else order[k:]).sort().values


def _check_folder_shape(image_shape) -> tuple[int, int, int]:
    """`image_shape` as a tuple (C, H, W) that pictures can take, else `DataError`."""
    try:
        shape = tuple(operator.index(s) for s in image_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1 or shape[0] not in (1, 3):
        raise DataError(f"image_shape {image_shape!r}: pictures load as (C, H, W) with C = 1 (grey) or "
                        f"3 (colour) and H, W >= 1")
    return shape


def _image_files(folder: Path) -> list[Path]:
    """The PNG and JPEG files in `folder` and its subfolders (hidden ones aside), sorted."""
    visible = sorted(p for p in folder.rglob("*")
                     if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    files = [p for p in visible if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        others = [str(p.relative_to(folder)) for p in visible]
        held = f"only {len(others)} other files ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"
        raise DataError(f"{folder} holds no PNG or JPEG images ({', '.join(IMAGE_SUFFIXES)}): "
                        f"{held if others else 'it is empty'}")
    return files


def _channels(image) -> int:
    """1 for a grey Pillow image (bands 1, L, I, F, with or without alpha), 3 for any other."""
    return 1 if set(image.getbands()) <= {"1", "L", "I", "F", "A"} else 3


# What Pillow raises for a file that is no picture (UnidentifiedImageError is an OSError), a
# truncated or corrupt one, or one too large to be safe (DecompressionBombError).
PICTURE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _open_failed(path: Path, e: Exception) -> DataError:
    reason = " ".join(str(e).split()) or type(e).__name__
    return DataError(f"{path}: not a readable PNG or JPEG image ({reason})")


def _header(path: Path) -> tuple[int, int, int]:
    """(C, H, W) of the picture at `path`, from its header."""
    try:
        with Image.open(path) as image:
            return _channels(image), image.height, image.width
    except PICTURE_ERRORS as e:
        raise _open_failed(path, e) from e


def _read_picture(path: Path, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """The picture at `path` as uint8 ``image_shape`` = (C, H, W): converted to grey ("L") or colour
    ("RGB"; alpha is dropped), resized (antialiased) to the smallest size that covers H x W, and
    centre-cropped to H x W; a picture of size H x W is taken as it is."""
    from torchvision.transforms.v2 import functional as F

    C, H, W = image_shape
    try:
        with Image.open(path) as image:
            image = image.convert("L" if C == 1 else "RGB")
    except PICTURE_ERRORS as e:
        raise _open_failed(path, e) from e
    x = F.pil_to_tensor(image)
    h, w = x.shape[-2:]
    if (h, w) != (H, W):
        scale = max(H / h, W / w)
        x = F.resize(x, [max(H, round(h * scale)), max(W, round(w * scale))], antialias=True)
        x = F.center_crop(x, [H, W])
    return x


def _describe(shape: tuple[int, int, int]) -> str:
    C, H, W = shape
    return f"{'grey' if C == 1 else 'colour'} {H}x{W}"


def image_folder(folder: str | os.PathLike, split: str = "all",
                 image_shape: tuple[int, int, int] | None = None) -> ImageDataset:
    """The `split` (`own_split`: "train", "valid" or "all") of the PNG and JPEG pictures in
    `folder` and its subfolders (sorted by path; hidden files and other files are passed over),
    as an `ImageDataset` of images `image_shape` (C, H, W) with values in [0, 1], not binarized
    (grey values: DRAW's Bernoulli likelihood then scores them as a reconstruction cross-entropy).

    Pictures of any size and mode are converted to grey (C = 1) or colour (C = 3), resized so that
    they cover H x W and centre-cropped to it (`_read_picture`). Without `image_shape` the pictures
    must all have one size and be all grey or all colour, and that is the shape. Raises `DataError`
    naming the problem: no pictures, a picture that cannot be read, pictures that differ while no
    `image_shape` is given, an `image_shape` that pictures cannot take.
    """
    folder = Path(folder)
    if image_shape is not None:
        image_shape = _check_folder_shape(image_shape)
    files = _image_files(folder)
    index = own_split(len(files), split, folder)
    shapes = [_header(path) for path in files]
    if image_shape is None:
        first = {}  # the first file of each shape
        for shape, path in zip(shapes, files):
            first.setdefault(shape, path)
        if len(first) > 1:
            (a, path_a), (b, path_b) = list(first.items())[:2]
            raise DataError(f"the pictures in {folder} differ: {path_a.relative_to(folder)} is {_describe(a)}, "
                            f"{path_b.relative_to(folder)} is {_describe(b)} (H x W); give the shape to load them "
                            f"at: --image-shape C H W (image_shape=(C, H, W)), C = 1 for grey or 3 for colour")
        image_shape = shapes[0]
    return ImageDataset(torch.stack([_read_picture(files[i], image_shape) for i in index.tolist()]))


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


# ------------------------------------------------------------------------------ by name or path


DATASETS = {"binarized_mnist": binarized_mnist, "mnist": mnist, "fashion_mnist": fashion_mnist,
            "cifar10": cifar10, "svhn": svhn, "two_digit_mnist": two_digit_mnist}
IMAGE_SHAPES = {"binarized_mnist": (1, 28, 28), **{name: s.image_shape for name, s in SOURCES.items()},
                "two_digit_mnist": TWO_DIGIT_MNIST_SHAPE}


def load(spec: str | os.PathLike, split: str = "train", root: str | os.PathLike | None = None,
         image_shape: tuple[int, int, int] | None = None, *, download: bool = True) -> ImageDataset:
    """The `split` of the data `spec`: a name of `DATASETS` (read from `root`, see `data_root`;
    downloaded there when missing if `download`), a folder of PNG / JPEG pictures
    (`image_folder`), or a ``.npy`` / ``.npz`` file (`load_array_file`).

    Splits: "train", "valid", "test" (and "full_train" for the torchvision sets) of a named set;
    "train", "valid" and "all" of a folder or file (`own_split`). `image_shape` (C, H, W): what the
    model takes; a folder's pictures are converted and resized to it, named sets and files must
    already have it (else `DataError`, before anything is read). None: the data's own shape.
    """
    if isinstance(spec, str) and spec in DATASETS:
        if image_shape is not None and tuple(image_shape) != IMAGE_SHAPES[spec]:
            raise DataError(f"{spec} images are {list(IMAGE_SHAPES[spec])}, not the image_shape "
                            f"{list(image_shape)} asked for; named data sets are not resized (a folder of "
                            f"pictures is)")
        return DATASETS[spec](root, split, download=download)
    path = Path(spec).expanduser()
    if path.is_dir():
        return image_folder(path, split, image_shape)
    if path.is_file() and path.suffix in (".npy", ".npz"):
        return load_array_file(path, split, image_shape)
    what = "not a .npy/.npz file" if path.is_file() else "no such file or folder"
    raise DataError(f"{str(spec)!r} is neither a known data set ({', '.join(DATASETS)}) nor a folder of pictures "
                    f"nor a .npy/.npz file ({what})")
