"""Folders of PNG / JPEG pictures as an `ImageDataset`: converted to grey or colour, resized and
centre-cropped to the image shape asked for (`image_folder`). Every picture's header is read
before any is decoded, and a picture declaring more than `MAX_PICTURE_PIXELS` is refused."""

from __future__ import annotations

import contextlib
import operator
import os
from pathlib import Path

import torch
from PIL import Image

from ..errors import DataError
from ..files import note_read
from .dataset import ImageDataset, own_split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# The most pixels (width x height) a picture may declare: more is refused from its header, before
# decoding (a decompression bomb: a small file that decodes to gigabytes). 50 megapixels hold an 8K
# frame (33 MP) or a 48 MP photo, at most 200 MB decoded (RGBA); below Pillow's own limit
# (Image.MAX_IMAGE_PIXELS, 89.5 MP), so that a picture within it decodes without Pillow's warning.
MAX_PICTURE_PIXELS = 50_000_000


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


@contextlib.contextmanager
def _pillow_limit_lifted():
    """Pillow's decompression-bomb check (a global) off while `_header` reads a header, so that
    it sees any picture's declared size and applies `MAX_PICTURE_PIXELS` itself, naming the size;
    decoding (`_read_picture`) keeps Pillow's check."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _header(path: Path) -> tuple[int, int, int]:
    """(C, H, W) of the picture at `path`, from its header (nothing is decoded); `DataError` for a
    picture of more than `MAX_PICTURE_PIXELS` pixels."""
    try:
        with _pillow_limit_lifted(), Image.open(path) as image:
            shape = _channels(image), image.height, image.width
    except PICTURE_ERRORS as e:
        raise _open_failed(path, e) from e
    _, H, W = shape
    if H * W > MAX_PICTURE_PIXELS:
        raise DataError(f"{path} declares {W:,} x {H:,} pixels (width x height), more than the "
                        f"{MAX_PICTURE_PIXELS:,} a picture may have (drawzoo.data.folders.MAX_PICTURE_PIXELS); it "
                        f"was not decoded: shrink it first")
    return shape


def _read_picture(path: Path, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """The picture at `path` as uint8 ``image_shape`` = (C, H, W): converted to grey ("L") or colour
    ("RGB"; alpha is dropped), resized (antialiased) to the smallest size that covers H x W, and
    centre-cropped to H x W; a picture of size H x W is taken as it is."""
    from torchvision.transforms.v2 import functional as F

    C, H, W = image_shape
    try:
        with Image.open(path) as image:
            image = image.convert("L" if C == 1 else "RGB")
        note_read(path, "data")
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
    """The PNG and JPEG pictures in ``folder`` and its subfolders (sorted by path; hidden files
    and other files are passed over), not binarized (grey values: DRAW's Bernoulli likelihood then
    scores them as a reconstruction cross-entropy).

    Pictures of any size and mode are converted to grey (C = 1) or colour (C = 3), resized so that
    they cover H x W and centre-cropped to it (`_read_picture`).

    Args:
        folder: the folder of pictures.
        split: "train", "valid" or "all" (`own_split`).
        image_shape: (C, H, W), the shape the pictures are converted to. None: the pictures must
            all have one size and be all grey or all colour, and that is the shape.

    Returns:
        An `ImageDataset` of images ``image_shape`` with values in [0, 1].

    Raises:
        DataError: naming the problem: no pictures, a picture that cannot be read or that
            declares more than `MAX_PICTURE_PIXELS` (from every header, before any picture is
            decoded), pictures that differ while no ``image_shape`` is given, an ``image_shape``
            that pictures cannot take.
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
