"""One row on two threads, or two rows on one thread each? Training throughput of a campaign row both ways.

    python benchmarks/threads.py                                  # the paper DRAW row and the 1-layer VAE row
    python benchmarks/threads.py --recipes benchmarks/recipes/paper/draw_attention.toml --steps 20

For each recipe, training steps of its model, config, objective, batch size and fast path (as
``drawzoo train --recipe`` takes them, on random binary images of its shape: the time of a step
does not depend on the pixels) are timed in fresh processes, two ways:

- one process on 2 threads (`torch.set_num_threads`): images per second;
- two processes on 1 thread each, timing the same number of steps at the same time (they start
  together at a barrier): the sum of their images per second.

The first steps (compilation) are not timed, and a step's time is the difference of a call of 2 N
steps and one of N, over N: what a call costs besides its steps cancels out. Run it on an idle
machine: anything else running takes from both ways unequally. The campaign (`campaign.py
--jobs`, `--threads`) is scheduled by what it prints.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPES = [HERE / "recipes/paper/draw_attention.toml", HERE / "recipes/paper/hvae1_vae.toml"]
WARMUP = 2  #: untimed steps first


def _steps(recipe_path: str, threads: int, steps: int, barrier, out) -> None:
    """Seconds per training step of the recipe's run on `threads` threads, put on `out`: the
    difference of two `drawzoo.train` calls of `steps` and 2 `steps` steps over `steps`, so that
    what a call costs besides its steps (its first step's checks, a recording) cancels out; after
    `WARMUP` untimed steps (compilation) and waiting at `barrier` (None: no wait)."""
    import torch

    torch.set_num_threads(threads)
    import drawzoo

    recipe = drawzoo.load_recipe(recipe_path)
    model = drawzoo.load(recipe.model, **recipe.config)
    config = recipe.train_config()
    batch = config.batch_size
    x = (torch.rand(2 * steps * batch, *model.image_shape, generator=torch.Generator().manual_seed(0)) < 0.13).float()
    settings = dict(epochs=1, batch_size=batch, objective=config.objective, particles=config.particles,
                    compile=config.compile, lr=config.lr, progress=False)
    drawzoo.train(model, x[:WARMUP * batch], **settings)
    if barrier is not None:
        barrier.wait()
    seconds = []
    for n in (steps, 2 * steps):
        started = time.perf_counter()
        drawzoo.train(model, x[:n * batch], **settings)
        seconds.append(time.perf_counter() - started)
    out.put((seconds[1] - seconds[0]) / steps)


def run_all(processes: list, out, name: str) -> list:
    """Start `processes`, wait for them all and return what each put on `out`. One that fails ends
    the others (its partner would wait at the barrier for ever) and the script, with an error."""
    for p in processes:
        p.start()
    while any(p.is_alive() for p in processes):
        if any(p.exitcode for p in processes):
            for p in processes:
                p.terminate()
        time.sleep(0.2)
    failed = [p.exitcode for p in processes if p.exitcode]
    if failed:
        raise SystemExit(f"threads.py: error: {name}: a timing process failed (exit {failed[0]}; its output is above)")
    return [out.get(timeout=60) for _ in processes]


def measure(recipe: Path, steps: int) -> dict:
    """Images per second of `recipe`'s training: one process on 2 threads, and two on 1 thread each."""
    import drawzoo

    batch = drawzoo.load_recipe(recipe).train_config().batch_size
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    [seconds_one] = run_all([spawn.Process(target=_steps, args=(str(recipe), 2, steps, None, out))], out, recipe.stem)
    barrier = spawn.Barrier(2)
    seconds_pair = run_all([spawn.Process(target=_steps, args=(str(recipe), 1, steps, barrier, out))
                            for _ in range(2)], out, recipe.stem)
    return {"one_row_2_threads": batch / seconds_one,
            "two_rows_1_thread": sum(batch / s for s in seconds_pair),
            "seconds_per_step": {"2 threads": seconds_one, "1 thread each": seconds_pair}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", type=Path, default=RECIPES, help="recipe files [%(default)s]")
    parser.add_argument("--steps", type=int, default=10, help="N: calls of N and 2 N steps are timed [%(default)s]")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    for recipe in args.recipes:
        if not recipe.is_file():
            parser.error(f"--recipes: no such recipe file: {recipe}")
    print("| row | 1 row x 2 threads (images/s) | 2 rows x 1 thread (images/s, sum) | ratio |")
    print("|---|---:|---:|---:|")
    for recipe in args.recipes:
        r = measure(recipe, args.steps)
        print(f"| {recipe.stem} | {r['one_row_2_threads']:.1f} | {r['two_rows_1_thread']:.1f} | "
              f"{r['two_rows_1_thread'] / r['one_row_2_threads']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
