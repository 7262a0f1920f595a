"""Honest likelihood estimates for any zoo model, through its model/guide pair only.

For images x and K guide samples z_k ~ q(z | x), with log-weights
``log w_k = log p(x, z_k) - log q(z_k | x)`` (nats):

- ``neg_elbo = -mean_k log w_k``, an unbiased estimate of the negative ELBO (DRAW's reported bound);
- ``nll = -log mean_k w_k = -(logsumexp_k log w_k - log K)``, the importance-sampled estimate of
  -log p(x) (the IWAE bound): ``nll <= neg_elbo`` for every image, and it tends to -log p(x) as K grows.

The K samples of an image are drawn in one vectorised pass (the batch repeated K times), not in
a Python loop.

Partially observed images (a mask, True where a pixel is observed, `drawzoo.masks`): the same
estimate with the guide and the likelihood given the mask estimates log p(x_obs), and the
conditional NLL of the missing pixels is the difference of two such estimates,

    cond_nll = -(log p^(x) - log p^(x_obs)) ~ -log p(x_miss | x_obs),

each ``log p^ = logsumexp_k log w_k - log K`` with its own K samples. Each is the log of an unbiased
estimate of a probability, so by Jensen's inequality it is low in expectation (a stochastic lower
bound, biased by about -Var(w) / (2 K p^2)); their difference is neither an upper nor a lower
bound: its bias is the difference of the two biases, and it vanishes as K grows. An image whose
mask observes every pixel has cond_nll 0 exactly (log p^(x) is used for both); one whose mask
observes nothing has log p(x_obs) = 0 exactly, so cond_nll is its NLL estimate. The two
estimates of an image use the same random numbers (common random numbers: the guide's noise is
shared, which makes their difference less noisy), and the unmasked figures are those without a mask.
"""

from __future__ import annotations

import inspect
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
from .errors import InputError
from .masks import check_mask, named_mask

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


def _mask_kwargs(model: ZooModel, mask: torch.Tensor | None) -> dict:
    """``{"mask": mask}`` for the model and guide, or {} without a mask; InputError if they take none."""
    if mask is None:
        return {}
    for fn in (model.model, model.guide):
        params = inspect.signature(fn).parameters.values()
        if not any(p.name == "mask" or p.kind is p.VAR_KEYWORD for p in params):
            raise InputError(f"{type(model).__name__}.{fn.__name__} takes no mask=: this model cannot score or "
                             "fill partially observed images")
    return {"mask": mask}


def _weighted_traces(model: ZooModel, x: torch.Tensor, num_samples: int, mask=None):
    """Log-weights ``[K, B]`` of K guide samples per image (row k * B + b: sample k of image b) and
    the model's trace that scored them."""
    B = x.shape[0]
    kwargs = _mask_kwargs(model, mask)
    if mask is not None:
        kwargs["mask"] = model.check_mask(mask, B).repeat(num_samples, 1, 1, 1)
    x_k = x.repeat(num_samples, *([1] * (x.dim() - 1)))  # [K * B, ...], sample k of image b at k * B + b
    guide_trace = poutine.trace(model.guide).get_trace(x_k, **kwargs)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x_k, **kwargs)
    log_w = _log_prob_sum(model_trace, len(x_k)) - _log_prob_sum(guide_trace, len(x_k))
    return log_w.view(num_samples, B), model_trace


def log_importance_weights(model: ZooModel, x: torch.Tensor, num_samples: int, mask=None) -> torch.Tensor:
    """``log p(x, z_k) - log q(z_k | x)`` ``[K, B]`` in nats for images `x` ``[B, C, H, W]``; with a
    `mask` (bool, broadcastable to x, True where observed) ``log p(x_obs, z_k) - log q(z_k | x_obs)``."""
    return _weighted_traces(model, x, num_samples, mask)[0]


