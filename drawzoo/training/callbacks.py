"""Callbacks: your own code at the named points of a training run, e.g. to log to an experiment
tracker, or to stop on a rule of your own.

``drawzoo.train(..., callbacks=[...])`` takes any objects with methods named after the points of
a run, as Lightning's and Hugging Face Trainer's callbacks have them. `Callback` names them all,
each a no-op: subclass it and write the ones you need, or give any object -- its methods are
looked up by name, and one it lacks is not called. A method whose name starts with ``on_`` but is
no point (a typo such as ``on_epoch_ends``), or that cannot take the point's arguments, is a
`drawzoo.ConfigError` before any work: a hook that is silently never called would be a wrong
answer nobody sees.

The points, in the order a run passes them:

- ``on_train_start(run)``: once, after resuming from the checkpoint (``run.state`` is where the
  run stands);
- ``on_epoch_start(run)``: before the first step of each epoch (also of the epoch a run resumes in);
- ``on_step_end(run, loss)``: after each optimizer step;
- ``on_validation_end(run, scores)``: after each validation (with validation data);
- ``on_epoch_end(run, record)``: after each epoch, and after the part of one that ``max_steps`` ends;
- ``on_checkpoint(run, path)``: after each checkpoint write;
- ``on_train_end(run, history)``: once, when training ends without an exception.

At each point the run's own concerns come first, then ``train``'s ``on_epoch`` function, then
the callbacks in the order of the list. After a step: Adam's update and its checks, TensorBoard's
``loss/train_step``, then ``on_step_end``; then the checkpoint if ``every_steps`` says so, then
``on_checkpoint``. After an epoch: validation and the best weights, then ``on_validation_end``;
the epoch's line and TensorBoard summaries, the epoch added to ``run.state.history``, then
``on_epoch_end``; then the checkpoint if ``every`` says so (and at the end), then
``on_checkpoint``. So a checkpoint always holds what the hooks before it saw, and an exception
raised by a hook goes out of ``train`` with the last checkpoint as it was: nothing the hook saw
half-done is written.

A hook may ask the run to stop (`Run.stop`): it stops as at its time limit, after the step or
validation in progress, with a checkpoint that a later call resumes from. Under ``torchrun``
every process calls every hook (``run.main`` is rank 0, which writes: log from there only), with
the same ``loss``, ``scores`` and ``record``; a stop asked on any process stops them all at the
same step.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from pathlib import Path

import torch

from ..errors import ConfigError
from .config import TrainConfig
from .state import Progress

__all__ = ["Callback", "Run", "HOOKS"]


class Run:
    """The training run a hook is called from: what it trains and where it stands. Read it, don't
    change it (`stop` asks the run to stop)."""

    def __init__(self, model, optimizer: torch.optim.Optimizer, config: TrainConfig, state: Progress,
                 checkpoint: Path | None, main: bool, ask):
        self._model, self._optimizer, self._config, self._state = model, optimizer, config, state
        self._checkpoint, self._main, self._ask = checkpoint, main, ask

    @property
    def model(self):
        """The model being trained (a `drawzoo.models.ZooModel`), on its training device."""
        return self._model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The Adam optimizer that steps the model's parameters (its learning rate: ``param_groups``)."""
        return self._optimizer

    @property
    def config(self) -> TrainConfig:
        """The run's settings."""
        return self._config

    @property
    def state(self) -> Progress:
        """Where the run stands: ``epoch`` (completed epochs), ``step`` (optimizer steps taken,
        skipped ones included), ``history`` (one record per completed epoch, earlier calls' too when
        resuming), ``best_valid`` (the lowest validation loss so far, nats per image)."""
        return self._state

    @property
    def checkpoint(self) -> Path | None:
        """The path of the run's checkpoint, None if it has none."""
        return self._checkpoint

    @property
    def main(self) -> bool:
        """Whether this process is rank 0 under ``torchrun`` (the one that shows progress, logs and
        writes files); True for a run of one process."""
        return self._main

    def stop(self, reason: str) -> None:
        """Ask the run to stop, as its time limit does: after the step, or the validation, in
        progress -- called from ``on_step_end`` (or ``on_checkpoint`` after a step's checkpoint), the
        run stops after that step; from ``on_validation_end`` or ``on_epoch_end``, after that epoch;
        from ``on_train_start`` or ``on_epoch_start``, after the next step. The checkpoint is
        written, ``train`` logs one line (WARNING) and returns the history with its last entry
        marked ``"stopped": reason`` (a part-epoch ends it, ``"partial": True``, not validated, if
        the stop came mid-epoch), and a later call with the same checkpoint goes on from there as an
        uninterrupted run would. A stop asked when no step is left (the last epoch's hooks,
        ``on_train_end``) changes nothing: the run is complete. Under ``torchrun``, a stop asked on
        any process stops every process at the same step. A signal (SIGINT, SIGTERM) asked at the
        same time wins (`drawzoo.Interrupted`); the time limit gives way to the hook's reason.

        :param reason: why, in a few words (e.g. ``"no better validation loss for 3 epochs"``): the
            history's mark and the logged line say it.
        """
        if not isinstance(reason, str) or not reason:
            raise ConfigError(f"run.stop(reason): reason must be a non-empty string, got {reason!r}")
        self._ask(reason)


