"""Training and NLL-evaluation throughput of zoo models against a plain-PyTorch reference.

    python benchmarks/speed.py               # the paper's MNIST sizes (T=64, LSTM 256, z 100), < 15 min on 2 cores
    python benchmarks/speed.py --quick       # small sizes, a smoke run of under 2 minutes
    python benchmarks/speed.py --device cuda

    python benchmarks/speed.py --only hvae1,hvae2-iwae5   # the small models (CASES): vae, hvae, conv_vae

For each model, in one run on the same machine and threads:
- zoo: images/s of ``pyro.infer.SVI(model, guide, Adam, elbo).step(x)`` (forward, backward,
  update), batch 100, with the case's objective (``make_elbo``: "elbo", for DRAW and the VAE
  ``TraceMeanField_ELBO``'s computation, or "iwae" with 5 vectorised particles);
- train: images/s of ``drawzoo.train(model, x, epochs=1, batch_size=100, ...)`` over 5 batches a
  call for DRAW, 50 for the small models (its data loading, gradient clipping and bookkeeping
  included, and its first step of a batch shape, which runs Pyro's checks);
- reference: the same network with the same weights, as one plain PyTorch function computing the
  same bound (L^x + analytic L^z; the two-layer model's Monte Carlo z_1 terms; the IWAE bound) in
  a single pass (`reference.py`), stepped by torch's Adam;
- fast / train fast: the same two on the fast path (``model.compile_steps()``,
  ``drawzoo.train(..., compile=True)``: for the small models, their recorded steps,
  `drawzoo.training.step_capture`), with the compile time of a first step (the small models: of a first
  train call) on a cold and on a warm inductor cache;
- the share of this machine's fp32 matrix-product peak (a 2048^3 product) each reaches: the
  network's FLOPs per image (forward and backward, counted by ``torch.utils.flop_counter``) times
  images/s;
- their ratio, and the peak memory of each (CPU: growth of the process's peak RSS over its RSS
  before the timed steps, each measurement in a fresh process after a one-image step;
  CUDA: ``torch.cuda.max_memory_allocated``);
- NLL evaluation: images/s of ``drawzoo.evaluate(model, x, num_samples=K)`` (K=1000, vectorised
  over K) against the time of K reference forward passes over the same images;
- optionally (``--jit``, ``--compile-loss``): ``JitTraceMeanField_ELBO`` and ``torch.compile`` of the
  whole loss, with their compile time and whether their loss matches the eager one (means of 16 losses
  for the same weights within 4 standard errors);
- optionally (``--unvalidated``): the fast path's SVI with Pyro's validation off, as
  `drawzoo.train` steps after the first step of each batch shape (``TrainConfig.validate``; the
  "train" columns validate one step in 5 here, the first of each call);
- optionally (``--ddp N``): images/s of `drawzoo.train` data-parallel over 1 and N CPU processes.

Images are Bernoulli(0.13) noise of MNIST's size and mean: throughput does not depend on content.
Prints a table and writes JSON (--out). The measurements, each run in a fresh process, are
`speed_measures.py`'s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from drawzoo.cli import run_program
from drawzoo.files import check_outputs, write_output

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_measures import (BATCH, COMPILE_OPTIONS, LABELS, TRAIN_CHUNK, measure_agreement,  # noqa: E402
                            measure_compile, measure_ddp, measure_eval, measure_flops, measure_memory, measure_peak,
                            measure_throughput, profile_ops)

PAPER = dict(T=64, hidden_dim=256, latent_dim=100, read_size=2, write_size=5)
QUICK = dict(T=8, hidden_dim=64, latent_dim=10, read_size=2, write_size=5)
IMPLS = ["zoo", "train", "fast", "train-fast", "reference"]  #: what every run times


#: --only keys: DRAW at the paper's size, and the small models at their defaults (hvae: the IWAE
#: paper's one-layer x-200-200-50 and two-layer x-200-200-100-100-50 models, ELBO and IWAE k=5)
CASES = {"draw": "DRAW (attention)", "draw-no-attention": "DRAW (no attention)", "vae": "VAE",
         "hvae1": "HVAE, 1 layer", "hvae1-iwae5": "HVAE, 1 layer, IWAE k=5", "hvae2": "HVAE, 2 layers",
         "hvae2-iwae5": "HVAE, 2 layers, IWAE k=5", "conv_vae": "conv VAE"}
DEFAULT_CASES = ("draw", "draw-no-attention", "vae")  #: what a run without --only measures
ONE_LAYER = dict(latent_dims=(50,), hidden_dims=(200,))


def cases(quick: bool, only: list[str] | None = None) -> list[tuple[str, str, dict, dict]]:
    """``(label, model, config, objective)`` of each case; objective: ``make_elbo``'s arguments."""
    draw = QUICK if quick else PAPER
    elbo, iwae5 = dict(objective="elbo", particles=1), dict(objective="iwae", particles=5)
    every = {"draw": ("draw", dict(draw), elbo), "draw-no-attention": ("draw", dict(draw, attention=False), elbo),
             "vae": ("vae", {}, elbo), "hvae1": ("hvae", ONE_LAYER, elbo), "hvae1-iwae5": ("hvae", ONE_LAYER, iwae5),
             "hvae2": ("hvae", {}, elbo), "hvae2-iwae5": ("hvae", {}, iwae5), "conv_vae": ("conv_vae", {}, elbo)}
    return [(CASES[key], *every[key]) for key in (only or DEFAULT_CASES)]


