import gzip
import hashlib
import os
import pickle
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drawzoo import DataError, InputError, data

# Read before the autouse fixture below clears it for the synthetic tests.
REAL_DATA = os.environ.get("DRAWZOO_DATA")
SMALL = {"train": 5, "valid": 3, "test": 2}
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """Every test caches into its own folder, ignores the user's data and cache settings, and has
    no network: the URLs that were asked for (by drawzoo or torchvision) are listed here."""
    monkeypatch.setenv("DRAWZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DRAWZOO_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    asked = []

    def urlopen(url, *args, **kwargs):
        asked.append(getattr(url, "full_url", url))
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked


@pytest.fixture
def small(monkeypatch):
    """Splits of a few rows, so that synthetic files are complete."""
    monkeypatch.setattr(data.amat, "SPLIT_SIZES", dict(SMALL))


def random_bits(rows, seed=0):
    return (np.random.default_rng(seed).random((rows, 784)) < 0.3).astype(np.uint8)


def amat_text(bits, newline="\n", sep=" "):
    return "".join(sep.join(map(str, row)) + newline for row in bits).encode()


def write(path, content: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)
    return path


def files_under(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


# ------------------------------------------------------------------------------ locations


def test_cache_dir_and_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("DRAWZOO_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "drawzoo"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "xdg" / "drawzoo"
    monkeypatch.setenv("DRAWZOO_CACHE", str(tmp_path / "mine"))
    assert data.cache_dir() == tmp_path / "mine"
    assert data.data_root() == tmp_path / "mine" / "data"
    monkeypatch.setenv("DRAWZOO_DATA", str(tmp_path / "d"))
    assert data.data_root() == tmp_path / "d"
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"


# ------------------------------------------------------------------------ binarized MNIST


@pytest.mark.parametrize("relpath", ["binarized_mnist/binarized_mnist_valid.amat",
                                     "binarized_mnist/binarized_mnist_valid.amat.gz",
                                     "binarized_mnist_valid.amat.gz"])
def test_reads_amat_and_gz_from_either_folder(small, tmp_path, relpath):
    bits = random_bits(3)
    write(tmp_path / "root" / relpath, amat_text(bits))
    x = data.binarized_mnist(tmp_path / "root", "valid", download=False)[:]
    assert x.dtype == torch.float32 and x.shape == (3, 1, 28, 28)
    assert torch.equal(x, torch.from_numpy(bits).float().view(3, 1, 28, 28))


def test_root_defaults_to_drawzoo_data(small, tmp_path, monkeypatch):
    bits = random_bits(2)
    write(tmp_path / "d" / "binarized_mnist_test.amat", amat_text(bits))
    monkeypatch.setenv("DRAWZOO_DATA", str(tmp_path / "d"))
    assert torch.equal(data.binarized_mnist(split="test")[:].view(2, 784), torch.from_numpy(bits).float())


@pytest.mark.parametrize("text", [
    lambda b: amat_text(b, newline="\r\n"),
    lambda b: amat_text(b, newline=" \n"),
    lambda b: amat_text(b)[:-1],  # no final newline
    lambda b: amat_text(b) + b"\n\n",
    lambda b: amat_text(b, sep="  "),
], ids=["crlf", "trailing-space", "no-final-newline", "blank-lines-at-end", "double-spaces"])
def test_harmless_variants_are_read(small, tmp_path, text):
    bits = random_bits(5)
    write(tmp_path / "binarized_mnist_train.amat", text(bits))
    assert torch.equal(data.binarized_mnist(tmp_path, "train")[:].view(5, 784), torch.from_numpy(bits).float())


def _replace_line(text, number, line):
    lines = text.split(b"\n")
    lines[number - 1] = line
    return b"\n".join(lines)


MALFORMED = {
    "cut-mid-row": (lambda t: t[:-101], r"line 5 stops after 734 of 784 values .* truncated"),
    "missing-rows": (lambda t: t[:4 * 1568], r"has 4 rows, expected 5: the file is truncated"),
    "extra-rows": (lambda t: t + t[:1568], r"has 6 rows, expected 5"),
    "short-row": (lambda t: _replace_line(t, 3, b"0 " * 782 + b"0"), r"line 3 has 783 values, expected 784"),
    "long-row": (lambda t: _replace_line(t, 4, b"1 " * 785), r"line 4 has 785 values, expected 784"),
    "empty-row": (lambda t: _replace_line(t, 2, b""), r"line 2 has 0 values"),
    "digit-2": (lambda t: t[:1568 + 18] + b"2" + t[1568 + 19:], r"line 2, value 10 is '2', expected 0 or 1"),
    "float": (lambda t: _replace_line(t, 5, b"0.5 " + b"0 " * 783), r"line 5, value 1 is '0.5', expected 0 or 1"),
    "empty-file": (lambda t: b"", r"is empty"),
}


@pytest.mark.parametrize("suffix", [".amat", ".amat.gz"])
@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_files_name_the_file_line_and_problem(small, tmp_path, case, suffix):
    corrupt, message = MALFORMED[case]
    path = write(tmp_path / f"binarized_mnist_train{suffix}", corrupt(amat_text(random_bits(5))))
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + message):
        data.binarized_mnist(tmp_path, "train")
    assert not list((tmp_path / "cache").rglob("*.npy"))


@pytest.mark.parametrize("content", [b"not gzip at all", gzip.compress(b"0 1 " * 1000)[:40]],
                         ids=["garbage", "cut-short"])
def test_corrupt_gzip_is_named(small, tmp_path, content):
    path = tmp_path / "binarized_mnist_train.amat.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(str(path)) + " is not a readable gzip file"):
        data.binarized_mnist(tmp_path, "train")


def test_missing_split_names_where_it_looked(tmp_path):
    with pytest.raises(DataError) as e:
        data.binarized_mnist(tmp_path, "test", download=False)
    msg = str(e.value)
    for part in ("binarized_mnist_test.amat", str(tmp_path / "binarized_mnist"), str(tmp_path),
                 str(tmp_path / "cache" / "data" / "binarized_mnist"),
                 "DRAWZOO_DATA", "download=True"):
        assert part in msg


def test_unknown_split_lists_the_valid_ones(tmp_path):
    with pytest.raises(DataError, match="unknown binarized_mnist split 'training'; valid splits: train, valid, test"):
        data.binarized_mnist(tmp_path, "training")


# ----------------------------------------------------------------------------------- cache


def _count_parses(monkeypatch):
    calls = []
    parse = data.read_amat
    monkeypatch.setattr(data.amat, "read_amat", lambda *a: calls.append(a) or parse(*a))
    return calls


def test_second_load_reads_the_cache_and_leaves_the_data_folder_alone(small, tmp_path, monkeypatch):
    root = tmp_path / "root"
    bits = random_bits(5)
    write(root / "binarized_mnist" / "binarized_mnist_train.amat.gz", amat_text(bits))
    before = files_under(root)
    calls = _count_parses(monkeypatch)
    for folder in (root / "binarized_mnist", root):
        folder.chmod(0o555)
    try:
        first = data.binarized_mnist(root, "train")
        second = data.binarized_mnist(root, "train")
    finally:
        for folder in (root, root / "binarized_mnist"):
            folder.chmod(0o755)
    assert len(calls) == 1 and torch.equal(first[:], second[:])
    assert files_under(root) == before
    cached = list((tmp_path / "cache" / "binarized_mnist").iterdir())
    assert [p.suffix for p in cached] == [".npy"]  # no temporary file left behind
    assert cached[0].stat().st_size < bits.size / 4  # bit-packed


def test_changed_source_invalidates_the_cache(small, tmp_path, monkeypatch):
    path = write(tmp_path / "binarized_mnist_train.amat", amat_text(random_bits(5, seed=1)))
    calls = _count_parses(monkeypatch)
    data.binarized_mnist(tmp_path, "train")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched
    data.binarized_mnist(tmp_path, "train")
    assert len(calls) == 2
    new = random_bits(5, seed=2)
    write(path, amat_text(new))  # rewritten
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000))
    assert torch.equal(data.binarized_mnist(tmp_path, "train")[:].view(5, 784), torch.from_numpy(new).float())
    assert len(calls) == 3
    assert len(list((tmp_path / "cache" / "binarized_mnist").iterdir())) == 1  # stale caches removed


