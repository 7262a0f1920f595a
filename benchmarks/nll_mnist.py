"""Train every requested zoo model on statically binarized MNIST and score it on the test split.

    python benchmarks/nll_mnist.py                      # --preset quick: <= 15 min on 2 CPU cores
    python benchmarks/nll_mnist.py --preset paper --device cuda
    python benchmarks/nll_mnist.py --models draw,vae,mymodel
    python benchmarks/nll_mnist.py --iwae               # + attention DRAW trained on the IWAE bound

Prints one markdown table (negative ELBO and importance-sampled NLL on the test split, in nats
per image, with the published number beside it where one exists), and writes it as JSON with a
grid of samples per model to --out. Models are picked by registry name and seen only through
`drawzoo.load` / `drawzoo.train` / `drawzoo.evaluate`; a registered name that no preset
configures runs with its own defaults and the preset's training budget.

Every row trains on the negative ELBO (objective "elbo" of `drawzoo.objectives`) except the
opt-in ones of ``--iwae``: the preset's IWAE rows (objective "iwae": RenyiELBO(alpha=0) with K
vectorised particles), each after the rows of its model and given about the wall time of its
ELBO twin. The table's objective column says which.

Training uses the train split (50k); the weights with the best validation negative ELBO
(on a seeded random subset of the valid split) are the ones scored on the test split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
import time
from pathlib import Path

import torch

import drawzoo
from drawzoo.batching import random_subset
from drawzoo.cli import console_logging
from drawzoo.config import as_dict
from drawzoo.data import binarized_mnist
from drawzoo.objectives import OBJECTIVES, make_elbo
from drawzoo.pictures import save_grid


@dataclasses.dataclass(frozen=True)
class Run:
    """One row of the table: a registered model, its config and its training budget."""

    label: str
    model: str
    config: dict = dataclasses.field(default_factory=dict)
    epochs: int = 1
    max_steps: int | None = None  #: stop within an epoch (a fractional epoch count)
    batch_size: int = 100
    lr: float = 1e-3
    lr_min: float | None = None  #: cosine-anneal the learning rate down to this over the run
    objective: str = "elbo"  #: a name of drawzoo.objectives.OBJECTIVES
    particles: int = 1  #: its K particles per training image
    num_samples: int | None = None  #: K importance samples per test image, if not the preset's
    reference: str = ""  #: the published figure for this model, with how it was measured


@dataclasses.dataclass(frozen=True)
class Preset:
    runs: tuple[Run, ...]
    default: Run  #: budget for a registered model this preset does not name
    num_samples: int  #: K importance samples per test image
    valid_limit: int | None  #: validate on a seeded random subset of this many valid images
    test_limit: int | None = None  #: score a seeded random subset (None: the full test split)
    iwae: tuple[Run, ...] = ()  #: opt-in rows (--iwae) trained on the IWAE bound


PAPER_ATTENTION = "<= 80.97 (DRAW paper, T=64, -ELBO)"
PAPER_NO_ATTENTION = "<= 87.40 (DRAW paper, T=64, -ELBO)"
PUBLISHED_VAE = "89.78 (one-layer VAE, IS K=200; pythae)"

# The quick preset gives DRAW most of the 15 minutes: on 2 CPU cores DRAW processes ~10x fewer
# images per second than the VAE while learning about as much per epoch. Its attention DRAW reads
# and writes 12 x 12 grids (the paper's SVHN sizes): at T=6 and a few CPU minutes, the paper's
# 2 x 2 read (8 numbers per glimpse) learns far more slowly (README: "Making attention DRAW learn").
QUICK_DRAW = dict(T=6, hidden_dim=256, latent_dim=50)
QUICK_ATTENTION = dict(QUICK_DRAW, read_size=12, write_size=12)
SMOKE_ATTENTION = dict(T=2, hidden_dim=16, latent_dim=4, read_size=2, write_size=3)
PRESETS = {
    "quick": Preset(
        runs=(
            Run("DRAW (attention)", "draw", QUICK_ATTENTION, epochs=5, lr=3e-3, lr_min=1e-4, reference=PAPER_ATTENTION),
            Run("DRAW (no attention)", "draw", dict(QUICK_DRAW, attention=False), epochs=2, max_steps=750, lr=3e-3,
                reference=PAPER_NO_ATTENTION),
            # scoring DRAW costs ~15x more per sample: it gets K=20, the VAE K=200 (a smaller K
            # gives a looser bound, so this can only favour the VAE)
            Run("VAE", "vae", {}, epochs=25, lr=2e-3, lr_min=1e-4, num_samples=200, reference=PUBLISHED_VAE),
        ),
        default=Run("", "", epochs=10),
        num_samples=20, valid_limit=2000,
        # an IWAE K=5 step of this DRAW takes ~3x an ELBO step on 2 CPU cores (2.7x and 3.1x, medians of
        # 12 alternating steps, twice): 800 steps take about the wall time of the ELBO row's 2,500
        iwae=(Run("DRAW (attention, IWAE K=5)", "draw", QUICK_ATTENTION, epochs=2, max_steps=800, lr=3e-3,
                  lr_min=1e-4, objective="iwae", particles=5, reference=PAPER_ATTENTION),),
    ),
    "paper": Preset(
        runs=(
            Run("DRAW (attention)", "draw", dict(T=64, hidden_dim=256, latent_dim=100, read_size=2, write_size=5),
                epochs=300, batch_size=100, lr=1e-3, reference=PAPER_ATTENTION),
            Run("DRAW (no attention)", "draw", dict(T=64, hidden_dim=256, latent_dim=100, attention=False),
                epochs=300, batch_size=100, lr=1e-3, reference=PAPER_NO_ATTENTION),
            Run("VAE", "vae", {}, epochs=1000, batch_size=100, lr=1e-3, reference=PUBLISHED_VAE),
        ),
        default=Run("", "", epochs=300, batch_size=100, lr=1e-3),
        num_samples=1000, valid_limit=None,
    ),
    # a tiny end-to-end check of this script (tests use it): not a benchmark
    "smoke": Preset(
        runs=(
            Run("DRAW (attention)", "draw", SMOKE_ATTENTION, epochs=1, max_steps=3, batch_size=50, lr=3e-3,
                reference=PAPER_ATTENTION),
            Run("DRAW (no attention)", "draw", dict(T=2, hidden_dim=16, latent_dim=4, attention=False),
                epochs=1, max_steps=3, batch_size=50, lr=3e-3, reference=PAPER_NO_ATTENTION),
            Run("VAE", "vae", dict(hidden_dim=16, latent_dim=4), epochs=1, max_steps=3, batch_size=50),
        ),
        default=Run("", "", epochs=1, max_steps=3, batch_size=50),
        num_samples=3, valid_limit=100, test_limit=200,
        iwae=(Run("DRAW (attention, IWAE K=3)", "draw", SMOKE_ATTENTION, epochs=1, max_steps=3, batch_size=50,
                  lr=3e-3, objective="iwae", particles=3, reference=PAPER_ATTENTION),),
    ),
}


def select_runs(preset: Preset, models: list[str] | None, iwae: bool = False) -> list[Run]:
    """The preset's runs of the requested registry names (all of them if None), in that order;
    with `iwae`, each model's IWAE rows after its other ones."""
    if models is None:
        models = list(dict.fromkeys(r.model for r in preset.runs))
    known = drawzoo.available()
    runs = []
    for name in models:
        if name not in known:
            raise drawzoo.UnknownModelError(f"unknown model {name!r}; available: {', '.join(known)}")
        runs += [r for r in preset.runs if r.model == name] or [
            dataclasses.replace(preset.default, label=name, model=name)]
        runs += [r for r in preset.iwae if r.model == name and iwae]
    if iwae and not any(r.objective == "iwae" for r in runs):
        raise drawzoo.DrawzooError(f"--iwae: this preset has no IWAE row for {', '.join(models)} "
                                   f"(it has {', '.join(r.label for r in preset.iwae) or 'none'})")
    return runs


