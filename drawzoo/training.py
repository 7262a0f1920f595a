"""Training any zoo model by stochastic variational inference, with checkpoints that resume.

The objective is any Pyro ELBO that fits the model/guide pair (``TraceMeanField_ELBO`` by
default: DRAW's L^x + L^z; `drawzoo.objectives` names the common ones), taken per image (nats)
and minimised by Adam with global gradient-norm clipping. An ELBO with a differentiable loss is
differentiated by autograd -- Pyro's PyTorch-native SVI idiom --, any other (``RenyiELBO``,
``TraceGraph_ELBO``, ``ReweightedWakeSleep``...) by its own ``loss_and_grads``.

Launched by ``torchrun``, the same call trains data-parallel (`drawzoo.distributed`): every
process starts from rank 0's weights, takes a disjoint share of every global batch, and averages
its gradients with the others' after each backward pass (one all-reduce a step); only rank 0
shows progress and writes summaries and checkpoints.
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
from pyro.infer import ELBO, TraceTailAdaptive_ELBO
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler
from tqdm.auto import tqdm

from . import distributed, objectives
from .batching import as_dataset, collate_images
from .checkpoints import check_matches, read_checkpoint, save_checkpoint
from .errors import CheckpointError, DrawzooError, ObjectiveError, first_line
from .evaluation import evaluate


class TrainingError(DrawzooError):
    """Training cannot go on (e.g. the loss stays non-finite)."""


class ELBOLoss(nn.Module):
    """A Pyro ELBO of a zoo model's model/guide pair, per image (nats).

    ``forward(x)`` = ``elbo.differentiable_loss(model.model, model.guide, x) / B`` for an ELBO that
    has one (what ``torch.compile`` takes); `loss_and_grads` works for every ELBO.
    """

    def __init__(self, model: nn.Module, elbo=None):
        super().__init__()
        self.net = model
        self.elbo = elbo if elbo is not None else objectives.make_elbo()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.elbo.differentiable_loss(self.net.model, self.net.guide, x) / x.shape[0]

    def loss_and_grads(self, x: torch.Tensor) -> float:
        """Pyro's ``loss_and_grads`` per image: adds the gradient of the loss / B to the parameters'
        ``.grad`` and returns the loss / B (nats per image) for images `x` ``[B, C, H, W]``.

        The loss of `ReweightedWakeSleep` is its model (wake-theta) loss. `TraceTailAdaptive_ELBO`
        has no estimate of its objective (Pyro's loss is +inf): its loss is the surrogate whose
        gradient Pyro takes, times K: the tail-weighted mean of -log w over the K particles.
        """
        B, model, guide = x.shape[0], self.net.model, self.net.guide
        if isinstance(self.elbo, TraceTailAdaptive_ELBO):  # Pyro's differentiable_loss, without its +inf
            surrogate = sum(self.elbo._differentiable_loss_particle(model_trace, guide_trace)[1]
                            for model_trace, guide_trace in self.elbo._get_traces(model, guide, (x,), {}))
            (surrogate / (self.elbo.num_particles * B)).backward()
            return surrogate.item() / B
        if hasattr(self.elbo, "differentiable_loss"):
            loss = self(x)
            loss.backward()
            return loss.item()
        loss = self.elbo.loss_and_grads(model, guide, x)
        for p in self.net.parameters():
            if p.grad is not None:
                p.grad /= B
        return float(loss[0] if isinstance(loss, tuple) else loss) / B


@dataclasses.dataclass
class Progress:
    """Where training stands: completed epochs, optimizer steps, and the epoch in progress."""

    epoch: int = 0  #: completed epochs
    step: int = 0  #: optimizer steps taken (skipped non-finite ones included)
    step_in_epoch: int = 0  #: batches of the current epoch already seen
    loss_sum: float = 0.0  #: sum of per-image losses * images, this epoch so far
    images: int = 0  #: images seen this epoch so far
    history: list = dataclasses.field(default_factory=list)  #: one dict per completed epoch
    best_valid: float = math.inf  #: lowest validation loss so far (for `best`)


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
    """`device`, or CUDA when available (this rank's GPU under torchrun), else the CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and distributed.launched_by_torchrun():
        device = torch.device("cuda", distributed.local_rank())
    return device


def _check_args(epochs, batch_size, lr, every, every_steps, max_steps):
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("every", every)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "epochs" else 1):
            raise ValueError(f"{name} must be an integer >= {0 if name == 'epochs' else 1}, got {value!r}")
    for name, value in (("every_steps", every_steps), ("max_steps", max_steps)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")


def _preview(model, n: int, seed: int) -> torch.Tensor:
    """Final images of `n` prior samples ``[n, C, H, W]``, without touching the global RNG."""
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return model.generate(n)[-1].cpu()


def train(model, train_data, valid_data=None, *, epochs: int, batch_size: int, lr: float,
          checkpoint=None, every: int = 1, seed: int = 0, log_dir=None, device=None,
          elbo=None, clip_norm: float = 10.0, lr_min: float | None = None, every_steps: int | None = None,
          max_steps: int | None = None, best=None, max_bad_steps: int = 5, valid_samples: int = 1, num_preview: int = 64,
          on_epoch=None, progress: bool = True) -> list[dict]:
    """Train `model` for `epochs` epochs in all (a resumed run counts the epochs already done).

    `train_data` / `valid_data`: tensor or numpy array ``[N, C, H, W]`` in [0, 1], or a Dataset.
    Each epoch shuffles with a permutation seeded by ``(seed, epoch)``, takes Adam steps on the
    per-image loss of `elbo` with gradients clipped to norm `clip_norm`, and evaluates the
    validation negative ELBO (`valid_samples` samples per image).

    `elbo`: any `pyro.infer.ELBO` that fits the model (default ``TraceMeanField_ELBO()``; see
    `drawzoo.objectives.make_elbo` for the named ones), e.g. ``RenyiELBO(alpha=0, num_particles=5,
    vectorize_particles=True, max_plate_nesting=1)`` trains on the IWAE bound. Its loss on a batch
    is divided by the batch size: the train loss is in nats per image (for ``RenyiELBO``, the mean
    of the per-image bounds). Two have no such figure: `ReweightedWakeSleep`'s train loss is its
    model (wake-theta) loss, and `TraceTailAdaptive_ELBO`'s, which has no estimate of its objective,
    is its surrogate (the tail-weighted mean of -log w over the particles). An ELBO that cannot train
    the model (e.g. ``TraceTailAdaptive_ELBO`` without ``vectorize_particles``) fails on the first
    batch, before any optimizer step or checkpoint write: an `ObjectiveError` with the reason.
    With `lr_min`, the learning rate follows a cosine from `lr` down to `lr_min` over the whole
    run (`epochs`, or `max_steps` if that comes first); else it stays at `lr`.

    `checkpoint`: a path; if the file exists, training resumes from it (same model name and config
    required) and continues exactly as an uninterrupted run with the same seed would; it warns of
    training settings that changed (the objective's `drawzoo.objectives.describe` among them). It
    is written atomically every `every` epochs, every `every_steps` optimizer steps if given, and
    at the end.
    `max_steps`: stop after this many optimizer steps in all, possibly mid-epoch (the checkpoint
    then resumes mid-epoch). `best`: a path where the weights with the lowest validation loss so
    far are saved (a checkpoint `drawzoo.load` reads): model selection.

    A step whose loss or gradient is not finite is skipped (warned once); `max_bad_steps` such steps
    in a row stop training with `TrainingError`, leaving the last checkpoint as it was.

    `log_dir`: TensorBoard scalars ``loss/train``, ``loss/valid`` (nats per image) per epoch,
    ``loss/train_step`` per step, and a grid of `num_preview` samples per epoch.
    `on_epoch`: called with each epoch's record (the history entry) after it is validated.

    Returns the history: one dict per completed epoch (``epoch``, ``step``, ``train_loss``,
    ``valid_loss``, ``seconds``), including epochs of earlier runs when resuming, and a last one
    with ``"partial": True`` and a fractional ``epoch`` if `max_steps` stopped mid-epoch.

    Under ``torchrun`` (see the module docstring) `batch_size` is the global batch: each of the N
    processes takes ``batch_size / N`` images of it, so the run follows a single-process run with
    the same `batch_size`, `lr` and `seed` (up to each process's own sampling noise).
    """
    _check_args(epochs, batch_size, lr, every, every_steps, max_steps)
    if log_dir is not None:
        require_tensorboard()
    if lr_min is not None and not 0 <= lr_min <= lr:
        raise ValueError(f"lr_min must be in [0, lr], got {lr_min!r}")
    if elbo is not None and not isinstance(elbo, ELBO):
        raise ObjectiveError(f"elbo must be a pyro.infer.ELBO instance (e.g. TraceMeanField_ELBO(), or "
                             f"drawzoo.objectives.make_elbo('iwae', 5)), got {type(elbo).__name__} {elbo!r}")
    device = resolve_device(device)
    group = distributed.join(device)
    if batch_size % group.world:
        raise ValueError(f"batch_size={batch_size} must be divisible by the {group.world} training processes")
    model.to(device)
    dataset = as_dataset(train_data, model.image_shape, "train_data")
    valid = None if valid_data is None else as_dataset(valid_data, model.image_shape, "valid_data")
    run = _Run(model, ELBOLoss(model, elbo), group, lr=lr, lr_min=lr_min, clip_norm=clip_norm, seed=seed,
               batch_size=batch_size, path=None if checkpoint is None else Path(checkpoint),
               best=None if best is None else Path(best), max_bad_steps=max_bad_steps, valid_samples=valid_samples,
               on_epoch=on_epoch, progress=progress and group.main)
    with _exclusive(run.path if group.main else None):
        run.start()
        with run.summaries(log_dir if group.main else None, num_preview):
            try:
                return run.fit(dataset, valid, epochs=epochs, every=every, every_steps=every_steps,
                               max_steps=max_steps)
            except RuntimeError as e:  # a collective failed: another process died or hung
                if not group.active or isinstance(e, DrawzooError):
                    raise
                reason = first_line(e)
                where = f"; the last checkpoint at {run.path} is intact" if run.path is not None else ""
                raise TrainingError(f"rank {group.rank} of {group.world}: lost the other training processes "
                                    f"({reason}){where}") from None


def require_tensorboard() -> None:
    """`DrawzooError` unless TensorBoard (the optional extra ``drawzoo[tensorboard]``) is installed."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise DrawzooError("log_dir (TensorBoard summaries) needs TensorBoard: pip install 'drawzoo[tensorboard]'")


class _Run:
    """One call of `train`: the model, its objective and optimizer, and where training stands."""

    def __init__(self, model, objective: ELBOLoss, group: distributed.Group, *, lr, lr_min, clip_norm, seed,
                 batch_size, path, best, max_bad_steps, valid_samples, on_epoch, progress):
        self.model, self.group, self.loss = model, group, objective
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.lr, self.lr_min, self.total_steps = lr, lr_min, None
        self.clip_norm, self.seed, self.batch_size = clip_norm, seed, batch_size
        self.path, self.best = path, best
        self.max_bad_steps, self.valid_samples, self.progress = max_bad_steps, valid_samples, progress
        self.on_epoch = on_epoch
        self.settings = {"batch_size": batch_size, "lr": float(lr), "lr_min": lr_min, "seed": seed,
                         "clip_norm": float(clip_norm), "elbo": objectives.describe(objective.elbo)}
        self.state = Progress()
        self.writer = None
        self.bad_in_a_row, self.warned = 0, False
        self.checked = False  #: whether the objective has run once: its first failure is an ObjectiveError

    def start(self) -> None:
        """Resume from the checkpoint if there is one, else take rank 0's weights and seed every RNG
        with ``seed + rank``."""
        if self.path is not None and self.path.exists():
            self.state = _resume(self.path, self.model, self.optimizer, self.settings, self.group)
        else:
            self.group.broadcast_(list(self.model.state_dict().values()))
            pyro.set_rng_seed(self.seed + self.group.rank)

    @contextlib.contextmanager
    def summaries(self, log_dir, num_preview: int):
        """TensorBoard summaries to `log_dir` while inside (none if it is None)."""
        if log_dir is None:
            yield
            return
        from torch.utils.tensorboard import SummaryWriter

        self.num_preview = num_preview
        self.writer = SummaryWriter(str(log_dir), purge_step=self.state.step or None)
        try:
            yield
        finally:
            self.writer.close()

    def fit(self, dataset, valid, *, epochs, every, every_steps, max_steps) -> list[dict]:
        state = self.state
        self.total_steps = min(epochs * len(self._epoch_batches(dataset)), max_steps or math.inf)
        while state.epoch < epochs:
            batches = self._epoch_batches(dataset)
            loader = DataLoader(dataset, batch_sampler=batches[state.step_in_epoch:], collate_fn=collate_images,
                                generator=torch.Generator())  # leaves the global RNG alone
            started = time.perf_counter()
            bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{epochs}", total=len(batches),
                       initial=state.step_in_epoch, unit="batch", disable=not self.progress, leave=False)
            for x in bar:
                self._step(x)
                if state.images:
                    bar.set_postfix(loss=f"{state.loss_sum / state.images:.2f} nats")
                if every_steps is not None and state.step % every_steps == 0:
                    self._save()
                if max_steps is not None and state.step >= max_steps and state.step_in_epoch < len(batches):
                    bar.close()
                    record = self._record(valid, started, state.epoch + state.step_in_epoch / len(batches))
                    self._save()
                    return state.history + [{**record, "partial": True}]
            bar.close()
            record = self._record(valid, started, state.epoch + 1)
            state.history.append(record)
            state.epoch += 1
            state.step_in_epoch, state.loss_sum, state.images = 0, 0.0, 0
            if state.epoch % every == 0 or state.epoch == epochs or state.step == max_steps:
                self._save()
            if max_steps is not None and state.step >= max_steps:
                break
        return list(state.history)

    def _epoch_batches(self, dataset) -> list[list[int]]:
        """This process's batches of the current epoch: its share (every world-th image) of a
        permutation seeded by (seed, epoch), ``batch_size / world`` images a batch."""
        sampler = DistributedSampler(dataset, num_replicas=self.group.world, rank=self.group.rank, shuffle=True,
                                     seed=self.seed)
        sampler.set_epoch(self.state.epoch)
        return list(BatchSampler(sampler, self.batch_size // self.group.world, drop_last=False))

    def _step(self, x) -> None:
        """One Adam step on batch `x`, skipped if the loss or gradient is not finite."""
        state, model = self.state, self.model
        x = model.check_images(x, name="train_data batch")
        self.optimizer.zero_grad(set_to_none=True)
        try:
            loss = self.loss.loss_and_grads(x)
        except Exception as e:
            if self.checked:
                raise
            description = objectives.label(objectives.describe(self.loss.elbo))
            raise ObjectiveError(f"elbo {description} cannot train model {model.zoo_name!r}: {first_line(e)}") from e
        self.checked = True
        finite = self._average_gradients(loss)  # every process skips, or none
        if finite:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip_norm)
            finite = bool(torch.isfinite(norm))
        state.step += 1
        state.step_in_epoch += 1
        if finite:
            if self.lr_min is not None:
                self._anneal(state.step - 1)
            self.optimizer.step()
            self.bad_in_a_row = 0
            state.loss_sum += loss * len(x)
            state.images += len(x)
            if self.writer is not None:
                self.writer.add_scalar("loss/train_step", loss, state.step)
            return
        self.bad_in_a_row += 1
        if not self.warned:
            warnings.warn(f"non-finite loss or gradient at step {state.step}: update skipped", RuntimeWarning,
                          stacklevel=4)
            self.warned = True
        if self.bad_in_a_row >= self.max_bad_steps:
            where = f"; the last checkpoint at {self.path} is intact" if self.path is not None else ""
            raise TrainingError(f"stopped: {self.bad_in_a_row} non-finite losses in a row, "
                                f"up to step {state.step}{where}")

    def _average_gradients(self, loss: float) -> bool:
        """Average the gradients over the processes, in one all-reduce that also carries whether
        each process's `loss` is finite; whether all are."""
        if not self.group.active:
            return math.isfinite(loss)
        params = [p for p in self.model.parameters() if p.requires_grad]
        for p in params:  # a parameter that got no gradient here may have got one elsewhere
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        bad = params[0].new_tensor([float(not math.isfinite(loss))])
        self.group.mean_([bad, *(p.grad for p in params)])
        return bad.item() == 0

    def _anneal(self, step: int) -> None:
        """Cosine learning rate for optimizer step `step` (0-based) of `total_steps`."""
        progress = min(step / max(self.total_steps - 1, 1), 1.0)
        lr = self.lr_min + 0.5 * (self.lr - self.lr_min) * (1 + math.cos(math.pi * progress))
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = lr

    def _record(self, valid, started: float, epoch: float) -> dict:
        """The figures of the epoch (or part) just trained; validates, logs, keeps the best weights."""
        state = self.state
        loss_sum, images = self.group.sum(state.loss_sum, state.images)
        record = {"epoch": epoch, "step": state.step, "train_loss": loss_sum / max(images, 1),
                  "valid_loss": None, "seconds": time.perf_counter() - started}
        if valid is not None:
            record["valid_loss"] = evaluate(self.model, valid, num_samples=self.valid_samples,
                                            seed=self.seed)["neg_elbo"]
            if record["valid_loss"] < state.best_valid:
                state.best_valid = record["valid_loss"]
                if self.best is not None and self.group.main:
                    save_checkpoint(self.best, self.model, valid_loss=state.best_valid, epoch=epoch)
        if self.writer is not None:
            self.writer.add_scalar("loss/train", record["train_loss"], state.step)
            if record["valid_loss"] is not None:
                self.writer.add_scalar("loss/valid", record["valid_loss"], state.step)
            from torchvision.utils import make_grid
            self.writer.add_image("samples", make_grid(_preview(self.model, self.num_preview, self.seed), nrow=8),
                                  state.step)
            self.writer.flush()
        if self.progress:
            valid_text = "" if record["valid_loss"] is None else f", valid {record['valid_loss']:.2f}"
            tqdm.write(f"epoch {epoch:g}: train {record['train_loss']:.2f}{valid_text} nats/image "
                       f"({record['seconds']:.1f} s)")
        if self.on_epoch is not None:
            self.on_epoch(dict(record))
        return record

    def _save(self) -> None:
        """Checkpoint (rank 0 writes; every process contributes its RNG state)."""
        if self.path is None:
            return
        rng = self.group.gather(_rng_states())
        if self.group.main:
            save_checkpoint(self.path, self.model, optimizer=self.optimizer.state_dict(),
                            progress=dataclasses.asdict(self.state), rng=rng, settings=self.settings)


def _resume(path: Path, model, optimizer, settings: dict, group: distributed.Group) -> Progress:
    """Load model, optimizer and RNG state from the checkpoint at `path`; its Progress."""
    payload = read_checkpoint(path)
    check_matches(payload, path, model)
    if "progress" not in payload:
        raise CheckpointError(f"{path}: holds weights only, no training state to resume from")
    model.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(payload["optimizer"])
    for param_group in optimizer.param_groups:
        param_group["lr"] = settings["lr"]
    before = {**payload["settings"], "elbo": objectives.stored(payload["settings"].get("elbo"))}
    changed = [f"{k}: {before.get(k)!r} -> {v!r}" for k, v in settings.items() if before.get(k) != v]
    if changed:
        warnings.warn(f"resuming {path} with different settings ({'; '.join(changed)}): "
                      "the run will not match an uninterrupted one", stacklevel=3)
    progress = Progress(**payload["progress"])
    rng = payload["rng"]  # one state per process of the run that wrote it
    if len(rng) == group.world:
        _set_rng_states(rng[group.rank])
    else:
        warnings.warn(f"{path} was written by {len(rng)} processes, resumed by {group.world}: sampling noise "
                      "restarts from the seed", stacklevel=3)
        pyro.set_rng_seed(settings["seed"] + group.rank + progress.step)
    return progress