@pytest.mark.parametrize("damage", [b"", b"garbage", b"\x93NUMPY\x01\x00"])
def test_unreadable_cache_is_ignored_and_rewritten(small, tmp_path, monkeypatch, damage):
    bits = random_bits(5)
    write(tmp_path / "binarized_mnist_train.amat", amat_text(bits))
    data.binarized_mnist(tmp_path, "train")
    (cache,) = (tmp_path / "cache" / "binarized_mnist").iterdir()
    cache.write_bytes(damage)
    calls = _count_parses(monkeypatch)
    assert torch.equal(data.binarized_mnist(tmp_path, "train")[:].view(5, 784), torch.from_numpy(bits).float())
    assert len(calls) == 1
    assert np.load(cache).shape == (5, 98)


# -------------------------------------------------------------------------------- download


@pytest.fixture
def served(small, tmp_path, monkeypatch):
    """The text `_fetch` serves for any URL; its sha256 is the one expected for "valid"."""
    text = amat_text(random_bits(3))
    monkeypatch.setattr(data.amat, "SHA256", dict(data.SHA256, valid=hashlib.sha256(text).hexdigest()))
    urls = []

    def fetch(url):
        urls.append(url)
        yield text[:1000]
        yield text[1000:]

    monkeypatch.setattr(data.amat, "_fetch", fetch)
    return text, urls


