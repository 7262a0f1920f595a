"""``drawzoo train``: train MODEL or a recipe's model, resuming from --checkpoint when it exists.

Its options are made from MODEL's Config dataclass and from `drawzoo.TrainConfig`
(`add_config_options`); every option not given keeps the checkpoint's value, else the recipe's,
else its default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from .. import data as datasets
from ..checkpoints import check_model, read_checkpoint
from ..data.batching import random_subset
from ..errors import ConfigError, DrawzooError, ObjectiveError
from ..evaluation import objectives
from ..files import check_outputs
from ..registry import available, load, model_class
from ..training.config import TrainConfig, check_resumable, stored_elbo, stored_settings
from ..training.loop import resolve_device, train
from ..training.recipes import Data, Recipe, load_recipe
from .console import say
from .options import DATA_HELP, DATA_ROOT_HELP, add_config_options, data_path, given

# `drawzoo train` stopped by --max-minutes, its checkpoint written: not an error, but not finished
# either. sysexits.h's EX_TEMPFAIL ("not really an error ... retry later"), so that a job script can
# tell it from completion (0), an error (2) and a signal (128 + signal number) and requeue itself.
EXIT_TIME_LIMIT = 75


def _model_name(model: str | None, recipe: Recipe) -> str:
    """MODEL, or the recipe's model; the two must agree."""
    if model is None and recipe.model is None:
        raise DrawzooError(f"train: give MODEL ({', '.join(available())}), or a --recipe that names one")
    if model is not None and recipe.model is not None and model != recipe.model:
        raise DrawzooError(f"train: MODEL {model!r} contradicts model {recipe.model!r} of the recipe {recipe.path}")
    return model or recipe.model


#: TrainConfig fields naming files a run writes besides its checkpoint.
OUTPUT_PATHS = ("best", "log_dir")


def _stored_paths(stored: dict, checkpoint: Path) -> dict:
    """`stored` settings with the output paths an older checkpoint recorded relative to the folder
    it was started from (unknown now) put beside `checkpoint` instead, under their own file names:
    right for the default ``runs/draw.best.pt`` beside ``runs/draw.pt`` from any working directory."""
    stored = dict(stored)
    for key in OUTPUT_PATHS:
        if stored.get(key) is not None and not os.path.isabs(stored[key]):
            stored[key] = str(checkpoint.parent / Path(stored[key]).name)
    return stored


def cmd_train(args) -> int:
    recipe = load_recipe(args.recipe) if args.recipe is not None else Recipe()
    name = _model_name(args.model, recipe)
    checkpoint = Path(args.checkpoint or f"runs/{name}.pt")
    payload = read_checkpoint(checkpoint) if checkpoint.exists() else None
    if payload is not None:  # another model's checkpoint: said before its settings are compared
        check_model(payload, checkpoint, name)
    # every training option not given keeps the checkpoint's value, else the recipe's, else its default
    settings = {**_stored_paths(stored_settings(payload or {}), checkpoint), **recipe.train, **given(args, "train")}
    if args.no_best:
        if "best" in given(args, "train"):
            raise ConfigError("train: give --best PATH or --no-best, not both")
        settings["best"] = None
    settings.setdefault("best", str(checkpoint.with_name(f"{checkpoint.stem}.best.pt")))  # beside the checkpoint
    for key in OUTPUT_PATHS:  # stored absolute, so that a resumed run writes where the first one did
        if settings.get(key) is not None:
            settings[key] = os.path.abspath(settings[key])
    if settings.get("objective", objectives.DEFAULT) is None:
        raise ObjectiveError(f"{checkpoint}: trained with {objectives.label(stored_elbo(payload))}, which no "
                             "--objective names; resume it in Python: drawzoo.train(..., elbo=...)")
    config = TrainConfig.from_dict(settings)
    resolve_device(config.device)
    elbo = objectives.make_elbo(config.objective, config.particles)
    if payload is not None and "progress" in payload:  # before any work, as train() would
        check_resumable(payload, checkpoint, config, objectives.describe(elbo))
    data = dataclasses.replace(recipe.data, **given(args, "data"))
    check_outputs({"--checkpoint": checkpoint, "--best": config.best, "--log-dir": config.log_dir},
                  {"--recipe": args.recipe, "--data": data_path(data.train), "--valid-data": data_path(data.valid)},
                  checkpoints=True)
    model_config = {**recipe.config, **given(args, "config")}
    model = None
    if payload is not None:
        model = load(name, checkpoint=checkpoint, **model_config)
        if "progress" in payload:  # else train() says that it holds weights only
            best = "" if config.best is None else f"; best weights to {config.best}"
            say(f"resuming {checkpoint} (epoch {payload['progress']['epoch']:g}){best}")
    elif "image_shape" in model_config:
        model = load(name, **model_config, seed=config.seed)  # the seed fixes the initial weights too
    # the data at the model's image shape (pictures are resized to it), else the model at the data's;
    # a folder or file holds out its valid split unless a valid data set is given
    shape = None if model is None else model.image_shape
    own_valid = data.valid is not None
    train_split = "all" if own_valid and data.train not in datasets.DATASETS else "train"
    train_data = datasets.load(data.train, train_split, args.data_root, shape)
    if model is None:
        model = load(name, **model_config, image_shape=train_data.image_shape, seed=config.seed)
    if own_valid:
        valid_split = "valid" if data.valid in datasets.DATASETS else "all"
        valid_data = datasets.load(data.valid, valid_split, args.data_root, model.image_shape)
    else:
        valid_data = datasets.load(data.train, "valid", args.data_root, model.image_shape)
    valid_data = random_subset(valid_data, data.valid_limit, seed=config.seed)
    say(f"{name}: {model.config} ({model.num_parameters():,} parameters); "
        f"objective {objectives.label(objectives.describe(elbo))}")
    history = train(model, train_data, valid_data, config, checkpoint=checkpoint, progress=not args.quiet)
    if history:
        last = history[-1]
        valid = "" if last["valid_loss"] is None else f", valid {last['valid_loss']:.2f}"
        say(f"epoch {last['epoch']:g}: train {last['train_loss']:.2f}{valid} nats/image; checkpoint {checkpoint}")
        if last.get("stopped") == "max_minutes":
            return EXIT_TIME_LIMIT
    return 0


