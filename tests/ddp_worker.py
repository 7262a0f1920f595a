"""Training for the torch.distributed tests: run alone, or as ``torchrun --nproc_per_node=N tests/ddp_worker.py``.

    python tests/ddp_worker.py OUT EPOCHS [noiseless] [iwae] [FIELD=VALUE ...]

Trains a small DRAW on fixed data (global batch 24, seed 0) with its checkpoint at OUT/run.pt,
and writes OUT/rank{R}.pt: the history, a digest of the parameters after every epoch, the
final weights, and the names of gloo's threads still running once the process group is destroyed. Each process initialises the model with seed RANK: training starts from rank 0's.
With "noiseless", every z_t of the guide is its posterior mean (no sampling noise), so that a
data-parallel run can be compared with a single process to float precision. With "iwae", the
objective is RenyiELBO(alpha=0) with 3 vectorised particles (an ELBO without a differentiable
loss, trained by its loss_and_grads) instead of TraceMeanField_ELBO. FIELD=VALUE: more TrainConfig
fields (e.g. max_minutes=0.01), or stop_at=STEP: rank 1 alone has a callback, which asks the run to
stop after optimizer step STEP (`drawzoo.training.callbacks.Run.stop`). Rank 0 writes each
checkpoint 0.3 s late, and rank 1 reads it in ``on_checkpoint`` (OUT/rank1.pt's
"checkpoints_seen": the step of the run and of the file). Stopped by a signal, it
writes the message of `drawzoo.Interrupted` to OUT/rank{R}.pt instead and exits with 128 + the
signal's number.
"""

import ast
import hashlib
import os
import sys
import time
from pathlib import Path

import torch
from pyro.infer import RenyiELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

import drawzoo
from drawzoo.checkpoints import read_checkpoint
from drawzoo.training import state


class StopAt(drawzoo.Callback):
    """Asks the run to stop after optimizer step `step`."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, run, loss):
        if run.state.step == self.step:
            run.stop(f"rank 1 asked at step {self.step}")


class ReadCheckpoint(drawzoo.Callback):
    """Reads the checkpoint in each ``on_checkpoint``: (the run's step, the file's step or None)."""

    def __init__(self):
        self.seen = []

    def on_checkpoint(self, run, path):
        try:
            self.seen.append((run.state.step, read_checkpoint(path)["progress"]["step"]))
        except drawzoo.CheckpointError:  # not written yet
            self.seen.append((run.state.step, None))


def slow_writes():
    """Rank 0 writes each checkpoint 0.3 s late: a process that did not wait for the write would
    find the previous one (or none)."""
    write = state.save_checkpoint

    def late(*args, **kwargs):
        time.sleep(0.3)
        return write(*args, **kwargs)

    state.save_checkpoint = late


class MeanSamples(Messenger):
    """Latent sites take their distribution's mean instead of a random draw."""

    def _pyro_sample(self, msg):
        if not msg["is_observed"] and msg["value"] is None and not site_is_subsample(msg):
            msg["value"] = msg["fn"].mean


class NoiselessELBO(TraceMeanField_ELBO):
    def differentiable_loss(self, model, guide, *args, **kwargs):
        return super().differentiable_loss(model, MeanSamples()(guide), *args, **kwargs)


class NoiselessIWAE(RenyiELBO):
    def loss_and_grads(self, model, guide, *args, **kwargs):
        return super().loss_and_grads(model, MeanSamples()(guide), *args, **kwargs)


def objective(flags: set[str]):
    if "iwae" in flags:
        return (NoiselessIWAE if "noiseless" in flags else RenyiELBO)(
            alpha=0, num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    return NoiselessELBO() if "noiseless" in flags else None


def data():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(264, 1, 10, 10, generator=g) < 0.3).float()
    x[:132, :, 2:7, 2:7] = 1.0
    return x[:240], x[240:]


def digest(model) -> str:
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().numpy().tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    out, epochs = Path(sys.argv[1]), int(sys.argv[2])
    elbo = objective({a for a in sys.argv[3:] if "=" not in a})
    settings = {k: ast.literal_eval(v) for k, v in (a.split("=", 1) for a in sys.argv[3:] if "=" in a)}
    rank = int(os.environ.get("RANK", "0"))
    stop_at = settings.pop("stop_at", None)
    callbacks = [StopAt(stop_at)] if stop_at is not None and rank == 1 else []
    reader = ReadCheckpoint()
    if rank == 1:
        callbacks.append(reader)
    if rank == 0 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        slow_writes()
    torch.set_num_threads(1)
    torch.manual_seed(rank)  # other weights in rank 1: train starts from rank 0's
    model = drawzoo.load("draw", image_shape=(1, 10, 10), T=3, hidden_dim=32, latent_dim=4, write_size=3)
    digests = []
    train, valid = data()
    try:
        history = drawzoo.train(model, train, valid, epochs=epochs, batch_size=24, lr=3e-3, checkpoint=out / "run.pt",
                                seed=0, elbo=elbo, progress=False, callbacks=callbacks, **settings,
                                on_epoch=lambda record: digests.append(digest(model)))
    except drawzoo.Interrupted as e:
        torch.save({"interrupted": str(e)}, out / f"rank{rank}.pt")
        sys.exit(128 + e.signum)
    drawzoo.distributed.leave()
    threads = [(task / "comm").read_text().strip() for task in Path("/proc/self/task").iterdir()]
    torch.save({"history": history, "digests": digests, "state_dict": model.state_dict(),
                "gloo_threads_left": [t for t in threads if "gloo" in t], "checkpoints_seen": reader.seen},
               out / f"rank{rank}.pt")
