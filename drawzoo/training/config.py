"""`TrainConfig`: every setting of a training run, as one typed, validated dataclass.

It is what `drawzoo.train` takes (its keyword arguments build one), what the options of
``drawzoo train`` are made from, a recipe's ``[train]`` table, and what a checkpoint stores.

    config = TrainConfig(epochs=5, lr=3e-3, lr_min=1e-4)
    config = TrainConfig.from_dict({"epochs": 5, "lr": 3e-3})   # an unknown key is an error naming the valid ones

Fields declared with `fixed` define the run's trajectory (the weights it reaches): resuming a
checkpoint with other values is an error naming each field with both values. The others (the
budget, where it writes, the device) may change from one resumption to the next.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..checkpoints import config_mismatches
from ..config import as_dict, build_config, check_fields, check_positive, param
from ..errors import CheckpointError, ConfigError
from ..evaluation import objectives

KIND = "train config"  #: how errors name its fields: "train config 'lr' must be ..."
VALIDATE = ("first", "every")  #: the choices of `TrainConfig`'s ``validate``


def fixed(default, help: str, **metadata):
    """A field that defines the trajectory: a resumed run must keep the checkpoint's value."""
    return param(default, help, trajectory=True, **metadata)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How `drawzoo.train` trains a model: Adam on the per-image loss of a named objective (nats),
    with global gradient-norm clipping, checkpoints and validation."""

    epochs: int = param(10, "epochs in all (a resumed run counts earlier ones)")
    max_steps: int | None = param(None, "stop after this many optimizer steps in all, perhaps mid-epoch "
                                  "(a resumed run counts earlier ones) [no limit]")
    max_minutes: float | None = param(None, "stop once this many minutes of this run's wall-clock time have passed "
                                      "(validation and checkpoints included), after the step in progress, with a "
                                      "checkpoint a rerun resumes from [no limit]")
    batch_size: int = fixed(100, "images per step (under torchrun: the global batch)")
    lr: float = fixed(1e-3, "Adam learning rate")
    lr_min: float | None = fixed(None, "anneal the learning rate from lr down to this along a cosine over the "
                                 "run (epochs, or max_steps if that comes first) [constant lr]")
    anneal_from: int | None = fixed(None, "with lr_min: the cosine begins at this epoch, the learning rate is lr "
                                    "before it (a run trained at a constant lr may be given a cosine that begins "
                                    "where it stands or later, and resumes as the same run) [0: the first step]")
    anneal_epochs: int | None = fixed(None, "with lr_min: the cosine takes this many epochs, after which the "
                                      "learning rate stays at lr_min (a run trained on past its planned "
                                      "schedule) [from anneal_from to the run's epochs, or max_steps if that "
                                      "comes first]")
    clip_norm: float = fixed(10.0, "clip the global gradient norm to this (inf: no clipping)")
    objective: str = fixed(objectives.DEFAULT, "what training minimises, per image: a name of "
                           "drawzoo.evaluation.objectives.OBJECTIVES", choices=tuple(objectives.OBJECTIVES))
    particles: int = fixed(1, "K samples of the latents per image, drawn in one vectorised pass")
    seed: int = fixed(0, "seed of shuffling, sampling and validation (drawzoo train: of the initial weights too, "
                      "as drawzoo.load(..., seed=...))")
    valid_samples: int = fixed(1, "importance samples per validation image")
    divergence_threshold: float = param(1e6, "stop with an error when the loss exceeds this many nats per image: "
                                        "the run diverges, and weights scoring above it are never checkpointed "
                                        "(inf: never)")
    max_bad_steps: int = param(5, "stop after this many steps in a row whose loss or gradient is not finite")
    every: int = param(1, "checkpoint every this many epochs (and at the end)")
    every_steps: int | None = param(None, "also checkpoint every this many optimizer steps [never]")
    best: str | None = param(None, "save the weights with the lowest validation loss so far here, as a "
                             "checkpoint drawzoo.load reads [drawzoo.train: not saved; drawzoo train: beside "
                             "the checkpoint, runs/draw.pt's is runs/draw.best.pt; --no-best: not saved]")
    log_dir: str | None = param(None, "write TensorBoard summaries (losses, sample grids) here [none]")
    num_preview: int = param(64, "samples in each epoch's TensorBoard grid")
    device: str | None = param(None, "cpu, cuda, cuda:1, ... [cuda when available, else cpu]")
    compile: bool = param(False, "the fast path: compile the model's step functions with torch.compile "
                          "(model.compile_steps()); the same losses and gradients up to float rounding, "
                          "compiled once per process; eager, with a warning, where compilation fails")
    validate: str = param("first", "Pyro's validation of model and guide (site shapes, model/guide match, "
                          "distribution arguments, NaN warnings): 'first' on the first step of each batch shape "
                          "of a run (later steps skip it: 10% of a fast-path DRAW step with attention, 6% "
                          "without), 'every' on every step; never "
                          "while Pyro's validation is off globally (pyro.enable_validation(False))",
                          choices=VALIDATE)

    def __post_init__(self):
        if isinstance(self.device, torch.device):
            object.__setattr__(self, "device", str(self.device))
        check_fields(self, KIND)
        check_positive(self, "batch_size", "max_steps", "anneal_epochs", "every", "every_steps", "valid_samples",
                       "max_bad_steps", "num_preview", kind=KIND)
        for name in ("epochs", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{KIND} {name!r} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "max_minutes"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{KIND} {name!r} must be a positive finite number, got {value!r}")
        for name in ("clip_norm", "divergence_threshold"):  # inf is their "off"
            if not getattr(self, name) > 0:
                raise ConfigError(f"{KIND} {name!r} must be a positive number (inf: off), got {getattr(self, name)!r}")
        if self.lr_min is not None and not 0 <= self.lr_min <= self.lr:
            raise ConfigError(f"{KIND} 'lr_min' must be in [0, lr] = [0, {self.lr}], got {self.lr_min!r}")
        if self.anneal_epochs is not None and self.lr_min is None:
            raise ConfigError(f"{KIND} 'anneal_epochs' is the length of lr_min's cosine: give lr_min too")
        if self.anneal_from is not None and self.lr_min is None:
            raise ConfigError(f"{KIND} 'anneal_from' is the epoch lr_min's cosine begins at: give lr_min too")
        if self.anneal_from is not None and self.anneal_from < 0:
            raise ConfigError(f"{KIND} 'anneal_from' must be >= 0, got {self.anneal_from}")
        objectives.check(self.objective, self.particles)
        if self.validate not in VALIDATE:
            raise ConfigError(f"{KIND} 'validate' must be one of {', '.join(map(repr, VALIDATE))}, "
                              f"got {self.validate!r}")
        if self.device is not None:
            try:
                parse_device(self.device)
            except ConfigError as e:
                raise ConfigError(f"{KIND} 'device': {e}") from None

    @classmethod
    def from_dict(cls, settings: dict) -> TrainConfig:
        """``TrainConfig(**settings)``, with an error naming any unknown key and the valid ones."""
        return build_config(cls, settings, kind=KIND)


def accelerators() -> dict[str, int]:
    """How many devices of each type besides the CPU this machine has (``{"cuda": 2}``)."""
    counts = {"cuda": torch.cuda.device_count(), "mps": int(torch.backends.mps.is_available())}
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        counts["xpu"] = xpu.device_count()
    return {kind: n for kind, n in counts.items() if n}


def devices_here() -> str:
    """The devices of this machine, for messages: ``"cpu, cuda:0, cuda:1"``."""
    return ", ".join(["cpu", *(f"{kind}:{i}" for kind, n in accelerators().items() for i in range(n))])


def parse_device(device) -> torch.device:
    """`device` (``"cuda:1"``, a `torch.device`) as a `torch.device`; `ConfigError` naming this
    machine's devices if it is no device name (whether it is here is `drawzoo.training.loop.resolve_device`'s check)."""
    try:
        return torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"device {str(device)!r} is not a device name (cpu, cuda, cuda:1, ...); "
                          f"this machine has {devices_here()}") from None


TRAJECTORY = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("trajectory"))


# -- what a checkpoint holds ----------------------------------------------------------------------


def objective_fields(description: dict) -> dict:
    """``objective`` and ``particles`` of an ELBO's `objectives.describe` dict; the objective is None
    for an ELBO that no name stands for."""
    named = objectives.name_of(description)
    if named is None:
        return {"objective": None, "particles": description.get("num_particles")}
    return dict(zip(("objective", "particles"), named))


def to_checkpoint(config: TrainConfig, elbo_description: dict) -> dict:
    """What a checkpoint stores of `config` (as builtins), its objective being the one trained on."""
    return {**as_dict(config), **objective_fields(elbo_description)}


def stored_elbo(payload: dict) -> dict:
    """The `objectives.describe` dict of the objective a checkpoint was trained with."""
    if "elbo" in payload:
        return objectives.stored(payload["elbo"])
    return objectives.stored(payload["settings"]["elbo"])  # drawzoo <= 0.1: inside "settings"


def stored_settings(payload: dict) -> dict:
    """The TrainConfig fields a checkpoint records: its "train_config", or the "settings" of an older
    one (batch_size, lr, lr_min, seed, clip_norm and the objective); {} for weights only. One
    written before anneal_from existed had its cosine (if any) begin at the first step."""
    if "train_config" in payload:
        stored = dict(payload["train_config"])
    elif "settings" in payload:
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        stored = {**{k: v for k, v in payload["settings"].items() if k in known},
                  **objective_fields(stored_elbo(payload))}
    else:
        return {}
    if "lr_min" in stored:
        stored.setdefault("anneal_from", None)
    return stored


def cosine_epochs(settings: dict) -> int | None:
    """The epochs of the cosine of lr_min that TrainConfig fields `settings` describe: anneal_epochs,
    else the run's epochs from anneal_from on when no max_steps cuts it (None: not in epochs)."""
    if settings.get("anneal_epochs") is not None:
        return settings["anneal_epochs"]
    return settings["epochs"] - (settings.get("anneal_from") or 0) if settings.get("max_steps") is None else None


