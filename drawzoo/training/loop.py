"""Training any zoo model by stochastic variational inference, with checkpoints that resume.

The objective is any Pyro ELBO that fits the model/guide pair (``AnalyticKL_ELBO`` by
default, the objective "elbo": DRAW's L^x + L^z; `drawzoo.evaluation.objectives` names the common ones), taken per image (nats)
and minimised by Adam with global gradient-norm clipping. An ELBO with a differentiable loss is
differentiated by autograd -- Pyro's PyTorch-native SVI idiom --, any other (``RenyiELBO``,
``TraceGraph_ELBO``, ``ReweightedWakeSleep``...) by its own ``loss_and_grads``.

Launched by ``torchrun``, the same call trains data-parallel (`drawzoo.distributed`): every
process starts from rank 0's weights, takes a disjoint share of every global batch, and averages
its gradients with the others' after each backward pass (one all-reduce a step); only rank 0
shows progress, logs and writes summaries and checkpoints.

Messages (each epoch's figures, notes on resuming, skipped steps) go to the ``drawzoo.training``
logger: the ``drawzoo`` command shows them; in your own program, e.g.
``logging.basicConfig(level=logging.INFO)``.

This module is the story: `train` and the step loop (`_Run`), which calls each concern of a run
at the named points of a step and an epoch, and the user's callbacks after them at the same points
(`drawzoo.training.callbacks`). The concerns each have a module, and none holds or calls another:
the loss a step takes (`drawzoo.training.loss`), where the run stands and its checkpoint
(`drawzoo.training.state`), validation and the best weights (`drawzoo.training.validation`),
divergence (`drawzoo.training.divergence`), the time limit and signals (`drawzoo.training.stopping`),
messages and TensorBoard summaries (`drawzoo.training.report`). What a checkpoint holds, an error
that stops the run says: the loop adds it to the concern's message.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from pyro.infer import ELBO
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler
from tqdm.auto import tqdm

from .. import distributed
from ..checkpoints import CheckpointLock
from ..config import as_dict
from ..data.batching import as_dataset, collate_images, epoch_data
from ..errors import ConfigError, ObjectiveError
from ..evaluation import objectives
from ..files import check_outputs
from . import callbacks as _callbacks
from .config import TrainConfig, accelerators, cosine_start, devices_here, learning_rate, parse_device
from .divergence import Divergence, DivergenceError, TrainingError
from .loss import ELBOLoss, StepLoss
from .report import Report, log, require_tensorboard
from .state import Progress, RunCheckpoint
from .stopping import Interrupted, StopRequests, signal_name
from .validation import Validation

__all__ = ["DivergenceError", "ELBOLoss", "TrainingError", "resolve_device", "train"]


def resolve_device(device=None) -> torch.device:
    """`device`, or CUDA when available (this rank's GPU under torchrun), else the CPU;
    `ConfigError` naming it and the devices this machine has if it is no device or not here."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device, counts = parse_device(device), accelerators()
    if device.type != "cpu" and (device.index or 0) >= counts.get(device.type, 0):
        raise ConfigError(f"device {str(device)!r} is not available: this machine has {devices_here()}")
    if device.type == "cuda" and device.index is None and distributed.launched_by_torchrun():
        device = torch.device("cuda", distributed.local_rank())
    return device


def train(model, train_data, valid_data=None, config: TrainConfig | None = None, *, elbo=None, checkpoint=None,
          callbacks=None, on_epoch=None, progress: bool = True, **settings) -> list[dict]:
    """Train `model` as ``config`` says; the fields of `TrainConfig` say what each does.

    Each epoch shuffles with a permutation seeded by ``(seed, epoch)`` (and dynamically binarized
    images, e.g. `drawzoo.data.mnist`'s, are that epoch's draw, also seeded by ``(seed, epoch)``;
    ``valid_data`` keeps its fixed draw: `drawzoo.data.binarization`), takes Adam steps on the
    per-image loss of the objective with gradients clipped to norm ``clip_norm``, and evaluates the
    validation negative ELBO (``valid_samples`` samples per image). With ``lr_min``, the learning
    rate follows a cosine from ``lr`` down to ``lr_min`` over the whole run (``epochs``, or
    ``max_steps`` if that comes first), or over ``anneal_epochs`` and then stays at ``lr_min``;
    with ``anneal_from``, it is ``lr`` until that epoch and the cosine begins there; without
    ``lr_min`` it stays at ``lr``. ``max_steps`` may stop training mid-epoch.

    The objective is ``drawzoo.evaluation.objectives.make_elbo(objective, particles)``, or ``elbo``.
    Its loss on a batch is divided by the batch size: the train loss is in nats per image (for
    `RenyiELBO`, the mean of the per-image bounds). Two have no such figure: `ReweightedWakeSleep`'s
    train loss is its model (wake-theta) loss, and `TraceTailAdaptive_ELBO`'s, which has no estimate
    of its objective, is its surrogate (the tail-weighted mean of -log w over the particles). An
    ELBO that cannot train the model (e.g. ``TraceTailAdaptive_ELBO`` without
    ``vectorize_particles``) fails on the first batch, before any optimizer step or checkpoint
    write.

    With a checkpoint, the model's name and config must be the checkpoint's, and so must the
    fields of ``config`` that define the trajectory (seed, batch_size, lr, lr_min, anneal_from,
    anneal_epochs, clip_norm, the objective and its particles as `drawzoo.evaluation.objectives.describe`
    has it, valid_samples; ``anneal_epochs`` equal to the epochs of a cosine that had none is the same
    run, and so is a schedule whose cosine, on either side, no step taken was on: a warning).
    The budget (epochs, max_steps, max_minutes) and where the run writes may change (without
    ``anneal_epochs``, another budget moves the cosine of ``lr_min``: a warning). The checkpoint
    holds ``config`` and is written atomically every ``every`` epochs, every ``every_steps``
    optimizer steps if given, and at the end.

    ``max_minutes``: stop once this many minutes of wall-clock time have passed since this call
    began (resuming, validation and checkpoint writes included), at the end of the step or
    validation in progress, with a checkpoint a later call resumes from; one line is logged
    (WARNING). SIGTERM and SIGINT (Ctrl-C) stop training the same way, then raise
    `drawzoo.Interrupted`; a second SIGINT raises it at once, the last checkpoint intact. Signals
    are caught only when `train` runs in the main thread, and the previous handlers are restored
    when it returns. Under torchrun, every process stops at the same step when any of them is
    asked to.

    A step whose loss or gradient is not finite is skipped (logged once); ``max_bad_steps`` such
    steps in a row stop training with `TrainingError`, leaving the last checkpoint as it was.
    Pyro's own checks (site shapes, model/guide match, distribution arguments) run on the first
    step of each batch shape only (``validate="every"``: on every step), so a NaN that appears
    later takes this path.

    ``log_dir``: TensorBoard scalars ``loss/train``, ``loss/valid`` (nats per image) per epoch,
    ``loss/train_step`` per step, and a grid of ``num_preview`` samples per epoch; with
    ``valid_data``, also how much each step tells on it (``evaluate(..., per_step=True)``, from the
    validation passes): ``kl_per_step/t_00``, ``t_01``... per epoch (nats per image, one chart of
    them all under Custom Scalars) and the picture ``kl_per_step``
    (`drawzoo.figures.plots.kl_plot`, which needs matplotlib: ``drawzoo[plots]``, in
    ``drawzoo[tensorboard]``) of the epoch's curve. Each epoch's figures are logged
    (``drawzoo.training``, INFO).

    Under ``torchrun`` (see the module docstring) ``batch_size`` is the global batch: each of the N
    processes takes ``batch_size / N`` images of it, so the run follows a single-process run with
    the same ``batch_size``, ``lr`` and ``seed`` (up to each process's own sampling noise).

    Args:
        model: the model to train, a `drawzoo.models.ZooModel` (e.g. from `drawzoo.load`).
        train_data: tensor or numpy array ``[N, C, H, W]`` in [0, 1], or a Dataset.
        valid_data: the same, for validation; none without it.
        config: a `TrainConfig`; keyword ``settings`` build one, or override its fields.
        elbo: any `pyro.infer.ELBO` that fits the model instead of the config's objective, e.g.
            ``RenyiELBO(alpha=0, num_particles=5, vectorize_particles=True, max_plate_nesting=1)``
            trains on the IWAE bound.
        checkpoint: a path; if the file exists, training resumes from it and continues exactly as
            an uninterrupted run would.
        callbacks: a list of objects whose methods named ``on_train_start``, ``on_epoch_start``,
            ``on_step_end``, ``on_validation_end``, ``on_epoch_end``, ``on_checkpoint``,
            ``on_train_end`` (`drawzoo.Callback`'s; any it lacks are not called) are called at
            those points of the run, after the run's own concerns and in the order of the list,
            e.g. to log to an experiment tracker or to stop on a rule of your own
            (``run.stop(reason)``: as at the time limit, the history's last entry then marked
            ``"stopped": reason``). `drawzoo.training.callbacks` says when each is called.
        on_epoch: a function called with each epoch's record (the history entry, without a
            part-epoch's ``"partial"`` mark) after it is validated, before the callbacks.
        progress: show progress bars.
        **settings: fields of `TrainConfig`, e.g. ``epochs=5, lr=3e-3``; ``best`` is a path where
            the weights with the lowest validation loss so far are saved (model selection).

    Returns:
        The history: one dict per completed epoch (``epoch``, ``step``, ``train_loss``,
        ``valid_loss``, ``seconds``), including epochs of earlier runs when resuming, and a last one
        with ``"partial": True`` and a fractional ``epoch`` if ``max_steps`` or ``max_minutes``
        stopped mid-epoch (not validated after ``max_minutes``). After ``max_minutes``, the last
        entry also has ``"stopped": "max_minutes"`` (a callback's stop: its reason): training is
        not finished.

    Raises:
        ConfigError: ``config`` is no `TrainConfig`, a setting is refused, or a callback has
            another method named ``on_...`` (before any work).
        ObjectiveError: the ELBO cannot train the model (on the first batch), with the reason.
        CheckpointError: the checkpoint's model, config or trajectory fields differ from this
            run's (each one named, with both values).
        TrainingError: ``max_bad_steps`` steps in a row had a loss or gradient that is not finite.
        Interrupted: SIGTERM or SIGINT stopped training (a KeyboardInterrupt; its message says
            where the checkpoint is, its ``signum`` which signal).
    """
    if config is not None and not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a drawzoo.TrainConfig (or give its fields as keywords), "
                          f"got {type(config).__name__} {config!r}")
    called = time.monotonic()
    config = TrainConfig.from_dict({**(as_dict(config) if config is not None else {}), **settings})
    check_outputs({"checkpoint": checkpoint, "best": config.best, "log_dir": config.log_dir}, checkpoints=True)
    if config.log_dir is not None:
        require_tensorboard(kl_picture=valid_data is not None)
    if elbo is not None and not isinstance(elbo, ELBO):
        raise ObjectiveError(f"elbo must be a pyro.infer.ELBO instance (e.g. TraceMeanField_ELBO(), or "
                             f"drawzoo.evaluation.objectives.make_elbo('iwae', 5)), got {type(elbo).__name__} {elbo!r}")
    callbacks = _callbacks.Callbacks(_callbacks.check(callbacks), on_epoch)
    device = resolve_device(config.device)
    group = distributed.join(device)
    if config.batch_size % group.world:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the {group.world} training processes")
    model.to(device)
    if config.compile and getattr(model, "compile_options", None) is None:
        model.compile_steps()  # and they stay compiled: a later call or evaluation reuses the graphs
    dataset = as_dataset(train_data, model.image_shape, "train_data")
    valid = None if valid_data is None else as_dataset(valid_data, model.image_shape, "valid_data")
    objective = ELBOLoss(model, elbo if elbo is not None else objectives.make_elbo(config.objective, config.particles))
    path = None if checkpoint is None else Path(checkpoint)
    stop = StopRequests(config.max_minutes, called, path)
    run = None
    try:
        run = _Run(model, objective, group, config, path=path, stop=stop, callbacks=callbacks,
                   progress=progress and group.main)
        with CheckpointLock(path if group.main else None) as run.checkpoint.lock, stop:
            run.start()
            with run.report.summaries(config.log_dir if group.main else None, run.state.step):
                try:
                    history = run.fit(dataset, valid)
                except DivergenceError as e:  # its message ends with what the checkpoint on disk holds
                    e.args = (f"{e}{run.checkpoint.kept()}",)
                    raise
                except TrainingError as e:
                    e.args = (f"{e}{run.checkpoint.intact()}",)
                    raise
    except distributed.LostProcesses as e:  # a collective failed: another process died or hung
        intact = "" if run is None else run.checkpoint.intact()
        raise TrainingError(f"rank {group.rank} of {group.world}: lost the other training processes "
                            f"({e}){intact}") from None
    if stop.signum:  # came once no step was left to stop after: training is complete
        raise Interrupted(f"stopped by {signal_name(stop.signum)} after training was complete: "
                          f"{run.checkpoint.where()}", stop.signum)
    return history