def _dies_with_parent() -> None:
    """In a measuring process: killed when speed.py dies (Linux), even by SIGKILL (a timeout),
    instead of measuring on for minutes in the background."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _in_child(fn, *args):
    """Run `fn(*args)` in a fresh process (its own peak memory); returns its result or the error."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_dies_with_parent) as pool:
        try:
            return pool.submit(fn, *args).result()
        except Exception as e:  # a variant that fails (e.g. JIT on this model) is reported, not fatal
            return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]}


def run(args) -> dict:
    import tempfile

    batch, steps = BATCH, (TRAIN_CHUNK if args.quick else args.steps)
    optional = ((["jit"] if args.jit else []) + (["compile-loss"] if args.compile_loss else [])
                + (["unvalidated"] if args.unvalidated else []))
    impls = [impl for impl in IMPLS if impl in (args.impls or IMPLS)] + optional
    print(f"fp32 peak: a 2048^3 matrix product on {args.device} ...", flush=True)
    results = {"training": [], "evaluation": [], "peak_gflops": _in_child(measure_peak, args.device)}
    for label, name, config, objective in cases(args.quick, args.only):
        row = {"label": label, "model": name, "config": config, "objective": objective}
        row["flops_per_image"] = _in_child(measure_flops, name, config, objective)
        with tempfile.TemporaryDirectory() as cache:  # the fast path's compile time, cold and warm
            for key in ("cold", "warm") if not args.quick else ():
                print(f"training: {label}, fast path: compile time, {key} cache ...", flush=True)
                row[f"compile_{key}"] = _in_child(measure_compile, name, config, args.device, cache, objective)
        for impl in impls:
            print(f"training: {label}, {impl}: memory ...", flush=True)
            row[impl] = _in_child(measure_memory, name, config, impl, batch, args.device, objective)
        working = [impl for impl in impls if "error" not in row[impl]]
        print(f"training: {label}, {' / '.join(working)} taking turns, {steps} steps ...", flush=True)
        speeds = _in_child(measure_throughput, name, config, working, batch, steps, args.device, objective)
        for impl in working:
            row[impl]["images_per_s"] = speeds[impl] if "error" not in speeds else float("nan")
        for impl in working:
            row[impl]["ratio"] = row[impl]["images_per_s"] / row["reference"]["images_per_s"]
            row[impl]["peak_share"] = (row[impl]["images_per_s"] * row["flops_per_image"]
                                       / (results["peak_gflops"] * 1e9))
        for impl in optional:
            if "error" not in row[impl]:
                print(f"training: {label}, {impl}: loss against eager ...", flush=True)
                row[impl].update(_in_child(measure_agreement, name, config, impl, batch, args.device, objective))
        results["training"].append(row)
    if args.ddp:
        label, name, config, _ = cases(args.quick, args.only)[0]
        for n in sorted({1, args.ddp}):
            print(f"data-parallel: {label}, {n} process(es) ...", flush=True)
            results.setdefault("ddp", []).append({"label": label, **measure_ddp(n, name, config, batch, steps)})
    K, images = (50, 8) if args.quick else (args.num_samples, args.eval_images)
    for label, name, config, _ in cases(args.quick, args.only) if not args.training_only else ():
        print(f"evaluation: {label}, K={K} ...", flush=True)
        results["evaluation"].append({"label": label, "K": K, "images": images,
                                      **_in_child(measure_eval, name, config, K, images, args.device)})
    return results




