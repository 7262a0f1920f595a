"""The ``drawzoo`` command: list, train, sample, animate, evaluate and inpaint zoo models.

``drawzoo train MODEL --help`` lists MODEL's own config options (from its Config dataclass), so
third-party models get command-line options for free; the training options are made the same way
from `drawzoo.TrainConfig`. Errors print as one line; drawzoo's log messages print for people.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import logging
import sys
import typing
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import data as datasets
from . import distributed, masks, objectives
from .batching import collate_images, random_subset
from .checkpoints import read_checkpoint
from .config import as_dict, optional_type
from .errors import ConfigError, DrawzooError, ObjectiveError
from .files import check_outputs
from .recipes import Data, Recipe, load_recipe
from .registry import available, load, model_class
from .stopping import Interrupted
from .train_config import TrainConfig, check_resumable, stored_elbo, stored_settings
from .training import resolve_device, train

DATA_HELP = (f"a data set ({', '.join(datasets.DATASETS)}), a folder of PNG/JPEG pictures (converted to grey "
             "or colour, resized and centre-cropped to --image-shape; without it, the pictures' own shape), or a "
             ".npy/.npz file of images [N, C, H, W] or [N, H, W]")
DEFAULT_DATA = "binarized_mnist"  #: what `eval`, `inpaint` and `animate --reconstruct` read without --data
# `drawzoo train` stopped by --max-minutes, its checkpoint written: not an error, but not finished
# either. sysexits.h's EX_TEMPFAIL ("not really an error ... retry later"), so that a job script can
# tell it from completion (0), an error (2) and a signal (128 + signal number) and requeue itself.
EXIT_TIME_LIMIT = 75


# -- configs as options -------------------------------------------------------------------------


def _flag(name: str) -> list[str]:
    dashed = "--" + name.replace("_", "-")
    return [dashed] if dashed == "--" + name else [dashed, "--" + name]


def add_config_options(parser: argparse.ArgumentParser, config_cls, dest: str = "config",
                       title: str = "model config") -> None:
    """One option per field of the config dataclass `config_cls`, with its help line and default;
    only the options given end up in the namespace, as ``<dest>.<field>`` (see `given`)."""
    group = parser.add_argument_group(f"{config_cls.__name__} ({title}; default in brackets)")
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        hint, default = optional_type(hints[field.name]) or hints[field.name], field.default
        help_text = field.metadata.get("help", "") + ("" if default is None else f" [{default}]")
        kw = dict(dest=f"{dest}.{field.name}", default=argparse.SUPPRESS, help=help_text.replace("%", "%%"))
        if hint is bool:
            group.add_argument(*_flag(field.name), action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(hint) is tuple:
            args = typing.get_args(hint)
            group.add_argument(*_flag(field.name), nargs=len(args), type=args[0],
                               metavar=tuple(f"{field.name.upper()}{i}" for i in range(len(args)))
                               if field.name != "image_shape" else ("C", "H", "W"), **kw)
        else:
            group.add_argument(*_flag(field.name), type=hint, metavar=field.name.upper(),
                               choices=field.metadata.get("choices"), **kw)


def given(args: argparse.Namespace, dest: str = "config") -> dict:
    """The options of `add_config_options(..., dest)` given on the command line, as ``{field: value}``."""
    return {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith(f"{dest}.")}


# -- log messages ----------------------------------------------------------------------------------


class _Console(logging.Handler):
    """drawzoo's log messages for people: information on stdout, warnings on stderr, written
    around the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno >= logging.WARNING:
                tqdm.write(f"drawzoo: warning: {self.format(record)}", file=sys.stderr)
            else:
                tqdm.write(self.format(record), file=sys.stdout)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def console_logging(verbose: bool = True):
    """While inside, show the messages of the ``drawzoo`` loggers on the console: each epoch's
    figures and other information if `verbose`, warnings always."""
    logger, handler = logging.getLogger("drawzoo"), _Console()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- commands -----------------------------------------------------------------------------------


def cmd_list(args) -> int:
    for name in available():
        cls = model_class(name)
        defaults = ", ".join(f"{k}={v}" for k, v in as_dict(cls.Config()).items())
        print(f"{name:12s} {cls.__module__}.{cls.__qualname__}({defaults})")
    return 0


