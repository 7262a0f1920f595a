"""Training and NLL-evaluation throughput of zoo models against a plain-PyTorch reference.

    python benchmarks/speed.py               # the paper's MNIST sizes (T=64, LSTM 256, z 100), < 15 min on 2 cores
    python benchmarks/speed.py --quick       # small sizes, a smoke run of under 2 minutes
    python benchmarks/speed.py --device cuda

For each model, in one run on the same machine and threads:
- zoo: images/s of ``pyro.infer.SVI(model, guide, Adam, TraceMeanField_ELBO()).step(x)``
  (forward, backward, update), batch 100;
- train: images/s of ``drawzoo.train(model, x, epochs=1, batch_size=100, ...)`` over 5 batches a
  call (its data loading, gradient clipping and bookkeeping included);
- reference: the same network with the same weights, as one plain PyTorch function computing the
  paper's loss (L^x + analytic L^z) in a single pass (`reference.py`), stepped by torch's Adam;
- fast / train fast: the same two on the fast path (``model.compile_steps()``,
  ``drawzoo.train(..., compile=True)``), with the compile time of a first step on a cold and on a
  warm inductor cache;
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
Prints a table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import LOSSES  # noqa: E402

BATCH = 100  #: images per training step
TRAIN_CHUNK = 5  #: training steps per timed call (drawzoo.train is timed over whole calls)
PAPER = dict(T=64, hidden_dim=256, latent_dim=100, read_size=2, write_size=5)
QUICK = dict(T=8, hidden_dim=64, latent_dim=10, read_size=2, write_size=5)
#: torch.compile options of the fast path (--compile-mode; through the environment, for the child processes)
COMPILE_OPTIONS: dict = {"mode": os.environ["SPEED_COMPILE_MODE"]} if os.environ.get("SPEED_COMPILE_MODE") else {}
IMPLS = ["zoo", "train", "fast", "train-fast", "reference"]  #: what every run times


CASES = {"draw": "DRAW (attention)", "draw-no-attention": "DRAW (no attention)", "vae": "VAE"}  #: --only keys


def cases(quick: bool, only: list[str] | None = None) -> list[tuple[str, str, dict]]:
    draw = QUICK if quick else PAPER
    every = {"draw": ("draw", dict(draw)), "draw-no-attention": ("draw", dict(draw, attention=False)),
             "vae": ("vae", {})}
    return [(CASES[key], *every[key]) for key in (only or CASES)]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _images(n: int, device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) < 0.13).float().to(device)


def _build(name: str, config: dict, device):
    import drawzoo

    torch.manual_seed(0)
    return drawzoo.load(name, **config).to(device)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _adam_steps(loss_fn, model):
    """A function x -> loss (nats, batch sum) that takes one Adam step on ``loss_fn(x)`` (per image)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(x):
        loss = loss_fn(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item() * len(x)
    return step


def _stepper(impl: str, model, name: str):
    """A function x -> loss (nats, batch sum) that takes one optimizer step of implementation `impl`
    (for "train": one `drawzoo.train` epoch over x in batches of `BATCH`)."""
    import pyro
    from pyro.infer import SVI, JitTraceMeanField_ELBO, TraceMeanField_ELBO

    if impl in ("train", "train-fast"):
        import drawzoo

        def train(x):
            history = drawzoo.train(model, x, epochs=1, batch_size=BATCH, lr=1e-4, device=x.device, progress=False,
                                    compile=impl == "train-fast")
            return history[-1]["train_loss"] * len(x)
        return train
    if impl == "reference":
        return _adam_steps(lambda x: LOSSES[name](model, x), model)
    if impl == "compile-loss":
        return _adam_steps(_loss_fn(impl, model), model)
    if impl in ("fast", "unvalidated"):
        model.compile_steps(**COMPILE_OPTIONS)
    pyro.clear_param_store()
    elbo = JitTraceMeanField_ELBO() if impl == "jit" else TraceMeanField_ELBO()
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-4}), elbo)
    return _unvalidated(svi.step) if impl == "unvalidated" else svi.step


def _unvalidated(fn):
    """`fn` run with Pyro's validation off (what drawzoo.train does after a run's first step of each
    batch shape, `TrainConfig.validate`)."""
    import pyro

    def unvalidated(x):
        with pyro.validation_enabled(False):
            return fn(x)
    return unvalidated


