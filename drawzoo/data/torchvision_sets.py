"""The named data sets that torchvision reads (and downloads): MNIST, Fashion-MNIST, CIFAR-10 and
SVHN, each a `Source`; their "valid" split is the last `VALID_SIZES` images of the training set.
MNIST's and Fashion-MNIST's IDX files are checked against their headers before torchvision reads
them whole (`check_idx`); torchvision checks the other sets' files against their md5."""

from __future__ import annotations

import dataclasses
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import DataError
from ..files import note_read
from .dataset import BINARIZE, ImageDataset
from .locations import data_root

# The torchvision sets: how many of the last training images are the "valid" split.
VALID_SIZES = {"mnist": 10_000, "fashion_mnist": 10_000, "cifar10": 5_000, "svhn": 5_000}
TORCHVISION_SPLITS = ("train", "valid", "test", "full_train")


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


def check_idx(path: Path, item_shape: tuple[int, ...], what: str) -> None:
    """Refuse the IDX file at `path` (MNIST's raw format: bytes 0, 0, 8 (uint8) and the number of
    dimensions, each dimension a big-endian uint32, then the values) unless its header declares
    uint8 values ``[N, *item_shape]`` (`what`: "images", "labels") and the file holds exactly
    those; reads the header only."""
    ndim = 1 + len(item_shape)
    with open(path, "rb") as f:
        header = f.read(4 + 4 * ndim)
    note_read(path, "data")
    if len(header) < 4 + 4 * ndim or header[:4] != bytes([0, 0, 8, ndim]):
        raise DataError(f"{path} is not an IDX file of uint8 {what} (it starts {header[:4].hex(' ') or 'empty'}, "
                        f"expected {bytes([0, 0, 8, ndim]).hex(' ')})")
    n, *shape = struct.unpack(f">{ndim}I", header[4:])
    if tuple(shape) != item_shape:
        raise DataError(f"{path}: its IDX header declares {what} of {' x '.join(map(str, shape))}, expected "
                        f"{' x '.join(map(str, item_shape))}")
    declared, size = len(header) + n * math.prod(item_shape), path.stat().st_size
    if declared != size:
        raise DataError(f"{path}: its IDX header declares {n:,} {what} ({declared:,} bytes) but the file holds "
                        f"{size:,} bytes")


def _read_mnist_like(class_name: str):
    def read(root: Path, train: bool, download: bool):
        raw = root / class_name / "raw"  # torchvision's folder; files it downloads are md5-checked
        prefix = "train" if train else "t10k"
        for path, item_shape, what in ((raw / f"{prefix}-images-idx3-ubyte", (28, 28), "images"),
                                       (raw / f"{prefix}-labels-idx1-ubyte", (), "labels")):
            if path.is_file():
                check_idx(path, item_shape, what)
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
    # keys: the images' places in their file, which name their draws of dynamic binarization
    return ImageDataset(images[part].contiguous(), labels[part], binarize, keys=torch.arange(len(images))[part])


def mnist(root: str | os.PathLike | None = None, split: str = "train", binarize: str | None = "dynamic", *,
          download: bool = True) -> ImageDataset:
    """MNIST, with labels.

    Args:
        root: the data folder (see `drawzoo.data.data_root`; None: its default).
        split: "train" (the training set but its last ``VALID_SIZES["mnist"]`` images), "valid"
            (those), "full_train" (all of it) or "test".
        binarize: "dynamic" (Bernoulli draws of the grey levels: a fresh one each training epoch,
            one fixed draw elsewhere, e.g. the valid and test splits; `drawzoo.data.binarization`),
            "threshold" or None (grey values).
        download: download the files into ``root`` when they are missing (needs internet).

    Returns:
        An `ImageDataset` of images ``[1, 28, 28]`` with their labels.

    Raises:
        DataError: an unknown split or ``binarize``, or files that cannot be read (or are missing
            and not downloaded), naming the folder and what to put there.
    """
    return _torchvision_set("mnist", root, split, binarize, download)


def fashion_mnist(root: str | os.PathLike | None = None, split: str = "train", binarize: str | None = None, *,
                  download: bool = True) -> ImageDataset:
    """Fashion-MNIST (Xiao et al. 2017), with labels.

    Args:
        root: the data folder (see `drawzoo.data.data_root`; None: its default).
        split: "train", "valid", "test" or "full_train", as `mnist`'s.
        binarize: None (grey values), "dynamic" or "threshold", as `mnist`'s.
        download: download the files into ``root`` when they are missing (needs internet).

    Returns:
        An `ImageDataset` of images ``[1, 28, 28]`` with their labels.

    Raises:
        DataError: an unknown split or ``binarize``, or files that cannot be read (or are missing
            and not downloaded), naming the folder and what to put there.
    """
    return _torchvision_set("fashion_mnist", root, split, binarize, download)


def cifar10(root: str | os.PathLike | None = None, split: str = "train", *, download: bool = True) -> ImageDataset:
    """CIFAR-10, with labels.

    Args:
        root: the data folder (see `drawzoo.data.data_root`; None: its default).
        split: "train", "valid", "test" or "full_train", as `mnist`'s.
        download: download the files into ``root`` when they are missing (needs internet).

    Returns:
        An `ImageDataset` of colour images ``[3, 32, 32]`` with their labels.

    Raises:
        DataError: an unknown split, or files that cannot be read (or are missing and not
            downloaded), naming the folder and what to put there.
    """
    return _torchvision_set("cifar10", root, split, None, download)


def svhn(root: str | os.PathLike | None = None, split: str = "train", *, download: bool = True) -> ImageDataset:
    """SVHN's cropped digits (the 73,257 training and 26,032 test images, not "extra"), with
    labels. Needs scipy.

    Args:
        root, split, download: as `cifar10`'s.

    Returns:
        An `ImageDataset` of colour images ``[3, 32, 32]`` with their labels (digit 0 is 0).

    Raises:
        DataError: as `cifar10` raises it.
    """
    return _torchvision_set("svhn", root, split, None, download)
