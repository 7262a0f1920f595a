"""The DRAW paper's experiments as recipes: two-digit MNIST (a data set composed from MNIST's files),
SVHN and CIFAR-10 (Table 3's networks), end to end on tiny files in each data set's own format."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import drawzoo
from drawzoo import DataError, data
from drawzoo.training.recipes import load_recipe
from drawzoo.data.two_digit import CANVAS, DIGIT, compose, layout
from tests.test_benchmark_script import _script
from tests.test_data import REAL_DATA, md5, offline, write_cifar10, write_mnist_like  # noqa: F401 (a fixture)
from tests.test_train_config import run

RECIPES = Path(__file__).resolve().parents[1] / "benchmarks" / "recipes"
PAPER = sorted((RECIPES / "paper").glob("*.toml")) + sorted((RECIPES / "paper_samples").glob("*.toml"))
# each recipe shrunk to a few seconds of CPU: the command-line options override its settings
TINY = ["--T", 2, "--hidden-dim", 8, "--latent-dim", 4, "--batch-size", 2, "--max-steps", 2, "--no-compile",
        "--valid-limit", 2, "--quiet"]


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """MNIST/raw with 8 training digits (the last 3 "valid") and 4 test digits; the digits as uint8
    ``[N, 28, 28]`` by split, read back from what was written."""
    root = tmp_path / "root"
    sets = write_mnist_like(root / "MNIST" / "raw", (("train", 8), ("t10k", 4)), seed=3)
    monkeypatch.setitem(data.VALID_SIZES, "mnist", 3)
    train, test = ((sets[p][0][:, 0] * 255).round().to(torch.uint8).numpy() for p in ("train", "t10k"))
    return root, {"train": train[:5], "valid": train[5:], "test": test}


def by_hand(digits, pairs, corners):
    """`compose`, one image and one pixel sum at a time."""
    out = np.zeros((len(pairs), CANVAS, CANVAS), np.int64)
    for image, pair, corner in zip(out, pairs, corners):
        for k, (row, col) in zip(pair, corner):
            image[row:row + DIGIT, col:col + DIGIT] += digits[k]
    return np.minimum(out, 255).astype(np.uint8)


# -- two-digit MNIST ------------------------------------------------------------------------------


def test_two_digit_mnist_composes_two_digits_of_its_own_split(tiny_mnist):
    root, digits = tiny_mnist
    for split, n in [("train", 5), ("valid", 3), ("test", 4)]:
        ds = data.load("two_digit_mnist", split, root, download=False)
        assert (len(ds), ds.image_shape, ds.images.dtype, ds.binarize, ds.labels) == (
            n, (1, 60, 60), torch.uint8, "dynamic", None)
        pairs, corners = layout(n, split)
        # every digit in exactly two images, never twice in one; each box wholly inside the frame
        assert sorted(pairs.ravel().tolist()) == sorted(list(range(n)) * 2) and (pairs[:, 0] != pairs[:, 1]).all()
        assert corners.min() >= 0 and corners.max() <= CANVAS - DIGIT
        # the split's own digits (train's and valid's disjoint, test's from t10k), added and clipped
        assert np.array_equal(ds.images[:, 0].numpy(), by_hand(digits[split], pairs, corners))
        assert set(ds[:].unique().tolist()) <= {0.0, 1.0}  # binarized afresh, as mnist is


def test_two_digit_mnist_is_the_same_bit_for_bit_for_the_same_seed(tiny_mnist):
    root, _ = tiny_mnist
    first, again = (data.two_digit_mnist(root, "train", None, download=False) for _ in range(2))
    assert torch.equal(first.images, again.images) and torch.equal(first[:], first.images.float() / 255)
    other = data.two_digit_mnist(root, "train", None, download=False, seed=1)
    assert not torch.equal(first.images, other.images)
    assert not np.array_equal(layout(5, "train")[1], layout(5, "valid")[1][:, :5])  # a stream per split


def test_overlapping_digits_add_and_clip():
    digits = np.full((2, DIGIT, DIGIT), 200, np.uint8)
    digits[1, :, :14] = 30
    image = compose(digits, np.array([[0, 1]]), np.array([[[0, 0], [0, 10]]]))[0]
    assert (image[0, :10] == 200).all() and (image[0, 10:24] == 230).all() and (image[0, 24:28] == 255).all()
    assert (image[0, 28:38] == 200).all() and (image[0, 38:] == 0).all() and (image[28:] == 0).all()


def test_two_digit_mnist_errors_name_the_problem_before_reading(tmp_path, offline):  # noqa: F811
    with pytest.raises(DataError, match="unknown two_digit_mnist split 'full_train'; valid splits: train, valid, "
                       "test"):
        data.load("two_digit_mnist", "full_train", tmp_path)
    with pytest.raises(DataError, match=r"unknown binarize 'yes'"):
        data.two_digit_mnist(tmp_path, "train", "yes")
    with pytest.raises(DataError, match=r"two_digit_mnist images are \[1, 60, 60\], not the image_shape "
                       r"\[1, 28, 28\]"):
        data.load("two_digit_mnist", "train", tmp_path, image_shape=(1, 28, 28))
    with pytest.raises(DataError, match=r"MNIST could not be read from .*download=False"):
        data.two_digit_mnist(tmp_path, "test", download=False)
    assert offline == [] and not (tmp_path / "MNIST").exists()


@pytest.mark.skipif(not REAL_DATA, reason="DRAWZOO_DATA is not set: no real MNIST files")
def test_two_digit_mnist_of_the_real_mnist_files():
    sizes = {split: len(data.two_digit_mnist(REAL_DATA, split, download=False)) for split in ("valid", "test")}
    assert sizes == {"valid": 10_000, "test": 10_000}
    train = data.two_digit_mnist(REAL_DATA, "train", download=False)
    assert len(train) == 50_000 and train.images.nbytes == 50_000 * 60 * 60  # uint8: 180 MB
    ink = train.images[:1000].float().mean() / 255  # two MNIST digits' worth (about 0.13 of 784 pixels each)
    assert 2 * 0.10 * 784 / 3600 < ink < 2 * 0.16 * 784 / 3600


# -- the paper's recipes --------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAPER, ids=[f"{p.parent.name}/{p.stem}" for p in PAPER])
def test_every_paper_recipe_loads_builds_its_model_and_names_its_published_figure(path):
    recipe = load_recipe(path)
    if recipe.model is None:  # paper/default.toml: nll_mnist.py's budget for a model no recipe names
        return
    reference = recipe.benchmark["reference"]  # the VAEs' are other papers'
    assert "DRAW paper" in reference or (recipe.model == "vae" and reference) or (
        recipe.model == "hvae" and "IWAE paper, Table 3: fixed binarization" in reference)
    if recipe.campaign:  # a campaign row: its published figure is the one its reference quotes
        assert f"{recipe.campaign['published']:.2f}" in reference
    with torch.device("meta"):  # the network, without paying for its weights
        model = drawzoo.load(recipe.model, **recipe.config)
    assert model.image_shape == data.IMAGE_SHAPES[recipe.data.train] and model.num_parameters() > 0
    recipe.train_config()


def test_the_table_3_settings_and_nll_mnist_s_paper_preset():
    table3 = {"svhn": dict(image_shape=(3, 32, 32), T=32, hidden_dim=800, latent_dim=100, read_size=12, write_size=12),
              "cifar10": dict(image_shape=(3, 32, 32), T=64, hidden_dim=400, latent_dim=200, read_size=5, write_size=5)}
    for name, config in table3.items():
        recipe = load_recipe(RECIPES / "paper_samples" / f"{name}.toml")
        assert recipe.data.train == name
        with torch.device("meta"):
            built = drawzoo.load(recipe.model, **recipe.config).config
        assert {k: getattr(built, k) for k in config} == config and built.attention
    script = _script()  # the MNIST rows stay nll_mnist.py's; the other data sets are no preset of it
    assert "paper_samples" not in script.PRESETS and "paper" in script.PRESETS
    assert [r.label for r in script.select_runs(script.load_preset("paper"), None)] == [
        "DRAW (attention)", "DRAW (no attention)", "VAE, 1 stochastic layer", "VAE, 2 stochastic layers", "VAE"]


def write_svhn(root, monkeypatch, counts=(("train", 5), ("test", 3))):
    """SVHN/{train,test}_32x32.mat as scipy writes them ([H, W, C, N], digit 0 as label 10), with
    torchvision's md5s set to theirs."""
    scipy_io = pytest.importorskip("scipy.io")
    from torchvision.datasets import SVHN

    (root / "SVHN").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in counts:
        path = root / "SVHN" / f"{split}_32x32.mat"
        scipy_io.savemat(path, {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                "y": rng.integers(1, 11, (n, 1)).astype(np.uint8)})
        monkeypatch.setitem(SVHN.split_list, split, [SVHN.split_list[split][0], path.name, md5(path)])