class Callback:
    """Code of your own at the named points of a training run: subclass it and write the methods
    you need (each is a no-op here), then ``drawzoo.train(..., callbacks=[YourCallback()])``. Any
    object with methods of these names will do too (`drawzoo.training.callbacks` says in what
    order they are called, and what an exception or a stop in them does). Every method gets `run`,
    the `Run` it is called from."""

    def on_train_start(self, run: Run) -> None:
        """Once, when training starts: after resuming from the checkpoint, before the first step
        (also when a finished run is called again and has nothing left to train).

        :param run: the run; ``run.state`` is where it starts from.
        """

    def on_epoch_start(self, run: Run) -> None:
        """Before the first step of each epoch; a run resumed mid-epoch starts with it too.

        :param run: the run; ``run.state.epoch`` is the number of epochs completed before this one.
        """

    def on_step_end(self, run: Run, loss: float) -> None:
        """After each optimizer step, before its checkpoint if one is due (``every_steps``).

        :param run: the run; ``run.state.step`` is the step just taken (1 for the first).
        :param loss: the step's train loss in nats per image (under ``torchrun``, the mean over the
            processes: the global batch's). ``math.nan`` for a step skipped because its loss
            or gradient was not finite (no update; it still counts in ``run.state.step``).
        """

    def on_validation_end(self, run: Run, scores: dict) -> None:
        """After each validation of the model on the validation data (at the end of each epoch and
        of the part-epoch that ``max_steps`` ends), once the best weights are kept.

        :param run: the run.
        :param scores: `drawzoo.evaluate`'s figures on the validation data (``"neg_elbo"`` is the
            validation loss, nats per image; with a ``log_dir``, also ``"kl_per_step"``).
        """

    def on_epoch_end(self, run: Run, record: dict) -> None:
        """After each epoch (and the part of one that ``max_steps`` ends), before its checkpoint.

        :param run: the run; ``run.state.history`` ends with this epoch's record (not a part-epoch's).
        :param record: the epoch's history entry (``epoch``, ``step``, ``train_loss``, ``valid_loss``,
            ``seconds``; a part-epoch's also ``"partial": True`` and a fractional ``epoch``),
            as `drawzoo.train` returns it.
        """

    def on_checkpoint(self, run: Run, path: Path) -> None:
        """After each write of the run's checkpoint (``every``, ``every_steps``, at the end, and
        when the run stops early), on every process once rank 0 wrote it.

        :param run: the run; the checkpoint holds ``run.state``.
        :param path: the checkpoint's path.
        """

    def on_train_end(self, run: Run, history: list[dict]) -> None:
        """Once, when training ends without an exception: its budget spent, or stopped by the time
        limit or a hook (`Run.stop`). Not when an exception ends it (a divergence, a signal's
        `drawzoo.Interrupted`, a hook's own): wrap `drawzoo.train` in ``try``/``finally`` to act then too.

        :param run: the run.
        :param history: what `drawzoo.train` returns (one record per epoch).
        """


#: The points of a run, in the order `Callback` documents them.
HOOKS = tuple(name for name in vars(Callback) if name.startswith("on_"))
#: Each point's arguments, as the hooks are called.
ARGUMENTS = {name: tuple(inspect.signature(getattr(Callback, name)).parameters)[1:] for name in HOOKS}


