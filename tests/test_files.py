import os
import stat

import pytest
import torch

import drawzoo
from drawzoo.checkpoints import read_checkpoint, save_checkpoint
from drawzoo.files import atomic_write


def test_atomic_write_shows_the_new_file_only_when_done_and_syncs_it_and_its_folder(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    synced, fsync = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_mode) or fsync(fd))
    with atomic_write(path) as f:
        f.write(b"new")
        assert path.read_bytes() == b"old"
        (tmp,) = set(tmp_path.iterdir()) - {path}
        assert tmp.name.startswith(".f.bin.") and tmp.name.endswith(".tmp")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["f.bin"]
    assert [stat.S_ISDIR(mode) for mode in synced] == [False, True]  # the file, then the folder


def test_atomic_write_keeps_the_old_file_when_the_block_fails(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(ZeroDivisionError):
        with atomic_write(path) as f:
            f.write(b"half")
            1 / 0
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_atomic_write_gives_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "f.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == 0o644


def test_a_checkpoint_that_fails_to_save_leaves_the_last_one(tmp_path, monkeypatch):
    model = drawzoo.load("vae", hidden_dim=4, latent_dim=2)
    path = save_checkpoint(tmp_path / "run.pt", model, step=1)

    def fail(payload, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, step=2)
    assert read_checkpoint(path)["step"] == 1 and os.listdir(tmp_path) == ["run.pt"]
