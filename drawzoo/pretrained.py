"""Pretrained zoo models: trained weights named by tags, each file checked against one manifest.

A tag is ``MODEL.NAME`` (``draw.paper_attention_bmnist``). ``drawzoo.load("draw", pretrained="paper_attention_bmnist")``
(the full tag works too, and ``pretrained=True`` picks the model's default tag, or the one tag whose
config agrees with the config given) builds the model from the tag's config and loads its weights.

The manifest, ``drawzoo/weights/manifest.json`` (package data), is the one source of what a tag
is: its model and config, the data set and the recipe that trained it, its measured test figures,
and its weight file with size and sha256. A file is looked for, in order, in the package (small
weights ship with drawzoo), in ``$DRAWZOO_WEIGHTS`` (a folder: offline machines put files there),
and in ``cache_dir()/weights``; failing that it is downloaded from the tag's URL into that cache.
Its sha256 is checked on every load: a wrong or truncated file is a `PretrainedError` naming the
tag and the file, never a model with other weights.

Weight files are drawzoo checkpoints holding only the weights (read with ``weights_only=True``,
with every check of `drawzoo.checkpoints`), stored in the manifest's dtype (float16 halves them;
the manifest's figures are those of the stored weights).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
from functools import cache
from pathlib import Path

import torch

from .checkpoints import save_checkpoint
from .data import cache_dir
from .errors import PretrainedError
from .files import DigestMismatch, fetch, save_verified

WEIGHTS = Path(__file__).with_name("weights")  #: the weights that ship with drawzoo, and their manifest
MANIFEST = WEIGHTS / "manifest.json"
ENV = "DRAWZOO_WEIGHTS"  #: a folder of weight files, looked in before the cache and the download


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """One manifest entry: what a tag is and how well it does (nats per image)."""

    tag: str  #: ``MODEL.NAME``
    model: str  #: the registered model it is
    config: dict  #: its config (`drawzoo.load`'s keywords)
    data: str  #: the named data set it was trained and scored on
    recipe: str  #: the recipe that trains it (`drawzoo train --recipe RECIPE`)
    file: str  #: the weight file's name
    sha256: str  #: of the whole file
    size: int  #: the file's bytes
    dtype: str  #: how the weights are stored ("float16", "float32")
    test: dict  #: measured on the test split: neg_elbo (all images), nll, nll_samples, nll_images; ``*_se``: standard errors
    check: dict  #: neg_elbo on `images` test images drawn by `batching.random_subset(..., seed)`, evaluate seed 0
    trained: dict  #: the run: epochs, steps, minutes, machine, date
    url: str | None = None  #: where the file is downloaded from when it does not ship
    default: bool = False  #: the model's tag for ``pretrained=True``
    note: str = ""

    @property
    def name(self) -> str:
        """The tag without its model: ``paper_attention_bmnist``."""
        return self.tag.partition(".")[2]

    @property
    def command(self) -> str:
        return f"drawzoo train --recipe {self.recipe}"

    def describe(self) -> str:
        """One line: the data set and the test figures (with their standard errors where measured)."""
        t = self.test

        def se(key):
            return f" ± {t[key + '_se']:.2f}" if key + "_se" in t else ""
        nll = f", NLL {t['nll']:.2f}{se('nll')} (K={t['nll_samples']}, {t['nll_images']:,} images)" if "nll" in t else ""
        return f"{self.data}: test -ELBO {t['neg_elbo']:.2f}{se('neg_elbo')} nats ({t['images']:,} images){nll}"


@cache
def _read_manifest(path: Path, mtime_ns: int) -> dict[str, Pretrained]:
    entries = json.loads(path.read_text())
    return {e["tag"]: Pretrained(**e) for e in entries}


def manifest(path: Path | None = None) -> dict[str, Pretrained]:
    """Every tag in the manifest (`MANIFEST` unless `path`; empty if there is none), in its order."""
    path = MANIFEST if path is None else path
    if not path.is_file():
        return {}
    return _read_manifest(path, path.stat().st_mtime_ns)


def list_pretrained(model: str | None = None) -> list[str]:
    """The tags of every pretrained model, as `drawzoo.load`'s ``pretrained`` takes them.

    Args:
        model: only the tags of this model (a registered name, e.g. ``"draw"``); all if None.

    Returns:
        The tags, ``MODEL.NAME``, in the manifest's order, e.g.
        ``['vae.bmnist', 'draw.paper_attention_bmnist', ...]``.
    """
    return [tag for tag, e in manifest().items() if model is None or e.model == model]


def info(tag: str) -> Pretrained:
    """The manifest entry of `tag` (``MODEL.NAME``); `PretrainedError` listing the tags if unknown."""
    entries = manifest()
    if tag not in entries:
        raise PretrainedError(f"unknown pretrained tag {tag!r}; available: {', '.join(entries) or '(none)'}")
    return entries[tag]


def source(spec) -> dict:
    """`drawzoo.load`'s keywords for what a command line names as CHECKPOINT: ``{"checkpoint": spec}``
    for a file, ``{"pretrained": spec}`` for a tag; an error if it is neither, or both."""
    spec, tags = str(spec), manifest()
    exists = os.path.lexists(spec)
    if spec in tags and exists:
        raise PretrainedError(f"{spec!r} is both a file here and a pretrained tag: write ./{spec} for the file")
    if spec in tags:
        return {"pretrained": spec}
    if not exists:
        raise PretrainedError(f"{spec}: no such checkpoint file, nor a pretrained tag "
                              f"({', '.join(tags) or 'none installed'}; `drawzoo pretrained` lists them)")
    return {"checkpoint": spec}


def choose(name: str | None, pretrained: str | bool, config: dict) -> Pretrained:
    """The entry `drawzoo.load(name, pretrained=..., **config)` means (see the module's docstring)."""
    if pretrained is True:
        if name is None:
            raise PretrainedError("pretrained=True needs a model name: the default tag is the model's")
        tags = [e for e in manifest().values() if e.model == name]
        if not tags:
            raise PretrainedError(f"model {name!r} has no pretrained weights; pretrained models: "
                                  f"{', '.join(list_pretrained()) or '(none)'}")
        agree = [e for e in tags if all(e.config.get(k) == v for k, v in config.items())]
        default = [e for e in agree if e.default]
        if default or len(agree) == 1:
            return (default or agree)[0]
        if not agree:
            raise PretrainedError(f"no pretrained {name!r} has the config given ({_items(config)}); "
                                  f"its tags: {', '.join(e.tag for e in tags)}")
        raise PretrainedError(f"{len(agree)} pretrained {name!r} models have the config given: "
                              f"{', '.join(e.tag for e in agree)}; name one with pretrained=TAG")
    if not isinstance(pretrained, str) or not pretrained:
        raise PretrainedError(f"pretrained must be a tag (str) or True, got {pretrained!r}")
    tag = pretrained if "." in pretrained or name is None else f"{name}.{pretrained}"
    entry = info(tag)
    if name is not None and entry.model != name:
        raise PretrainedError(f"pretrained tag {tag!r} is a {entry.model!r} model, not {name!r}")
    return entry


def _items(config: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in config.items())


def weights_file(entry: Pretrained) -> Path:
    """The checked weight file of `entry`: shipped, in ``$DRAWZOO_WEIGHTS``, cached, or downloaded
    into the cache; `PretrainedError` naming the tag and the file if it is not the manifest's."""
    places = [WEIGHTS / entry.file]
    if os.environ.get(ENV):
        places.append(Path(os.environ[ENV]).expanduser() / entry.file)
    cached = cache_dir() / "weights" / entry.file
    places.append(cached)
    for path in places:
        if path.is_file():
            check_file(entry, path)
            return path
    if entry.url is None:
        raise PretrainedError(f"pretrained {entry.tag}: weight file {entry.file} not found in "
                              f"{', '.join(str(p.parent) for p in places)}, and the manifest gives no URL")
    _download(entry, cached)
    return cached


def check_file(entry: Pretrained, path: Path) -> None:
    """`PretrainedError` unless `path` has `entry`'s size and sha256."""
    size = path.stat().st_size
    if size != entry.size:
        raise PretrainedError(f"pretrained {entry.tag}: {path} has {size:,} bytes, the manifest says {entry.size:,} "
                              "(truncated or another file?); delete it to fetch it again")
    if file_sha256(path) != entry.sha256:
        raise PretrainedError(f"pretrained {entry.tag}: {path} does not match the manifest's sha256 (corrupted or "
                              "another file?); delete it to fetch it again")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _download(entry: Pretrained, dest: Path) -> None:
    """`entry`'s file from its URL to `dest`, kept only if its size and sha256 are the manifest's."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_verified(fetch(entry.url), dest, entry.sha256, entry.size, f"pretrained {entry.tag}")
    except DigestMismatch as e:
        raise PretrainedError(f"pretrained {entry.tag}: {entry.url} is not the manifest's file ({e.size:,} bytes"
                              f"{', more than' if e.size > entry.size else ''} expected {entry.size:,}, or another "
                              "sha256); nothing kept") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise PretrainedError(f"pretrained {entry.tag}: downloading {entry.url} failed ({e}); on an offline "
                              f"machine put {entry.file} in ${ENV} or {dest.parent}") from e


def save_weights(model, path, dtype: torch.dtype = torch.float16) -> Path:
    """Write `model`'s weights alone as a checkpoint `drawzoo.load(checkpoint=...)` reads, floating
    point ones stored as `dtype`."""
    return save_checkpoint(path, model, weights_dtype=dtype)
