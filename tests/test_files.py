import os
import shutil
import stat

import pytest
import torch

import drawzoo
from drawzoo.checkpoints import read_checkpoint, save_checkpoint
from drawzoo.files import atomic_write
from tests.conftest import binary_images

SHAPE = (1, 8, 8)


def tiny_vae():
    return drawzoo.load("vae", image_shape=SHAPE, hidden_dim=4, latent_dim=2)


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


def test_a_run_keeps_its_lock_when_its_folder_is_deleted(tmp_path, caplog):
    x = binary_images(32, SHAPE)
    path = tmp_path / "runs" / "run.pt"
    second_runs = []

    def on_epoch(record):
        if record["epoch"] == 1:  # lock and checkpoint gone: this epoch's checkpoint makes the folder again
            shutil.rmtree(path.parent)
        else:  # a second run on the recreated folder is refused, as before the deletion
            with pytest.raises(drawzoo.CheckpointError, match="run.pt: another training run is using this checkpoint"):
                drawzoo.train(tiny_vae(), x, epochs=3, batch_size=16, checkpoint=path, progress=False)
            second_runs.append(record["epoch"])

    drawzoo.train(tiny_vae(), x, epochs=3, batch_size=16, checkpoint=path, on_epoch=on_epoch, progress=False)
    assert second_runs == [2, 3] and read_checkpoint(path)["progress"]["epoch"] == 3
    assert "run.pt.lock was removed during the run (its folder deleted?): lock taken again" in caplog.text


def test_a_run_whose_lock_another_run_took_stops_without_writing(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    path = tmp_path / "runs" / "run.pt"
    taken = []

    def on_epoch(record):  # the folder is deleted, made again, and another run locks it first
        shutil.rmtree(path.parent)
        path.parent.mkdir()
        taken.append(open(f"{path}.lock", "a"))
        fcntl.flock(taken[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)

    with pytest.raises(drawzoo.CheckpointError, match=r"run.pt: another training run is using this checkpoint "
                                                      r"\(its lock file was removed during this run; nothing written\)"):
        drawzoo.train(tiny_vae(), binary_images(32, SHAPE), epochs=2, checkpoint=path, on_epoch=on_epoch,
                      progress=False)
    assert not path.exists()
    taken[0].close()