def test_download_lands_in_the_data_folder(served, tmp_path):
    text, urls = served
    x = data.binarized_mnist(tmp_path / "root", "valid")
    assert urls == [data.URL.format(split="valid")]
    assert os.listdir(tmp_path / "root" / "binarized_mnist") == ["binarized_mnist_valid.amat"]
    assert (tmp_path / "root" / "binarized_mnist" / "binarized_mnist_valid.amat").read_bytes() == text
    assert len(x) == 3 and x.image_shape == (1, 28, 28)
    data.binarized_mnist(tmp_path / "root", "valid")
    assert len(urls) == 1


def test_download_falls_back_to_the_cache_when_root_is_not_writable(served, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    text, urls = served
    data.binarized_mnist(not_a_folder, "valid")
    assert (tmp_path / "cache" / "data" / "binarized_mnist" / "binarized_mnist_valid.amat").read_bytes() == text
    data.binarized_mnist(not_a_folder, "valid")  # found there next time
    assert len(urls) == 1


def test_download_with_the_wrong_sha256_is_refused(served, tmp_path, monkeypatch):
    monkeypatch.setattr(data.amat, "SHA256", dict(data.SHA256, valid="0" * 64))
    with pytest.raises(DataError, match=r"sha256 [0-9a-f]{64}, expected 0{64}; the file was not kept"):
        data.binarized_mnist(tmp_path, "valid")
    assert os.listdir(tmp_path / "binarized_mnist") == []


def test_no_network_says_what_is_missing_and_how_to_provide_it(small, tmp_path, monkeypatch):
    def offline(url):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data.amat, "_fetch", offline)
    with pytest.raises(DataError) as e:
        data.binarized_mnist(tmp_path, "train")
    msg = str(e.value)
    for part in ("binarized_mnist_train.amat", str(tmp_path / "binarized_mnist"), data.URL.format(split="train"),
                 "DRAWZOO_DATA", "root=", "no network"):
        assert part in msg
    assert os.listdir(tmp_path / "binarized_mnist") == []


# ------------------------------------------------------------------------------ the data set


def test_bytes_bools_and_floats_read_alike():
    stored = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    expected = torch.tensor([0.0, 0.2, 1.0]).view(1, 1, 3)
    as_bytes = data.ImageDataset(stored)
    assert as_bytes.images.dtype == torch.uint8 and torch.equal(as_bytes[0], expected)
    assert torch.equal(data.ImageDataset(stored > 0)[0], torch.tensor([0.0, 1.0, 1.0]).view(1, 1, 3))
    as_floats = data.ImageDataset(stored.double() / 255)
    assert as_floats.images.dtype == torch.float32 and torch.allclose(as_floats[0], expected)
    assert as_bytes.image_shape == (1, 1, 3) and as_bytes.labels is None


def test_indexing_gives_images_and_batches_and_subsets_keep_labels():
    ds = data.ImageDataset(torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1), labels=[9, 8, 7, 6, 5],
                           binarize="threshold")
    assert ds[1].shape == (1, 1, 1) and ds[1:3].shape == ds[[0, 4]].shape == ds[torch.tensor([0, 4])].shape
    assert ds[:].shape == (5, 1, 1, 1) and ds[:].dtype == torch.float32
    sub = ds.subset([1, 3])
    assert torch.equal(sub.images, ds.images[[1, 3]]) and sub.labels.tolist() == [8, 6] and sub.binarize == "threshold"
    assert repr(ds) == "ImageDataset(5 images [1, 1, 1], stored as torch.uint8, binarize='threshold', labelled)"


