"""Coloured MNIST digits as PNG files: colour demo data for ``drawzoo train draw --data FOLDER``.

Each of `n` MNIST digits drawn at random (seeded) from its 60,000 training images, grey values g
in [0, 1], is painted ``background * (1 - g) + foreground * g`` with a random foreground and
background colour (RGB in [0, 1]^3, at least 0.6 apart) and saved as a 3 x 28 x 28 PNG.

    python benchmarks/colour_mnist.py --n 5000 --out data/colour_mnist    # MNIST from $DRAWZOO_DATA
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import drawzoo
from drawzoo.cli import run_program
from drawzoo.data import mnist
from drawzoo.figures.pictures import save_picture

MIN_DISTANCE = 0.6  # between foreground and background colour, in RGB [0, 1]^3


def colour_pairs(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` (foreground, background) colours ``[n, 3]`` each, at least `MIN_DISTANCE` apart."""
    foreground, background = rng.random((n, 3)), rng.random((n, 3))
    while (close := np.linalg.norm(foreground - background, axis=1) < MIN_DISTANCE).any():
        foreground[close], background[close] = rng.random((close.sum(), 3)), rng.random((close.sum(), 3))
    return foreground, background


def colour_digits(grey: np.ndarray, seed: int = 0) -> np.ndarray:
    """Grey digits ``[n, 1, H, W]`` in [0, 1] painted in colour: uint8 ``[n, 3, H, W]``."""
    foreground, background = colour_pairs(len(grey), np.random.default_rng(seed))
    pictures = background[:, :, None, None] * (1 - grey) + foreground[:, :, None, None] * grey
    return np.rint(pictures * 255).astype(np.uint8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="number of pictures [5000]")
    parser.add_argument("--out", required=True, help="folder to write 00000.png, 00001.png, ... to")
    parser.add_argument("--seed", type=int, default=0, help="seed of the digits and colours drawn [0]")
    parser.add_argument("--data-root", help="folder holding MNIST/raw [$DRAWZOO_DATA, else a per-user cache]")
    args = parser.parse_args(argv)
    return run_program("colour_mnist", write_pictures, args)


def write_pictures(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # a bad --out is said before any work
    digits = mnist(args.data_root, "full_train", binarize=None)
    if not 1 <= args.n <= len(digits):
        raise drawzoo.ConfigError(f"--n must be in 1..{len(digits)}, got {args.n}")
    index = torch.randperm(len(digits), generator=torch.Generator().manual_seed(args.seed))[:args.n]
    pictures = colour_digits(digits[index].numpy(), args.seed)
    for i, picture in enumerate(pictures):
        image = Image.fromarray(picture.transpose(1, 2, 0), "RGB")
        save_picture(lambda f, format: image.save(f, format=format), out / f"{i:05d}.png")
    print(f"wrote {args.n} coloured MNIST digits (3 x 28 x 28 PNG) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
