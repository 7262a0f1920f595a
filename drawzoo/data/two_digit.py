"""Two-digit MNIST: the DRAW paper's 60 x 60 images holding two MNIST digits placed at random.

The data set of Gregor et al. (2015, arXiv:1502.04623, section "MNIST Generation with Two
Digits"), built from the local MNIST files that `drawzoo.data.mnist` reads, deterministically:

- the digits: the `mnist` split of the same name, so "train" composes the first 50,000 training
  digits, "valid" the last 10,000 (disjoint from train's, as `mnist` splits them), "test" the
  10,000 test digits;
- as many images as digits: 50,000 / 10,000 / 10,000. A seeded permutation pairs digit
  ``order[i]`` with ``order[i - 1]``, so each digit appears in exactly two images, and the two
  digits of an image differ (when the split holds at least two);
- each digit's 28 x 28 box at a uniformly drawn top-left corner (row and column in 0..32), wholly
  inside the frame; where the two overlap their grey levels add, clipped to 255 (the paper says
  only that two digits are placed at random in a 60 x 60 image: the rule for overlaps is ours);
- stored as uint8 ``[N, 1, 60, 60]`` (180 MB for train; float32 would be 720 MB) and binarized as
  `mnist` is: "dynamic" by default (a fresh Bernoulli sample of the grey levels at each access),
  "threshold" or None (grey levels).

The same `seed` gives the same images, bit for bit; each split draws from its own stream.
Composing 50,000 images takes a fraction of a second (numpy, no loop over images), so nothing is
cached.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import DataError
from .dataset import ImageDataset
from .torchvision_sets import mnist

CANVAS = 60  #: the frame's height and width
DIGIT = 28  #: an MNIST digit's height and width
IMAGE_SHAPE = (1, CANVAS, CANVAS)
SPLITS = ("train", "valid", "test")


def layout(n: int, split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The `split`'s images for `n` digits: which two digits each holds, ``pairs`` int64 ``[n, 2]``,
    and where, ``corners`` int64 ``[n, 2, 2]`` (digit, (row, column) of its top-left pixel)."""
    rng = np.random.default_rng((seed, SPLITS.index(split)))
    order = rng.permutation(n)
    pairs = np.stack([order, np.roll(order, 1)], axis=1)
    corners = rng.integers(0, CANVAS - DIGIT + 1, size=(n, 2, 2))
    return pairs, corners


def compose(digits: np.ndarray, pairs: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """uint8 images ``[n, 60, 60]``: digits ``[M, 28, 28]`` (uint8) ``pairs[i]`` with their top-left
    pixels at ``corners[i]``, on black; where they overlap, ``min(a + b, 255)``."""
    n = len(pairs)
    images = np.zeros((n, CANVAS, CANVAS), np.uint8)
    # every 28 x 28 window of every image, a writeable view: windows[i, row, col] is image i's box there
    windows = np.lib.stride_tricks.sliding_window_view(images, (DIGIT, DIGIT), axis=(1, 2), writeable=True)
    i = np.arange(n)
    (r1, c1), (r2, c2) = corners[:, 0].T, corners[:, 1].T
    windows[i, r1, c1] = digits[pairs[:, 0]]
    under = windows[i, r2, c2]
    windows[i, r2, c2] = under + np.minimum(digits[pairs[:, 1]], 255 - under)  # a + b, clipped, in uint8
    return images


def two_digit_mnist(root: str | os.PathLike | None = None, split: str = "train", binarize: str | None = "dynamic",
                    *, download: bool = True, seed: int = 0):
    """Two-digit MNIST (see the module), without labels, composed from the MNIST files.

    Args:
        root: the data folder holding MNIST (`drawzoo.data.data_root`; None: its default).
        split: "train", "valid" or "test".
        binarize: "dynamic", "threshold" or None, as `drawzoo.data.mnist`'s.
        download: download MNIST into ``root`` when it is missing.
        seed: the seed of the layout: which digits go together, and where.

    Returns:
        An `ImageDataset` of 50,000, 10,000 or 10,000 images ``[1, 60, 60]``.

    Raises:
        DataError: an unknown split, or MNIST's as `drawzoo.data.mnist` raises them.
    """
    if split not in SPLITS:
        raise DataError(f"unknown two_digit_mnist split {split!r}; valid splits: {', '.join(SPLITS)}")
    source = mnist(root, split, binarize, download=download)  # checks binarize before reading
    digits = source.images[:, 0].numpy()  # the stored uint8 grey levels, whatever binarize says
    images = compose(digits, *layout(len(digits), split, seed))
    return ImageDataset(torch.from_numpy(images).unsqueeze(1), binarize=binarize)
