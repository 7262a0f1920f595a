"""Train every requested zoo model on binarized MNIST and score it on the test split.

    python benchmarks/nll_mnist.py                      # --preset quick: <= 15 min on 2 CPU cores
    python benchmarks/nll_mnist.py --preset paper --device cuda
    python benchmarks/nll_mnist.py --models draw,vae,mymodel
    python benchmarks/nll_mnist.py --iwae               # + attention DRAW trained on the IWAE bound
    python benchmarks/nll_mnist.py --preset literature  # the IWAE and DRAW papers' rows, ~51 min on 2 cores

Prints one markdown table (negative ELBO and importance-sampled NLL on the test split, in nats
per image, the conditional NLL of the bottom half of each test image given its top half,
-log p(x_miss | x_obs) as `drawzoo.evaluate(..., mask="bottom")` estimates it, and the published
number beside them where one exists), and writes it as JSON with a grid of samples per model to --out. Models are picked by registry name and seen only through
`drawzoo.load` / `drawzoo.train` / `drawzoo.evaluate`.

A preset is a folder of recipes, benchmarks/recipes/PRESET/*.toml (`drawzoo.training.recipes`): one per
row, in file-name order, each with a ``[benchmark]`` table (`Scoring`: the row's label, the
published figure, K importance samples per test image, a test subset). ``drawzoo train --recipe``
trains the same weights from the same file. The preset's recipe without a model, default.toml,
trains a registered name that no other recipe names, with the model's default config.

Each row trains on its recipe's objective (the negative ELBO, objective "elbo" of
`drawzoo.evaluation.objectives`, unless it says otherwise); the recipes with objective "iwae" (RenyiELBO(alpha=0)
with K vectorised particles) are opt-in rows of ``--iwae``, each after the rows of its model and
given about the wall time of its ELBO twin, unless their ``[benchmark]`` table says ``opt_in =
false`` (the literature preset's IWAE rows). The table's objective column says which.

Each row trains on its recipe's data set (``[data] train``: an MNIST-sized named set,
``binarized_mnist`` unless it says otherwise; e.g. ``mnist``, dynamically binarized: a fresh draw
each epoch, its valid and test splits one fixed draw, `drawzoo.data.binarization`), on the train
split (50k); the weights with the best validation negative ELBO (on a seeded random subset of that
set's valid split) are the ones scored on its test split. The table's data column says which set
and binarization each row used.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import torch

import drawzoo
from drawzoo.data.batching import random_subset
from drawzoo.checkpoints import read_checkpoint
from drawzoo.cli import console_logging, run_program
from drawzoo.config import as_dict, build_config, check_fields, check_positive, param
from drawzoo.files import check_outputs, write_output
from drawzoo import data as datasets
from drawzoo.evaluation.objectives import OBJECTIVES
from drawzoo.figures.pictures import save_grid
from drawzoo.training.recipes import Recipe, load_recipe

RECIPES = Path(__file__).resolve().parent / "recipes"
MASK = "bottom"  #: the missing pixels of the conditional NLL (`drawzoo.data.masks`): the bottom half
# a preset: a folder of recipes with a default.toml (paper_samples/, the paper's other data sets, is none)
PRESETS = sorted(p.parent.name for p in RECIPES.glob("*/default.toml"))
MNIST_SHAPE = (1, 28, 28)
MNIST_SETS = [name for name, shape in datasets.IMAGE_SHAPES.items() if shape == MNIST_SHAPE]


@dataclasses.dataclass(frozen=True)
class Scoring:
    """How a row is labelled and scored: a recipe's ``[benchmark]`` table."""

    label: str | None = param(None, "the row's label [the model's name]")
    reference: str = param("", "the published figure for this model, with how it was measured")
    num_samples: int = param(100, "K importance samples per test image (drawzoo eval -k)")
    test_limit: int | None = param(None, "score a seeded random subset of the test split (drawzoo eval --limit) "
                                   "[all 10,000]")
    opt_in: bool | None = param(None, "run the row only with --iwae [true for a recipe with objective iwae]")

    def __post_init__(self):
        check_fields(self, "benchmark")
        check_positive(self, "num_samples", "test_limit", kind="benchmark")


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the table: a recipe, and how to score what it trains."""

    recipe: Recipe
    scoring: Scoring

    @property
    def label(self) -> str:
        return self.scoring.label or self.recipe.model

    @property
    def train(self) -> drawzoo.TrainConfig:
        return self.recipe.train_config()


@dataclasses.dataclass(frozen=True)
class Preset:
    rows: tuple[Row, ...]  #: the recipes with a model, IWAE ones included
    default: Row  #: the recipe without one: the budget for a registered model no row names


def read_row(path) -> Row:
    """The recipe at `path` and its ``[benchmark]`` table; the script scores MNIST-sized named sets only."""
    recipe = load_recipe(path)
    try:
        scoring = build_config(Scoring, recipe.benchmark, kind="benchmark")
    except drawzoo.DrawzooError as e:
        raise drawzoo.RecipeError(f"{path}: {e}") from None
    if datasets.IMAGE_SHAPES.get(recipe.data.train) != MNIST_SHAPE or recipe.data.valid is not None:
        raise drawzoo.RecipeError(f"{path}: this script trains on a named MNIST-sized data set ("
                                  f"{', '.join(MNIST_SETS)}) and validates on its valid split, the recipe's "
                                  f"[data] says {recipe.data}")
    return Row(recipe, scoring)


def load_preset(name: str) -> Preset:
    """The rows of benchmarks/recipes/`name`/*.toml, in file-name order, and its default.toml."""
    rows = [read_row(path) for path in sorted((RECIPES / name).glob("*.toml"))]
    defaults = [r for r in rows if r.recipe.model is None]
    if len(defaults) != 1:
        raise drawzoo.RecipeError(f"{RECIPES / name}: needs exactly one recipe without a model (default.toml), "
                                  f"has {len(defaults)}")
    return Preset(tuple(r for r in rows if r.recipe.model is not None), defaults[0])


def is_iwae(row: Row) -> bool:
    return row.train.objective == "iwae"


def is_opt_in(row: Row) -> bool:
    """Whether the row runs only with ``--iwae``: its ``opt_in``, else whether it is an IWAE row."""
    return is_iwae(row) if row.scoring.opt_in is None else row.scoring.opt_in


def select_runs(preset: Preset, models: list[str] | None, iwae: bool = False) -> list[Row]:
    """The preset's rows of the requested registry names (all of them if None), in that order;
    with `iwae`, each model's opt-in (IWAE) rows after its other ones."""
    if models is None:
        models = list(dict.fromkeys(r.recipe.model for r in preset.rows))
    known = drawzoo.available()
    runs = []
    for name in models:
        if name not in known:
            raise drawzoo.UnknownModelError(f"unknown model {name!r}; available: {', '.join(known)}")
        runs += [r for r in preset.rows if r.recipe.model == name and not is_opt_in(r)] or [
            dataclasses.replace(preset.default, recipe=dataclasses.replace(preset.default.recipe, model=name))]
        runs += [r for r in preset.rows if r.recipe.model == name and is_opt_in(r) and iwae]
    if iwae and not any(is_opt_in(r) for r in runs):
        iwae_rows = [r.label for r in preset.rows if is_opt_in(r)]
        raise drawzoo.DrawzooError(f"--iwae: this preset has no IWAE row for {', '.join(models)} "
                                   f"(it has {', '.join(iwae_rows) or 'none'})")
    return runs


def config_summary(model) -> str:
    defaults = as_dict(type(model.config)())
    changed = {k: v for k, v in as_dict(model.config).items() if k == "T" or v != defaults.get(k)}
    return ", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults"


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def load_splits(name: str, root) -> dict:
    """The train, valid and test splits of the named data set `name`."""
    return {split: datasets.load(name, split, root) for split in ("train", "valid", "test")}


def protocol(name: str, data: dict) -> str:
    """What a row's data column says: the set's name, and its binarization unless it is stored binary
    (``mnist, dynamic binarization``; ``binarized_mnist``)."""
    binarize = data["train"].binarize
    return name if binarize is None else f"{name}, {binarize} binarization"


def benchmark(run: Row, data: dict, out: Path, *, device, resume: bool, seed: int | None = None) -> dict:
    """Train `run`'s recipe (as ``drawzoo train --recipe`` does), keep the weights with the best
    validation loss, score them on the test split (as ``drawzoo eval`` does)."""
    recipe, scoring = run.recipe, run.scoring
    print(f"\n== {run.label}: {recipe.model} {recipe.config} ==", flush=True)
    checkpoint, best = out / f"{slug(run.label)}.pt", out / f"{slug(run.label)}.best.pt"
    scored_file = out / f"{slug(run.label)}.json"  # the row as last scored, with the run it scored
    if not resume:
        for path in (checkpoint, best, scored_file):
            path.unlink(missing_ok=True)
    config = recipe.train_config(best=str(best), device=device, **({} if seed is None else {"seed": seed}))
    torch.manual_seed(config.seed)  # the initial weights
    model = drawzoo.load(recipe.model, **recipe.config)
    valid = random_subset(data["valid"], recipe.data.valid_limit, seed=config.seed)
    started = time.perf_counter()
    history = drawzoo.train(model, data["train"], valid, config, checkpoint=checkpoint)
    train_seconds = time.perf_counter() - started
    test = random_subset(data["test"], scoring.test_limit, seed=config.seed)
    # what the figures depend on besides the code: the run's weights, the scoring, the test images, the device
    scored_by = {"run_sha256": read_checkpoint(checkpoint)["sha256"], "scoring": dataclasses.asdict(scoring),
                 "test_sha256": hashlib.sha256(test[:].numpy().tobytes()).hexdigest(), "device": str(model.device)}
    if scored_file.exists():
        row = json.loads(scored_file.read_text())
        if all(row.get(key) == value for key, value in scored_by.items()):
            print(f"{run.label}: already trained and scored ({scored_file}), as before", flush=True)
            return row
    scored = drawzoo.load(checkpoint=best).to(model.device)
    started = time.perf_counter()
    result = drawzoo.evaluate(scored, test, num_samples=scoring.num_samples, seed=config.seed, progress=True,
                              mask=MASK)
    eval_seconds = time.perf_counter() - started
    save_grid(scored.generate(64)[-1].cpu(), out / f"samples_{slug(run.label)}.png", nrow=8)
    row = {
        "label": run.label, "model": recipe.model, "recipe": recipe.path, "config": as_dict(model.config),
        "config_summary": config_summary(model), "parameters": model.num_parameters(),
        "epochs": history[-1]["epoch"] if history else 0, "best_valid_neg_elbo": min(
            (h["valid_loss"] for h in history if h["valid_loss"] is not None), default=None),
        "train_seconds": train_seconds, "eval_seconds": eval_seconds,
        "test_neg_elbo": result["neg_elbo"], "test_nll": result["nll"], "num_samples": result["num_samples"],
        "test_cond_nll": result["cond_nll"], "test_nll_observed": result["nll_observed"], "mask": MASK,
        "test_images": result["num_images"], "reference": scoring.reference,
        "data": recipe.data.train, "protocol": protocol(recipe.data.train, data),
        "batch_size": config.batch_size, "lr": config.lr, "objective": config.objective, "particles": config.particles,
        **scored_by,
    }
    write_output(scored_file, json.dumps(row, indent=2) + "\n")
    print(f"{row['label']}: test -ELBO {row['test_neg_elbo']:.2f}, NLL {row['test_nll']:.2f}, conditional NLL "
          f"of the {MASK} half {row['test_cond_nll']:.2f} nats (K={row['num_samples']}, {row['test_images']} images)",
          flush=True)
    return row


def objective_summary(row: dict) -> str:
    """``elbo`` or ``iwae (K=5)``: what the row trained on."""
    return row["objective"] + (f" (K={row['particles']})" if row["particles"] > 1 else "")


def table(rows: list[dict]) -> str:
    lines = ["| model | config | objective | data | parameters | epochs | train time | test -ELBO | test NLL (K) "
             "| test cond. NLL, bottom half missing (K) | published |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['config_summary']} | {objective_summary(r)} | {r['protocol']} | "
                     f"{r['parameters']:,} | "
                     f"{r['epochs']:.3g} | {r['train_seconds'] / 60:.1f} min | {r['test_neg_elbo']:.2f} | "
                     f"{r['test_nll']:.2f} ({r['num_samples']}) | {r['test_cond_nll']:.2f} ({r['num_samples']}) | "
                     f"{r['reference'] or '-'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="quick",
                        help="recipes folder benchmarks/recipes/PRESET [quick: <= 15 min on 2 CPU cores]")
    parser.add_argument("--models", help="comma-separated registry names [all of the preset's]")
    parser.add_argument("--iwae", action="store_true", help="also train the preset's IWAE rows of these models "
                        f"(objective iwae: {OBJECTIVES['iwae'].help}), each in about the wall time of its ELBO "
                        "twin [not run by default]")
    parser.add_argument("--out", default=None, help="output folder [bench_out/PRESET]")
    parser.add_argument("--data-root", help="folder holding binarized_mnist/ and MNIST/raw/ [$DRAWZOO_DATA, else a "
                        "per-user cache]")
    parser.add_argument("--num-samples", type=int, help="importance samples K per test image, for every model "
                        "[each recipe's]")
    parser.add_argument("--test-limit", type=int, help="score a seeded random subset of the test split "
                        "[each recipe's; else the full 10,000]")
    parser.add_argument("--seed", type=int, help="seed of every run, for training and scoring [each recipe's: 0]")
    parser.add_argument("--device", help="cpu, cuda, ... [cuda when available]")
    parser.add_argument("--resume", action="store_true", help="resume from the checkpoints in --out "
                        "instead of starting afresh; a row already trained and scored keeps its figures "
                        "(train time: of the last call that trained it)")
    args = parser.parse_args(argv)
    return run_program("nll_mnist", run_benchmark, args)


def run_benchmark(args) -> int:
    """main() once its arguments are parsed; stopped by a signal, it writes the rows finished."""
    out = Path(args.out or f"bench_out/{args.preset}")
    out.mkdir(parents=True, exist_ok=True)  # a bad --out is said before any work
    check_outputs({"results.json": out / "results.json", "results.md": out / "results.md"})
    runs = select_runs(load_preset(args.preset), args.models.split(",") if args.models else None, iwae=args.iwae)
    runs = [dataclasses.replace(r, scoring=dataclasses.replace(
        r.scoring, num_samples=args.num_samples or r.scoring.num_samples,
        test_limit=args.test_limit or r.scoring.test_limit)) for r in runs]
    started = time.perf_counter()
    data = {name: load_splits(name, args.data_root) for name in dict.fromkeys(r.recipe.data.train for r in runs)}
    device = drawzoo.training.resolve_device(args.device)
    rows = []
    try:
        # the test split is sorted by label: subsets (random_subset) are seeded random samples, never the first rows
        with console_logging():  # each epoch's figures
            for run in runs:
                rows.append(benchmark(run, data[run.recipe.data.train], out, device=args.device, resume=args.resume,
                                      seed=args.seed))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the rows finished are kept (each run's checkpoint is in --out)
        if rows:
            write_results(out, args.preset, rows, device, time.perf_counter() - started,
                          f"; interrupted after {len(rows)} of {len(runs)} rows")
        raise
    write_results(out, args.preset, rows, device, time.perf_counter() - started)
    return 0


def write_results(out: Path, preset: str, rows: list[dict], device, seconds: float, partial: str = "") -> None:
    """Print the table of `rows` and write it to `out` (results.json, results.md)."""
    summary = (f"the test split of each row's data ({rows[0]['test_images']:,} images), preset {preset!r}, "
               f"{device}, {torch.get_num_threads()} threads, {seconds / 60:.1f} min in all{partial}")
    text = table(rows)
    print(f"\n{summary}\n\n{text}\n")
    write_output(out / "results.json", json.dumps({"summary": summary, "preset": preset, "rows": rows}, indent=2) + "\n",
                 "results")
    write_output(out / "results.md", f"{summary}\n\n{text}\n", "results")
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and samples_*.png")


if __name__ == "__main__":
    sys.exit(main())
