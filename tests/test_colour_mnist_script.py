"""`benchmarks/colour_mnist.py`: the colour demo data of README, from the real MNIST."""

import numpy as np
from PIL import Image

from drawzoo import data
from tests.conftest import load_script
from tests.test_data import real_data

def _script():
    return load_script("colour_mnist")


def test_digits_are_painted_in_two_distinct_colours():
    grey = np.zeros((50, 1, 2, 2))
    grey[:, :, 0, 0] = 1  # one foreground pixel, three background pixels
    pictures = _script().colour_digits(grey, seed=3).astype(float) / 255
    foreground, background = pictures[:, :, 0, 0], pictures[:, :, 1, 1]
    assert (np.linalg.norm(foreground - background, axis=1) >= 0.6 - 0.01).all()  # less uint8 rounding
    assert len(np.unique(foreground, axis=0)) == 50  # random colours, not a few fixed ones
    assert np.array_equal(pictures, _script().colour_digits(grey, seed=3).astype(float) / 255)


def test_writes_a_folder_that_drawzoo_loads_as_colour(tmp_path, capsys):
    root = real_data()
    assert _script().main(["--n", "6", "--out", str(tmp_path / "pictures"), "--data-root", str(root)]) == 0
    assert "wrote 6 coloured MNIST digits" in capsys.readouterr().out
    files = sorted((tmp_path / "pictures").iterdir())
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(6)]
    with Image.open(files[0]) as picture:
        assert picture.mode == "RGB" and picture.size == (28, 28)
    assert data.load(tmp_path / "pictures", "all").image_shape == (3, 28, 28)
