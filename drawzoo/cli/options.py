"""Options that several ``drawzoo`` commands share: the fields of a config dataclass as options
(`add_config_options`, read back by `given`), and the data and mask options with their help."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from .. import data as datasets
from ..config import optional_type
from ..data import masks

DATA_HELP = (f"a data set ({', '.join(datasets.DATASETS)}), a folder of PNG/JPEG pictures (converted to grey "
             "or colour, resized and centre-cropped to --image-shape; without it, the pictures' own shape), or a "
             ".npy/.npz file of images [N, C, H, W] or [N, H, W]")
DEFAULT_DATA = "binarized_mnist"  #: what `eval`, `inpaint` and `animate --reconstruct` read without --data
MASK_HELP = (f"which pixels are missing: {', '.join(masks.NAMES)} (top: the top half missing, ...; random:P: "
             "each pixel missing with probability P)")  #: --mask of `eval` and `inpaint`
DATA_ROOT_HELP = "folder holding the data sets [$DRAWZOO_DATA, else a per-user cache]"  #: --data-root


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
            if len(args) == 2 and args[1] is Ellipsis:  # tuple[int, ...]: one or more values
                group.add_argument(*_flag(field.name), nargs="+", type=args[0], metavar=field.name.upper(), **kw)
                continue
            group.add_argument(*_flag(field.name), nargs=len(args), type=args[0],
                               metavar=tuple(f"{field.name.upper()}{i}" for i in range(len(args)))
                               if field.name != "image_shape" else ("C", "H", "W"), **kw)
        else:
            group.add_argument(*_flag(field.name), type=hint, metavar=field.name.upper(),
                               choices=field.metadata.get("choices"), **kw)


def given(args: argparse.Namespace, dest: str = "config") -> dict:
    """The options of `add_config_options(..., dest)` given on the command line, as ``{field: value}``."""
    return {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith(f"{dest}.")}


# -- data ---------------------------------------------------------------------------------------


def data_options(p: argparse.ArgumentParser) -> None:
    """--data, --split and --data-root: the images that `eval`, `inpaint` and `animate --reconstruct` read
    (`drawzoo.cli.trained.eval_data`)."""
    p.add_argument("--data", help=f"{DATA_HELP} [{DEFAULT_DATA}]")
    p.add_argument("--split", help="train, valid or test of a named data set; train, valid (the 10%% held out "
                   "from training) or all of a folder or file [test; valid for a folder or file]")
    p.add_argument("--data-root", help=DATA_ROOT_HELP)


def data_path(data: str | None) -> str | None:
    """`--data`'s file or folder; None for a named data set."""
    return None if data is None or data in datasets.DATASETS else data