def measure_memory(name: str, config: dict, impl: str, batch: int, device: str) -> dict:
    """Peak memory (MB) of a few optimizer steps, and the first step's time and loss."""
    device = torch.device(device)
    model = _build(name, config, device)
    x = _images(batch, device)
    step = _stepper(impl, model, name)
    step(x[:1])  # a one-image step first: lazy imports and one-time set-up stay out of the memory figure
    rss = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(1)
    started = time.perf_counter()
    first_loss = step(x)
    _sync(device)
    warmup = time.perf_counter() - started
    for _ in range(2):
        step(x)
    peak = (torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else _peak_rss_mb() - rss)
    return {"peak_mb": peak, "warmup_s": warmup, "first_loss": first_loss / batch}


def _loss_fn(impl: str, model):
    """x -> the negative ELBO per image (nats) by implementation `impl`, without an optimizer step."""
    from pyro.infer import JitTraceMeanField_ELBO, TraceMeanField_ELBO

    from drawzoo.training import ELBOLoss

    if impl == "compile-loss":
        import torch._inductor.config as inductor

        inductor.fallback_random = True  # the same random numbers as eager
        return torch.compile(ELBOLoss(model))
    if impl == "unvalidated":
        return _unvalidated(ELBOLoss(model.compile_steps(**COMPILE_OPTIONS)))
    return ELBOLoss(model, JitTraceMeanField_ELBO() if impl == "jit" else TraceMeanField_ELBO())


def measure_agreement(name: str, config: dict, impl: str, batch: int, device: str, draws: int = 16) -> dict:
    """Whether `impl` computes the eager SVI loss: the means of `draws` losses of each for the same
    weights and images agree within 4 standard errors of their difference. (Losses at one seed need
    not agree: a traced graph samples with other kernels, so its noise differs.)"""
    device = torch.device(device)
    model = _build(name, config, device)
    x = _images(batch, device)
    fns = {"eager": _loss_fn("zoo", model), impl: _loss_fn(impl, model)}
    fns[impl](x)  # compiles
    stats = {}
    for key, fn in fns.items():
        torch.manual_seed(2)
        losses = torch.tensor([fn(x).item() for _ in range(draws)], dtype=torch.float64)
        stats[key] = (losses.mean().item(), losses.std().item() / draws ** 0.5)
    difference = stats[impl][0] - stats["eager"][0]
    se = (stats[impl][1] ** 2 + stats["eager"][1] ** 2) ** 0.5
    return {"loss_difference": difference, "difference_se": se, "matches_eager": abs(difference) <= 4 * se}


