"""Where a training run stands, and the checkpoint it resumes from.

`Progress` is where training stands (epochs, steps, the epoch in progress, the history, the best
validation loss). `RunCheckpoint` writes it to the run's checkpoint (`drawzoo.checkpoints`'
format) with the weights, the optimizer's state, the train config, the objective and every RNG's
state (torch's, CUDA's, Python's, numpy's; one per process), and resumes from it: a resumed run
continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import numpy as np
import pyro
import torch

from .. import distributed
from ..checkpoints import check_matches, read_checkpoint, save_checkpoint
from ..config import as_dict
from ..errors import CheckpointError
from .config import (
    TrainConfig,
    check_resumable,
    cosine_epochs,
    cosine_start,
    cosine_steps,
    stored_settings,
    to_checkpoint,
)
from .report import log


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
    partial: dict | None = None  #: the record of the part-epoch `max_steps` ended, until the next step


class RunCheckpoint:
    """The checkpoint of one `train` call at `path` (None: nothing is written): `model`, its
    `optimizer`, the train config `config` and the objective as `elbo` describes it
    (`drawzoo.evaluation.objectives.describe`); `group`: the training processes."""

    def __init__(self, path: Path | None, model, optimizer, config: TrainConfig, elbo: dict,
                 group: distributed.Group):
        self.path, self.model, self.optimizer, self.config, self.elbo, self.group = (
            path, model, optimizer, config, elbo, group)
        self.saved_step = None  #: the step of the last checkpoint on disk (`kept`), None if none
        self.lock = None  #: the CheckpointLock that `train` holds while the run goes
        self.resumed = None  #: the TrainConfig fields of the checkpoint resumed from, None if none

    def where(self) -> str:
        """Where the checkpoint is, for a message."""
        return "no checkpoint was given, nothing saved" if self.path is None else f"checkpoint {self.path}"

    def intact(self) -> str:
        """The end of the message of an error that stops the run: the last checkpoint is intact."""
        return f"; the last checkpoint at {self.path} is intact" if self.path is not None else ""

    def kept(self) -> str:
        """The end of the message of a `drawzoo.DivergenceError`: what the checkpoint on disk
        holds (the step it was written at, or that nothing was written)."""
        if self.path is None:
            return ""
        if self.saved_step is None:
            return f"; nothing was written to {self.path}"
        return f"; the last checkpoint, {self.path} at step {self.saved_step}, is intact"

    def start(self) -> Progress:
        """Resume from the checkpoint if there is one; else take rank 0's weights and seed every
        RNG with ``seed + rank``. Where training stands."""
        if self.path is not None and self.path.exists():
            progress, self.resumed = _resume(self.path, self.model, self.optimizer, self.config, self.elbo,
                                             self.group)
            self.saved_step = progress.step
            return progress
        self.group.broadcast_(list(self.model.state_dict().values()))
        pyro.set_rng_seed(self.config.seed + self.group.rank)
        return Progress()

    def warn_if_cosine_moves(self, progress: Progress, steps_per_epoch: int) -> None:
        """A warning when the run resumed from a cosine learning rate (lr_min) whose length
        (`cosine_steps`) this call's budget changes: its learning rate does not go on from where the
        checkpoint's schedule stands (and rises again if the run had reached lr_min)."""
        if self.resumed is None or "epochs" not in self.resumed or self.config.lr_min is None:
            return  # an older checkpoint that did not record its budget: nothing to compare
        before, after = self.resumed, as_dict(self.config)
        if before.get("lr_min") is None or progress.step <= cosine_start(before, steps_per_epoch):
            return  # no step taken was on its cosine: nothing moves
        if cosine_steps(before, steps_per_epoch) != cosine_steps(after, steps_per_epoch):
            budget = "epochs={epochs}, max_steps={max_steps}, anneal_epochs={anneal_epochs}"
            keep = (f"; anneal_epochs={cosine_epochs(before)} keeps that cosine and then holds lr_min"
                    if before.get("max_steps") is None and before.get("anneal_epochs") is None else "")
            log.warning("%s: its cosine learning rate ran over %s and now runs over %s: it leaves the "
                        "checkpoint's schedule (and rises again if the run had reached lr_min)%s", self.path,
                        budget.format_map({"anneal_epochs": None, **before}), budget.format_map(after), keep)

    def save(self, progress: Progress) -> None:
        """Write the checkpoint at `progress` (rank 0 writes; every process contributes its RNG
        state, and returns once the file is written). The caller checks the weights first."""
        rng = self.group.gather(_rng_states())
        if self.group.main:
            self.lock.check()
            save_checkpoint(self.path, self.model, optimizer=self.optimizer.state_dict(),
                            progress=dataclasses.asdict(progress), rng=rng,
                            train_config=to_checkpoint(self.config, self.elbo), elbo=self.elbo)
        self.group.barrier()  # on_checkpoint of every process finds the file written
        self.saved_step = progress.step


#: Settings of torch's optimizers that choose how the update is computed, not what it is.
IMPLEMENTATION = ("fused", "foreach")


def _implementation_of(optimizer, state: dict) -> dict:
    """An optimizer `state` dict with `optimizer`'s own `IMPLEMENTATION` settings: a run resumed on
    the fast path steps with fused Adam whatever the run that wrote the checkpoint used (the same
    update up to float rounding); ``load_state_dict`` would take the checkpoint's."""
    groups = [{**saved, **{k: group[k] for k in IMPLEMENTATION if k in group}}
              for saved, group in zip(state["param_groups"], optimizer.param_groups)]
    return {**state, "param_groups": groups}


def _resume(path: Path, model, optimizer, config: TrainConfig, elbo: dict,
            group: distributed.Group) -> tuple[Progress, dict]:
    """Load model, optimizer and RNG state from the checkpoint at `path`, after checking that it
    holds `model`'s config and `config`'s trajectory (the objective as `elbo` describes it); its
    Progress and its TrainConfig fields."""
    payload = read_checkpoint(path)
    check_matches(payload, path, model)
    if "progress" not in payload:
        raise CheckpointError(f"{path}: holds weights only, no training state to resume from")
    changes = check_resumable(payload, path, config, elbo)
    if changes:
        log.warning("%s: its learning-rate schedule changes before any step it took would have been on a cosine "
                    "(%s): the same run so far, at a new learning rate from its cosine on", path, "; ".join(changes))
    model.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(_implementation_of(optimizer, payload["optimizer"]))
    progress = Progress(**payload["progress"])
    rng = payload["rng"]  # one state per process of the run that wrote it
    if len(rng) == group.world:
        _set_rng_states(rng[group.rank])
    else:
        log.warning("%s was written by %d processes, resumed by %d: sampling noise restarts from the seed",
                    path, len(rng), group.world)
        pyro.set_rng_seed(config.seed + group.rank + progress.step)
    return progress, stored_settings(payload)


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
