"""Image data in any of the forms users hold it, as a `Dataset` of ``[C, H, W]`` float images."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .images import check_images


class ImageTensorDataset(Dataset):
    """Images ``[N, C, H, W]`` in [0, 1], checked once up front; batched fetches are one slice."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return self.images[torch.as_tensor(indices)]


def as_dataset(data, image_shape, name: str = "data") -> Dataset:
    """`data` (tensor or numpy array ``[N, C, H, W]`` in [0, 1], or a `Dataset` of such images,
    optionally as ``(image, label)`` pairs) as a `Dataset`. Arrays are checked here, in full."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return ImageTensorDataset(check_images(data, image_shape, device="cpu", name=name))
    if isinstance(data, Dataset):
        return data
    raise TypeError(f"{name} must be a tensor, numpy array or torch Dataset, got {type(data).__name__}")


def collate_images(batch) -> torch.Tensor:
    """A batch ``[B, C, H, W]`` from a list of images or ``(image, label, ...)`` items, or an
    already-stacked tensor (from ``__getitems__``)."""
    if isinstance(batch, torch.Tensor):
        return batch
    return torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in batch])


def random_subset(data, n: int | None, seed: int = 0):
    """`n` items of `data` (tensor or Dataset) drawn at random without replacement with a fixed
    seed, in their original order; all of it if `n` is None or not smaller. Never the first n
    rows: benchmark splits may be sorted (binarized MNIST's test split is sorted by label)."""
    if n is None or n >= len(data):
        return data
    if n < 1:
        raise ValueError(f"a subset needs n >= 1, got {n}")
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return data[index.numpy() if isinstance(data, np.ndarray) else index]
    return torch.utils.data.Subset(data, index.tolist())
