"""The measurements of `speed.py`, each a function that `speed.py` runs in a fresh process (its own
peak memory): throughput of the implementations taking turns (`measure_throughput`), memory and
the first step (`measure_memory`), losses against eager (`measure_agreement`), FLOPs per image,
the fp32 peak, compile time, NLL evaluation, data-parallel training and the profiler's table.

Models come from `drawzoo.load` (weights seeded with 0); images are Bernoulli(0.13) noise of
MNIST's size; the reference losses are `reference.py`'s.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import time
from pathlib import Path

import torch

from reference import LOSSES

BATCH = 100  #: images per training step
TRAIN_CHUNK = 5  #: training steps per timed call (drawzoo.train is timed over whole calls)
#: ... for the models whose steps take milliseconds (all but DRAW): a call's set-up and its first
#: step of a batch shape (Pyro's checks, plain) then weigh about as little as in a run's epoch
SMALL_CHUNK = 50
MIN_ROUNDS = 5  #: the implementations take turns at least this many times
ELBO = {"objective": "elbo", "particles": 1}  #: the default objective (``make_elbo``'s arguments)
#: torch.compile options of the fast path (--compile-mode; through the environment, for the child processes)
COMPILE_OPTIONS: dict = {"mode": os.environ["SPEED_COMPILE_MODE"]} if os.environ.get("SPEED_COMPILE_MODE") else {}
#: the implementations' names in the tables
LABELS = {"reference": "reference", "zoo": "zoo (SVI)", "train": "drawzoo.train", "fast": "fast path (SVI)",
          "train-fast": "drawzoo.train fast path"}


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


def train_chunk(name: str) -> int:
    """Training steps per timed `drawzoo.train` call for model `name`."""
    return TRAIN_CHUNK if name == "draw" else SMALL_CHUNK


def reference_loss(name: str, model, objective: dict):
    """x -> `reference.py`'s loss of `model` (per image) on the bound of `objective`."""
    if objective["particles"] > 1:
        return functools.partial(LOSSES[name], model, particles=objective["particles"])
    return functools.partial(LOSSES[name], model)


def _elbo(objective: dict, jit: bool = False):
    from pyro.infer import JitTraceMeanField_ELBO

    from drawzoo.evaluation.objectives import make_elbo

    return JitTraceMeanField_ELBO() if jit else make_elbo(**objective)


def _stepper(impl: str, model, name: str, objective: dict = ELBO):
    """A function x -> loss (nats, batch sum) that takes one optimizer step of implementation `impl`
    (for "train": one `drawzoo.train` epoch over x in batches of `BATCH`) on `objective`."""
    import pyro
    from pyro.infer import SVI

    if impl in ("train", "train-fast"):
        import drawzoo

        def train(x):
            history = drawzoo.train(model, x, epochs=1, batch_size=BATCH, lr=1e-4, device=x.device, progress=False,
                                    compile=impl == "train-fast", **objective)
            return history[-1]["train_loss"] * len(x)
        return train
    if impl == "reference":
        return _adam_steps(reference_loss(name, model, objective), model)
    if impl == "compile-loss":
        return _adam_steps(_loss_fn(impl, model, objective), model)
    if impl in ("fast", "unvalidated"):
        model.compile_steps(**COMPILE_OPTIONS)
    pyro.clear_param_store()
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-4}), _elbo(objective, jit=impl == "jit"))
    return _unvalidated(svi.step) if impl == "unvalidated" else svi.step


def _unvalidated(fn):
    """`fn` run with Pyro's validation off (what drawzoo.train does after a run's first step of each
    batch shape, `TrainConfig.validate`)."""
    import pyro

    def unvalidated(x):
        with pyro.validation_enabled(False):
            return fn(x)
    return unvalidated


def measure_memory(name: str, config: dict, impl: str, batch: int, device: str, objective: dict = ELBO) -> dict:
    """Peak memory (MB) of a few optimizer steps, and the first step's time and loss."""
    device = torch.device(device)
    model = _build(name, config, device)
    x = _images(batch, device)
    step = _stepper(impl, model, name, objective)
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


def _loss_fn(impl: str, model, objective: dict = ELBO):
    """x -> the negative ELBO per image (nats) by implementation `impl`, without an optimizer step."""
    from drawzoo.training import ELBOLoss

    if impl == "compile-loss":
        import torch._inductor.config as inductor

        inductor.fallback_random = True  # the same random numbers as eager
        return torch.compile(ELBOLoss(model, _elbo(objective)))
    if impl == "unvalidated":
        return _unvalidated(ELBOLoss(model.compile_steps(**COMPILE_OPTIONS), _elbo(objective)))
    return ELBOLoss(model, _elbo(objective, jit=impl == "jit"))


