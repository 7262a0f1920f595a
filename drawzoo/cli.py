"""The ``drawzoo`` command: list, train, sample, animate and evaluate zoo models.

``drawzoo train MODEL --help`` lists MODEL's own config options (from its Config dataclass), so
third-party models get command-line options for free. Errors print as one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path

from . import data as datasets
from . import distributed, objectives
from .batching import random_subset
from .checkpoints import read_checkpoint
from .config import as_dict
from .errors import DrawzooError, ObjectiveError
from .registry import available, load, model_class
from .training import resolve_device, train

DATA_HELP = (f"a data set ({', '.join(datasets.DATASETS)}), a folder of PNG/JPEG pictures (converted to grey "
             "or colour, resized and centre-cropped to --image-shape; without it, the pictures' own shape), or a "
             ".npy/.npz file of images [N, C, H, W] or [N, H, W]")


# -- model config as options ------------------------------------------------------------------


def _flag(name: str) -> list[str]:
    dashed = "--" + name.replace("_", "-")
    return [dashed] if dashed == "--" + name else [dashed, "--" + name]


def add_config_options(parser: argparse.ArgumentParser, config_cls) -> None:
    """One option per field of `config_cls`; only the options given end up in the namespace's
    ``config`` dict (see `given_config`)."""
    group = parser.add_argument_group(f"{config_cls.__name__} (model config; default in brackets)")
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        hint, default = hints[field.name], field.default
        help_text = f"{field.metadata.get('help', '')} [{default}]"
        kw = dict(dest=f"config.{field.name}", default=argparse.SUPPRESS, help=help_text)
        if hint is bool:
            group.add_argument(*_flag(field.name), action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(hint) is tuple:
            args = typing.get_args(hint)
            group.add_argument(*_flag(field.name), nargs=len(args), type=args[0],
                               metavar=tuple(f"{field.name.upper()}{i}" for i in range(len(args)))
                               if field.name != "image_shape" else ("C", "H", "W"), **kw)
        else:
            group.add_argument(*_flag(field.name), type=hint, metavar=field.name.upper(), **kw)


def given_config(args: argparse.Namespace) -> dict:
    """The model config options given on the command line, as ``{field: value}``."""
    return {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith("config.")}


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


def make_objective(args, checkpoint: Path, resumed: dict | None):
    """The ELBO of --objective/--particles; resuming, each of them not given keeps the checkpoint's."""
    objective, particles = args.objective, args.particles
    if resumed is not None:
        before = objectives.stored(resumed["elbo"])
        if particles is None:
            particles = before["num_particles"]
        if objective is None:
            named = objectives.name_of(before)
            if named is None:
                raise ObjectiveError(f"{checkpoint}: trained with {objectives.label(before)}, which no --objective "
                                     "names; give --objective to go on with one")
            objective = named[0]
    return objectives.make_elbo(objective or objectives.DEFAULT, 1 if particles is None else particles)


def cmd_train(args) -> int:
    config = given_config(args)
    checkpoint, resumed, model = Path(args.checkpoint), None, None
    if checkpoint.exists():
        model = load(args.model, checkpoint=checkpoint, **config)
        payload = read_checkpoint(checkpoint)
        if "progress" in payload:  # else train() says that it holds weights only
            resumed = payload["settings"]
            _say(f"resuming {checkpoint} (epoch {payload['progress']['epoch']:g})")
    elif "image_shape" in config:
        model = load(args.model, **config)
    # the data at the model's image shape (pictures are resized to it), else the model at the data's;
    # a folder or file holds out its valid split unless --valid-data is given
    shape = None if model is None else model.image_shape
    own_valid = args.valid_data is not None
    train_split = "all" if own_valid and args.data not in datasets.DATASETS else "train"
    train_data = datasets.load(args.data, train_split, args.data_root, shape)
    if model is None:
        model = load(args.model, **config, image_shape=train_data.image_shape)
    if own_valid:
        valid_split = "valid" if args.valid_data in datasets.DATASETS else "all"
        valid_data = datasets.load(args.valid_data, valid_split, args.data_root, model.image_shape)
    else:
        valid_data = datasets.load(args.data, "valid", args.data_root, model.image_shape)
    valid_data = random_subset(valid_data, args.valid_limit, seed=args.seed)
    elbo = make_objective(args, checkpoint, resumed)
    _say(f"{args.model}: {model.config} ({model.num_parameters():,} parameters); "
         f"objective {objectives.label(objectives.describe(elbo))}")
    history = train(model, train_data, valid_data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    lr_min=args.lr_min, max_steps=args.max_steps, checkpoint=checkpoint, every=args.every,
                    every_steps=args.every_steps, seed=args.seed, log_dir=args.log_dir, device=args.device,
                    elbo=elbo, clip_norm=args.clip_norm, valid_samples=args.valid_samples, progress=not args.quiet)
    if history:
        last = history[-1]
        valid = "" if last["valid_loss"] is None else f", valid {last['valid_loss']:.2f}"
        _say(f"epoch {last['epoch']:g}: train {last['train_loss']:.2f}{valid} nats/image; checkpoint {checkpoint}")
    return 0


