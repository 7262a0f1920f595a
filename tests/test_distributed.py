"""Data-parallel training under torchrun, for real: 2 CPU processes over gloo."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import drawzoo
from drawzoo.checkpoints import read_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = WORKER.parents[1]


def figures(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", DRAWZOO_DIST_TIMEOUT="30")
    env.pop("WORLD_SIZE", None)
    return env


def single(out, epochs, *extra):
    subprocess.run([sys.executable, str(WORKER), str(out), str(epochs), *extra], env=_env(), check=True, timeout=300)
    return torch.load(out / "rank0.pt", weights_only=True)


def torchrun(out, epochs, *extra, nproc=2, **popen):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(WORKER), str(out), str(epochs), *extra]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def run_torchrun(out, epochs, *extra, nproc=2):
    proc = torchrun(out, epochs, *extra, nproc=nproc)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(nproc)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A single-process run and a 2-process run, both "noiseless" (each z_t at its posterior
    mean), so that they can be compared to float precision."""
    alone = single(tmp_path_factory.mktemp("alone"), 2, "noiseless")
    out = tmp_path_factory.mktemp("ddp")
    return alone, out, run_torchrun(out, 2, "noiseless")


def test_ranks_hold_identical_parameters_after_every_epoch(runs):
    _, _, (rank0, rank1) = runs
    assert rank0["gloo_threads_left"] == rank1["gloo_threads_left"] == []  # else they may abort the exit
    assert len(rank0["digests"]) == 2 and rank0["digests"] == rank1["digests"]
    assert figures(rank0["history"]) == figures(rank1["history"])  # every process reports the global figures


def test_every_rank_sees_each_checkpoint_written_in_on_checkpoint(runs):
    """Rank 0 writes each checkpoint 0.3 s late; rank 1's on_checkpoint finds it written."""
    _, _, (_, rank1) = runs
    seen = rank1["checkpoints_seen"]
    assert len(seen) == 2 and all(run_step == file_step for run_step, file_step in seen), seen


def test_two_processes_match_a_single_process_run(runs):
    """Same global batch (24 = 2 x 12), data order and seed: the training losses and the final
    weights agree to 1e-5 (float rounding of the averaged gradients). The validation loss is an
    estimate from sampled z's, each process scoring half the images with its own noise: within 1%."""
    alone, out, (rank0, _) = runs
    for a, b in zip(alone["history"], rank0["history"], strict=True):
        assert a["epoch"] == b["epoch"] and a["step"] == b["step"] == 10 * a["epoch"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["valid_loss"] == pytest.approx(a["valid_loss"], rel=0.01)
    for name, w in alone["state_dict"].items():
        torch.testing.assert_close(rank0["state_dict"][name], w, rtol=0, atol=1e-5, msg=name)
    payload = read_checkpoint(out / "run.pt")
    assert payload["progress"]["epoch"] == 2 and len(payload["rng"]) == 2  # one RNG state per process


def test_an_elbo_without_a_differentiable_loss_trains_data_parallel(tmp_path):
    """RenyiELBO(alpha=0) (IWAE, 3 vectorised particles) trains by its own loss_and_grads, with
    no DistributedDataParallel forward: the 2-process run still matches a single process to 1e-5."""
    (tmp_path / "alone").mkdir()
    alone = single(tmp_path / "alone", 1, "noiseless", "iwae")
    rank0, rank1 = run_torchrun(tmp_path, 1, "noiseless", "iwae")
    assert rank0["digests"] == rank1["digests"]
    assert rank0["history"][0]["step"] == 10
    assert rank0["history"][0]["train_loss"] == pytest.approx(alone["history"][0]["train_loss"], rel=1e-5)
    for name, w in alone["state_dict"].items():
        torch.testing.assert_close(rank0["state_dict"][name], w, rtol=0, atol=1e-5, msg=name)
    assert read_checkpoint(tmp_path / "run.pt")["elbo"] == {
        "class": "NoiselessIWAE", "num_particles": 3, "vectorize_particles": True, "alpha": 0}


def test_a_noisy_two_process_run_keeps_its_ranks_identical(tmp_path):
    r0, r1 = run_torchrun(tmp_path, 1)
    assert r0["digests"] == r1["digests"] and figures(r0["history"]) == figures(r1["history"])


def test_a_two_process_run_resumes_from_its_checkpoint(runs, tmp_path):
    _, out, (rank0, _) = runs
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "run.pt").write_bytes((out / "run.pt").read_bytes())
    r0, r1 = run_torchrun(resumed, 3, "noiseless")
    assert [h["epoch"] for h in r0["history"]] == [1, 2, 3]
    assert figures(r0["history"][:2]) == figures(rank0["history"])
    assert r0["digests"] == r1["digests"] and len(r0["digests"]) == 1
    assert read_checkpoint(resumed / "run.pt")["progress"]["epoch"] == 3
    assert drawzoo.load(checkpoint=resumed / "run.pt").config.T == 3