@pytest.mark.parametrize("images,labels,message", [
    (torch.zeros(2, 4, 4), None, r"images must be a tensor \[N, C, H, W\], got shape \[2, 4, 4\]"),
    (np.zeros((2, 1, 4, 4)), None, r"images must be a tensor \[N, C, H, W\], got ndarray"),
    (torch.zeros(0, 1, 4, 4, dtype=torch.uint8), None, "images is empty"),
    (torch.full((2, 1, 4, 4), 2.0), None, r"images must have values in \[0, 1\], got min 2, max 2"),
    (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.arange(3), r"labels must be \[N\] = \[2\], got \[3\]"),
])
def test_what_is_not_images_is_refused(images, labels, message):
    with pytest.raises(InputError, match=message):
        data.ImageDataset(images, labels)


def test_dynamic_binarization_follows_the_intensity():
    images = torch.tensor([0.0, 1.0, 0.25]).view(1, 1, 1, 3).expand(1, 1, 1000, 3)
    x = data.ImageDataset(images, torch.zeros(1), "dynamic")[0]
    assert (x[..., 0] == 0).all() and (x[..., 1] == 1).all()
    assert abs(x[..., 2].mean().item() - 0.25) < 0.05


def test_threshold_and_grey():
    images = torch.tensor([0.0, 0.49, 0.5, 1.0]).view(1, 1, 2, 2)
    assert torch.equal(data.ImageDataset(images, torch.zeros(1), "threshold")[0].flatten(),
                       torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.equal(data.ImageDataset(images, torch.zeros(1), None)[0], images[0])


def test_dataloader_draws_batches():
    ds = data.ImageDataset(torch.rand(10, 1, 28, 28), torch.arange(10), "dynamic")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 1, 28, 28) and batch.dtype == torch.float32
    assert ds[2:5].shape == (3, 1, 28, 28)


# ------------------------------------------------------------------------------ MNIST


def write_idx(path, array: np.ndarray):
    """`array` (uint8) as an IDX file, the format of MNIST's raw files; gzipped for a .gz path."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return write(path, header + array.astype(np.uint8).tobytes())


def write_mnist_like(raw, counts=(("train", 6), ("t10k", 3)), suffix="", seed=0):
    """MNIST's four raw files in `raw`: images and labels of each (prefix, count); the sets as
    (float images [N, 1, 28, 28], labels [N]) by prefix."""
    rng = np.random.default_rng(seed)
    sets = {}
    for prefix, n in counts:
        images, labels = rng.integers(0, 256, (n, 28, 28)), np.arange(n) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        sets[prefix] = torch.from_numpy(images).float().div(255).unsqueeze(1), torch.from_numpy(labels)
    return sets


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A MNIST/raw folder with 6 training images (last 2 "valid") and 3 test images."""
    root = tmp_path / "mnist-root"
    sets = write_mnist_like(root / "MNIST" / "raw")
    monkeypatch.setitem(data.VALID_SIZES, "mnist", 2)
    return root, sets


@pytest.mark.parametrize("split,source,part", [("train", "train", slice(0, 4)), ("valid", "train", slice(4, 6)),
                                              ("full_train", "train", slice(0, 6)), ("test", "t10k", slice(0, 3))])
def test_mnist_splits(fake_mnist, split, source, part):
    root, sets = fake_mnist
    before = files_under(root)
    ds = data.mnist(root, split, binarize=None, download=False)
    images, labels = sets[source]
    assert torch.equal(ds[:], images[part]) and torch.equal(ds.labels, labels[part])
    assert ds[0].dtype == torch.float32 and ds[0].shape == (1, 28, 28) and len(ds) == len(labels[part])
    assert files_under(root) == before


def test_mnist_errors(fake_mnist, tmp_path):
    root, _ = fake_mnist
    with pytest.raises(DataError, match=r"unknown binarize 'bernoulli'; valid: None, 'threshold', 'dynamic'"):
        data.mnist(root, "train", binarize="bernoulli")
    with pytest.raises(DataError, match="unknown mnist split 'val'; valid splits: train, valid, test, full_train"):
        data.mnist(root, "val")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nowhere" / "MNIST" / "raw")) + ".*download=False"):
        data.mnist(tmp_path / "nowhere", "train", download=False)