def _say(*args) -> None:
    """Print from one process only (rank 0 under torchrun)."""
    if distributed.is_main_process():
        print(*args, flush=True)


def _model_name(model: str | None, recipe: Recipe) -> str:
    """MODEL, or the recipe's model; the two must agree."""
    if model is None and recipe.model is None:
        raise DrawzooError(f"train: give MODEL ({', '.join(available())}), or a --recipe that names one")
    if model is not None and recipe.model is not None and model != recipe.model:
        raise DrawzooError(f"train: MODEL {model!r} contradicts model {recipe.model!r} of the recipe {recipe.path}")
    return model or recipe.model


def cmd_train(args) -> int:
    recipe = load_recipe(args.recipe) if args.recipe is not None else Recipe()
    name = _model_name(args.model, recipe)
    checkpoint = Path(args.checkpoint or f"runs/{name}.pt")
    payload = read_checkpoint(checkpoint) if checkpoint.exists() else None
    # every training option not given keeps the checkpoint's value, else the recipe's, else its default
    settings = {**stored_settings(payload or {}), **recipe.train, **given(args, "train")}
    if args.no_best:
        if "best" in given(args, "train"):
            raise ConfigError("train: give --best PATH or --no-best, not both")
        settings["best"] = None
    settings.setdefault("best", str(checkpoint.with_name(f"{checkpoint.stem}.best.pt")))  # beside the checkpoint
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
                  {"--recipe": args.recipe, "--data": _data_path(data.train), "--valid-data": _data_path(data.valid)})
    model_config = {**recipe.config, **given(args, "config")}
    model = None
    if payload is not None:
        model = load(name, checkpoint=checkpoint, **model_config)
        if "progress" in payload:  # else train() says that it holds weights only
            _say(f"resuming {checkpoint} (epoch {payload['progress']['epoch']:g})")
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
    _say(f"{name}: {model.config} ({model.num_parameters():,} parameters); "
         f"objective {objectives.label(objectives.describe(elbo))}")
    history = train(model, train_data, valid_data, config, checkpoint=checkpoint, progress=not args.quiet)
    if history:
        last = history[-1]
        valid = "" if last["valid_loss"] is None else f", valid {last['valid_loss']:.2f}"
        _say(f"epoch {last['epoch']:g}: train {last['train_loss']:.2f}{valid} nats/image; checkpoint {checkpoint}")
        if last.get("stopped") == "max_minutes":
            return EXIT_TIME_LIMIT
    return 0


def _data_path(data: str | None) -> str | None:
    """`--data`'s file or folder; None for a named data set."""
    return None if data is None or data in datasets.DATASETS else data


def _checked(args, *positive: str, outputs: dict, inputs: dict | None = None) -> torch.device:
    """The device of a command on CHECKPOINT, once its options are checked (before any work): each
    option of `positive` >= 1 if given, and its `outputs` none of CHECKPOINT, the `inputs`, or each other."""
    for name in positive:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    check_outputs(outputs, {"CHECKPOINT": args.checkpoint, **(inputs or {})})
    return resolve_device(args.device)


def _from_checkpoint(args, device: torch.device):
    model = load(checkpoint=args.checkpoint).to(device)
    torch.manual_seed(args.seed)
    return model


def cmd_sample(args) -> int:
    from .pictures import save_grid

    model = _from_checkpoint(args, _checked(args, "n", "nrow", outputs={"--out": args.out}))
    images = model.generate(args.n)[-1].cpu()
    save_grid(images, args.out, nrow=args.nrow)
    print(f"wrote {args.n} samples of {args.checkpoint} to {args.out}")
    return 0


