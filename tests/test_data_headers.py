"""Data files whose headers declare more than they hold: refused from the header, in one line,
before they take memory (issue 22). Each test writes its own small hostile file."""

import gzip
import io
import json
import re
import struct
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy
from PIL import Image

from drawzoo import DataError, data
from drawzoo.cli import main

HUGE = (1_000_000_000, 1, 28, 28)  # 784 GB of uint8
TINY = ["--T", "2", "--hidden-dim", "8", "--latent-dim", "2", "--epochs", "1", "--quiet"]


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No downloads, no user cache: a refused file must not lead to the network."""
    monkeypatch.setenv("DRAWZOO_CACHE", str(tmp_path / "cache"))

    def urlopen(url, *args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


# ------------------------------------------------------------------------------ hostile files


def npy_bytes(shape, descr="|u1", body=1000, version=(1, 0)) -> bytes:
    """A .npy header declaring `shape` of `descr`, followed by `body` zero bytes."""
    f = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    (npy.write_array_header_1_0 if version == (1, 0) else npy.write_array_header_2_0)(f, header)
    return f.getvalue() + bytes(body)


def write_npz(path, member: bytes, compression=zipfile.ZIP_STORED, claimed_size=None):
    """A .npz holding `member` as its array "images"; `claimed_size`: the uncompressed size its
    central directory gives instead of the true one (a forged directory)."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("images.npy", member)
    if claimed_size is not None:
        raw = bytearray(path.read_bytes())
        entry = raw.rindex(b"PK\x01\x02")  # the central directory entry: uncompressed size at +24
        raw[entry + 24:entry + 28] = struct.pack("<I", claimed_size)
        path.write_bytes(bytes(raw))
    return path


def beside_a_good_picture(path):
    """`path`'s folder, with an 8 x 8 picture in it too (so that it has a train and a valid split)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8)).save(path.parent / "good.png")
    return path


def png_declaring(path, width, height):
    """A PNG of a few dozen bytes whose header declares `width` x `height` grey pixels."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    beside_a_good_picture(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b""))
    return path


def jpeg_declaring(path, width, height):
    """An 8 x 8 JPEG whose frame header (SOF0) is rewritten to declare `width` x `height`."""
    beside_a_good_picture(path)
    Image.new("L", (8, 8)).save(path)
    raw = bytearray(path.read_bytes())
    sof = raw.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    raw[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(raw))
    return path


def idx_bytes(dims, body):
    """An IDX file (MNIST's raw format) of uint8 values declaring `dims`, then `body`."""
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + body