# --------------------------------------------------------- Fashion-MNIST, CIFAR-10, SVHN


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("suffix", ["", ".gz"], ids=["idx-ubyte", "idx-ubyte.gz"])
def test_fashion_mnist_reads_idx_files(tmp_path, monkeypatch, offline, suffix):
    from torchvision.datasets import FashionMNIST

    raw = tmp_path / "FashionMNIST" / "raw"
    sets = write_mnist_like(raw, (("train", 5), ("t10k", 2)), suffix=suffix, seed=1)
    if suffix:  # as downloaded: torchvision checks each .gz against its md5 and unpacks it, offline
        monkeypatch.setattr(FashionMNIST, "resources", [(p.name, md5(p)) for p in sorted(raw.iterdir())])
    monkeypatch.setitem(data.VALID_SIZES, "fashion_mnist", 2)
    train, valid = data.fashion_mnist(tmp_path, "train"), data.load("fashion_mnist", "valid", tmp_path)
    test = data.fashion_mnist(tmp_path, "test", binarize="dynamic")
    images, labels = sets["train"]
    assert torch.equal(train[:], images[:3]) and torch.equal(valid[:], images[3:]) and train.binarize is None
    assert torch.equal(train.labels, labels[:3]) and torch.equal(test.labels, sets["t10k"][1])
    assert test.binarize == "dynamic" and set(test[:].unique().tolist()) <= {0.0, 1.0}
    assert len(data.fashion_mnist(tmp_path, "full_train")) == 5 and offline == []


def write_cifar10(root, monkeypatch, counts=(2, 1, 2, 1, 2), test=3, seed=0):
    """cifar-10-batches-py/ with pickled batches of `counts` training images and `test` test
    images, torchvision's md5s set to theirs; the images uint8 [N, 3, 32, 32] and labels."""
    from torchvision.datasets import CIFAR10

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    sets = {}
    for name, n in [(f"data_batch_{i + 1}", n) for i, n in enumerate(counts)] + [("test_batch", test)]:
        images, labels = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:  # rows: 1024 red, 1024 green, 1024 blue values, row-major
            pickle.dump({"data": images.reshape(n, 3072), "labels": labels, "filenames": []}, f)
        sets[name] = images, labels
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, f)
    monkeypatch.setattr(CIFAR10, "train_list", [[name, md5(folder / name)] for name in list(sets)[:-1]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", dict(CIFAR10.meta, md5=md5(folder / "batches.meta")))
    train = [sets[name] for name in list(sets)[:-1]]
    return (np.concatenate([i for i, _ in train]), sum((l for _, l in train), [])), sets["test_batch"]


def test_cifar10_reads_the_pickled_batches_as_colour_images(tmp_path, monkeypatch, offline):
    (train_images, train_labels), (test_images, test_labels) = write_cifar10(tmp_path, monkeypatch)
    monkeypatch.setitem(data.VALID_SIZES, "cifar10", 3)
    splits = {split: data.cifar10(tmp_path, split) for split in ("train", "valid", "full_train", "test")}
    assert {split: len(ds) for split, ds in splits.items()} == {"train": 5, "valid": 3, "full_train": 8, "test": 3}
    assert splits["train"].images.dtype == torch.uint8 and splits["train"].image_shape == (3, 32, 32)
    assert torch.equal(splits["full_train"].images, torch.from_numpy(train_images))  # [N, C, H, W], as written
    assert torch.equal(splits["valid"][:], torch.from_numpy(train_images[5:]).float() / 255)
    assert splits["valid"].labels.tolist() == train_labels[5:]
    assert torch.equal(splits["test"].images, torch.from_numpy(test_images))
    assert splits["test"].labels.tolist() == test_labels and offline == []


def test_svhn_reads_the_mat_files(tmp_path, monkeypatch, offline):
    scipy_io = pytest.importorskip("scipy.io")
    from torchvision.datasets import SVHN

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)  # the .mat layout: [H, W, C, N], digit 0 as 10
    (tmp_path / "SVHN").mkdir()
    path = tmp_path / "SVHN" / "test_32x32.mat"
    scipy_io.savemat(path, {"X": X, "y": np.array([[10], [1], [2], [9]], np.uint8)})
    monkeypatch.setitem(SVHN.split_list, "test", [SVHN.split_list["test"][0], path.name, md5(path)])
    test = data.svhn(tmp_path, "test")
    assert torch.equal(test.images, torch.from_numpy(X).permute(3, 2, 0, 1)) and test.labels.tolist() == [0, 1, 2, 9]
    assert offline == []


def test_svhn_without_scipy_says_how_to_get_it_before_any_download(tmp_path, monkeypatch, offline):
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(DataError, match=r"svhn needs scipy to read its .mat files: pip install scipy "
                       r"\(or pip install 'drawzoo\[svhn\]'\)"):
        data.load("svhn", "train", tmp_path)
    assert offline == [] and not (tmp_path / "SVHN").exists()


@pytest.mark.parametrize("name,folder,files", [("fashion_mnist", "FashionMNIST/raw", "-ubyte"),
                                               ("cifar10", "cifar-10-batches-py", "data_batch_1..5"),
                                               ("svhn", "SVHN", "{train,test}_32x32.mat")])
def test_missing_data_offline_names_the_folder_and_how_to_provide_it(tmp_path, offline, name, folder, files):
    if name == "svhn":
        pytest.importorskip("scipy.io")
    with pytest.raises(DataError) as e:
        data.load(name, "train", tmp_path / "root")
    message = str(e.value)
    for part in (f"could not be read from {tmp_path / 'root' / folder}: ", "network disabled in tests",
                 "DRAWZOO_DATA", "--data-root", files, "download=True"):
        assert part in message
    assert offline and "\n" not in message  # it tried to download, and says why that failed in one line
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "root" / folder)) + r" \(download=False\)"):
        data.load(name, "train", tmp_path / "root", download=False)


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10", "svhn"])
def test_unknown_splits_are_named(tmp_path, name):
    with pytest.raises(DataError, match=f"unknown {name} split 'val'; valid splits: train, valid, test, full_train"):
        data.load(name, "val", tmp_path)