def cmd_animate(args) -> int:
    from .pictures import animate

    if not args.reconstruct and (args.data, args.split, args.data_root) != (None, None, None):
        raise ConfigError("animate: --data, --split and --data-root choose the images of --reconstruct: give it "
                          "too, or leave them out (samples need no data)")
    model = _from_checkpoint(args, _checked(args, "n", "nrow", "scale", outputs={"--out": args.out},
                                            inputs={"--data": _data_path(args.data)}))
    if args.reconstruct:
        return _animate_reconstruction(args, model)
    attention = {}
    if getattr(model.config, "attention", False):
        canvases, writes = model.generate(args.n, return_attention=True)
        attention = dict(writes=type(writes)(*(f.cpu() for f in writes)), N=model.config.write_size)
    else:
        canvases = model.generate(args.n)
    if len(canvases) < 2:
        raise DrawzooError(f"animate: {args.checkpoint} holds a {model.zoo_name!r} model, which draws in one step: "
                           "no canvases through time to animate (drawzoo sample saves its samples)")
    frames = animate(canvases.cpu(), args.out, nrow=args.nrow, scale=args.scale, duration_ms=args.duration_ms,
                     **attention)
    print(f"wrote {frames} frames of {args.n} canvases to {args.out}")
    return 0


def _animate_reconstruction(args, model) -> int:
    """`drawzoo animate --reconstruct`: DRAW reading and redrawing --n images of --data/--split."""
    from .pictures import animate_reconstruction

    if not callable(getattr(model, "reconstruct", None)):
        raise DrawzooError(f"animate --reconstruct: {args.checkpoint} holds a {model.zoo_name!r} model, which draws "
                           "in one step: no reconstruction through time to animate (drawzoo sample saves its samples)")
    name, split, x = _some_images(args, model)
    canvases, reads, writes = model.reconstruct(x.to(model.device))
    attention = {}
    if reads is not None:
        attention = dict(reads=type(reads)(*(f.cpu() for f in reads)), read_size=model.config.read_size,
                         writes=type(writes)(*(f.cpu() for f in writes)), write_size=model.config.write_size)
    frames = animate_reconstruction(x, canvases.cpu(), args.out, nrow=args.nrow, scale=args.scale,
                                    duration_ms=args.duration_ms, **attention)
    print(f"wrote {frames} frames of {len(x)} {name}/{split} images and their reconstructions to {args.out}")
    return 0


def _some_images(args, model):
    """``(data set, split, images [--n, C, H, W])``: a seeded (--seed) random subset of `_eval_data`'s."""
    name, split, data = _eval_data(args, model)
    data = random_subset(data, args.n, seed=args.seed)
    return name, split, collate_images([data[i] for i in range(len(data))])


def _eval_data(args, model):
    """The data set (--data, else binarized MNIST), the split (--split, else test of a named set,
    valid of a folder or file) and the images that a command on CHECKPOINT reads, at the model's
    image shape."""
    name = args.data or DEFAULT_DATA
    split = args.split or ("test" if name in datasets.DATASETS else "valid")
    return name, split, datasets.load(name, split, args.data_root, model.image_shape)