def report(results: dict, header: str) -> str:
    def cell(r, key, fmt):
        return "failed" if "error" in r or key not in r else format(r[key], fmt)

    shown = [k for k in ("reference", "zoo", "train", "fast", "train-fast") if k in results["training"][0]]
    lines = [header, "", f"fp32 matrix-product peak (2048^3): {results['peak_gflops']:.0f} GFLOP/s", "",
             "Training (batch 100): images/s (x reference) [% of the fp32 peak, peak memory MB]:", "",
             "| model | " + " | ".join(LABELS[k] for k in shown) + " | compile cold / warm |",
             "|---|" + "---:|" * (len(shown) + 1)]
    for r in results["training"]:
        cells = []
        for k in shown:
            if "error" in r[k]:
                cells.append("failed")
                continue
            ratio = "" if k == "reference" else f" (x{r[k]['ratio']:.2f})"
            cells.append(f"{r[k]['images_per_s']:.0f}{ratio} [{100 * r[k]['peak_share']:.0f}%, "
                         f"{r[k]['peak_mb']:.0f} MB]")
        compile_cells = " / ".join(cell(r[f"compile_{key}"], "compile_s", ".1f") if f"compile_{key}" in r else "-"
                                   for key in ("cold", "warm"))  # not measured with --quick
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {compile_cells} s |")
    optional = [k for k in ("jit", "compile-loss", "unvalidated") if k in results["training"][0]]
    if optional:
        lines += ["", "Optional variants (images/s, first step incl. compilation, loss vs eager):", "",
                  "| model | " + " | ".join(optional) + " |", "|---|" + "---|" * len(optional)]
        for r in results["training"]:
            lines.append(f"| {r['label']} | " + " | ".join(
                "failed" if "error" in r[k] else
                f"{r[k]['images_per_s']:.0f} img/s, first step {r[k]['warmup_s']:.1f} s, "
                f"{'matches' if r[k]['matches_eager'] else 'DIFFERS from'} eager "
                f"({r[k]['loss_difference']:+.3f} +- {r[k]['difference_se']:.3f} nats)" for k in optional) + " |")
    for e in results["evaluation"][:1]:
        lines += ["", f"NLL evaluation (K={e['K']} importance samples, {e['images']} images):", "",
                  "| model | drawzoo.evaluate images/s | fast path images/s | K reference forwards images/s "
                  "| time ratio | fast path time ratio |", "|---|---:|---:|---:|---:|---:|"]
    for r in results["evaluation"]:
        lines.append(f"| {r['label']} | {cell(r, 'zoo_images_per_s', '.2f')} | {cell(r, 'fast_images_per_s', '.2f')} | "
                     f"{cell(r, 'reference_images_per_s', '.2f')} | {cell(r, 'ratio', '.2f')} | "
                     f"{cell(r, 'fast_ratio', '.2f')} |")
    if "ddp" in results:
        lines += ["", f"Data-parallel training ({results['ddp'][0]['label']}, drawzoo.train, global batch 100, gloo):", "",
                  "| processes | threads each | images/s |", "|---:|---:|---:|"]
        lines += [f"| {r['processes']} | {r['threads_each']} | {r['images_per_s']:.1f} |" for r in results["ddp"]]
    for r in results["training"]:
        for k in [*shown, *optional, "compile_cold", "compile_warm"]:
            if "error" in r.get(k, {}):
                lines.append(f"\n{r['label']} {k}: {r[k]['error']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few steps (< 2 min)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per measurement [30]")
    parser.add_argument("--num-samples", type=int, default=1000, help="K for the NLL evaluation [1000]")
    parser.add_argument("--eval-images", type=int, default=4, help="images scored in the NLL timing [4]")
    parser.add_argument("--jit", action="store_true", help="also time JitTraceMeanField_ELBO")
    parser.add_argument("--compile-loss", action="store_true", help="also time torch.compile of the whole loss")
    parser.add_argument("--unvalidated", action="store_true", help="also time the fast path's SVI with Pyro's "
                        "validation off (as drawzoo.train steps after the first of each batch shape)")
    parser.add_argument("--compile-mode", help="torch.compile mode of the fast path, e.g. reduce-overhead "
                        "(CUDA graphs) [torch's default]")
    parser.add_argument("--ddp", type=int, metavar="N", help="also time data-parallel training (drawzoo.train "
                        "under torch.distributed, gloo) with 1 and N CPU processes")
    parser.add_argument("--only", type=lambda v: v.split(","), metavar="KEYS",
                        help=f"only these models, comma-separated: {', '.join(CASES)} [{','.join(DEFAULT_CASES)}]")
    parser.add_argument("--impls", type=lambda v: v.split(","), metavar="NAMES",
                        help=f"only these training implementations, comma-separated: {', '.join(IMPLS)} "
                        "(reference always) [all]")
    parser.add_argument("--training-only", action="store_true", help="no NLL evaluation")
    parser.add_argument("--out", default="bench_out/speed.json", help="JSON file [bench_out/speed.json]")
    parser.add_argument("--profile", action="store_true", help="only print the profiler's top operations of one "
                        "SVI step and of one drawzoo.train step, eager and on the fast path, of each model (--only) "
                        "at its size (--quick)")
    args = parser.parse_args(argv)
    if args.impls:
        if not set(args.impls) <= set(IMPLS):
            parser.error(f"--impls: unknown {', '.join(sorted(set(args.impls) - set(IMPLS)))}; choose from {', '.join(IMPLS)}")
        args.impls = sorted(set(args.impls) | {"reference"}, key=IMPLS.index)
    if args.only and not set(args.only) <= set(CASES):
        parser.error(f"--only: unknown {', '.join(sorted(set(args.only) - set(CASES)))}; choose from {', '.join(CASES)}")
    return run_program("speed", measure, args)


def measure(args) -> int:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # a bad --out is said before any work
    check_outputs({"--out": args.out})
    if args.compile_mode:
        os.environ["SPEED_COMPILE_MODE"] = args.compile_mode
        COMPILE_OPTIONS["mode"] = args.compile_mode
    if args.profile:
        for label, name, config, objective in cases(args.quick, args.only):
            # DRAW: its SVI step, eager and with compiled step functions; the small models: a drawzoo.train
            # step, plain and replayed from its recording (drawzoo.training.step_capture)
            for impl in ("zoo", "fast") if name == "draw" else ("train", "train-fast"):
                print(f"\n{label}, {_in_child(profile_ops, name, config, impl, args.device, objective)}")
        return 0
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    header = (f"{time.strftime('%Y-%m-%d')}, {device.type} ({name}), torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads{', quick' if args.quick else ''}")
    started = time.perf_counter()
    results = run(args)
    header += f", {(time.perf_counter() - started) / 60:.1f} min"
    text = report(results, header)
    print("\n" + text)
    write_output(args.out, json.dumps({"header": header, **results}, indent=2) + "\n", "JSON")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
