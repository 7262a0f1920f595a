"""Training any zoo model by stochastic variational inference, with checkpoints that resume.

The objective is a Pyro ELBO (``TraceMeanField_ELBO`` by default: DRAW's L^x + L^z) of the
model/guide pair, taken as a differentiable loss per image (nats) -- Pyro's PyTorch-native SVI
idiom -- and minimised by Adam with global gradient-norm clipping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
import warnings
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.infer import TraceMeanField_ELBO
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler
from tqdm.auto import tqdm

from .batching import as_dataset, collate_images
from .checkpoints import check_matches, read_checkpoint, save_checkpoint
from .errors import CheckpointError, DrawzooError
from .evaluation import evaluate


class TrainingError(DrawzooError):
    """Training cannot go on (e.g. the loss stays non-finite)."""


class ELBOLoss(nn.Module):
    """The negative ELBO of a zoo model's model/guide pair, per image (nats), as a module.

    ``forward(x)`` = ``elbo.differentiable_loss(model.model, model.guide, x) / B``.
    """

    def __init__(self, model: nn.Module, elbo=None):
        super().__init__()
        self.net = model
        self.elbo = elbo if elbo is not None else TraceMeanField_ELBO()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.elbo.differentiable_loss(self.net.model, self.net.guide, x) / x.shape[0]


@dataclasses.dataclass
class Progress:
    """Where training stands: completed epochs, optimizer steps, and the epoch in progress."""

    epoch: int = 0  #: completed epochs
    step: int = 0  #: optimizer steps taken (skipped non-finite ones included)
    step_in_epoch: int = 0  #: batches of the current epoch already seen
    loss_sum: float = 0.0  #: sum of per-image losses * images, this epoch so far
    images: int = 0  #: images seen this epoch so far
    history: list = dataclasses.field(default_factory=list)  #: one dict per completed epoch


def _rng_states() -> dict:
    state = {"torch": torch.get_rng_state(), "python": _to_lists(random.getstate())}
    np_state = np.random.get_state()
    state["numpy"] = {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


@contextlib.contextmanager
def _exclusive(path: Path | None):
    """Hold an exclusive lock on ``<path>.lock`` so that two runs never write one checkpoint."""
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckpointError(f"{path}: another training run is using this checkpoint") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def resolve_device(device=None) -> torch.device:
    """`device`, or CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _check_args(epochs, batch_size, lr, every, every_steps):
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("every", every)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "epochs" else 1):
            raise ValueError(f"{name} must be an integer >= {0 if name == 'epochs' else 1}, got {value!r}")
    if every_steps is not None and (not isinstance(every_steps, int) or every_steps < 1):
        raise ValueError(f"every_steps must be an integer >= 1 or None, got {every_steps!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")


def _preview(model, n: int, seed: int) -> torch.Tensor:
    """Final images of `n` prior samples ``[n, C, H, W]``, without touching the global RNG."""
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return model.generate(n)[-1].cpu()