def write_mnist(root, monkeypatch):
    write_mnist_like(root / "MNIST" / "raw", (("train", 8), ("t10k", 3)))


# each data set's files in its own format, and the torchvision set whose valid split the test shrinks to 3
FILES = {"svhn": (write_svhn, "svhn"), "cifar10": (write_cifar10, "cifar10"), "two_digit_mnist": (write_mnist, "mnist")}


@pytest.mark.parametrize("name", list(FILES))
def test_a_paper_recipe_trains_and_scores_end_to_end(name, tmp_path, monkeypatch, capsys, offline):  # noqa: F811
    root, ckpt, recipe = tmp_path / "root", tmp_path / f"{name}.pt", RECIPES / "paper_samples" / f"{name}.toml"
    write, source = FILES[name]
    write(root, monkeypatch)  # 3 test images each
    monkeypatch.setitem(data.VALID_SIZES, source, 3)
    code, out, err = run(capsys, "train", "--recipe", recipe, *TINY, "--data-root", root, "--checkpoint", ckpt)
    assert code == 0, err
    model, config = drawzoo.load(checkpoint=ckpt), load_recipe(recipe).config
    assert (model.image_shape, model.config.read_size, model.config.write_size, model.config.T) == (
        tuple(config["image_shape"]), config["read_size"], config["write_size"], 2)
    code, out, err = run(capsys, "eval", ckpt, "--data", name, "--data-root", root, "-k", 2, "--json",
                         tmp_path / "eval.json", "--quiet")
    assert code == 0, err
    scored = json.loads((tmp_path / "eval.json").read_text())
    assert (scored["data"], scored["split"], scored["num_images"]) == (name, "test", 3)
    assert np.isfinite(scored["neg_elbo"]) and scored["nll"] <= scored["neg_elbo"] + 1e-3
    assert offline == []  # the files were read as they are: nothing downloaded