def add_train_command(sub, train_model: str | None = None) -> None:
    """``train`` in the subparsers `sub`; with `train_model`, it also takes that model's config options."""
    p = sub.add_parser("train", help="train a model (resumes from --checkpoint when it exists)",
                       description="Train MODEL, or the model of --recipe; `drawzoo train MODEL --help` lists MODEL's\n"
                       "config options. Each option given overrides the recipe's setting.\n"
                       "If --checkpoint exists, training resumes from it: the options not given keep its values\n"
                       "(config, train config); given ones that contradict its config or its trajectory\n"
                       "(seed, batch size, learning rate and schedule, clipping, objective, particles,\n"
                       "validation samples) are an error. The budget (--epochs, --max-steps, --max-minutes)\n"
                       "may change. Exit status: 0 done, 2 error, 75 stopped by --max-minutes (rerun to\n"
                       "continue), 130/143 stopped by SIGINT/SIGTERM (a checkpoint at the step reached).",
                       epilog="objectives (--objective), per image:\n" + "\n".join(
                           f"  {name:14s} {o.help}" for name, o in objectives.OBJECTIVES.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", nargs="?", help=f"registered model ({', '.join(available())}) "
                   "[the recipe's]")
    p.add_argument("--recipe", help="a TOML file: model, [config], [train] (train config), [data] (docs/training.md, Recipes)")
    if train_model is not None:
        add_config_options(p, model_class(train_model).Config)
    add_config_options(p, TrainConfig, dest="train", title="train config")
    data = {f.name: f for f in dataclasses.fields(Data)}  # as a recipe's [data]
    p.add_argument("--data", dest="data.train", metavar="DATA", default=argparse.SUPPRESS,
                   help=f"training data: {DATA_HELP} [{data['train'].default}]")
    p.add_argument("--valid-data", dest="data.valid", metavar="DATA", default=argparse.SUPPRESS,
                   help="validation data, as --data: a named set's valid split, all of a folder or file (a folder or "
                   "file --data then trains on all its images) [the valid split of --data: a named set's own, the "
                   "10%% a folder or file holds out]")
    p.add_argument("--valid-limit", dest="data.valid_limit", metavar="N", type=int, default=argparse.SUPPRESS,
                   help=data["valid_limit"].metadata["help"])
    p.add_argument("--data-root", help=DATA_ROOT_HELP)
    p.add_argument("--checkpoint", default=None, help="checkpoint file, written atomically; resumed from "
                   "when it exists [runs/MODEL.pt]")
    p.add_argument("--no-best", action="store_true", help="keep no best-validation checkpoint (see --best)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no per-epoch lines")
    p.set_defaults(func=cmd_train)


def model_to_train(argv: list[str]) -> str | None:
    """MODEL of ``drawzoo train MODEL ...``, else the model of its ``--recipe``, if that is the
    command line (its config options are then part of the parser)."""
    if len(argv) < 2 or argv[0] != "train":
        return None
    if not argv[1].startswith("-"):
        return argv[1]
    recipe_option = argparse.ArgumentParser(add_help=False)
    recipe_option.add_argument("--recipe")
    recipe = recipe_option.parse_known_args(argv[1:])[0].recipe
    return None if recipe is None else load_recipe(recipe).model
