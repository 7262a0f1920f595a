"""The images the zoo trains and evaluates on: named data sets, folders of pictures, array files.

Every loader returns an `ImageDataset`: images ``[C, H, W]`` with values in [0, 1]. `load` is the
one entry point (``drawzoo train/eval --data``); it takes

- a name (`DATASETS`), read from the data folder and downloaded there on first use:

  ================  ===========  ===============================  ============================
  name              image shape  train / valid / test images      files under the data folder
  ================  ===========  ===============================  ============================
  binarized_mnist   1 x 28 x 28  50,000 / 10,000 / 10,000         ``binarized_mnist/*.amat[.gz]``
  mnist             1 x 28 x 28  50,000 / 10,000 / 10,000         ``MNIST/raw/*-ubyte``
  fashion_mnist     1 x 28 x 28  50,000 / 10,000 / 10,000         ``FashionMNIST/raw/*-ubyte``
  cifar10           3 x 32 x 32  45,000 /  5,000 / 10,000         ``cifar-10-batches-py/``
  svhn              3 x 32 x 32  68,257 /  5,000 / 26,032         ``SVHN/{train,test}_32x32.mat``
  two_digit_mnist   1 x 60 x 60  50,000 / 10,000 / 10,000         ``MNIST/raw/*-ubyte`` (composed)
  ================  ===========  ===============================  ============================

  binarized_mnist is the fixed binarization of Larochelle & Murray (2011), the standard NLL
  benchmark; mnist (and two_digit_mnist) is binarized "dynamic"ally, the IWAE paper's protocol
  (`binarization`): training sees a fresh seeded Bernoulli draw of the grey levels each epoch (the
  same for the same seed, and for a resumed run), its valid and test splits one fixed draw, the
  same in every process and call; the others are grey or colour values (fashion_mnist too, unless
  ``binarize="dynamic"``). The torchvision sets' "valid" split is the last `VALID_SIZES` images of their training
  set, "train" the ones before, "full_train" both. svhn needs scipy (``pip install scipy``);
- a folder of PNG / JPEG pictures of any size up to ``drawzoo.data.folders.MAX_PICTURE_PIXELS`` (`image_folder`),
  converted to grey or colour and resized and centre-cropped to the image shape asked for;
- a ``.npy`` / ``.npz`` file of images (`load_array_file`).

Every file is checked against what its own header declares before it is read (an array's shape,
a picture's size, an IDX file's count), so that a small file cannot ask for a large allocation.

A folder or file is split by a fixed seed into "valid" (`VALID_FRACTION` of the images, at
least one) and "train" (the rest); "all" is every image (`own_split`).

Where data lives (`data_root`): the ``root`` argument, else ``$DRAWZOO_DATA``, else
``<cache>/data``, where ``<cache>`` (`cache_dir`) is ``$DRAWZOO_CACHE``, else
``$XDG_CACHE_HOME/drawzoo``, else ``~/.cache/drawzoo``. The data folder is only read once its
files are there (it may be read-only); parsed binarized MNIST is cached under ``<cache>``.

The modules, one concern each: `dataset` (`ImageDataset`, `own_split`), `binarization` (the
seeded draws of dynamic binarization), `locations`, `amat`
(binarized MNIST), `torchvision_sets` (the other named sets), `folders` (pictures), `arrays`
(``.npy`` / ``.npz``), `two_digit` (the DRAW paper's two-digit MNIST). A named set is a loader ``(root, split, *, download) -> ImageDataset`` in
a module of its own, registered here in `DATASETS` and `IMAGE_SHAPES`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError, InputError  # noqa: F401  (drawzoo.data.DataError, as before)
from . import amat, binarization, two_digit
from .amat import PIXELS, ROW_BYTES, SHA256, SPLIT_SIZES, URL, binarized_mnist, read_amat
from .arrays import load_array_file
from .dataset import BINARIZE, OWN_SPLITS, VALID_FRACTION, ImageDataset, own_split
from .folders import IMAGE_SUFFIXES, PICTURE_ERRORS, image_folder
from .locations import cache_dir, data_root
from .torchvision_sets import (MNIST_FILES, SOURCES, TORCHVISION_SPLITS, VALID_SIZES, Source, cifar10, fashion_mnist,
                               mnist, svhn)
from .two_digit import two_digit_mnist

__all__ = [
    "load", "DATASETS", "IMAGE_SHAPES", "ImageDataset", "own_split", "image_folder", "load_array_file",
    "binarized_mnist", "read_amat", "mnist", "fashion_mnist", "cifar10", "svhn", "two_digit_mnist", "Source", "SOURCES",
    "cache_dir", "data_root", "SPLIT_SIZES", "SHA256", "URL", "PIXELS", "ROW_BYTES", "VALID_SIZES",
    "TORCHVISION_SPLITS", "MNIST_FILES", "BINARIZE", "VALID_FRACTION", "OWN_SPLITS", "IMAGE_SUFFIXES",
    "PICTURE_ERRORS", "binarization",
]

# The named data sets: name -> loader(root, split, *, download) and name -> image shape (C, H, W).
DATASETS = {"binarized_mnist": binarized_mnist, "mnist": mnist, "fashion_mnist": fashion_mnist,
            "cifar10": cifar10, "svhn": svhn, "two_digit_mnist": two_digit_mnist}
IMAGE_SHAPES = {"binarized_mnist": amat.IMAGE_SHAPE, **{name: s.image_shape for name, s in SOURCES.items()},
                "two_digit_mnist": two_digit.IMAGE_SHAPE}


def load(spec: str | os.PathLike, split: str = "train", root: str | os.PathLike | None = None,
         image_shape: tuple[int, int, int] | None = None, *, download: bool = True) -> ImageDataset:
    """The ``split`` of the data ``spec``: a named data set, a folder of pictures or an array file.

    Args:
        spec: a name of ``DATASETS`` (read from ``root``), a folder of PNG / JPEG pictures
            (`image_folder`), or a ``.npy`` / ``.npz`` file (`load_array_file`).
        split: "train", "valid", "test" (and "full_train" for the torchvision sets) of a named
            set; "train", "valid" and "all" of a folder or file (`own_split`).
        root: the data folder of the named sets (see `data_root`; None: its default).
        image_shape: (C, H, W), what the model takes; a folder's pictures are converted and
            resized to it, named sets and files must already have it. None: the data's own shape.
        download: download a named set into ``root`` when it is missing.

    Returns:
        The images as an `ImageDataset`.

    Raises:
        DataError: ``spec`` is none of these, a named set or file has another ``image_shape``
            (before anything is read), or the data cannot be read (as the loader says).
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