# ------------------------------------------------------------------------------ your own pictures


def write_pictures(folder, n, shape, seed=0, suffix=".png") -> np.ndarray:
    """`n` random pictures (C, H, W) = `shape`, C = 1 or 3, as 000.png, 001.png, ...; the uint8
    pixels [n, C, H, W]."""
    C, H, W = shape
    pixels = np.random.default_rng(seed).integers(0, 256, (n, C, H, W), dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(pixels):
        Image.fromarray(p[0] if C == 1 else p.transpose(1, 2, 0), "L" if C == 1 else "RGB").save(folder / f"{i:03d}{suffix}")
    return pixels


def test_pictures_of_one_shape_load_as_they_are(tmp_path):
    pixels = write_pictures(tmp_path / "a", 3, (1, 6, 8))
    write_pictures(tmp_path / "b", 2, (1, 6, 8), seed=1)  # a subfolder
    (tmp_path / "notes.txt").write_text("not a picture")
    write_pictures(tmp_path / ".thumbnails", 1, (3, 2, 2))  # hidden: passed over
    ds = data.image_folder(tmp_path)
    assert len(ds) == 5 and ds.image_shape == (1, 6, 8) and ds.binarize is None and ds.labels is None
    assert torch.equal(ds[:3], torch.from_numpy(pixels).float() / 255)  # a/000.png ... in path order, exact


def test_jpegs_any_case_load_as_colour(tmp_path):
    colours = [(200, 100, 50), (10, 220, 130)]
    for i, colour in enumerate(colours):
        Image.new("RGB", (8, 6), colour).save(tmp_path / f"{i}.JPEG")
    x = data.image_folder(tmp_path)[:]
    assert x.shape == (2, 3, 6, 8)
    assert torch.allclose(x.mean((2, 3)), torch.tensor(colours).float() / 255, atol=3 / 255)  # JPEG is lossy


def test_pictures_are_resized_to_cover_the_shape_then_centre_cropped(tmp_path):
    band = np.zeros((20, 40), np.uint8)
    band[:, 8:32] = 255  # a white band around the middle of a wide picture
    Image.fromarray(band, "L").save(tmp_path / "wide.png")
    square = data.image_folder(tmp_path, image_shape=(1, 10, 10))[0]
    assert square.shape == (1, 10, 10) and square.min() > 0.99  # 10x20 then the middle 10 columns: all band
    whole = data.image_folder(tmp_path, image_shape=(1, 5, 10))[0]  # the same aspect: all of it, shrunk 4x
    assert whole.shape == (1, 5, 10) and whole[..., [0, 9]].max() < 0.01 and whole[..., 3:7].min() > 0.99


def test_an_image_shape_converts_grey_and_colour(tmp_path):
    Image.new("L", (4, 4), 100).save(tmp_path / "grey.png")
    Image.new("RGBA", (4, 4), (255, 0, 0, 128)).save(tmp_path / "red.png")
    colour = data.image_folder(tmp_path, image_shape=(3, 4, 4))[:]
    assert torch.equal(colour[0], torch.full((3, 4, 4), 100 / 255))  # grey.png: the same value thrice
    assert torch.equal(colour[1, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))  # red.png: alpha dropped
    grey = data.image_folder(tmp_path, image_shape=(1, 4, 4))[:]
    assert torch.equal(grey[1], torch.full((1, 4, 4), 76 / 255))  # Pillow's "L": 0.299 R + 0.587 G + 0.114 B


@pytest.mark.parametrize("second,what", [(("L", (4, 4)), "grey 4x4"), (("RGB", (5, 4)), "colour 4x5")])
def test_pictures_that_differ_need_an_image_shape(tmp_path, second, what):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    Image.new(*second).save(tmp_path / "b.png")
    with pytest.raises(DataError, match=re.escape(f"the pictures in {tmp_path} differ: a.png is colour 4x4, b.png is "
                                                  f"{what} (H x W); give the shape to load them at: --image-shape "
                                                  "C H W (image_shape=(C, H, W))")):
        data.image_folder(tmp_path)
    assert len(data.image_folder(tmp_path, image_shape=(3, 4, 4))) == 2


def test_a_folder_without_pictures_is_refused(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path} holds no PNG or JPEG images (.png, .jpg, .jpeg): "
                                                  "it is empty")):
        data.image_folder(tmp_path)
    for name in ("b.txt", "a.gif", "c.csv", "d.bmp"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError, match=re.escape("only 4 other files (a.gif, b.txt, c.csv, ...)")):
        data.image_folder(tmp_path)