def train(model, train_data, valid_data=None, *, epochs: int, batch_size: int, lr: float,
          checkpoint=None, every: int = 1, seed: int = 0, log_dir=None, device=None,
          elbo=None, clip_norm: float = 10.0, every_steps: int | None = None,
          max_bad_steps: int = 5, valid_samples: int = 1, num_preview: int = 64,
          progress: bool = True) -> list[dict]:
    """Train `model` for `epochs` epochs in all (a resumed run counts the epochs already done).

    `train_data` / `valid_data`: tensor or numpy array ``[N, C, H, W]`` in [0, 1], or a Dataset.
    Each epoch shuffles with a permutation seeded by ``(seed, epoch)``, takes Adam steps on the
    per-image negative ELBO (`elbo`, default ``TraceMeanField_ELBO()``) with gradients clipped to
    norm `clip_norm`, and evaluates the validation negative ELBO (`valid_samples` samples per image).

    `checkpoint`: a path; if the file exists, training resumes from it (same model name and config
    required) and continues exactly as an uninterrupted run with the same seed would. It is written
    atomically every `every` epochs, every `every_steps` optimizer steps if given, and at the end.

    A step whose loss or gradient is not finite is skipped (warned once); `max_bad_steps` such steps
    in a row stop training with `TrainingError`, leaving the last checkpoint as it was.

    `log_dir`: TensorBoard scalars ``loss/train``, ``loss/valid`` (nats per image) per epoch,
    ``loss/train_step`` per step, and a grid of `num_preview` samples per epoch.

    Returns the history: one dict per completed epoch (``epoch``, ``step``, ``train_loss``,
    ``valid_loss``, ``seconds``), including epochs of earlier runs when resuming.
    """
    _check_args(epochs, batch_size, lr, every, every_steps)
    device = resolve_device(device)
    model.to(device)
    dataset = as_dataset(train_data, model.image_shape, "train_data")
    valid = None if valid_data is None else as_dataset(valid_data, model.image_shape, "valid_data")
    objective = ELBOLoss(model, elbo)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    path = None if checkpoint is None else Path(checkpoint)
    settings = {"batch_size": batch_size, "lr": float(lr), "seed": seed, "clip_norm": float(clip_norm),
                "elbo": type(objective.elbo).__name__}

    with _exclusive(path):
        state = _resume(path, model, optimizer, settings) if path is not None and path.exists() else None
        if state is None:
            state = Progress()
            pyro.set_rng_seed(seed)

        def save():
            if path is not None:
                save_checkpoint(path, model, optimizer=optimizer.state_dict(),
                                progress=dataclasses.asdict(state), rng=_rng_states(), settings=settings)

        writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(log_dir), purge_step=state.step or None)
        bad_in_a_row, warned = 0, False
        try:
            while state.epoch < epochs:
                sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
                sampler.set_epoch(state.epoch)
                batches = list(BatchSampler(sampler, batch_size, drop_last=False))
                loader = DataLoader(dataset, batch_sampler=batches[state.step_in_epoch:],
                                    collate_fn=collate_images,
                                    generator=torch.Generator())  # leaves the global RNG alone
                started = time.perf_counter()
                bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{epochs}", total=len(batches),
                           initial=state.step_in_epoch, unit="batch", disable=not progress, leave=False)
                for x in bar:
                    x = model.check_images(x, name="train_data batch")
                    loss = objective(x)
                    optimizer.zero_grad(set_to_none=True)
                    finite = bool(torch.isfinite(loss))
                    if finite:
                        loss.backward()
                        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
                        finite = bool(torch.isfinite(norm))
                    state.step += 1
                    state.step_in_epoch += 1
                    if finite:
                        optimizer.step()
                        bad_in_a_row = 0
                        state.loss_sum += loss.item() * len(x)
                        state.images += len(x)
                        bar.set_postfix(loss=f"{state.loss_sum / state.images:.2f} nats")
                        if writer is not None:
                            writer.add_scalar("loss/train_step", loss.item(), state.step)
                    else:
                        bad_in_a_row += 1
                        if not warned:
                            warnings.warn(f"non-finite loss or gradient at step {state.step}: update skipped",
                                          RuntimeWarning, stacklevel=2)
                            warned = True
                        if bad_in_a_row >= max_bad_steps:
                            where = f"; the last checkpoint at {path} is intact" if path is not None else ""
                            raise TrainingError(f"stopped: {bad_in_a_row} non-finite losses in a row, "
                                                f"up to step {state.step}{where}")
                    if every_steps is not None and state.step % every_steps == 0:
                        save()
                bar.close()
                record = {"epoch": state.epoch + 1, "step": state.step,
                          "train_loss": state.loss_sum / max(state.images, 1), "valid_loss": None,
                          "seconds": time.perf_counter() - started}
                if valid is not None:
                    record["valid_loss"] = evaluate(model, valid, num_samples=valid_samples, seed=seed)["neg_elbo"]
                state.history.append(record)
                state.epoch += 1
                state.step_in_epoch, state.loss_sum, state.images = 0, 0.0, 0
                if writer is not None:
                    writer.add_scalar("loss/train", record["train_loss"], state.epoch)
                    if record["valid_loss"] is not None:
                        writer.add_scalar("loss/valid", record["valid_loss"], state.epoch)
                    from torchvision.utils import make_grid
                    writer.add_image("samples", make_grid(_preview(model, num_preview, seed), nrow=8), state.epoch)
                    writer.flush()
                if progress:
                    valid_text = "" if record["valid_loss"] is None else f", valid {record['valid_loss']:.2f}"
                    tqdm.write(f"epoch {state.epoch}/{epochs}: train {record['train_loss']:.2f}{valid_text} "
                               f"nats/image ({record['seconds']:.1f} s)")
                if state.epoch % every == 0 or state.epoch == epochs:
                    save()
        finally:
            if writer is not None:
                writer.close()
    return list(state.history)


def _resume(path: Path, model, optimizer, settings: dict) -> Progress:
    """Load model, optimizer and RNG state from the checkpoint at `path`; its Progress."""
    payload = read_checkpoint(path)
    check_matches(payload, path, model)
    if "progress" not in payload:
        raise CheckpointError(f"{path}: holds weights only, no training state to resume from")
    model.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(payload["optimizer"])
    for group in optimizer.param_groups:
        group["lr"] = settings["lr"]
    changed = [f"{k}: {payload['settings'].get(k)!r} -> {v!r}" for k, v in settings.items()
               if payload["settings"].get(k) != v]
    if changed:
        warnings.warn(f"resuming {path} with different settings ({'; '.join(changed)}): "
                      "the run will not match an uninterrupted one", stacklevel=3)
    _set_rng_states(payload["rng"])
    return Progress(**payload["progress"])
