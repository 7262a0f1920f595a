import gzip
import hashlib
import os
import re
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from drawzoo import DataError, data

# Read before the autouse fixture below clears it for the synthetic tests.
REAL_DATA = os.environ.get("DRAWZOO_DATA")
SMALL = {"train": 5, "valid": 3, "test": 2}
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def _private_env(tmp_path, monkeypatch):
    """Every test caches into its own folder and ignores the user's data and cache settings."""
    monkeypatch.setenv("DRAWZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DRAWZOO_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)


@pytest.fixture
def small(monkeypatch):
    """Splits of a few rows, so that synthetic files are complete."""
    monkeypatch.setattr(data, "SPLIT_SIZES", dict(SMALL))


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
    x = data.binarized_mnist(tmp_path / "root", "valid", download=False)
    assert x.dtype == torch.float32 and x.shape == (3, 1, 28, 28)
    assert torch.equal(x, torch.from_numpy(bits).float().view(3, 1, 28, 28))


def test_root_defaults_to_drawzoo_data(small, tmp_path, monkeypatch):
    bits = random_bits(2)
    write(tmp_path / "d" / "binarized_mnist_test.amat", amat_text(bits))
    monkeypatch.setenv("DRAWZOO_DATA", str(tmp_path / "d"))
    assert torch.equal(data.binarized_mnist(split="test").view(2, 784), torch.from_numpy(bits).float())


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
    assert torch.equal(data.binarized_mnist(tmp_path, "train").view(5, 784), torch.from_numpy(bits).float())


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
    monkeypatch.setattr(data, "read_amat", lambda *a: calls.append(a) or parse(*a))
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
    assert len(calls) == 1 and torch.equal(first, second)
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
    assert torch.equal(data.binarized_mnist(tmp_path, "train").view(5, 784), torch.from_numpy(new).float())
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
    assert torch.equal(data.binarized_mnist(tmp_path, "train").view(5, 784), torch.from_numpy(bits).float())
    assert len(calls) == 1
    assert np.load(cache).shape == (5, 98)


# -------------------------------------------------------------------------------- download


@pytest.fixture
def served(small, tmp_path, monkeypatch):
    """The text `_fetch` serves for any URL; its sha256 is the one expected for "valid"."""
    text = amat_text(random_bits(3))
    monkeypatch.setattr(data, "SHA256", dict(data.SHA256, valid=hashlib.sha256(text).hexdigest()))
    urls = []

    def fetch(url):
        urls.append(url)
        yield text[:1000]
        yield text[1000:]

    monkeypatch.setattr(data, "_fetch", fetch)
    return text, urls


def test_download_lands_in_the_data_folder(served, tmp_path):
    text, urls = served
    x = data.binarized_mnist(tmp_path / "root", "valid")
    assert urls == [data.URL.format(split="valid")]
    assert os.listdir(tmp_path / "root" / "binarized_mnist") == ["binarized_mnist_valid.amat"]
    assert (tmp_path / "root" / "binarized_mnist" / "binarized_mnist_valid.amat").read_bytes() == text
    assert x.shape == (3, 1, 28, 28)
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
    monkeypatch.setattr(data, "SHA256", dict(data.SHA256, valid="0" * 64))
    with pytest.raises(DataError, match=r"sha256 [0-9a-f]{64}, expected 0{64}; the file was not kept"):
        data.binarized_mnist(tmp_path, "valid")
    assert os.listdir(tmp_path / "binarized_mnist") == []


def test_no_network_says_what_is_missing_and_how_to_provide_it(small, tmp_path, monkeypatch):
    def offline(url):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data, "_fetch", offline)
    with pytest.raises(DataError) as e:
        data.binarized_mnist(tmp_path, "train")
    msg = str(e.value)
    for part in ("binarized_mnist_train.amat", str(tmp_path / "binarized_mnist"), data.URL.format(split="train"),
                 "DRAWZOO_DATA", "root=", "no network"):
        assert part in msg
    assert os.listdir(tmp_path / "binarized_mnist") == []


# ------------------------------------------------------------------------------ MNIST


