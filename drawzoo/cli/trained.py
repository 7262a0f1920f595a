"""What the commands on a trained model (``sample``, ``animate``, ``eval``, ``inpaint``) share: the
CHECKPOINT argument (`checkpoint_command`), their checks (`checked`), the one place where they load
the model, from a file or a pretrained tag (`from_checkpoint`) and the images they read (`eval_data`, `some_images`)."""

from __future__ import annotations

import argparse

import torch

from .. import data as datasets
from .. import pretrained
from ..data.batching import collate_images, random_subset
from ..errors import ConfigError
from ..files import check_outputs
from ..registry import load
from ..training.loop import resolve_device
from .options import DEFAULT_DATA


def checkpoint_command(sub, name: str, help_text: str, func) -> argparse.ArgumentParser:
    """The subcommand `name` of the subparsers `sub`, run by `func`: CHECKPOINT, --seed and --device."""
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file written by `drawzoo train`, or a "
                   "pretrained tag (`drawzoo pretrained` lists them)")
    p.add_argument("--seed", type=int, default=0, help="random seed [0]")
    p.add_argument("--device", help="cpu, cuda, ... [cuda when available, else cpu]")
    p.set_defaults(func=func)
    return p


def checked(args, *positive: str, outputs: dict, inputs: dict | None = None) -> torch.device:
    """The device of a command on CHECKPOINT, once its options are checked (before any work): each
    option of `positive` >= 1 if given, and its `outputs` none of CHECKPOINT, the `inputs`, or each other."""
    for name in positive:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    check_outputs(outputs, {"CHECKPOINT": args.checkpoint, **(inputs or {})})
    return resolve_device(args.device)


def from_checkpoint(args, device: torch.device, *, seed: bool = True):
    """The model of CHECKPOINT on `device`, where every command on a trained model loads it; then,
    if `seed`, torch's global RNG seeded with --seed (what sample, animate and inpaint draw from;
    eval seeds a generator of its own and leaves the global one as it was)."""
    model = load(**pretrained.source(args.checkpoint)).to(device)
    if seed:
        torch.manual_seed(args.seed)
    return model


def eval_data(args, model):
    """The data set (--data, else a pretrained tag's own, else binarized MNIST), the split (--split,
    else test of a named set, valid of a folder or file) and the images that a command on
    CHECKPOINT reads, at the model's image shape."""
    tag = pretrained.source(args.checkpoint).get("pretrained")  # the one place that tells a file from a tag
    name = args.data or (pretrained.info(tag).data if tag is not None else DEFAULT_DATA)
    split = args.split or ("test" if name in datasets.DATASETS else "valid")
    return name, split, datasets.load(name, split, args.data_root, model.image_shape)


def some_images(args, model):
    """``(data set, split, images [--n, C, H, W])``: a seeded (--seed) random subset of `eval_data`'s."""
    name, split, data = eval_data(args, model)
    data = random_subset(data, args.n, seed=args.seed)
    return name, split, collate_images([data[i] for i in range(len(data))])