def _log_mean_exp(log_w: torch.Tensor) -> torch.Tensor:
    """``log mean_k exp(log_w[k])`` ``[B]`` for ``[K, B]``."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def importance_resample(model: ZooModel, x, mask, num_samples: int = 100, sample: bool = False) -> torch.Tensor:
    """Images `x` ``[B, C, H, W]`` with their unobserved pixels (`mask` False) filled from the model
    by sampling importance resampling (Rubin 1988; MIWAE's imputation, Mattei & Frellsen 2019):

    K = `num_samples` guide samples z_k ~ q(z | x_obs) per image, one z_k resampled with
    probability proportional to w_k = p(x_obs, z_k) / q(z_k | x_obs), and the missing pixels taken
    from p(x | z_k) at site "x": its mean, or a draw with ``sample=True``. The resampled z is a draw
    from p(z | x_obs) as K grows (whatever the guide's quality), so the filled pixels are draws
    from p(x_miss | x_obs); the same weights give `evaluate`'s log p(x_obs). The observed pixels
    are returned exactly as they were. Uses the global torch RNG.
    """
    if num_samples < 1:
        raise InputError(f"num_samples must be >= 1, got {num_samples}")
    x = model.check_images(x)
    if mask is None:
        raise InputError("inpainting needs a mask: bool, True where a pixel is observed")
    mask = model.check_mask(mask, x.shape[0])
    log_w, model_trace = _weighted_traces(model, x, num_samples, mask)
    pick = torch.distributions.Categorical(logits=log_w.T).sample()  # [B]: which z_k of each image
    pixels = model_trace.nodes["x"]["fn"]
    filled = (pixels.sample() if sample else pixels.mean).view(num_samples, *x.shape)
    filled = filled[pick, torch.arange(x.shape[0], device=pick.device)]
    return torch.where(mask, x, filled.to(x))


def dataset_mask(mask, image_shape, num_images: int, seed: int = 0) -> torch.Tensor:
    """`mask` for a data set of `num_images` images: a name of `drawzoo.masks.NAMES` (``random:P``
    drawn per image with `seed`) or a bool tensor broadcastable to ``[N, C, H, W]``; bool
    ``[N, C, H, W]`` on the CPU (a view where it repeats)."""
    if isinstance(mask, str):
        mask = named_mask(mask, image_shape, num_images, seed=seed)
    return check_mask(mask, (num_images, *image_shape), device="cpu")


@torch.no_grad()
def evaluate(model: ZooModel, data: torch.Tensor | np.ndarray | torch.utils.data.Dataset, *, num_samples: int = 1,
             batch_size: int | None = None, seed: int = 0, progress: bool = False,
             compile: bool | None = None, mask=None) -> dict[str, float]:
    """Per-image means in nats over `data` (tensor/array ``[N, C, H, W]`` in [0, 1], or a Dataset).

    Returns ``{"neg_elbo", "nll", "num_samples", "num_images", "seconds", "images_per_s"}`` (the
    time of the scoring passes). With a `mask` (a name of `drawzoo.masks.NAMES`, e.g. "bottom",
    or a bool tensor broadcastable to ``[N, C, H, W]``, True where observed) also ``"nll_observed"``
    (-log p^(x_obs)), ``"cond_nll"`` (``nll - nll_observed``, the importance-sampled estimate of
    -log p(x_miss | x_obs): see the module docstring for its bias) and ``"missing_fraction"`` (of
    the pixels scored); a mask that observes every pixel of every image is an error (the figure
    would be 0 by definition). `compile`: run the model's step functions through ``torch.compile``
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
    if mask is not None:
        _mask_kwargs(model, mask)  # before any work: the model takes masks
        mask = dataset_mask(mask, model.image_shape, len(dataset), seed)
        if bool(mask.all()):
            raise InputError("the mask observes every pixel of every image: nothing is missing, so the "
                             "conditional NLL is 0 by definition; give a mask with False where pixels are missing")
    if compile is not None and compile != (getattr(model, "compile_options", None) is not None):
        model.compile_steps(compile)
    group = distributed.current()
    if group.active:
        dataset = torch.utils.data.Subset(dataset, range(group.rank, len(dataset), group.world))
        mask = None if mask is None else mask[group.rank::group.world]
    batch_size = max(1, ROWS_PER_PASS // num_samples) if batch_size is None else batch_size
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_images,
                                         generator=torch.Generator())  # draws nothing from the seeded RNG
    neg_elbo = nll = nll_observed = missing = 0.0
    n = 0
    devices = [model.device] if model.device.type == "cuda" else []
    started = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + group.rank)
        for x in tqdm(loader, desc=f"evaluate (K={num_samples})", disable=not (progress and group.main),
                      leave=False):
            x = model.check_images(x)
            if mask is not None:  # from the RNG state the unmasked pass starts from, which then goes on as without
                observed = mask[n:n + len(x)]
                with torch.random.fork_rng(devices=devices):
                    log_p_observed = _log_mean_exp(log_importance_weights(model, x, num_samples, observed).double())
            log_w = log_importance_weights(model, x, num_samples).double()
            log_p = _log_mean_exp(log_w)
            neg_elbo -= log_w.mean(0).sum().item()
            nll -= log_p.sum().item()
            if mask is not None:
                seen = observed.flatten(1).to(log_p.device)  # exact where all or nothing is observed:
                log_p_observed = torch.where(seen.all(1), log_p, torch.where(seen.any(1), log_p_observed, 0.0))
                nll_observed -= log_p_observed.sum().item()
                missing += (~seen).double().mean(1).sum().item()
            n += len(x)
    seconds = time.perf_counter() - started
    neg_elbo, nll, nll_observed, missing, n = group.sum(neg_elbo, nll, nll_observed, missing, n)
    result = {"neg_elbo": neg_elbo / n, "nll": nll / n, "num_samples": num_samples, "num_images": int(n),
              "seconds": seconds, "images_per_s": n / seconds}
    if mask is not None:
        result.update(nll_observed=nll_observed / n, cond_nll=(nll - nll_observed) / n, missing_fraction=missing / n)
    return result