def _median_seconds(fns: dict, more, device) -> tuple[dict, int]:
    """Median seconds of each function of `fns`, timed in rounds in which they take turns (so that
    drifts of the machine's speed fall on all alike) while ``more(rounds, seconds of the first)``;
    and the number of rounds. The order of the turns rotates from round to round: what one function
    leaves behind (caches, the allocator's state) slows the next one, and so falls on all alike."""
    times = {key: [] for key in fns}
    keys = list(fns)
    first = times[keys[0]]
    while more(len(first), sum(first)):
        start = len(first) % len(keys)
        for key in keys[start:] + keys[:start]:
            started = time.perf_counter()
            fns[key]()
            _sync(device)
            times[key].append(time.perf_counter() - started)
    return {key: sorted(t)[len(t) // 2] for key, t in times.items()}, len(first)


def measure_throughput(name: str, config: dict, impls: list[str], batch: int, steps: int, device: str) -> dict:
    """Images/s of each implementation from the median of `steps` timed steps, the implementations
    taking turns step by step, each on its own copy of the same model. With "train" among them,
    every implementation takes `TRAIN_CHUNK` steps a turn (one drawzoo.train call of that many
    batches), and `steps` is rounded up to whole turns."""
    device = torch.device(device)
    chunk = TRAIN_CHUNK if {"train", "train-fast"} & set(impls) else 1
    x = _images(batch * chunk, device)
    steppers = {impl: _stepper(impl, _build(name, config, device), name) for impl in impls}

    def turn(impl, step):
        if impl in ("train", "train-fast"):
            return step(x)
        return [step(part) for part in x.split(batch)]

    for impl, step in steppers.items():
        turn(impl, step)  # warm-up (compilation, for the variants that compile)
    seconds, _ = _median_seconds({impl: functools.partial(turn, impl, step) for impl, step in steppers.items()},
                                 lambda rounds, _: rounds * chunk < steps, device)
    return {impl: batch * chunk / s for impl, s in seconds.items()}


def measure_flops(name: str, config: dict) -> float:
    """FLOPs per image of one training step of the network (forward and backward of the reference
    loss, batch `BATCH`), as ``torch.utils.flop_counter`` counts them (matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = _build(name, config, torch.device("cpu"))
    x = _images(BATCH, "cpu")
    with FlopCounterMode(display=False) as counter:
        LOSSES[name](model, x).backward()
    return counter.get_total_flops() / BATCH


def profile_ops(name: str, config: dict, impl: str, device: str, rows: int = 10) -> str:
    """The top `rows` operations by self CPU time of one SVI step (impl "zoo" or "fast", after two
    warm-up steps), as a markdown table; inductor's compiled graphs are named as such."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device)
    model = _build(name, config, device)
    x = _images(BATCH, device)
    step = _stepper(impl, model, name)
    step(x)
    step(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(x)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) / 1e3
    lines = [f"{LABELS[impl]}: one SVI step, self CPU {total:.0f} ms under the profiler",
             "| op | calls | self ms | share |", "|---|---:|---:|---:|"]
    for e in events[:rows]:
        op = "inductor kernels (one compiled graph)" if e.key.startswith("## Call CompiledFxGraph") else e.key
        lines.append(f"| {op} | {e.count} | {e.self_cpu_time_total / 1e3:.1f} | "
                     f"{100 * e.self_cpu_time_total / 1e3 / total:.0f}% |")
    return "\n".join(lines)


def measure_peak(device: str, n: int = 2048, repeats: int = 10) -> float:
    """fp32 GFLOP/s of an n x n x n matrix product: the machine's practical peak."""
    device = torch.device(device)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - started) / 1e9


def measure_compile(name: str, config: dict, device: str, cache_dir: str) -> dict:
    """Seconds that the first fast-path SVI step takes more than a later one, with inductor's
    on-disk cache in `cache_dir` (a fresh folder: cold; one a process filled before: warm)."""
    import os

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    device = torch.device(device)
    step = _stepper("fast", _build(name, config, device), name)
    x = _images(BATCH, device)
    started = time.perf_counter()
    step(x)
    _sync(device)
    first = time.perf_counter() - started
    later = []
    for _ in range(3):
        started = time.perf_counter()
        step(x)
        _sync(device)
        later.append(time.perf_counter() - started)
    return {"compile_s": first - sorted(later)[1]}


def measure_eval(name: str, config: dict, K: int, images: int, device: str, min_seconds: float = 3.0) -> dict:
    """Images/s of drawzoo.evaluate at K, and of K reference forward passes over the same images
    (in chunks of as many rows as evaluate takes per pass). The two take turns, a round each, for
    at least 3 rounds and until evaluate has run `min_seconds` (at most 9 rounds); the figures are
    from the median rounds."""
    import drawzoo
    from drawzoo.evaluation import ROWS_PER_PASS

    device = torch.device(device)
    model = _build(name, config, device)
    x = _images(images, device)
    rows = x.repeat(K, 1, 1, 1)
    loss_fn = LOSSES[name]

    fast_model = _build(name, config, device).compile_steps(**COMPILE_OPTIONS)

    def zoo():
        drawzoo.evaluate(model, x, num_samples=K)

    def fast():
        drawzoo.evaluate(fast_model, x, num_samples=K)

    @torch.no_grad()
    def reference():
        for chunk in rows.split(ROWS_PER_PASS):
            loss_fn(model, chunk)

    zoo(), fast()  # warm-up: compiles the fast path's graphs for these shapes
    seconds, rounds = _median_seconds({"zoo": zoo, "fast": fast, "reference": reference},
                                      lambda n, s: n < 3 or (n < 9 and s < min_seconds), device)
    return {"zoo_images_per_s": images / seconds["zoo"], "fast_images_per_s": images / seconds["fast"],
            "reference_images_per_s": images / seconds["reference"],
            "ratio": seconds["zoo"] / seconds["reference"], "fast_ratio": seconds["fast"] / seconds["reference"],
            "rounds": rounds}


def _ddp_rank(rank: int, world: int, port: int, name: str, config: dict, batch: int, steps: int, threads: int,
              out: str) -> None:
    """One process of a data-parallel run: `drawzoo.train` as under torchrun, timed on rank 0."""
    import os

    import drawzoo

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    model = _build(name, config, torch.device("cpu"))
    x = _images(batch * steps, "cpu")
    kw = dict(epochs=1, batch_size=batch, lr=1e-4, device="cpu", progress=False)
    drawzoo.train(model, x, max_steps=1, **kw)  # warm-up: joins the process group
    started = time.perf_counter()
    drawzoo.train(model, x, max_steps=steps, **kw)
    if rank == 0:
        Path(out).write_text(json.dumps({"images_per_s": steps * batch / (time.perf_counter() - started)}))


def measure_ddp(processes: int, name: str, config: dict, batch: int, steps: int) -> dict:
    """Training images/s of `processes` CPU processes (gloo), the machine's threads shared out."""
    import socket
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    threads = max(1, torch.get_num_threads() // processes)
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/result.json"
        mp.spawn(_ddp_rank, args=(processes, port, name, config, batch, steps, threads, out), nprocs=processes)
        return {"processes": processes, "threads_each": threads, **json.loads(Path(out).read_text())}


def _in_child(fn, *args):
    """Run `fn(*args)` in a fresh process (its own peak memory); returns its result or the error."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(fn, *args).result()
        except Exception as e:  # a variant that fails (e.g. JIT on this model) is reported, not fatal
            return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]}


def run(args) -> dict:
    import tempfile

    batch, steps = BATCH, (TRAIN_CHUNK if args.quick else args.steps)
    optional = ((["jit"] if args.jit else []) + (["compile-loss"] if args.compile_loss else [])
                + (["unvalidated"] if args.unvalidated else []))
    impls = IMPLS + optional
    print(f"fp32 peak: a 2048^3 matrix product on {args.device} ...", flush=True)
    results = {"training": [], "evaluation": [], "peak_gflops": _in_child(measure_peak, args.device)}
    for label, name, config in cases(args.quick, args.only):
        row = {"label": label, "model": name, "config": config}
        row["flops_per_image"] = _in_child(measure_flops, name, config)
        with tempfile.TemporaryDirectory() as cache:  # the fast path's compile time, cold and warm
            for key in ("cold", "warm") if not args.quick else ():
                print(f"training: {label}, fast path: compile time, {key} cache ...", flush=True)
                row[f"compile_{key}"] = _in_child(measure_compile, name, config, args.device, cache)
        for impl in impls:
            print(f"training: {label}, {impl}: memory ...", flush=True)
            row[impl] = _in_child(measure_memory, name, config, impl, batch, args.device)
        working = [impl for impl in impls if "error" not in row[impl]]
        print(f"training: {label}, {' / '.join(working)} taking turns, {steps} steps ...", flush=True)
        speeds = _in_child(measure_throughput, name, config, working, batch, steps, args.device)
        for impl in working:
            row[impl]["images_per_s"] = speeds[impl] if "error" not in speeds else float("nan")
        for impl in working:
            row[impl]["ratio"] = row[impl]["images_per_s"] / row["reference"]["images_per_s"]
            row[impl]["peak_share"] = (row[impl]["images_per_s"] * row["flops_per_image"]
                                       / (results["peak_gflops"] * 1e9))
        for impl in optional:
            if "error" not in row[impl]:
                print(f"training: {label}, {impl}: loss against eager ...", flush=True)
                row[impl].update(_in_child(measure_agreement, name, config, impl, batch, args.device))
        results["training"].append(row)
    if args.ddp:
        label, name, config = cases(args.quick, args.only)[0]
        for n in sorted({1, args.ddp}):
            print(f"data-parallel: {label}, {n} process(es) ...", flush=True)
            results.setdefault("ddp", []).append({"label": label, **measure_ddp(n, name, config, batch, steps)})
    K, images = (50, 8) if args.quick else (args.num_samples, args.eval_images)
    for label, name, config in cases(args.quick, args.only):
        print(f"evaluation: {label}, K={K} ...", flush=True)
        results["evaluation"].append({"label": label, "K": K, "images": images,
                                      **_in_child(measure_eval, name, config, K, images, args.device)})
    return results


LABELS = {"reference": "reference", "zoo": "zoo (SVI)", "train": "drawzoo.train", "fast": "fast path (SVI)",
          "train-fast": "drawzoo.train fast path"}


def report(results: dict, header: str) -> str:
    def cell(r, key, fmt):
        return "failed" if "error" in r or key not in r else format(r[key], fmt)

    shown = ["reference", "zoo", "train", "fast", "train-fast"]
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
    e = results["evaluation"][0]
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
                        help=f"only these models, comma-separated: {', '.join(CASES)} [all]")
    parser.add_argument("--out", default="bench_out/speed.json", help="JSON file [bench_out/speed.json]")
    parser.add_argument("--profile", action="store_true", help="only print the profiler's top operations of one "
                        "SVI step, eager and on the fast path, of each model (--only) at its size (--quick)")
    args = parser.parse_args(argv)
    if args.only and not set(args.only) <= set(CASES):
        parser.error(f"--only: unknown {', '.join(sorted(set(args.only) - set(CASES)))}; choose from {', '.join(CASES)}")
    if args.compile_mode:
        os.environ["SPEED_COMPILE_MODE"] = args.compile_mode
        COMPILE_OPTIONS["mode"] = args.compile_mode
    if args.profile:
        for label, name, config in cases(args.quick, args.only):
            for impl in ("zoo", "fast"):
                print(f"\n{label}, {_in_child(profile_ops, name, config, impl, args.device)}")
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
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"header": header, **results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
