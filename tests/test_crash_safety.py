"""Real training processes killed with SIGKILL at different moments, then resumed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import drawzoo
from drawzoo.checkpoints import read_checkpoint

WORKER = Path(__file__).with_name("train_worker.py")
EPOCHS = 3  # 10 steps an epoch


def start(checkpoint, epochs=EPOCHS):
    env = dict(os.environ, PYTHONPATH=str(WORKER.parents[1]))
    return subprocess.Popen([sys.executable, str(WORKER), str(checkpoint), str(epochs)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout=120.0, poll=0.0005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return False


def finish(checkpoint):
    proc = start(checkpoint)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return read_checkpoint(f"{checkpoint}.final")["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Final weights of a run that nobody killed."""
    return finish(tmp_path_factory.mktemp("straight") / "run.pt")


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _temp_files(folder):
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_killed_runs_resume_to_the_uninterrupted_weights(uninterrupted, tmp_path):
    checkpoint = tmp_path / "run.pt"
    moments = [
        # (what to wait for before SIGKILL, description)
        (lambda: checkpoint.exists(), "right after the first checkpoint"),
        (lambda: bool(_temp_files(tmp_path)), "while a checkpoint is being written"),
        (lambda: checkpoint.exists() and read_checkpoint(checkpoint)["progress"]["step"] >= 14, "mid-epoch"),
        (lambda: bool(_temp_files(tmp_path)), "while a checkpoint is being written, again"),
    ]
    steps_seen = []
    for condition, what in moments:
        proc = start(checkpoint)
        assert wait_for(lambda: condition() or proc.poll() is not None), what
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"finished before the kill ({what})"
        payload = read_checkpoint(checkpoint)  # always loads, whatever the moment
        steps_seen.append(payload["progress"]["step"])
        drawzoo.load(checkpoint=checkpoint)
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] < EPOCHS * 10
    final = finish(checkpoint)  # resumes from the last checkpoint and completes
    assert _same(final, uninterrupted)
    assert not _temp_files(tmp_path) or all(p.stat().st_size >= 0 for p in _temp_files(tmp_path))


def test_a_second_run_on_the_same_checkpoint_is_refused(tmp_path):
    checkpoint = tmp_path / "run.pt"
    first = start(checkpoint, epochs=50)
    try:
        assert wait_for(lambda: checkpoint.exists() or first.poll() is not None)
        second = start(checkpoint)
        _, err = second.communicate(timeout=120)
        assert second.returncode != 0 and "another training run is using this checkpoint" in err
        assert first.poll() is None  # the first run goes on, its checkpoint untouched by the second
    finally:
        first.kill()
        first.wait()
    read_checkpoint(checkpoint)


def test_truncated_checkpoints_are_reported_with_path_and_reason(tmp_path):
    checkpoint = tmp_path / "run.pt"
    finish(checkpoint)
    data = checkpoint.read_bytes()
    for cut in (len(data) // 2, 100, 0):
        broken = tmp_path / f"cut{cut}.pt"
        broken.write_bytes(data[:cut])
        with pytest.raises(drawzoo.CheckpointError, match=rf"cut{cut}.pt: not a readable checkpoint"):
            drawzoo.load(checkpoint=broken)
    flipped = bytearray(data)
    flipped[len(data) // 3: len(data) // 3 + 64] = b"\xff" * 64
    (tmp_path / "flipped.pt").write_bytes(bytes(flipped))
    with pytest.raises(drawzoo.CheckpointError, match="flipped.pt: (corrupted|not a readable)"):
        drawzoo.load(checkpoint=tmp_path / "flipped.pt")