def amat_gz_bomb(path, size):
    """A .amat.gz of binarized-MNIST-like rows that decompresses to `size` bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    row = b"0 " * 783 + b"0\n"
    with gzip.open(path, "wb", compresslevel=1) as f:
        block = row * ((1 << 20) // len(row))
        for _ in range(size // len(block) + 1):
            f.write(block)
    return path


def write_case(name, tmp_path):
    """The hostile file of case `name` under `tmp_path`: (spec, split, root, the message expected)."""
    root = tmp_path / "root"
    tmp_path.mkdir(exist_ok=True)
    if name == "npy-huge":
        path = tmp_path / "huge.npy"
        path.write_bytes(npy_bytes(HUGE))
        return path, "all", None, (rf"{re.escape(str(path))}: its header declares \[1000000000, 1, 28, 28\] uint8 "
                                   r"values \(784,000,000,000 bytes\) but holds 1,000 bytes of them")
    if name == "npy-huge-v2":
        path = tmp_path / "huge2.npy"
        path.write_bytes(npy_bytes(HUGE, "<f8", version=(2, 0)))
        return path, "all", None, r"huge2.npy: its header declares .* float64 values \(6,272,000,000,000 bytes\)"
    if name == "npy-object":
        path = tmp_path / "objects.npy"
        path.write_bytes(npy_bytes(HUGE, "|O"))
        return path, "all", None, r"objects.npy holds object values; expected floats in \[0, 1\] or uint8 bytes"
    if name == "npy-shape":
        path = tmp_path / "flat.npy"
        path.write_bytes(npy_bytes((1_000_000_000, 784)))
        return path, "all", None, r"flat.npy holds an array of shape \[1000000000, 784\], expected \[N, C, H, W\]"
    if name == "npz-stored":
        path = write_npz(tmp_path / "stored.npz", npy_bytes(HUGE))
        return path, "all", None, (r"stored.npz: its array 'images' declares \[1000000000, 1, 28, 28\] uint8 values "
                                   r"\(784,000,000,000 bytes\) but holds at most 1,000 bytes")
    if name == "npz-compressed":
        path = write_npz(tmp_path / "deflated.npz", npy_bytes(HUGE), zipfile.ZIP_DEFLATED)
        return path, "all", None, r"deflated.npz: its array 'images' declares .* but holds at most 1,000 bytes"
    if name == "npz-forged-size":  # the directory claims 4 GB, the header 3.9 GB: deflate cannot hold that
        path = write_npz(tmp_path / "forged.npz", npy_bytes((5_000_000, 1, 28, 28)), zipfile.ZIP_DEFLATED,
                         claimed_size=0xFFFF_FFF0)
        return path, "all", None, (r"forged.npz: its array 'images' declares .* \(3,920,000,000 bytes\) but holds "
                                   r"at most [\d,]+ bytes")
    if name == "png-bomb":
        path = png_declaring(tmp_path / "pictures" / "bomb.png", 50_000, 50_000)
        return path.parent, "all", None, (rf"{re.escape(str(path))} declares 50,000 x 50,000 pixels "
                                          r"\(width x height\), more than the 50,000,000 a picture may have "
                                          r"\(drawzoo.data.folders.MAX_PICTURE_PIXELS\); it was not decoded")
    if name == "jpeg-bomb":
        path = jpeg_declaring(tmp_path / "photos" / "bomb.jpg", 30_000, 20_000)
        return path.parent, "all", None, r"bomb.jpg declares 30,000 x 20,000 pixels \(width x height\), more than"
    if name == "idx-images":
        path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
        path.parent.mkdir(parents=True)
        path.write_bytes(idx_bytes((1_000_000_000, 28, 28), bytes(1000)))
        return "mnist", "train", root, (rf"{re.escape(str(path))}: its IDX header declares 1,000,000,000 images "
                                        r"\(784,000,000,016 bytes\) but the file holds 1,016 bytes")
    if name == "idx-labels":
        raw = root / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        (raw / "train-images-idx3-ubyte").write_bytes(idx_bytes((3, 28, 28), bytes(3 * 784)))
        (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes((1_000_000_000,), bytes(3)))
        return "fashion_mnist", "train", root, (r"train-labels-idx1-ubyte: its IDX header declares 1,000,000,000 "
                                                r"labels \(1,000,000,008 bytes\) but the file holds 11 bytes")
    if name == "amat-gz-bomb":  # 10,000 rows of the valid split: 15,680,000 bytes, 31,360,000 at most
        path = amat_gz_bomb(root / "binarized_mnist" / "binarized_mnist_valid.amat.gz", 48_000_000)
        return "binarized_mnist", "valid", root, (rf"{re.escape(str(path))} holds more than 31,360,000 bytes "
                                                  r"decompressed, 2 times the 15,680,000 of 10,000 rows")
    raise KeyError(name)


CASES = ["npy-huge", "npy-huge-v2", "npy-object", "npy-shape", "npz-stored", "npz-compressed", "npz-forged-size",
         "png-bomb", "jpeg-bomb", "idx-images", "idx-labels", "amat-gz-bomb"]


def cli_args(spec, split, root, tmp_path):
    """`drawzoo train` reading `spec`: a file or folder as --data, a named set's train split as
    --data, its valid split as --valid-data beside a small good file."""
    args = ["train", "draw", *TINY, "--checkpoint", tmp_path / "run.pt", "--data", spec]
    if split == "valid":
        good = tmp_path / "good.npy"
        np.save(good, np.zeros((4, 1, 28, 28), np.uint8))
        args[-1:] = [good, "--valid-data", spec]
    return [str(a) for a in args + (["--data-root", root] if root else [])]


# ------------------------------------------------------------------------------ each case


@pytest.mark.parametrize("case", CASES)
def test_refused_from_the_header_as_a_data_error(tmp_path, case):
    spec, split, root, message = write_case(case, tmp_path)
    with pytest.raises(DataError, match=message) as e:
        data.load(spec, split, root)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("case", CASES)
def test_refused_on_the_cli_in_one_line_with_status_2(tmp_path, capsys, case):
    spec, split, root, message = write_case(case, tmp_path)
    code = main(cli_args(spec, split, root, tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert re.match(r"drawzoo: error: .*" + message, err)


def test_a_recipe_pointing_at_such_a_file_is_refused_alike(tmp_path, capsys):
    spec, _, _, message = write_case("npy-huge", tmp_path)
    recipe = tmp_path / "huge.toml"
    recipe.write_text(f'model = "draw"\n[config]\nT = 2\n[train]\nepochs = 1\n[data]\ntrain = "{spec}"\n')
    code = main(["train", "--recipe", str(recipe), "--checkpoint", str(tmp_path / "run.pt"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and re.match("drawzoo: error: " + message, err), err


def test_the_cli_process_exits_2_with_one_line(tmp_path):
    spec, split, root, message = write_case("npy-huge", tmp_path)
    done = subprocess.run([sys.executable, "-m", "drawzoo", *cli_args(spec, split, root, tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert re.match("drawzoo: error: " + message, done.stderr)


PROBE = textwrap.dedent("""
    import contextlib, io, json, re, sys
    from pathlib import Path
    import drawzoo, drawzoo.data, drawzoo.cli
    def peak_mb():  # this process's peak resident memory (ru_maxrss would count the parent's)
        return int(re.search(r"VmHWM:\\s*(\\d+) kB", Path("/proc/self/status").read_text())[1]) / 1024
    start = peak_mb()
    for spec, split, root, argv in json.loads(sys.argv[1]):
        try:
            drawzoo.data.load(spec, split, root)
            outcome = "loaded"
        except drawzoo.DataError as e:
            outcome = "DataError"
        with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
            code = drawzoo.cli.main(argv)
        print(json.dumps([outcome, code, err.getvalue(), peak_mb() - start]), flush=True)
    print(json.dumps(start))
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="measures memory through Linux's /proc")
def test_peak_memory_stays_small(tmp_path):
    """Every case, in Python and on the CLI, in one fresh process: its peak resident memory rises
    less than 400 MB above where it stood after importing drawzoo (the same peak bounds each)."""
    cases = []
    for case in CASES:
        folder = tmp_path / case
        spec, split, root, _ = write_case(case, folder)
        cases.append([str(spec), split, root and str(root), cli_args(spec, split, root, folder)])
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    *results, start = map(json.loads, out.stdout.splitlines())
    figures = {case: round(mb) for case, (*_, mb) in zip(CASES, results)}
    print(f"peak memory above {start:.0f} MB after import (MB, cumulative):", figures)
    for case, (outcome, code, err, _) in zip(CASES, results):
        assert outcome == "DataError" and code == 2 and len(err.splitlines()) == 1, (case, err)
    assert max(figures.values()) < 400, figures