class EpochFunction:
    """``train``'s ``on_epoch`` function as a callback: called with each epoch's record after it is
    validated (a part-epoch's without its ``"partial"`` mark, as before callbacks came)."""

    def __init__(self, function):
        self.function = function

    def on_epoch_end(self, run: Run, record: dict) -> None:
        self.function({key: value for key, value in record.items() if key != "partial"})


class Callbacks:
    """The callbacks of one `drawzoo.train` call, each point calling theirs in order: `user` (a list
    checked by `check`) after `EpochFunction` of `on_epoch` (if given). Each hook gets its own copy
    of the scores, records and history, so that none changes what the run keeps."""

    def __init__(self, user: list, on_epoch=None):
        self.user = list(user)
        everyone = ([EpochFunction(on_epoch)] if on_epoch is not None else []) + self.user
        self.hooks = {name: [getattr(c, name) for c in everyone if _defines(c, name)] for name in HOOKS}

    def _call(self, name: str, run: Run, *args) -> None:
        for hook in self.hooks[name]:
            hook(run, *copy.deepcopy(args))

    def on_train_start(self, run: Run) -> None:
        self._call("on_train_start", run)

    def on_epoch_start(self, run: Run) -> None:
        self._call("on_epoch_start", run)

    def on_step_end(self, run: Run, loss: float) -> None:
        self._call("on_step_end", run, loss)

    def on_validation_end(self, run: Run, scores: dict) -> None:
        self._call("on_validation_end", run, scores)

    def on_epoch_end(self, run: Run, record: dict) -> None:
        self._call("on_epoch_end", run, record)

    def on_checkpoint(self, run: Run, path: Path) -> None:
        self._call("on_checkpoint", run, path)

    def on_train_end(self, run: Run, history: list[dict]) -> None:
        self._call("on_train_end", run, history)


def _defines(callback, name: str) -> bool:
    """Whether `callback` has hook `name`, other than `Callback`'s no-op."""
    hook = getattr(callback, name, None)
    return hook is not None and getattr(hook, "__func__", hook) is not getattr(Callback, name)


def check(callbacks) -> list:
    """`callbacks` (`drawzoo.train`'s: None, or a list or tuple of callback objects) as a list,
    once each is checked: an instance, not a class; every method named ``on_...`` one of `HOOKS`,
    callable with that point's arguments. Else `ConfigError` naming the callback and what is wrong."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        raise ConfigError(f"callbacks must be a list of callback objects (e.g. [MyCallback()]), "
                          f"got {type(callbacks).__name__} {callbacks!r}")
    for callback in callbacks:
        if isinstance(callback, type):
            raise ConfigError(f"callbacks: {callback.__name__} is a class; give an instance of it, "
                              f"e.g. {callback.__name__}()")
        name = type(callback).__name__
        for attribute in dir(callback):
            if not attribute.startswith("on_"):
                continue
            hook = getattr(callback, attribute)
            if attribute not in HOOKS:
                if callable(hook):
                    close = difflib.get_close_matches(attribute, HOOKS, n=1)
                    raise ConfigError(f"callback {name} has a method {attribute}, which drawzoo.train never calls"
                                      + (f" (did you mean {close[0]}?)" if close else "")
                                      + f": the points of a run are {', '.join(HOOKS)}")
                continue
            if hook is None:
                continue
            if not callable(hook):
                raise ConfigError(f"callback {name}: {attribute} must be a method, got {type(hook).__name__} {hook!r}")
            _check_signature(name, attribute, hook)
    return list(callbacks)


def _check_signature(name: str, attribute: str, hook) -> None:
    """`ConfigError` if `hook` (callback `name`'s `attribute`) cannot take its point's arguments."""
    try:
        signature = inspect.signature(hook)
    except (TypeError, ValueError):  # a builtin or other callable without one: called as it is
        return
    arguments = ARGUMENTS[attribute]
    try:
        signature.bind(*arguments)
    except TypeError:
        raise ConfigError(f"callback {name}: {attribute}{signature} cannot be called as "
                          f"{attribute}({', '.join(arguments)}), as drawzoo.train calls it") from None