def test_dynamic_binarization_is_fresh_at_each_access_and_seeded():
    ds = data.ImageDataset(torch.rand(4, 1, 28, 28), torch.arange(4), "dynamic")
    a, b = ds[1], ds[1]
    assert a.shape == (1, 28, 28) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(a, b)
    torch.manual_seed(3)
    first = [ds[i] for i in range(4)]
    torch.manual_seed(3)
    assert all(torch.equal(x, ds[i]) for i, x in enumerate(first))


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


def write_idx(path, array: np.ndarray):
    """`array` (uint8) as an IDX file, the format of MNIST's raw files."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A MNIST/raw folder with 6 training images (last 2 "valid") and 3 test images."""
    raw = tmp_path / "mnist-root" / "MNIST" / "raw"
    rng = np.random.default_rng(0)
    sets = {}
    for prefix, n in (("train", 6), ("t10k", 3)):
        images, labels = rng.integers(0, 256, (n, 28, 28)), np.arange(n) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        sets[prefix] = torch.from_numpy(images).float().div(255).unsqueeze(1), torch.from_numpy(labels)
    monkeypatch.setattr(data, "MNIST_VALID_SIZE", 2)
    return raw.parent.parent, sets


@pytest.mark.parametrize("split,source,part", [("train", "train", slice(0, 4)), ("valid", "train", slice(4, 6)),
                                              ("full_train", "train", slice(0, 6)), ("test", "t10k", slice(0, 3))])
def test_mnist_splits(fake_mnist, split, source, part):
    root, sets = fake_mnist
    before = files_under(root)
    ds = data.mnist(root, split, binarize=None, download=False)
    images, labels = sets[source]
    assert torch.equal(ds.images, images[part]) and torch.equal(ds.labels, labels[part])
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


# ------------------------------------------------------------------------------ dispatch


def test_load_split_dispatches_by_name(small, fake_mnist, tmp_path):
    root, _ = fake_mnist
    write(root / "binarized_mnist_test.amat", amat_text(random_bits(2)))
    assert data.load_split("binarized_mnist", "test", root).shape == (2, 1, 28, 28)
    assert len(data.load_split("mnist", "valid", root, binarize="threshold", download=False)) == 2
    with pytest.raises(DataError, match="unknown data set 'cifar'; known: binarized_mnist, mnist"):
        data.load_split("cifar", "train", root)


def test_load_array_file(tmp_path):
    grey = np.random.default_rng(0).random((3, 5, 6))
    np.save(tmp_path / "a.npy", grey)
    x = data.load_array_file(tmp_path / "a.npy")
    assert x.dtype == torch.float32 and x.shape == (3, 1, 5, 6)
    assert torch.allclose(x[:, 0].double(), torch.from_numpy(grey))
    np.savez(tmp_path / "b.npz", labels=np.arange(2), images=np.full((2, 3, 4, 4), 255, np.uint8))
    assert torch.equal(data.load_array_file(tmp_path / "b.npz"), torch.ones(2, 3, 4, 4))
    np.savez(tmp_path / "c.npz", np.zeros((2, 1, 4, 4), bool))
    assert data.load_array_file(tmp_path / "c.npz").shape == (2, 1, 4, 4)


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
    x = data.binarized_mnist(root, split, download=False)
    assert x.shape == (rows, 1, 28, 28) and x.dtype == torch.float32
    assert ((x == 0) | (x == 1)).all() and 0 < x.mean() < 1
    monkeypatch.setattr(data, "read_amat", lambda *a: pytest.fail("parsed again instead of reading the cache"))
    assert torch.equal(data.binarized_mnist(root, split, download=False), x)


def test_real_mnist_label_counts():
    root = real_data()
    splits = {s: data.mnist(root, s, binarize=None, download=False) for s in ("train", "valid", "full_train", "test")}
    assert [len(splits[s]) for s in ("train", "valid", "full_train", "test")] == [50_000, 10_000, 60_000, 10_000]
    train_valid = torch.cat([splits["train"].labels, splits["valid"].labels])
    assert torch.equal(train_valid, splits["full_train"].labels)
    assert train_valid.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert splits["test"].labels.bincount().tolist() == MNIST_TEST_COUNTS
    x = splits["test"].images
    assert x.shape == (10_000, 1, 28, 28) and x.min() == 0 and x.max() == 1