def config_summary(model) -> str:
    defaults = as_dict(type(model.config)())
    changed = {k: v for k, v in as_dict(model.config).items() if k == "T" or v != defaults.get(k)}
    return ", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults"


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def benchmark(run: Run, data: dict, preset: Preset, out: Path, *, seed: int, device, resume: bool) -> dict:
    """Train `run`, keep the weights with the best validation loss, score them on the test split."""
    print(f"\n== {run.label}: {run.model} {run.config} ==", flush=True)
    checkpoint, best = out / f"{slug(run.label)}.pt", out / f"{slug(run.label)}.best.pt"
    if not resume:
        for path in (checkpoint, best):
            path.unlink(missing_ok=True)
    torch.manual_seed(seed)
    model = drawzoo.load(run.model, **run.config)
    started = time.perf_counter()
    history = drawzoo.train(model, data["train"], data["valid"], epochs=run.epochs, batch_size=run.batch_size,
                            lr=run.lr, lr_min=run.lr_min, max_steps=run.max_steps, checkpoint=checkpoint, best=best,
                            seed=seed, device=device, elbo=make_elbo(run.objective, run.particles))
    train_seconds = time.perf_counter() - started
    scored = drawzoo.load(checkpoint=best).to(model.device)
    started = time.perf_counter()
    result = drawzoo.evaluate(scored, data["test"], num_samples=run.num_samples or preset.num_samples, seed=seed,
                              progress=True)
    eval_seconds = time.perf_counter() - started
    save_grid(scored.generate(64)[-1].cpu(), out / f"samples_{slug(run.label)}.png", nrow=8)
    row = {
        "label": run.label, "model": run.model, "config": as_dict(model.config),
        "config_summary": config_summary(model), "parameters": model.num_parameters(),
        "epochs": history[-1]["epoch"] if history else 0, "best_valid_neg_elbo": min(
            (h["valid_loss"] for h in history if h["valid_loss"] is not None), default=None),
        "train_seconds": train_seconds, "eval_seconds": eval_seconds,
        "test_neg_elbo": result["neg_elbo"], "test_nll": result["nll"], "num_samples": result["num_samples"],
        "test_images": result["num_images"], "reference": run.reference,
        "batch_size": run.batch_size, "lr": run.lr, "objective": run.objective, "particles": run.particles,
    }
    print(f"{run.label}: test -ELBO {row['test_neg_elbo']:.2f}, NLL {row['test_nll']:.2f} nats "
          f"(K={row['num_samples']}, {row['test_images']} images)", flush=True)
    return row


