"""Real training processes killed with SIGKILL at different moments, or stopped by SIGTERM, SIGINT
or their time limit, then resumed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import drawzoo
from drawzoo.checkpoints import read_checkpoint
from tests import train_worker

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


# -- `drawzoo train` stopped by its time limit and by signals ---------------------------------------

CLI = ["--T", "4", "--hidden-dim", "256", "--latent-dim", "8", "--write-size", "3", "--epochs", str(EPOCHS),
       "--batch-size", "24", "--lr", "1e-3", "--quiet"]  # train_worker's run, validated on the side


@pytest.fixture(scope="module")
def npy(tmp_path_factory):
    """train_worker's images, and validation images: a few, and many (validation takes a while)."""
    folder = tmp_path_factory.mktemp("data")
    np.save(folder / "train.npy", train_worker.data().numpy())
    np.save(folder / "valid.npy", train_worker.data()[:24].numpy())
    np.save(folder / "many.npy", torch.rand(8000, 1, 12, 12).numpy() < 0.3)
    return folder


def start_cli(npy, checkpoint, *options, valid="valid.npy", every_steps=2):
    """`drawzoo train` of train_worker's model and data on one thread: the same weights, bit for bit."""
    env = dict(os.environ, PYTHONPATH=str(WORKER.parents[1]), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "drawzoo", "train", "draw", "--data", str(npy / "train.npy"),
                             "--valid-data", str(npy / valid), "--checkpoint", str(checkpoint), *CLI,
                             "--every-steps", str(every_steps), *options],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_handled_sigint)


def _handled_sigint():
    """Ctrl-C as a terminal's foreground process gets it, even if whatever launched pytest ignores
    SIGINT (as a background job of a script does): an ignored SIGINT stays ignored in drawzoo."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def step_of(checkpoint):
    return read_checkpoint(checkpoint)["progress"]["step"] if checkpoint.exists() else 0


def wait_past(step, checkpoint, proc):
    """Wait until `checkpoint` holds a later step than `step`, or `proc` ends (reading the file only
    when it has been replaced: it is 10 MB)."""
    seen = None

    def past():
        nonlocal seen
        stat = checkpoint.stat()
        if (stat.st_ino, stat.st_mtime_ns) == seen:
            return False
        seen = (stat.st_ino, stat.st_mtime_ns)
        return step_of(checkpoint) > step

    return wait_for(lambda: past() or proc.poll() is not None, poll=0.005)


def test_the_time_limit_sigterm_and_sigint_stop_with_a_checkpoint_that_resumes(uninterrupted, npy, tmp_path):
    """Each stops after a step with one line on stderr, no traceback, and a distinct exit status;
    rerunning resumes, and the run ends with the weights of the uninterrupted one."""
    checkpoint = tmp_path / "run.pt"
    proc = start_cli(npy, checkpoint, "--max-minutes", "0.01")
    _, err = proc.communicate(timeout=120)
    reached = step_of(checkpoint)
    assert proc.returncode == 75 and 0 < reached < EPOCHS * 10, err
    assert err == (f"drawzoo: warning: stopped at the time limit (max_minutes=0.01) at step {reached} "
                   f"(epoch {reached / 10:g}): checkpoint {checkpoint}, resume from it to continue\n")
    for signum in (signal.SIGTERM, signal.SIGINT):
        proc = start_cli(npy, checkpoint, "--max-minutes", "10")  # the budget may change on resuming
        assert wait_past(reached, checkpoint, proc)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
        now = step_of(checkpoint)
        assert proc.returncode == 128 + signum and reached < now < EPOCHS * 10, err
        assert err == (f"drawzoo: stopped by {signum.name} at step {now} (epoch {now / 10:g}): "
                       f"checkpoint {checkpoint}, resume from it to continue\n")
        reached = now
    proc = start_cli(npy, checkpoint)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert _same(read_checkpoint(checkpoint)["state_dict"], uninterrupted)


def test_a_second_sigint_stops_at_once_and_the_last_checkpoint_stays(npy, tmp_path):
    """Both SIGINTs come while the first epoch is validated (on many images), right after its
    checkpoint at step 10: the second ends the process there, before the end-of-epoch checkpoint."""
    checkpoint = tmp_path / "run.pt"
    proc = start_cli(npy, checkpoint, valid="many.npy", every_steps=10)
    assert wait_for(lambda: checkpoint.exists() or proc.poll() is not None)
    written = checkpoint.read_bytes()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err == f"drawzoo: stopped at once by a second SIGINT; the last checkpoint at {checkpoint} is intact\n"
    assert checkpoint.read_bytes() == written and step_of(checkpoint) == 10 and not _temp_files(tmp_path)