def test_a_time_limit_and_a_signal_to_one_rank_stop_every_rank_at_the_same_step(runs, tmp_path):
    """A time limit that each process measures on its own clock, then SIGTERM to rank 1 alone: each
    time both processes stop after the same step, rank 0 having written the checkpoint, and the run
    resumes to the weights of the uninterrupted one."""
    _, _, (straight, _) = runs
    checkpoint = tmp_path / "run.pt"
    r0, r1 = run_torchrun(tmp_path, 2, "noiseless", "max_minutes=0.001")
    reached = read_checkpoint(checkpoint)["progress"]["step"]
    assert r0["history"][-1]["stopped"] == "max_minutes" and figures(r0["history"]) == figures(r1["history"])
    assert r0["history"][-1]["step"] == reached < 20

    def step():
        return read_checkpoint(checkpoint)["progress"]["step"]

    proc = torchrun(tmp_path, 2, "noiseless", "every_steps=1")
    deadline = time.monotonic() + 120
    while step() <= reached:  # training is under way
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(_worker_pids()[1], signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    now = step()
    said = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["interrupted"] for r in (0, 1)]
    assert said == [f"stopped by SIGTERM at step {now} (epoch {now / 10:g}): checkpoint {checkpoint}, "
                    "resume from it to continue"] * 2, err[-3000:]
    assert reached < now < 20
    r0, r1 = run_torchrun(tmp_path, 2, "noiseless")
    assert all(torch.equal(r0["state_dict"][k], w) for k, w in straight["state_dict"].items())


def test_a_callback_of_one_rank_stops_every_rank_at_the_same_step(runs, tmp_path):
    """A callback that rank 1 alone has asks the run to stop after step 7: both processes stop
    there (rank 0, which has no callback, too), with the same history marked with its reason and
    rank 0's checkpoint, which resumes to the weights of the uninterrupted run."""
    _, _, (straight, _) = runs
    r0, r1 = run_torchrun(tmp_path, 2, "noiseless", "stop_at=7")
    assert figures(r0["history"]) == figures(r1["history"])
    assert {k: v for k, v in r0["history"][-1].items() if k not in ("train_loss", "seconds")} == {
        "epoch": 0.7, "step": 7, "valid_loss": None, "partial": True, "stopped": "rank 1 asked at step 7"}
    assert read_checkpoint(tmp_path / "run.pt")["progress"]["step"] == 7
    r0, _ = run_torchrun(tmp_path, 2, "noiseless")
    assert all(torch.equal(r0["state_dict"][k], w) for k, w in straight["state_dict"].items())


def _worker_pids() -> dict[int, int]:
    """{RANK: pid} of the live worker processes that torchrun started."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if str(WORKER) not in (entry / "cmdline").read_text() or "zombie" in (entry / "status").read_text():
                continue
            env = dict(kv.split("=", 1) for kv in (entry / "environ").read_text().split("\0") if "=" in kv)
        except OSError:  # gone meanwhile
            continue
        if "RANK" in env and "TORCHELASTIC_RUN_ID" in env:
            found[int(env["RANK"])] = int(entry.name)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_killing_one_rank_ends_the_others_with_an_error_not_a_hang(tmp_path):
    """Two launchers, one process each, as on two machines: when one worker is killed, the other
    must fail by itself with a clear error (its own launcher does not kill it)."""
    endpoint = f"127.0.0.1:{_free_port()}"
    launchers = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "kill-test",
         str(WORKER), str(tmp_path), "500"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run.pt").exists():  # training is under way
            assert all(p.poll() is None for p in launchers) and time.monotonic() < deadline
            time.sleep(0.2)
        pids = _worker_pids()
        assert set(pids) == {0, 1}
        os.kill(pids[1], signal.SIGKILL)
        started = time.monotonic()
        errors = [p.communicate(timeout=90)[1] for p in launchers]
        assert time.monotonic() - started < 90 and all(p.returncode != 0 for p in launchers)
        survivor = next(e for e in errors if "TrainingError" in e)
        assert "rank 0 of 2: lost the other training processes" in survivor
        assert f"the last checkpoint at {tmp_path / 'run.pt'} is intact" in survivor
        assert not _worker_pids()  # nothing left hanging
    finally:
        for p in launchers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    read_checkpoint(tmp_path / "run.pt")


def test_a_nccl_group_sums_on_the_gpu(monkeypatch):
    """nccl reduces CUDA tensors only: the figures `Group.sum` reduces (losses, image counts, stop
    requests) go to this process's GPU under nccl, to the CPU under gloo."""
    from drawzoo import distributed

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_backend", lambda group=None: "nccl")
    assert distributed._collective_device() == torch.device("cuda", 1)
    monkeypatch.setattr(distributed.dist, "get_backend", lambda group=None: "gloo")
    assert distributed._collective_device() == torch.device("cpu")