def _from_checkpoint(args):
    model = load(checkpoint=args.checkpoint).to(resolve_device(args.device))
    import torch

    torch.manual_seed(args.seed)
    return model


def cmd_sample(args) -> int:
    from .pictures import save_grid

    model = _from_checkpoint(args)
    images = model.generate(args.n)[-1].cpu()
    save_grid(images, args.out, nrow=args.nrow)
    print(f"wrote {args.n} samples of {args.checkpoint} to {args.out}")
    return 0


def cmd_animate(args) -> int:
    from .pictures import animate

    model = _from_checkpoint(args)
    if getattr(model.config, "attention", False):
        canvases, writes = model.generate(args.n, return_attention=True)
        writes = type(writes)(*(f.cpu() for f in writes))
        frames = animate(canvases.cpu(), args.out, writes=writes, N=model.config.write_size, nrow=args.nrow,
                         scale=args.scale, duration_ms=args.duration_ms)
    else:
        frames = animate(model.generate(args.n).cpu(), args.out, nrow=args.nrow, scale=args.scale,
                         duration_ms=args.duration_ms)
    print(f"wrote {frames} frames of {args.n} canvases to {args.out}")
    return 0


def cmd_eval(args) -> int:
    from .evaluation import evaluate

    device = resolve_device(args.device)
    distributed.join(device)  # under torchrun, each process scores a share of the images
    model = load(checkpoint=args.checkpoint).to(device)
    split = args.split or ("test" if args.data in datasets.DATASETS else "valid")
    data = datasets.load(args.data, split, args.data_root, model.image_shape)
    data = random_subset(data, args.limit, seed=args.seed)
    result = evaluate(model, data, num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed,
                      progress=not args.quiet)
    result.update(checkpoint=str(args.checkpoint), data=args.data, split=split)
    _say(f"{args.checkpoint} on {args.data}/{split} ({result['num_images']} images): "
         f"negative ELBO {result['neg_elbo']:.2f} nats, NLL {result['nll']:.2f} nats "
         f"(importance sampled, K={args.num_samples})")
    if args.json and distributed.is_main_process():
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


# -- the parser ---------------------------------------------------------------------------------


