"""The ``drawzoo`` command: list, train, sample, animate, evaluate and inpaint zoo models.

``drawzoo train MODEL --help`` lists MODEL's own config options (from its Config dataclass), so
third-party models get command-line options for free; the training options are made the same way
from `drawzoo.TrainConfig`. Errors print as one line; drawzoo's log messages print for people.

One module per command, each with its options: train.py, pictures.py (sample, animate, inpaint),
evaluate.py (eval); trained.py holds what the commands on a CHECKPOINT share (loading it:
`from_checkpoint`), options.py the options several commands share, console.py what they print.
"""

from __future__ import annotations

import argparse
import sys

from .. import pretrained
from ..config import as_dict
from ..registry import available, model_class
from .console import console_logging, run_program
from .evaluate import add_eval_command, cmd_eval
from .options import DATA_HELP, DEFAULT_DATA, add_config_options, given
from .pictures import add_animate_command, add_inpaint_command, add_sample_command, cmd_animate, cmd_inpaint, cmd_sample
from .train import EXIT_TIME_LIMIT, add_train_command, cmd_train, model_to_train

__all__ = ["main", "build_parser", "console_logging", "run_program", "add_config_options", "given", "DATA_HELP", "DEFAULT_DATA",
           "EXIT_TIME_LIMIT", "cmd_list", "cmd_pretrained", "cmd_train", "cmd_sample", "cmd_animate", "cmd_eval", "cmd_inpaint"]


def cmd_list(args) -> int:
    for name in available():
        cls = model_class(name)
        defaults = ", ".join(f"{k}={v}" for k, v in as_dict(cls.Config()).items())
        print(f"{name:12s} {cls.__module__}.{cls.__qualname__}({defaults})")
    return 0


def cmd_pretrained(args) -> int:
    tags = pretrained.manifest()
    for tag, e in tags.items():
        if args.model is None or e.model == args.model:
            default = " (default)" if e.default else ""
            config = ", ".join(f"{k}={v}" for k, v in e.config.items())
            print(f"{tag}{default}\n    {e.describe()}\n    {e.model}({config})\n    trained by: {e.command}")
    if not tags:
        print("no pretrained models installed")
    return 0


def build_parser(train_model: str | None = None) -> argparse.ArgumentParser:
    """The ``drawzoo`` parser; with `train_model`, ``train`` also takes that model's config options."""
    parser = argparse.ArgumentParser(prog="drawzoo", description="DRAW and other generative image models, "
                                     "as Pyro model/guide pairs in a registry.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="list the registered models and their default configs")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("pretrained", help="list the pretrained models: tag, data set, test figures, the recipe "
                       "that trains them", description="List the pretrained tags that CHECKPOINT of sample, "
                       "animate, eval and inpaint accepts (and drawzoo.load(pretrained=TAG)).")
    p.add_argument("model", metavar="MODEL", nargs="?", choices=available(), help="only this model's tags")
    p.set_defaults(func=cmd_pretrained)
    add_train_command(sub, train_model)
    add_sample_command(sub)
    add_animate_command(sub)
    add_eval_command(sub)
    add_inpaint_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``drawzoo`` command's exit status (`run_program`: errors one line, exit status 2)."""
    return run_program("drawzoo", _run, sys.argv[1:] if argv is None else list(argv))


def _run(argv: list[str]) -> int:
    parser = build_parser(model_to_train(argv))
    args = parser.parse_args(argv)
    with console_logging(verbose=not getattr(args, "quiet", False)):
        return args.func(args)