@pytest.mark.parametrize("damage", [lambda png: b"not a picture", lambda png: png[:len(png) // 2]],
                         ids=["not-an-image", "truncated"])
def test_a_picture_that_cannot_be_read_is_named(tmp_path, damage):
    write_pictures(tmp_path, 3, (3, 16, 16))
    path = tmp_path / "001.png"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=re.escape(f"{path}: not a readable PNG or JPEG image (")):
        data.image_folder(tmp_path)


def test_own_splits_are_a_fixed_tenth_held_out(tmp_path):
    train, valid = data.own_split(30, "train", "x"), data.own_split(30, "valid", "x")
    assert len(valid) == 3 and len(train) == 27 and torch.equal(torch.cat([train, valid]).sort().values,
                                                                 data.own_split(30, "all", "x"))
    assert torch.equal(valid, data.own_split(30, "valid", "x")) and not torch.equal(valid, torch.arange(3))
    assert len(data.own_split(2, "valid", "x")) == 1
    write_pictures(tmp_path, 12, (1, 3, 3))
    assert len(data.image_folder(tmp_path, "valid")) == 1 and len(data.image_folder(tmp_path, "train")) == 11
    with pytest.raises(DataError, match="x holds 1 image: too few to hold some out as split 'train'; use split 'all'"):
        data.own_split(1, "train", "x")
    with pytest.raises(DataError, match=re.escape(f"unknown split 'test' of {tmp_path}; valid splits: train, valid, "
                                                  "all")):
        data.image_folder(tmp_path, "test")


# ------------------------------------------------------------------------------ dispatch


def test_load_dispatches_names_folders_and_files(small, fake_mnist, tmp_path):
    root, _ = fake_mnist
    write(root / "binarized_mnist_test.amat", amat_text(random_bits(2)))
    assert data.load("binarized_mnist", "test", root)[:].shape == (2, 1, 28, 28)
    valid = data.load("mnist", "valid", root, download=False)
    assert isinstance(valid, data.ImageDataset) and len(valid) == 2 and valid.binarize == "dynamic"
    np.save(tmp_path / "x.npy", np.zeros((20, 1, 4, 4), np.uint8))
    assert [len(data.load(tmp_path / "x.npy", split)) for split in ("train", "valid", "all")] == [18, 2, 20]
    write_pictures(tmp_path / "pictures", 10, (3, 6, 5))
    assert data.load(str(tmp_path / "pictures"), "all").image_shape == (3, 6, 5)
    with pytest.raises(DataError, match=r"'cifar' is neither a known data set \(binarized_mnist, mnist, fashion_mnist, "
                       r"cifar10, svhn, two_digit_mnist\) nor a folder of pictures nor a .npy/.npz file "
                       r"\(no such file or folder\)"):
        data.load("cifar", "train", root)
    with pytest.raises(DataError, match=r"000.png'.*\(not a .npy/.npz file\)"):
        data.load(tmp_path / "pictures" / "000.png")


def test_a_shape_the_data_cannot_take_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(data.amat, "_find_amat", lambda *a: pytest.fail("binarized MNIST was read"))
    with pytest.raises(DataError, match=r"binarized_mnist images are \[1, 28, 28\], not the image_shape "
                       r"\[3, 32, 32\] asked for; named data sets are not resized"):
        data.load("binarized_mnist", "train", tmp_path, image_shape=(3, 32, 32))
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 5, 5)))
    with pytest.raises(DataError, match=r"x.npy holds images \[1, 5, 5\], not the image_shape \[1, 6, 6\]"):
        data.load(tmp_path / "x.npy", "all", image_shape=(1, 6, 6))
    with pytest.raises(DataError, match=r"image_shape \(2, 6, 6\): pictures load as \(C, H, W\) with C = 1 "
                       r"\(grey\) or 3 \(colour\)"):
        data.load(tmp_path, "all", image_shape=(2, 6, 6))


