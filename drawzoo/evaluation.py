"""Honest likelihood estimates for any zoo model, through its model/guide pair only.

For images x and K guide samples z_k ~ q(z | x), with log-weights
``log w_k = log p(x, z_k) - log q(z_k | x)`` (nats):

- ``neg_elbo = -mean_k log w_k``, an unbiased estimate of the negative ELBO (DRAW's reported bound);
- ``nll = -log mean_k w_k = -(logsumexp_k log w_k - log K)``, the importance-sampled estimate of
  -log p(x) (the IWAE bound): ``nll <= neg_elbo`` for every image, and it tends to -log p(x) as K grows.

The K samples of an image are drawn in one vectorised pass (the batch repeated K times), not in
a Python loop.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from tqdm.auto import tqdm

from . import distributed
from .batching import as_dataset, collate_images

if TYPE_CHECKING:
    from .models.base import ZooModel

#: Rows (images x samples) per vectorised pass when `batch_size` is not given.
ROWS_PER_PASS = 4096


def _log_prob_sum(trace, rows: int) -> torch.Tensor:
    """Sum of the log-probabilities ``[rows]`` of every sample site of a trace (nats)."""
    trace.compute_log_prob()
    total = torch.zeros(rows)
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        lp = site["log_prob"]
        if lp.dim() > 1 or (lp.dim() == 1 and lp.shape[0] != rows):
            raise ValueError(f"site {name!r} has log_prob shape {tuple(lp.shape)}; expected one value "
                             f"per image ([{rows}]): put it inside pyro.plate('data', B) with its event dims")
        total = total.to(lp) + lp
    return total


def log_importance_weights(model: ZooModel, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """``log p(x, z_k) - log q(z_k | x)`` ``[K, B]`` in nats for images `x` ``[B, C, H, W]``."""
    B = x.shape[0]
    x_k = x.repeat(num_samples, *([1] * (x.dim() - 1)))  # [K * B, ...], sample k of image b at k * B + b
    guide_trace = poutine.trace(model.guide).get_trace(x_k)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x_k)
    log_w = _log_prob_sum(model_trace, len(x_k)) - _log_prob_sum(guide_trace, len(x_k))
    return log_w.view(num_samples, B)


@torch.no_grad()
def evaluate(model: ZooModel, data: torch.Tensor | np.ndarray | torch.utils.data.Dataset, *, num_samples: int = 1,
             batch_size: int | None = None, seed: int = 0, progress: bool = False,
             compile: bool | None = None) -> dict[str, float]:
    """Per-image means in nats over `data` (tensor/array ``[N, C, H, W]`` in [0, 1], or a Dataset).

    Returns ``{"neg_elbo", "nll", "num_samples", "num_images", "seconds", "images_per_s"}`` (the
    time of the scoring passes). `compile`: run the model's step functions through ``torch.compile``
    (``model.compile_steps()``, which stays), the fast path; None leaves the model as it is. `batch_size` images are scored
    per pass (K * batch_size rows); by default as many as fit in `ROWS_PER_PASS` rows. The global
    RNG is left as it was (sampling uses a fork seeded with `seed`): for one batch the z's are
    those that ``torch.manual_seed(seed)`` and then K vectorised particles of the guide draw, so
    ``nll`` is exactly ``RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True)``'s loss
    per image after the same seeding.

    Under ``torchrun`` each process scores every world-th image (seed ``seed + rank``) and the
    per-image figures are summed over the processes: every process returns the same means.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (None: as many images as fit in {ROWS_PER_PASS} rows), "
                         f"got {batch_size}")
    dataset = as_dataset(data, model.image_shape)
    if compile is not None and compile != (getattr(model, "compile_options", None) is not None):
        model.compile_steps(compile)
    group = distributed.current()
    if group.active:
        dataset = torch.utils.data.Subset(dataset, range(group.rank, len(dataset), group.world))
    batch_size = max(1, ROWS_PER_PASS // num_samples) if batch_size is None else batch_size
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_images,
                                         generator=torch.Generator())  # draws nothing from the seeded RNG
    neg_elbo = nll = 0.0
    n = 0
    devices = [model.device] if model.device.type == "cuda" else []
    started = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + group.rank)
        for x in tqdm(loader, desc=f"evaluate (K={num_samples})", disable=not (progress and group.main),
                      leave=False):
            x = model.check_images(x)
            log_w = log_importance_weights(model, x, num_samples).double()
            neg_elbo -= log_w.mean(0).sum().item()
            nll -= (torch.logsumexp(log_w, 0) - math.log(num_samples)).sum().item()
            n += len(x)
    seconds = time.perf_counter() - started
    neg_elbo, nll, n = group.sum(neg_elbo, nll, n)
    return {"neg_elbo": neg_elbo / n, "nll": nll / n, "num_samples": num_samples, "num_images": int(n),
            "seconds": seconds, "images_per_s": n / seconds}