def cmd_eval(args) -> int:
    from .evaluation import evaluate

    per_step = args.per_step or args.plot is not None
    plot = (args.plot or "kl_per_step.png") if per_step else None
    device = _checked(args, "num_samples", "batch_size", "limit", outputs={"--json": args.json, "--plot": plot},
                      inputs={"--data": _data_path(args.data)})
    if args.mask is not None:
        masks.check_name(args.mask)
    distributed.join(device)  # under torchrun, each process scores a share of the images
    model = load(checkpoint=args.checkpoint).to(device)
    name, split, data = _eval_data(args, model)
    data = random_subset(data, args.limit, seed=args.seed)
    result = evaluate(model, data, num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed,
                      progress=not args.quiet, compile=args.compile or None, per_step=per_step, mask=args.mask)
    result.update(checkpoint=str(args.checkpoint), data=name, split=split)
    where = f"{args.checkpoint} on {name}/{split} ({result['num_images']} images)"
    conditional = ""
    if args.mask is not None:
        result["mask"] = args.mask
        conditional = (f"; conditional NLL of the missing pixels (mask {args.mask}, {result['missing_fraction']:.0%} "
                       f"of the pixels) {result['cond_nll']:.2f} nats = NLL {result['nll']:.2f} - NLL of the observed "
                       f"pixels {result['nll_observed']:.2f}")
    _say(f"{where}: negative ELBO {result['neg_elbo']:.2f} nats, NLL {result['nll']:.2f} nats "
         f"(importance sampled, K={args.num_samples}){conditional}; {result['images_per_s']:.1f} images/s")
    if per_step:
        _report_per_step(result, plot, title=f"{where}, K={args.num_samples}")
    if args.json and distributed.is_main_process():
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _report_per_step(result: dict, plot: str, title: str) -> None:
    """Print `evaluate(..., per_step=True)`'s KL per step, one line each, and save its plot."""
    from .pictures import save_kl_plot

    kl, estimates, sites = result["kl_per_step"], result["kl_estimate"], result["latent_sites"]
    one_way = len(set(estimates)) == 1
    _say(f"KL(q(z_t | ...) || p(z_t)) per step, nats per image ({estimates[0] if one_way else 'per step'}):")
    width, site_width = len(str(len(kl) - 1)), max(map(len, sites))
    for t, (site, value, total) in enumerate(zip(sites, kl, itertools.accumulate(kl))):
        note = "" if one_way else f" ({estimates[t]})"
        _say(f"  step {t:{width}d} {site:{site_width}s} {value:8.3f}   cumulative {total:8.3f}{note}")
    _say(f"  reconstruction -log p(x | z) {result['reconstruction']:.2f}; negative ELBO (analytic KL) "
         f"{result['reconstruction'] + sum(kl):.2f}")
    if distributed.is_main_process():
        save_kl_plot(kl, result["reconstruction"], plot, title=title)
    _say(f"wrote the plot of the KL per step to {plot}")


def cmd_inpaint(args) -> int:
    from .pictures import save_inpainting

    device = _checked(args, "n", "nrow", "num_samples", outputs={"--out": args.out},
                      inputs={"--data": _data_path(args.data)})
    masks.check_name(args.mask)
    model = _from_checkpoint(args, device)
    name, split, x = _some_images(args, model)
    mask = masks.named_mask(args.mask, model.image_shape, len(x), seed=args.seed)
    filled = model.inpaint(x.to(device), mask, num_samples=args.num_samples, sample=args.sample)
    save_inpainting(x, mask, filled.cpu(), args.out, nrow=args.nrow)
    print(f"wrote {len(x)} images of {name}/{split} with mask {args.mask} filled in by {args.checkpoint} "
          f"(importance resampling, K={args.num_samples}) to {args.out}: rows observed, filled in, original")
    return 0


# -- the parser ---------------------------------------------------------------------------------


def _data_options(p: argparse.ArgumentParser) -> None:
    """--data, --split and --data-root: the images that `eval`, `inpaint` and `animate --reconstruct` read
    (`_eval_data`)."""
    p.add_argument("--data", help=f"{DATA_HELP} [{DEFAULT_DATA}]")
    p.add_argument("--split", help="train, valid or test of a named data set; train, valid (the 10%% held out "
                   "from training) or all of a folder or file [test; valid for a folder or file]")
    p.add_argument("--data-root", help="folder holding the data sets [$DRAWZOO_DATA, else a per-user cache]")


