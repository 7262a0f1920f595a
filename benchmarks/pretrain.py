"""Export a trained run as a pretrained tag: its weights into drawzoo/weights/, its figures into the manifest.

    python benchmarks/pretrain.py TAG --recipe RECIPE --run RUN.pt [--best RUN.best.pt] [--default]
        [--nll-samples 1000] [--nll-images 1000] [--url URL] [--note TEXT]

Takes the best-validation weights of a `drawzoo train --recipe RECIPE --checkpoint RUN.pt` run
(``RUN.best.pt``), checks that they are the recipe's model and config, writes them as TAG's
weight file (float16 unless --dtype float32), then loads that file as a user would
(``drawzoo.load(pretrained=TAG)``) and measures on the recipe's data set's test split: the
negative ELBO on every test image (K=1, seed 0), the importance-sampled NLL with
``--nll-samples`` on a seeded subset of ``--nll-images``, and the manifest's check figure (the
negative ELBO on `CHECK_IMAGES` seeded test images, K=1, seed 0, which tests/test_pretrained.py
reproduces). The tag's entry in drawzoo/weights/manifest.json is replaced (or added).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch

import drawzoo
from drawzoo import data as datasets
from drawzoo import pretrained
from drawzoo.data.batching import random_subset
from drawzoo.checkpoints import read_checkpoint
from drawzoo.cli import run_program
from drawzoo.files import check_outputs, write_output
from drawzoo.config import as_dict

CHECK_IMAGES = 500  #: test images of the manifest's check figure
CHECK_SEED = 0


def check_figure(model, test) -> float:
    """The manifest's check figure: negative ELBO (nats) on `CHECK_IMAGES` seeded test images."""
    subset = random_subset(test, CHECK_IMAGES, seed=CHECK_SEED)
    return drawzoo.evaluate(model, subset, num_samples=1, seed=0)["neg_elbo"]


def test_split(entry: pretrained.Pretrained, root=None):
    return datasets.load(entry.data, "test", root, tuple(entry.config["image_shape"]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tag", help="MODEL.NAME")
    p.add_argument("--recipe", required=True, help="the recipe the run trained (its command goes into the manifest)")
    p.add_argument("--run", required=True, help="the run's checkpoint (its history: epochs, steps, time)")
    p.add_argument("--best", help="the weights to ship [RUN.best.pt]")
    p.add_argument("--default", action="store_true", help="the model's default tag (pretrained=True)")
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    p.add_argument("--nll-samples", type=int, default=1000)
    p.add_argument("--nll-images", type=int, default=1000)
    p.add_argument("--url", help="where the file can be downloaded from (else it ships in the package)")
    p.add_argument("--note", default="")
    p.add_argument("--data-root")
    return run_program("pretrain", export, p.parse_args(argv))


def export(args) -> int:
    model_name, _, name = args.tag.partition(".")
    recipe = drawzoo.load_recipe(args.recipe)
    best = Path(args.best or Path(args.run).with_suffix(".best.pt"))
    file = pretrained.WEIGHTS / f"{args.tag}.pt"
    # the tag's weight file replaces the tag's own, never the run it is made from
    check_outputs({f"{args.tag}'s weight file": file}, {"--run": args.run, "--best": best}, checkpoints=True)
    model = drawzoo.load(model_name, checkpoint=best, **recipe.config)
    history = read_checkpoint(args.run)["progress"]["history"]
    best_epoch = read_checkpoint(best).get("epoch")

    file.parent.mkdir(exist_ok=True)
    pretrained.save_weights(model, file, getattr(torch, args.dtype))
    entries = [e for e in pretrained.manifest().values() if e.tag != args.tag]
    if args.default:
        entries = [dataclasses.replace(e, default=False) if e.model == model_name else e for e in entries]
    entry = pretrained.Pretrained(
        tag=args.tag, model=model_name, config=as_dict(model.config), data=recipe.data.train,
        recipe=args.recipe, file=file.name, sha256=pretrained.file_sha256(file), size=file.stat().st_size,
        dtype=args.dtype, test={}, check={}, url=args.url, default=args.default, note=args.note,
        trained={"epochs": len(history), "best_epoch": best_epoch, "steps": history[-1]["step"] if history else 0,
                 "minutes": round(sum(r.get("seconds") or 0 for r in history) / 60, 1),
                 "valid_neg_elbo": [round(r["valid_loss"], 3) for r in history if r.get("valid_loss") is not None],
                 "machine": f"{os.cpu_count()} CPU cores" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
                 "date": datetime.date.today().isoformat()})
    write_manifest([*entries, entry])  # provisional, so that the file loads by its tag

    shipped = drawzoo.load(pretrained=args.tag)  # the stored (rounded) weights, as a user gets them
    test = test_split(entry, args.data_root)
    started = time.perf_counter()
    elbo = drawzoo.evaluate(shipped, test, num_samples=1, seed=0, progress=True)
    nll = drawzoo.evaluate(shipped, random_subset(test, args.nll_images, seed=0), num_samples=args.nll_samples,
                           seed=0, progress=True)
    check = check_figure(shipped, test)
    entry = dataclasses.replace(entry, test={
        "neg_elbo": round(elbo["neg_elbo"], 3), "images": elbo["num_images"], "nll": round(nll["nll"], 3),
        "nll_samples": args.nll_samples, "nll_images": nll["num_images"],
        "nll_neg_elbo": round(nll["neg_elbo"], 3)},
        check={"neg_elbo": round(check, 3), "images": CHECK_IMAGES, "seed": CHECK_SEED})
    write_manifest([*entries, entry])
    print(f"{args.tag}: {entry.describe()}; check {check:.3f} on {CHECK_IMAGES} images; "
          f"{file} {entry.size:,} bytes ({time.perf_counter() - started:.0f} s of scoring)")
    return 0


def write_manifest(entries, path=None) -> None:
    """The manifest at `path` (the package's by default) as `entries`, in the order it had."""
    path = pretrained.MANIFEST if path is None else Path(path)
    order = {tag: i for i, tag in enumerate(pretrained.manifest(path))}
    entries = sorted(entries, key=lambda e: order.get(e.tag, len(order)))
    write_output(path, json.dumps([dataclasses.asdict(e) for e in entries], indent=1) + "\n", "manifest")


if __name__ == "__main__":
    sys.exit(main())
