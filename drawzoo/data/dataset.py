"""The one data set class, `ImageDataset` (images [N, C, H, W], binarized at each access or not),
and `own_split`, how a folder or file of images is split into "train" and "valid"."""

from __future__ import annotations

import copy

import torch

from ..errors import DataError, InputError
from . import binarization
from .images import check_images

BINARIZE = (None, "threshold", "dynamic")

# A folder of images or an array file: a fixed random VALID_FRACTION of it is "valid".
VALID_FRACTION = 0.1
OWN_SPLITS = ("train", "valid", "all")


class ImageDataset(torch.utils.data.Dataset):
    """Images ``[C, H, W]`` with values in [0, 1], optionally binarized at each access, with
    optional labels.

    `images` ``[N, C, H, W]`` is kept as given: floats in [0, 1], uint8 bytes (read as byte / 255,
    a quarter of float32's memory) or bools. `labels` is int64 ``[N]``, or None. `binarize`: None
    (the values), "threshold" (1 where the value is >= 0.5) or "dynamic": each image a Bernoulli
    draw of its values (`drawzoo.data.binarization`), seeded, so that every access, process and
    platform sees the same draw: the fixed one (what valid and test splits are scored on), or
    epoch e's fresh draw of a training run seeded s in the view ``ds.epoch_draw(s, e)``.
    `keys` ``[N]``: each image's key in the draw (default ``0 .. N-1``; a subset keeps its
    images' keys, so they keep their draws).

    ``ds[i]`` is a float32 image ``[C, H, W]``; ``ds[a:b]`` and ``ds[indices]`` (a list or tensor)
    a float32 batch ``[B, C, H, W]``, ``ds[:]`` all the images. A DataLoader fetches each batch
    with one indexing (`__getitems__`).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, binarize: str | None = None, *,
                 keys: torch.Tensor | None = None):
        if binarize not in BINARIZE:
            raise DataError(f"unknown binarize {binarize!r}; valid: {', '.join(map(repr, BINARIZE))}")
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            what = f"shape {list(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise InputError(f"images must be a tensor [N, C, H, W], got {what}")
        if len(images) == 0:
            raise InputError("images is empty: an ImageDataset needs at least one image")
        if images.dtype not in (torch.uint8, torch.bool):
            images = check_images(images, images.shape[1:], device="cpu", name="images")
        check_bytes(images)
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.int64)
            if labels.shape != images.shape[:1]:
                raise InputError(f"labels must be [N] = [{len(images)}], got {list(labels.shape)}")
        if keys is not None:
            keys = torch.as_tensor(keys, dtype=torch.int64)
            if keys.shape != images.shape[:1]:
                raise InputError(f"keys must be [N] = [{len(images)}], got {list(keys.shape)}")
        self.images, self.labels, self.binarize = images, labels, binarize
        self.keys = torch.arange(len(images)) if keys is None else keys
        self.draw = binarization.FIXED  #: the draw of "dynamic": binarization.FIXED or (seed, epoch)

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
            return binarization.bernoulli(x, self.keys[index], self.draw)
        return x

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        return list(self[torch.as_tensor(indices)].unbind(0))

    def subset(self, index) -> ImageDataset:
        """The images (and labels) at `index` (a slice, a list or an index tensor), binarized alike."""
        subset = copy.copy(self)  # checked already: a subset of dark 8-bit pictures is no binary data
        subset.images, subset.keys = self.images[index], self.keys[index]
        subset.labels = None if self.labels is None else self.labels[index]
        if len(subset.images) == 0:
            raise InputError("images is empty: an ImageDataset needs at least one image")
        return subset

    def epoch_draw(self, seed: int, epoch: int) -> ImageDataset:
        """This data set with epoch `epoch`'s fresh binarization of a run seeded `seed` (a view:
        the same tensors); itself unless `binarize` is "dynamic". `drawzoo.train` trains on it."""
        if self.binarize != "dynamic":
            return self
        view = copy.copy(self)
        view.draw = binarization.epoch(seed, epoch)
        return view

    def __repr__(self) -> str:
        draw = "" if self.binarize != "dynamic" or self.draw == binarization.FIXED else f", draw={self.draw}"
        return (f"ImageDataset({len(self)} images {list(self.image_shape)}, stored as {self.images.dtype}, "
                f"binarize={self.binarize!r}{draw}{'' if self.labels is None else ', labelled'})")


def check_bytes(images: torch.Tensor, name: str = "images", error: type[Exception] = InputError) -> None:
    """`error` if `images` are uint8 whose values are 0 and 1 only: binary images saved as bytes,
    which read as byte / 255 would be almost black."""
    if images.dtype == torch.uint8 and images.numel() and int(images.max()) == 1:
        raise error(f"{name} holds uint8 values 0 and 1 only: bytes are read as byte / 255, so these would be "
                    "almost black images; save binary images as bool or float (x.astype(bool)), or bytes as 0 and 255")


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