def test_load_array_file(tmp_path):
    grey = np.random.default_rng(0).random((3, 5, 6))
    np.save(tmp_path / "a.npy", grey)
    x = data.load_array_file(tmp_path / "a.npy")[:]
    assert x.dtype == torch.float32 and x.shape == (3, 1, 5, 6)
    assert torch.allclose(x[:, 0].double(), torch.from_numpy(grey))
    np.savez(tmp_path / "b.npz", labels=np.arange(2), images=np.full((2, 3, 4, 4), 255, np.uint8))
    as_bytes = data.load_array_file(tmp_path / "b.npz")
    assert as_bytes.images.dtype == torch.uint8 and torch.equal(as_bytes[:], torch.ones(2, 3, 4, 4))
    np.savez(tmp_path / "c.npz", np.zeros((2, 1, 4, 4), bool))
    assert data.load_array_file(tmp_path / "c.npz")[:].shape == (2, 1, 4, 4)


@pytest.mark.parametrize("array,message", [
    (np.zeros((4, 4)), r"shape \[4, 4\], expected \[N, C, H, W\]"),
    (np.zeros((0, 4, 4)), r"shape \[0, 4, 4\], .* with N > 0"),
    (np.full((1, 4, 4), 2.0), r"values outside \[0, 1\] \(min 2, max 2\)"),
    (np.full((1, 4, 4), np.nan), r"has NaN or infinite values"),
    (np.ones((1, 4, 4), np.int64), r"holds int64 values; expected floats in \[0, 1\] or uint8"),
])
def test_bad_array_files_are_named(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "bad.npy")) + ".*" + message):
        data.load_array_file(tmp_path / "bad.npy")


def test_unreadable_array_files_are_named(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"junk")
    np.savez(tmp_path / "empty.npz")
    for name, pattern in (("junk.npz", "cannot read {} as .npy/.npz"), ("missing.npy", "cannot read {} as .npy/.npz"),
                          ("empty.npz", "{} holds no arrays")):
        with pytest.raises(DataError, match=re.escape(pattern.format(tmp_path / name))):
            data.load_array_file(tmp_path / name)


# ------------------------------------------------------------------------------ real data


def real_data() -> Path:
    """The real data folder, $DRAWZOO_DATA; without it the test is skipped, or fails under CI."""
    if REAL_DATA:
        return Path(REAL_DATA)
    if os.environ.get("CI"):
        pytest.fail("the real data is missing: set DRAWZOO_DATA to the shared data folder (../shared/data)")
    pytest.skip("set DRAWZOO_DATA to the shared data folder to test on the real data")


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("real-cache")


@pytest.mark.parametrize("split,rows", [("train", 50_000), ("valid", 10_000), ("test", 10_000)])
def test_real_binarized_mnist(split, rows, real_cache, monkeypatch):
    root = real_data()
    monkeypatch.setenv("DRAWZOO_CACHE", str(real_cache))
    x = data.binarized_mnist(root, split, download=False)[:]
    assert x.shape == (rows, 1, 28, 28) and x.dtype == torch.float32
    assert ((x == 0) | (x == 1)).all() and 0 < x.mean() < 1
    monkeypatch.setattr(data.amat, "read_amat", lambda *a: pytest.fail("parsed again instead of reading the cache"))
    assert torch.equal(data.binarized_mnist(root, split, download=False)[:], x)


def test_real_mnist_label_counts():
    root = real_data()
    splits = {s: data.mnist(root, s, binarize=None, download=False) for s in ("train", "valid", "full_train", "test")}
    assert [len(splits[s]) for s in ("train", "valid", "full_train", "test")] == [50_000, 10_000, 60_000, 10_000]
    train_valid = torch.cat([splits["train"].labels, splits["valid"].labels])
    assert torch.equal(train_valid, splits["full_train"].labels)
    assert train_valid.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert splits["test"].labels.bincount().tolist() == MNIST_TEST_COUNTS
    x = splits["test"][:]
    assert x.shape == (10_000, 1, 28, 28) and x.min() == 0 and x.max() == 1
