"""Image data in any of the forms users hold it, as a `Dataset` of ``[C, H, W]`` float images, and
the batches, subsets and epochs' binarizations drawn from it."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from ..errors import InputError
from . import ImageDataset
from .images import check_images


def as_dataset(data, image_shape, name: str = "data") -> Dataset:
    """`data` as a `Dataset` of images `image_shape` (C, H, W): a tensor or numpy array
    ``[N, C, H, W]`` in [0, 1] becomes an `ImageDataset` (checked here, in full); an `ImageDataset`
    must hold images of that shape (`InputError` if not); any other `Dataset` of such images
    (optionally as ``(image, label)`` pairs) is taken as it is."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return ImageDataset(check_images(data, image_shape, device="cpu", name=name))
    if isinstance(data, ImageDataset):
        if data.image_shape != tuple(image_shape):
            raise InputError(f"{name} holds images {list(data.image_shape)} but the model expects "
                             f"{list(image_shape)} (image_shape={tuple(image_shape)})")
        return data
    if isinstance(data, Dataset):
        return data
    raise TypeError(f"{name} must be a tensor, numpy array or torch Dataset, got {type(data).__name__}")


def epoch_data(dataset: Dataset, seed: int, epoch: int) -> Dataset:
    """What epoch `epoch` (0-based) of a run seeded `seed` trains on: a dynamically binarized
    `ImageDataset` in that epoch's fresh draw (`ImageDataset.epoch_draw`), also inside a
    ``torch.utils.data.Subset`` or ``ConcatDataset`` of it; any other data as it is."""
    if isinstance(dataset, ImageDataset):
        return dataset.epoch_draw(seed, epoch)
    if isinstance(dataset, Subset):
        inner = epoch_data(dataset.dataset, seed, epoch)
        return dataset if inner is dataset.dataset else Subset(inner, dataset.indices)
    if isinstance(dataset, ConcatDataset):
        parts = [epoch_data(part, seed, epoch) for part in dataset.datasets]
        same = all(a is b for a, b in zip(parts, dataset.datasets))
        return dataset if same else ConcatDataset(parts)
    return dataset


def collate_images(batch) -> torch.Tensor:
    """A batch ``[B, C, H, W]`` from a list of images or ``(image, label, ...)`` items, or an
    already-stacked tensor (from ``__getitems__``)."""
    if isinstance(batch, torch.Tensor):
        return batch
    return torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in batch])


def random_subset(data, n: int | None, seed: int = 0):
    """``n`` items of ``data`` drawn at random without replacement with a fixed seed, in their
    original order. Never the first n rows: benchmark splits may be sorted (binarized MNIST's test
    split is sorted by label). ``drawzoo eval --limit n --seed s`` scores
    ``random_subset(data, n, seed=s)``.

    Args:
        data: a tensor, array, `ImageDataset` or other Dataset.
        n: how many items; None, or not smaller than ``len(data)``: all of it.
        seed: the seed of the draw.

    Returns:
        The same type as ``data`` (``data`` itself when all of it), a `Subset` for another Dataset.

    Raises:
        ValueError: ``n`` below 1.
    """
    if n is None or n >= len(data):
        return data
    if n < 1:
        raise ValueError(f"a subset needs n >= 1, got {n}")
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return data[index.numpy() if isinstance(data, np.ndarray) else index]
    if isinstance(data, ImageDataset):
        return data.subset(index)
    return Subset(data, index.tolist())