def cosine_start(settings: dict, steps_per_epoch: int) -> int:
    """The optimizer step (0-based) at which the cosine of lr_min that `settings` describe begins."""
    return (settings.get("anneal_from") or 0) * steps_per_epoch


def cosine_steps(settings: dict, steps_per_epoch: int) -> float:
    """The optimizer steps of the cosine of lr_min that TrainConfig fields `settings` describe:
    anneal_epochs epochs, else the run's budget, ``min(epochs * steps_per_epoch, max_steps)``, from
    its start (`cosine_start`) on."""
    if settings.get("anneal_epochs") is not None:
        return settings["anneal_epochs"] * steps_per_epoch
    budget = min(settings["epochs"] * steps_per_epoch, settings.get("max_steps") or math.inf)
    return budget - cosine_start(settings, steps_per_epoch)


def learning_rate(settings: dict, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimizer step `step` (0-based) under the schedule of TrainConfig fields
    `settings`: lr, then with lr_min, from `cosine_start` on, a cosine over `cosine_steps` steps
    from lr at its first step to lr_min at its last, and lr_min after it,
    ``lr_min + (lr - lr_min) (1 + cos(pi min((step - start) / (steps - 1), 1))) / 2``."""
    lr, lr_min, start = settings["lr"], settings.get("lr_min"), cosine_start(settings, steps_per_epoch)
    if lr_min is None or step < start:
        return lr
    progress = min((step - start) / max(cosine_steps(settings, steps_per_epoch) - 1, 1), 1.0)
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * progress))


def before_cosine(settings: dict, progress: dict) -> bool:
    """Whether a run that stands at `progress` (a checkpoint's: epochs done, steps into the next)
    took every step at lr under the schedule of TrainConfig fields `settings`: it has none (no
    lr_min), or its cosine begins where the run stands or later."""
    if settings.get("lr_min") is None:
        return True
    return progress["epoch"] + (progress["step_in_epoch"] > 0) <= (settings.get("anneal_from") or 0)


#: The fields of the learning-rate schedule after lr: a change to them that leaves the rate of
#: every step a run has taken at lr (`before_cosine` on both sides) resumes the same run.
SCHEDULE = ("lr_min", "anneal_from", "anneal_epochs")


def schedule_changes(payload: dict, config: TrainConfig) -> list[str]:
    """``"field: checkpoint has A, given B"`` for each `SCHEDULE` field on which `config` differs
    from the checkpoint `payload` where no step of its run was on either side's cosine: the same
    run so far, whose learning rate changes from where it stands on (or later)."""
    stored, given = stored_settings(payload), as_dict(config)
    names = [k for k in SCHEDULE if k in stored]
    if "progress" not in payload or not (before_cosine(stored, payload["progress"])
                                         and before_cosine(given, payload["progress"])):
        return []
    return config_mismatches({k: stored[k] for k in names}, {k: given[k] for k in names})


def contradictions(payload: dict, config: TrainConfig, elbo_description: dict) -> list[str]:
    """``"field: checkpoint has A, given B"`` for each field of `config` that defines the trajectory
    and differs from the checkpoint's (fields an older checkpoint did not record are not compared).
    The objective is compared as `elbo_description`, what training would minimise."""
    stored = stored_settings(payload)
    names = [k for k in TRAJECTORY if k in stored and k not in ("objective", "particles")]
    given = as_dict(config)
    if "anneal_epochs" in names and cosine_epochs(stored) is not None and cosine_epochs(stored) == cosine_epochs(given):
        names.remove("anneal_epochs")  # the same cosine, its length said on one side only
    if schedule_changes(payload, config):  # a cosine that no step taken was on: the same run so far
        names = [k for k in names if k not in SCHEDULE]
    diffs = config_mismatches({k: stored[k] for k in names}, {k: given[k] for k in names})
    before = stored_elbo(payload)
    if before != elbo_description:
        old, new = objective_fields(before), objective_fields(elbo_description)
        if old["objective"] is not None and new["objective"] is not None:
            diffs += config_mismatches(old, new)
        else:
            diffs.append(f"objective: checkpoint has {objectives.label(before)}, "
                         f"given {objectives.label(elbo_description)}")
    return diffs


def check_resumable(payload: dict, path, config: TrainConfig, elbo_description: dict) -> list[str]:
    """`CheckpointError` naming each of `contradictions` (with both values), if any; else the
    `schedule_changes` that resuming accepts (the same run so far, for the caller to warn of)."""
    diffs = contradictions(payload, config, elbo_description)
    if diffs:
        raise CheckpointError(f"{path}: given train config contradicts the checkpoint's (a resumed run follows "
                              f"the run it resumes): " + "; ".join(diffs))
    return schedule_changes(payload, config)