def objective_summary(row: dict) -> str:
    """``elbo`` or ``iwae (K=5)``: what the row trained on."""
    return row["objective"] + (f" (K={row['particles']})" if row["particles"] > 1 else "")


def table(rows: list[dict]) -> str:
    lines = ["| model | config | objective | parameters | epochs | train time | test -ELBO | test NLL (K) "
             "| published |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['config_summary']} | {objective_summary(r)} | {r['parameters']:,} | "
                     f"{r['epochs']:.3g} | {r['train_seconds'] / 60:.1f} min | {r['test_neg_elbo']:.2f} | "
                     f"{r['test_nll']:.2f} ({r['num_samples']}) | {r['reference'] or '-'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                        help="model sizes and training budget [quick: <= 15 min on 2 CPU cores]")
    parser.add_argument("--models", help="comma-separated registry names [all of the preset's]")
    parser.add_argument("--iwae", action="store_true", help="also train the preset's IWAE rows of these models "
                        f"(objective iwae: {OBJECTIVES['iwae'].help}), each in about the wall time of its ELBO "
                        f"twin [quick: {', '.join(r.label for r in PRESETS['quick'].iwae)}; not run by default]")
    parser.add_argument("--out", default=None, help="output folder [bench_out/PRESET]")
    parser.add_argument("--data-root", help="folder holding binarized_mnist/ [$DRAWZOO_DATA, else a per-user cache]")
    parser.add_argument("--num-samples", type=int, help="importance samples K per test image, for every model "
                        "[preset's]")
    parser.add_argument("--test-limit", type=int, help="score a seeded random subset of the test split "
                        "[the full 10,000]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cpu, cuda, ... [cuda when available]")
    parser.add_argument("--resume", action="store_true", help="resume from the checkpoints in --out "
                        "instead of starting afresh")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    preset = dataclasses.replace(preset, test_limit=args.test_limit or preset.test_limit)
    if args.num_samples:
        preset = dataclasses.replace(preset, num_samples=args.num_samples,
                                     runs=tuple(dataclasses.replace(r, num_samples=None) for r in preset.runs))
    out = Path(args.out or f"bench_out/{args.preset}")
    try:
        runs = select_runs(preset, args.models.split(",") if args.models else None, iwae=args.iwae)
        started = time.perf_counter()
        data = {split: binarized_mnist(args.data_root, split) for split in ("train", "valid", "test")}
    except drawzoo.DrawzooError as e:
        print(f"nll_mnist: error: {e}", file=sys.stderr)
        return 2
    # the test split is sorted by label: subsets are seeded random samples, never the first rows
    data["valid"] = random_subset(data["valid"], preset.valid_limit, seed=args.seed)
    data["test"] = random_subset(data["test"], preset.test_limit, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    with console_logging():  # each epoch's figures
        rows = [benchmark(run, data, preset, out, seed=args.seed, device=args.device, resume=args.resume)
                for run in runs]
    total = time.perf_counter() - started
    device = drawzoo.training.resolve_device(args.device)
    summary = (f"binarized MNIST test split ({rows[0]['test_images']:,} images), preset {args.preset!r}, "
               f"{device}, {torch.get_num_threads()} threads, {total / 60:.1f} min in all")
    text = table(rows)
    print(f"\n{summary}\n\n{text}\n")
    (out / "results.json").write_text(json.dumps({"summary": summary, "preset": args.preset, "rows": rows},
                                                 indent=2) + "\n")
    (out / "results.md").write_text(f"{summary}\n\n{text}\n")
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and samples_*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