class _Run:
    """One call of `train`: the model, its objective and optimizer, where training stands
    (`state`), the concerns of the run, the `callbacks`, and the step loop over the epochs (`fit`)."""

    def __init__(self, model, objective: ELBOLoss, group: distributed.Group, config: TrainConfig, *, path,
                 stop: StopRequests, callbacks: _callbacks.Callbacks, progress):
        self.model, self.group, self.config = model, group, config
        self.step_loss = StepLoss(objective, config.validate, fast=config.compile)
        # fused Adam (one kernel for all parameters) on the fast path: the same update up to float rounding
        fused = config.compile and next(model.parameters()).device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused or None)
        self.total_steps = None
        self.schedule = as_dict(config)  #: the learning rate's schedule: lr, lr_min, anneal_from, anneal_epochs, budget
        self.steps_per_epoch = None  #: the optimizer steps of an epoch, which the schedule counts in
        self.progress = progress
        self.state = Progress()
        self.checkpoint = RunCheckpoint(path, model, self.optimizer, config, objectives.describe(objective.elbo), group)
        self.divergence = Divergence(config)
        self.validation = Validation(model, config, group.main)
        self.report = Report(model, config, group.main)
        self.stop = stop  #: the time limit, the signals and the callbacks' stops
        self.callbacks = callbacks
        # a stop a callback asks after a step is looked for after each step: one more all-reduce a
        # step under torchrun, so only if a process has callbacks (they may be rank 0's only)
        self.stops_after_steps = bool(group.sum(float(bool(callbacks.user)))[0])
        self.view = None  #: the run as the callbacks see it (`drawzoo.training.callbacks.Run`), once it `start`s
        self.last_batch = None  #: the batch of the last step, on which the weights are checked before a save

    def start(self) -> None:
        """Resume from the checkpoint if there is one, else start afresh (`RunCheckpoint.start`)."""
        self.state = self.checkpoint.start()
        self.view = _callbacks.Run(self.model, self.optimizer, self.config, self.state, self.checkpoint.path,
                                  self.group.main, self.stop.ask)

    def fit(self, dataset, valid) -> list[dict]:
        """Train on `dataset` from where `state` stands, validating on `valid` (None: no
        validation), until the budget is spent or a stop is asked; the history (see `train`)."""
        state, config = self.state, self.config
        epochs, max_steps = config.epochs, config.max_steps
        steps = len(self._epoch_batches(dataset))
        self.total_steps = min(epochs * steps, max_steps or math.inf)
        self.steps_per_epoch = steps
        self.callbacks.on_train_start(self.view)
        ended = state.step_in_epoch < steps  # else a stop on an epoch's last step left its end to this call
        budget = f"epochs={epochs}" + ("" if max_steps is None else f", max_steps={max_steps}")
        if ended and (state.epoch >= epochs or (max_steps is not None and state.step >= max_steps)):
            # a finished run rerun: no step, no validation, no write (the weights and figures stay)
            log.warning("the run is already complete (epoch %g, step %d; %s): nothing to train, nothing written",
                        state.epoch + state.step_in_epoch / len(self._epoch_batches(dataset)), state.step, budget)
            history = self._history()
        else:
            if state.step < self.total_steps:  # steps to take, along this call's cosine
                self.checkpoint.warn_if_cosine_moves(state, steps)
                if config.lr_min is not None and cosine_start(self.schedule, steps) >= self.total_steps:
                    log.warning("lr_min's cosine begins at epoch %d, at or after the end of this run's budget (%s): "
                                "every step it takes is at lr %g (a rerun with more epochs goes on to the cosine)",
                                config.anneal_from, budget, config.lr)
            history = self._epochs(dataset, valid)
        self.callbacks.on_train_end(self.view, history)
        return history

    def _epochs(self, dataset, valid) -> list[dict]:
        """The epochs of `fit`, each its steps then its end (or the end of the part of one that
        `max_steps` ends); the history, or `_halt`'s if a stop is asked."""
        state, config, callbacks, view = self.state, self.config, self.callbacks, self.view
        epochs, every, every_steps, max_steps = config.epochs, config.every, config.every_steps, config.max_steps
        while state.epoch < epochs:
            callbacks.on_epoch_start(view)
            batches = self._epoch_batches(dataset)
            # dynamically binarized images: this epoch's draw, which only (seed, epoch) decides
            loader = DataLoader(epoch_data(dataset, config.seed, state.epoch),
                                batch_sampler=batches[state.step_in_epoch:], collate_fn=collate_images,
                                generator=torch.Generator())  # leaves the global RNG alone
            started = time.perf_counter()
            bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{epochs}", total=len(batches),
                       initial=state.step_in_epoch, unit="batch", disable=not self.progress, leave=False)
            part = False  #: whether max_steps ends the run mid-epoch
            for x in bar:
                stop = self._step(x)  # a signal or the time limit (of any process), carried by its all-reduce
                if state.images:
                    bar.set_postfix(loss=f"{state.loss_sum / state.images:.2f} nats")
                if every_steps is not None and state.step % every_steps == 0:
                    self._save()
                part = max_steps is not None and state.step >= max_steps and state.step_in_epoch < len(batches)
                if part:
                    break
                if stop or (self.stops_after_steps and self.stop.asked_anywhere(self.group)):
                    bar.close()
                    return self._halt(started, len(batches))
            bar.close()
            # the end of the epoch, or of the part of it that max_steps ends
            epoch = state.epoch + state.step_in_epoch / len(batches) if part else state.epoch + 1
            record, scores = self._figures(epoch, started), None
            if valid is not None:
                scores = self.validation.scores(valid)
                record["valid_loss"] = scores["neg_elbo"]
                self.divergence.check("validation loss", record["valid_loss"], state.step)
                self.validation.keep_best(state, record["valid_loss"], epoch)
                callbacks.on_validation_end(view, scores)
            self.report.epoch(record, scores, state.step)
            if part:
                record = state.partial = {**record, "partial": True}  # kept, so that a rerun returns it too
            else:
                state.history.append(record)
                state.epoch += 1
                state.step_in_epoch, state.loss_sum, state.images = 0, 0.0, 0
            callbacks.on_epoch_end(view, record)
            if part or state.epoch % every == 0 or state.epoch == epochs or state.step == max_steps:
                self._save()
            if max_steps is not None and state.step >= max_steps:
                break
            if state.epoch < epochs and self.stop.anywhere(self.group):  # asked during validation or the hooks
                return self._halt(started, len(batches))
        return self._history()

    def _history(self) -> list[dict]:
        """The history (see `train`): the completed epochs, and the part-epoch `max_steps` ended."""
        return list(self.state.history) + ([self.state.partial] if self.state.partial is not None else [])

    def _halt(self, started: float, batches: int) -> list[dict]:
        """Stop here, as a signal, the time limit or a callback asked (of any process): checkpoint,
        then `StopRequests.stopped`, which raises `Interrupted` for a signal, else says so; the
        history gets a partial last entry (no validation) if mid-epoch, marked as stopped."""
        state = self.state
        history = list(state.history)
        if state.step_in_epoch:
            history.append({**self._figures(state.epoch + state.step_in_epoch / batches, started), "partial": True})
        if self.checkpoint.saved_step != state.step:  # else just written (an epoch's end, every_steps)
            self._save()
        history, line = self.stop.stopped(history, state.step, self.group, self.checkpoint.where())
        self.report.stopped(line)
        return history

    def _epoch_batches(self, dataset) -> list[list[int]]:
        """This process's batches of the current epoch: its share (every world-th image) of a
        permutation seeded by (seed, epoch), ``batch_size / world`` images a batch."""
        sampler = DistributedSampler(dataset, num_replicas=self.group.world, rank=self.group.rank, shuffle=True,
                                     seed=self.config.seed)
        sampler.set_epoch(self.state.epoch)
        return list(BatchSampler(sampler, self.config.batch_size // self.group.world, drop_last=False))

    def _step(self, x) -> bool:
        """One Adam step on batch `x`, skipped if the loss or gradient is not finite; `DivergenceError`
        if the loss is above the divergence threshold or the step leaves a weight non-finite. Returns
        whether any process is asked to stop (a signal, the time limit, a callback before the step)."""
        state, model = self.state, self.model
        x = self.last_batch = model.check_images(x, name="train_data batch")
        state.partial = None  # the part-epoch goes on
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.step_loss(x)
        mean_loss, stop = self._average_gradients(loss, self.stop.requested())  # every process skips, or none
        finite = math.isfinite(mean_loss)
        if finite:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.clip_norm)
            finite = bool(torch.isfinite(norm))
        state.step += 1
        state.step_in_epoch += 1
        if finite:
            self.divergence.check("loss", mean_loss, state.step)
            if self.config.lr_min is not None:
                self._anneal(state.step - 1)
            self.optimizer.step()
            self.divergence.stepped(model, state.step)
            state.loss_sum += loss * len(x)
            state.images += len(x)
            self.report.step(loss, state.step)
            self.callbacks.on_step_end(self.view, mean_loss)
        else:
            self.report.skipped(state.step)
            self.divergence.skipped(state.step)
            self.callbacks.on_step_end(self.view, math.nan)
        return stop

    def _average_gradients(self, loss: float, stop: bool) -> tuple[float, bool]:
        """Average the gradients over the processes, in one all-reduce that also carries each
        process's `loss` and whether it is asked to `stop`; the mean loss (nats per image), NaN if
        any process's is not finite, and whether any process is asked to stop."""
        if not self.group.active:
            return loss, stop
        params = [p for p in self.model.parameters() if p.requires_grad]
        for p in params:  # a parameter that got no gradient here may have got one elsewhere
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        finite = math.isfinite(loss)
        stats = params[0].new_tensor([float(not finite), loss if finite else 0.0, float(stop)])
        self.group.mean_([stats, *(p.grad for p in params)])
        bad, mean, stop = stats.tolist()
        return (mean if bad == 0 else math.nan), stop > 0

    def _anneal(self, step: int) -> None:
        """The learning rate of optimizer step `step` (0-based): lr, then lr_min's cosine
        (`drawzoo.training.config.learning_rate`)."""
        lr = learning_rate(self.schedule, step, self.steps_per_epoch)
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = lr

    def _figures(self, epoch: float, started: float) -> dict:
        """The history entry of the epoch (or part) trained up to now, not validated."""
        loss_sum, images = self.group.sum(self.state.loss_sum, self.state.images)
        return {"epoch": epoch, "step": self.state.step, "train_loss": loss_sum / max(images, 1),
                "valid_loss": None, "seconds": time.perf_counter() - started}

    def _save(self) -> None:
        """Checkpoint, if the run has one: once the weights are checked (`Divergence.check_saveable`),
        `RunCheckpoint.save`, then the callbacks' ``on_checkpoint``."""
        if self.checkpoint.path is not None:
            self.divergence.check_saveable(self.model, self.last_batch, self.state.step)
            self.checkpoint.save(self.state)
            self.callbacks.on_checkpoint(self.view, self.checkpoint.path)