# ------------------------------------------------------------------------------ what still loads


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_valid_npy_files_of_every_format_version_load(tmp_path, version):
    images = np.random.default_rng(0).integers(0, 256, (5, 2, 3, 4), dtype=np.uint8)
    with open(tmp_path / "x.npy", "wb") as f:
        npy.write_array(f, np.asfortranarray(images), version=version)
    assert np.array_equal(data.load(tmp_path / "x.npy", "all").images.numpy(), images)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_valid_npz_files_load_stored_or_compressed(tmp_path, save):
    images = np.zeros((1000, 1, 28, 28), np.uint8)  # all zeros: deflate's best ratio
    images[::7] = 255
    save(tmp_path / "x.npz", labels=np.arange(1000), images=images)
    assert np.array_equal(data.load(tmp_path / "x.npz", "all").images.numpy(), images)


def test_a_zip_member_that_is_no_array_is_named(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as archive:
        archive.writestr("images", b"not an array")
    with pytest.raises(DataError, match=r"x.npz: its member 'images' is not a .npy array"):
        data.load(tmp_path / "x.npz", "all")


def test_the_picture_limit_is_the_stated_one_and_pillows_is_kept(tmp_path, monkeypatch):
    before = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(data.folders, "MAX_PICTURE_PIXELS", 8 * 8)
    Image.new("L", (8, 8), 7).save(tmp_path / "a.png")
    assert data.load(tmp_path, "all").image_shape == (1, 8, 8)
    Image.new("L", (9, 8)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match=r"b.png declares 9 x 8 pixels \(width x height\), more than the 64 a picture"):
        data.load(tmp_path, "all", image_shape=(1, 8, 8))
    assert Image.MAX_IMAGE_PIXELS == before


def test_idx_files_that_disagree_with_their_header_are_named(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    path = raw / "t10k-images-idx3-ubyte"
    for body, message in [(idx_bytes((2, 28, 28), bytes(3 * 784)), r"declares 2 images \(1,584 bytes\) but the file "
                                                                   r"holds 2,368 bytes"),
                          (idx_bytes((2, 32, 32), bytes(2 * 1024)), "declares images of 32 x 32, expected 28 x 28"),
                          (b"\x00\x00\x0d\x03" + bytes(100), r"is not an IDX file of uint8 images \(it starts "
                                                             r"00 00 0d 03, expected 00 00 08 03\)"),
                          (b"", r"it starts empty")]:
        path.write_bytes(body)
        with pytest.raises(DataError, match=message):
            data.mnist(tmp_path, "test", download=False)


def test_an_amat_file_far_larger_than_its_rows_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(data.amat, "SPLIT_SIZES", {"train": 5, "valid": 3, "test": 2})
    path = tmp_path / "binarized_mnist_test.amat"
    path.write_bytes(b"0 " * 784 * 5)  # 5 rows' bytes where 2 are expected
    with pytest.raises(DataError, match=re.escape(f"{path} holds more than 6,272 bytes, 2 times the 3,136 of 2 rows")):
        data.binarized_mnist(tmp_path, "test")


def test_a_cache_whose_header_declares_too_much_is_parsed_again(tmp_path, monkeypatch):
    monkeypatch.setattr(data.amat, "SPLIT_SIZES", {"train": 5, "valid": 3, "test": 2})
    bits = (np.random.default_rng(0).random((2, 784)) < 0.3).astype(np.uint8)
    (tmp_path / "binarized_mnist_test.amat").write_bytes("".join(" ".join(map(str, r)) + "\n" for r in bits).encode())
    data.binarized_mnist(tmp_path, "test")
    (cache,) = (tmp_path / "cache" / "binarized_mnist").iterdir()
    cache.write_bytes(npy_bytes((1_000_000_000, 98)))
    assert np.array_equal(data.binarized_mnist(tmp_path, "test")[:].view(2, 784).numpy(), bits)
    assert np.load(cache).shape == (2, 98)