def measure_agreement(name: str, config: dict, impl: str, batch: int, device: str, objective: dict = ELBO,
                      draws: int = 16) -> dict:
    """Whether `impl` computes the eager SVI loss: the means of `draws` losses of each for the same
    weights and images agree within 4 standard errors of their difference. (Losses at one seed need
    not agree: a traced graph samples with other kernels, so its noise differs.)"""
    device = torch.device(device)
    model = _build(name, config, device)
    x = _images(batch, device)
    fns = {"eager": _loss_fn("zoo", model, objective), impl: _loss_fn(impl, model, objective)}
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


def measure_throughput(name: str, config: dict, impls: list[str], batch: int, steps: int, device: str,
                       objective: dict = ELBO) -> dict:
    """Images/s of each implementation from the median of `steps` timed steps (at least
    `MIN_ROUNDS` turns each), the implementations taking turns, each on its own copy of the same
    model. With "train" among them, every implementation takes `train_chunk` steps a turn (one
    drawzoo.train call of that many batches), and `steps` is rounded up to whole turns."""
    device = torch.device(device)
    chunk = train_chunk(name) if {"train", "train-fast"} & set(impls) else 1
    x = _images(batch * chunk, device)
    steppers = {impl: _stepper(impl, _build(name, config, device), name, objective) for impl in impls}

    def turn(impl, step):
        if impl in ("train", "train-fast"):
            return step(x)
        return [step(part) for part in x.split(batch)]

    for impl, step in steppers.items():
        turn(impl, step)  # warm-up (compilation, for the variants that compile)
    seconds, _ = _median_seconds({impl: functools.partial(turn, impl, step) for impl, step in steppers.items()},
                                 lambda rounds, _: rounds * chunk < steps or rounds < MIN_ROUNDS, device)
    return {impl: batch * chunk / s for impl, s in seconds.items()}


def measure_flops(name: str, config: dict, objective: dict = ELBO) -> float:
    """FLOPs per image of one training step of the network (forward and backward of the reference
    loss, batch `BATCH`), as ``torch.utils.flop_counter`` counts them (matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = _build(name, config, torch.device("cpu"))
    x = _images(BATCH, "cpu")
    with FlopCounterMode(display=False) as counter:
        reference_loss(name, model, objective)(x).backward()
    return counter.get_total_flops() / BATCH


def profile_ops(name: str, config: dict, impl: str, device: str, objective: dict = ELBO, rows: int = 10) -> str:
    """The top `rows` operations by self CPU time of one step (impl "zoo" or "fast": an SVI step,
    after two warm-up steps; "train" or "train-fast": one `drawzoo.train` call of `train_chunk`
    steps after a warm-up call, per step), as a markdown table; inductor's graphs are named as such."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device)
    model = _build(name, config, device)
    steps = train_chunk(name) if impl in ("train", "train-fast") else 1
    x = _images(BATCH * steps, device)
    step = _stepper(impl, model, name, objective)
    step(x)
    step(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(x)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) / 1e3 / steps
    what = "one SVI step" if steps == 1 else f"a step of a drawzoo.train call of {steps}"
    lines = [f"{LABELS[impl]}: {what}, self CPU {total:.1f} ms under the profiler",
             "| op | calls a step | self ms | share |", "|---|---:|---:|---:|"]
    for e in events[:rows]:
        op = "inductor kernels (one compiled graph)" if e.key.startswith("## Call CompiledFxGraph") else e.key
        self_ms = e.self_cpu_time_total / 1e3 / steps
        lines.append(f"| {op} | {e.count / steps:g} | {self_ms:.2f} | {100 * self_ms / total:.0f}% |")
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


def measure_compile(name: str, config: dict, device: str, cache_dir: str, objective: dict = ELBO) -> dict:
    """Seconds that the first fast-path SVI step takes more than a later one, with inductor's
    on-disk cache in `cache_dir` (a fresh folder: cold; one a process filled before: warm); for the
    models whose training step is recorded (`drawzoo.training.step_capture`), of the first
    ``drawzoo.train(compile=True)`` call of `train_chunk` steps over a later call."""
    import os

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    device = torch.device(device)
    model = _build(name, config, device)
    recorded = type(model).__dict__.get("traceable", False)
    step = _stepper("train-fast" if recorded else "fast", model, name, objective)
    x = _images(BATCH * (train_chunk(name) if recorded else 1), device)
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
        from drawzoo.files import write_output
        write_output(out, json.dumps({"images_per_s": steps * batch / (time.perf_counter() - started)}), "JSON")


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