def build_parser(train_model: str | None = None) -> argparse.ArgumentParser:
    """The ``drawzoo`` parser; with `train_model`, ``train`` also takes that model's config options."""
    parser = argparse.ArgumentParser(prog="drawzoo", description="DRAW and other generative image models, "
                                     "as Pyro model/guide pairs in a registry.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list the registered models and their default configs")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train a model (resumes from --checkpoint when it exists)",
                       description="Train MODEL; `drawzoo train MODEL --help` lists MODEL's config options.\n"
                       "If --checkpoint exists, training resumes from it: its config and objective are used;\n"
                       "config options that contradict it are an error, other training settings a warning.",
                       epilog="objectives (--objective), per image:\n" + "\n".join(
                           f"  {name:14s} {o.help}" for name, o in objectives.OBJECTIVES.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help=f"registered model ({', '.join(available())})")
    if train_model is not None:
        add_config_options(p, model_class(train_model).Config)
    p.add_argument("--data", default="binarized_mnist", help=f"training data: {DATA_HELP} [binarized_mnist]")
    p.add_argument("--valid-data", help="validation data, as --data: a named set's valid split, all of a folder "
                   "or file (a folder or file --data then trains on all its images) [the valid split of --data: a "
                   "named set's own, the 10%% a folder or file holds out]")
    p.add_argument("--valid-limit", type=int, help="validate on a seeded random subset of this many images")
    p.add_argument("--data-root", help="folder holding the data sets [$DRAWZOO_DATA, else a per-user cache]")
    p.add_argument("--epochs", type=int, required=True, help="epochs in all (a resumed run counts earlier ones)")
    p.add_argument("--batch-size", type=int, default=100, help="images per step [100]")
    p.add_argument("--objective", choices=list(objectives.OBJECTIVES), help="what training minimises (see "
                   f"objectives below) [{objectives.DEFAULT}; resuming, the checkpoint's]")
    p.add_argument("--particles", type=int, help="K samples of the latents per image, drawn in one vectorised pass "
                   "[1; resuming, the checkpoint's]")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate [1e-3]")
    p.add_argument("--lr-min", type=float, help="anneal the learning rate from --lr down to this along a cosine "
                   "over the run [constant --lr]")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps in all, perhaps mid-epoch "
                   "(a resumed run counts earlier ones)")
    p.add_argument("--clip-norm", type=float, default=10.0, help="clip the gradient norm to this [10]")
    p.add_argument("--checkpoint", default=None, help="checkpoint file, written atomically; resumed from "
                   "when it exists [runs/MODEL.pt]")
    p.add_argument("--every", type=int, default=1, help="checkpoint every this many epochs (and at the end) [1]")
    p.add_argument("--every-steps", type=int, help="also checkpoint every this many optimizer steps")
    p.add_argument("--seed", type=int, default=0, help="seed of shuffling and sampling [0]")
    p.add_argument("--log-dir", help="write TensorBoard summaries (losses, sample grids) here")
    p.add_argument("--valid-samples", type=int, default=1, help="importance samples per validation image [1]")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... [cuda when available, else cpu]")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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
                           "attention window drawn in red", cmd_animate)
    p.add_argument("--n", type=int, default=16, help="number of samples [16]")
    p.add_argument("--nrow", type=int, help="images per row [about square]")
    p.add_argument("--scale", type=int, help="integer upscaling [images at least 84 pixels tall]")
    p.add_argument("--duration-ms", type=int, default=100, help="milliseconds per frame [100]")
    p.add_argument("--out", default="draw.gif", help="GIF file to write [draw.gif]")

    p = checkpoint_command("eval", "score a trained model: negative ELBO and importance-sampled NLL, in nats "
                           "per image", cmd_eval)
    p.add_argument("--data", default="binarized_mnist", help=f"{DATA_HELP} [binarized_mnist]")
    p.add_argument("--split", help="train, valid or test of a named data set; train, valid (the 10%% held out "
                   "from training) or all of a folder or file [test; valid for a folder or file]")
    p.add_argument("--data-root", help="folder holding the data sets [$DRAWZOO_DATA, else a per-user cache]")
    p.add_argument("--num-samples", "-k", type=int, default=100, help="importance samples K per image [100]")
    p.add_argument("--batch-size", type=int, help="images per vectorised pass [4096 // K]")
    p.add_argument("--limit", type=int, help="score a seeded random subset of this many images")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _train_model(argv: list[str]) -> str | None:
    """MODEL of ``drawzoo train MODEL ...``, if that is the command line."""
    if len(argv) >= 2 and argv[0] == "train" and not argv[1].startswith("-"):
        return argv[1]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(_train_model(argv))
        args = parser.parse_args(argv)
        if args.command == "train" and args.checkpoint is None:
            args.checkpoint = f"runs/{args.model}.pt"
        return args.func(args)
    except (DrawzooError, ValueError, TypeError, OSError) as e:
        print(f"drawzoo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("drawzoo: interrupted", file=sys.stderr)
        return 130
