import os
import shlex
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

import drawzoo
from drawzoo.checkpoints import read_checkpoint, save_checkpoint
from drawzoo.files import atomic_write
from tests.conftest import binary_images

SHAPE = (1, 8, 8)


def tiny_vae():
    return drawzoo.load("vae", image_shape=SHAPE, hidden_dim=4, latent_dim=2)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


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


def test_a_symlinked_checkpoint_updates_its_target_atomically_and_stays_a_link(tmp_path, monkeypatch):
    x = binary_images(16, SHAPE)
    store, link = tmp_path / "store", tmp_path / "latest.pt"
    store.mkdir()
    target = store / "run.pt"
    link.symlink_to(target)  # dangling until the first checkpoint, as `ln -s` before a run makes it
    renames, replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: renames.append((src, dst)) or replace(src, dst))

    def second_run_on_the_target(record):  # the lock is the target's too
        with pytest.raises(drawzoo.CheckpointError, match="run.pt: another training run is using this checkpoint"):
            drawzoo.train(tiny_vae(), x, epochs=2, checkpoint=target, progress=False)

    drawzoo.train(tiny_vae(), x, epochs=2, checkpoint=link, on_epoch=second_run_on_the_target, progress=False)
    assert link.is_symlink() and link.resolve() == target
    assert read_checkpoint(link)["progress"]["epoch"] == 2
    # each checkpoint was a temp file beside the target renamed over it: atomic, within one file system
    assert len(renames) == 2 and all(os.path.dirname(src) == str(store) and dst == target for src, dst in renames)
    assert sorted(os.listdir(store)) == ["run.pt", "run.pt.lock"] and sorted(os.listdir(tmp_path)) == ["latest.pt", "store"]


def test_checkpoints_honour_the_umask_and_keep_the_mode_they_were_given(tmp_path):
    x = binary_images(32, SHAPE)
    path, best = tmp_path / "run.pt", tmp_path / "best.pt"
    old = os.umask(0o027)
    try:
        drawzoo.train(tiny_vae(), x[:24], x[24:], epochs=1, checkpoint=path, best=best, progress=False)
        assert [_mode(p) for p in (path, best, f"{path}.lock")] == [0o640] * 3  # as open() would make them
        path.chmod(0o664)  # shared with the group
        drawzoo.train(tiny_vae(), x[:24], x[24:], epochs=2, checkpoint=path, progress=False)
    finally:
        os.umask(old)
    assert _mode(path) == 0o664 and read_checkpoint(path)["progress"]["epoch"] == 2


def _run_out_of_space(tmp_path, limit):
    """Resume ``drawzoo train`` on runs/run.pt (a copy of seed.pt) where writing the next
    checkpoint fails: on a tmpfs with room for one checkpoint ("disk full", in a user namespace), or
    under a file size limit. (exit status, stderr, whether run.pt is still seed.pt, what runs/ holds)."""
    train = shlex.join([sys.executable, "-m", "drawzoo", "train", "vae", "--data", "x.npy", "--epochs", "2",
                        "--checkpoint", "runs/run.pt", "--quiet"])
    report = 'echo $?; cmp -s seed.pt runs/run.pt && echo intact || echo changed; ls -A runs'
    if limit == "disk full":
        room = (tmp_path / "seed.pt").stat().st_size + 8192
        script = f"mount -t tmpfs -o size={room} tmpfs runs && cp seed.pt runs/run.pt && {train} >/dev/null; {report}"
        command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script]
    else:
        script = f"cp seed.pt runs/run.pt && trap '' XFSZ && ulimit -f 8 && {train} >/dev/null; {report}"
        command = ["sh", "-c", script]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    status, kept, *held = done.stdout.split()
    return int(status), done.stderr, kept == "intact", held


@pytest.mark.parametrize("limit", ["disk full", "file size limit"])
def test_a_full_disk_is_one_line_and_the_previous_checkpoint_stays(tmp_path, limit):
    if limit == "disk full" and (shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode != 0):
        pytest.skip("no unprivileged user namespaces here to mount a small tmpfs in")
    x = binary_images(20).numpy()
    np.save(tmp_path / "x.npy", x)
    drawzoo.train(drawzoo.load("vae", hidden_dim=4, latent_dim=2), x, epochs=1, batch_size=10,
                  checkpoint=tmp_path / "seed.pt", progress=False)
    (tmp_path / "runs").mkdir()
    status, err, intact, held = _run_out_of_space(tmp_path, limit)
    reason = "no space left on device" if limit == "disk full" else "file too large"
    assert status == 2 and intact and sorted(held) == ["run.pt", "run.pt.lock"]  # no temporary file left
    assert err == f"drawzoo: error: {reason} writing runs/run.pt; the previous checkpoint is intact\n"


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


def test_save_verified_keeps_only_the_expected_bytes(tmp_path):
    import hashlib

    from drawzoo.files import DigestMismatch, save_verified
    body = [b"a" * 10, b"b" * 10]
    sha = hashlib.sha256(b"".join(body)).hexdigest()
    dest = tmp_path / "f.bin"
    save_verified(iter(body), dest, sha, size=20)
    assert dest.read_bytes() == b"".join(body)
    dest.write_bytes(b"old")
    with pytest.raises(DigestMismatch) as e:  # another sha256: nothing kept, the old file intact
        save_verified(iter([b"c" * 20]), dest, sha, size=20)
    assert e.value.size == 20 and dest.read_bytes() == b"old"

    def endless():
        while True:
            yield b"x" * 8
    with pytest.raises(DigestMismatch) as e:  # a body longer than expected stops one chunk past it
        save_verified(endless(), dest, sha, size=20)
    assert e.value.size == 24 and dest.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