def build_parser(train_model: str | None = None) -> argparse.ArgumentParser:
    """The ``drawzoo`` parser; with `train_model`, ``train`` also takes that model's config options."""
    parser = argparse.ArgumentParser(prog="drawzoo", description="DRAW and other generative image models, "
                                     "as Pyro model/guide pairs in a registry.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list the registered models and their default configs")
    p.set_defaults(func=cmd_list)

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
    p.add_argument("--recipe", help="a TOML file: model, [config], [train] (train config), [data] (README: Recipes)")
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
    p.add_argument("--data-root", help="folder holding the data sets [$DRAWZOO_DATA, else a per-user cache]")
    p.add_argument("--checkpoint", default=None, help="checkpoint file, written atomically; resumed from "
                   "when it exists [runs/MODEL.pt]")
    p.add_argument("--no-best", action="store_true", help="keep no best-validation checkpoint (see --best)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no per-epoch lines")
    p.set_defaults(func=cmd_train)

    def checkpoint_command(name, help_text, func):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file written by `drawzoo train`")
        p.add_argument("--seed", type=int, default=0, help="random seed [0]")
        p.add_argument("--device", help="cpu, cuda, ... [cuda when available, else cpu]")
        p.set_defaults(func=func)
        return p

    p = checkpoint_command("sample", "save a grid of samples from a trained model as a PNG", cmd_sample)
    p.add_argument("--n", type=int, default=64, help="number of samples [64]")
    p.add_argument("--nrow", type=int, help="images per row [about square]")
    p.add_argument("--out", default="samples.png", help="PNG file to write [samples.png]")

    p = checkpoint_command("animate", "save a GIF of the canvases through time (T+1 frames), with the write "
                           "attention window drawn in red; with --reconstruct, of DRAW reading and redrawing real "
                           "images, the read window in green on each image", cmd_animate)
    p.add_argument("--n", type=int, default=16, help="number of samples, or of images with --reconstruct [16]")
    p.add_argument("--nrow", type=int, help="images (with --reconstruct: image/canvas pairs) per row [about square]")
    p.add_argument("--scale", type=int, help="integer upscaling [images at least 84 pixels tall]")
    p.add_argument("--duration-ms", type=int, default=100, help="milliseconds per frame [100]")
    p.add_argument("--out", default="draw.gif", help="GIF file to write [draw.gif]")
    p.add_argument("--reconstruct", action="store_true", help="reconstruct a seeded random subset of --n real images "
                   "of --data/--split instead of sampling: each beside its canvas, read window in green, write window "
                   "in red (no windows without attention)")
    _data_options(p)

    mask_help = (f"which pixels are missing: {', '.join(masks.NAMES)} (top: the top half missing, ...; random:P: "
                 "each pixel missing with probability P)")
    p = checkpoint_command("eval", "score a trained model: negative ELBO and importance-sampled NLL, in nats "
                           "per image", cmd_eval)
    _data_options(p)
    p.add_argument("--num-samples", "-k", type=int, default=100, help="importance samples K per image [100]")
    p.add_argument("--mask", help=f"also the conditional NLL of the missing pixels given the others, "
                   f"-log p(x_miss | x_obs) = NLL - NLL of the observed pixels; {mask_help} [none]")
    p.add_argument("--batch-size", type=int, help="images per vectorised pass [4096 // K]")
    p.add_argument("--limit", type=int, help="score a seeded random subset of this many images")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--per-step", action="store_true", help="also report how much each step tells: the mean "
                   "KL(q(z_t | ...) || p(z_t)) in nats of every latent site z_t (DRAW: one per glimpse; the VAE: "
                   "its one z), analytic where the pair is known, else Monte Carlo, and plot it (--plot)")
    p.add_argument("--plot", metavar="PATH", help="PNG of --per-step's KL per step and its cumulative sum against "
                   "the negative ELBO (implies --per-step) [kl_per_step.png]")
    p.add_argument("--compile", action="store_true", help="the fast path: compile the model's step functions "
                   "with torch.compile (the same figures up to float rounding)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = checkpoint_command("inpaint", "fill in the missing pixels of test images from a trained model "
                           "(importance resampling) and save a PNG: rows observed, filled in, original", cmd_inpaint)
    _data_options(p)
    p.add_argument("--num-samples", "-k", type=int, default=100, help="importance samples K per image [100]")
    p.add_argument("--mask", default="bottom", help=f"{mask_help} [bottom]")
    p.add_argument("--n", type=int, default=16, help="number of images, a seeded random subset [16]")
    p.add_argument("--nrow", type=int, help="images per row [all, at most 16]")
    p.add_argument("--sample", action="store_true", help="binary draws of the missing pixels [their probabilities]")
    p.add_argument("--out", default="inpaint.png", help="PNG file to write [inpaint.png]")
    return parser


def _train_model(argv: list[str]) -> str | None:
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(_train_model(argv))
        args = parser.parse_args(argv)
        with console_logging(verbose=not getattr(args, "quiet", False)):
            return args.func(args)
    except (DrawzooError, ValueError, TypeError, OSError) as e:
        print(f"drawzoo: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:  # training stopped by a signal, its checkpoint written
        if distributed.is_main_process():
            print(f"drawzoo: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("drawzoo: interrupted", file=sys.stderr)
        return 130
