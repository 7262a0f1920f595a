"""Importance sampling with a model's guide as the proposal: log-weights and resampling.

For images x and K guide samples z_k ~ q(z | x), the log-weights are
``log w_k = log p(x, z_k) - log q(z_k | x)`` (nats), ``[K, B]``; with a mask (True where a pixel
is observed, `drawzoo.data.masks`) the guide and the likelihood are given it, and the weights are
``p(x_obs, z_k) / q(z_k | x_obs)``. `drawzoo.evaluation` turns them into likelihood estimates;
`importance_resample` (``ZooModel.inpaint``) into filled-in pixels. The K samples of an image are
drawn in one vectorised pass (the batch repeated K times), not in a Python loop.

Both evaluation and the models use this module; it uses neither.
"""

from __future__ import annotations

import inspect
import math
from typing import Protocol

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ..errors import InputError
from ..memory import images_per_pass


class ModelAndGuide(Protocol):
    """What importance sampling needs of a model (every `drawzoo.models.ZooModel` has it): a Pyro
    ``model`` and ``guide`` over images ``[B, C, H, W]`` and the checks of their inputs."""

    def model(self, x, **kwargs): ...

    def guide(self, x, **kwargs): ...

    def check_images(self, x) -> torch.Tensor: ...

    def check_mask(self, mask, batch_size: int) -> torch.Tensor | None: ...


def sample_sites(trace):
    """The sample sites of a trace (subsample sites left out), in the order they were sampled."""
    return {name: site for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)}


def not_per_image(name: str, what: str, shape, rows: int) -> ValueError:
    """The error of a site whose `what` (log_prob, KL, batch) has `shape`, not one value per image."""
    return ValueError(f"site {name!r} has {what} shape {tuple(shape)}; expected one value per image "
                      f"([{rows}]): put it inside pyro.plate('data', B) with its event dims")


def per_image(value: torch.Tensor, name: str, rows: int, what: str = "log_prob") -> torch.Tensor:
    """`value` as one figure per row ``[rows]``, or a ValueError naming the site."""
    if value.dim() > 1 or (value.dim() == 1 and value.shape[0] != rows):
        raise not_per_image(name, what, value.shape, rows)
    return value.expand(rows)


def log_prob_sum(trace, rows: int) -> torch.Tensor:
    """Sum of the log-probabilities ``[rows]`` of every sample site of a trace (nats)."""
    trace.compute_log_prob()
    total = torch.zeros(rows)
    for name, site in sample_sites(trace).items():
        total = total.to(site["log_prob"]) + per_image(site["log_prob"], name, rows)
    return total


def mask_kwargs(model: ModelAndGuide, mask: torch.Tensor | None) -> dict:
    """``{"mask": mask}`` for the model and guide, or {} without a mask; InputError if they take none."""
    if mask is None:
        return {}
    for fn in (model.model, model.guide):
        params = inspect.signature(fn).parameters.values()
        if not any(p.name == "mask" or p.kind is p.VAR_KEYWORD for p in params):
            raise InputError(f"{type(model).__name__}.{fn.__name__} takes no mask=: this model cannot score or "
                             "fill partially observed images")
    return {"mask": mask}


def traces(model: ModelAndGuide, x: torch.Tensor, num_samples: int, mask=None):
    """The guide's trace on `x` repeated K times (``[K * B, ...]``, sample k of image b at row
    k * B + b) and the model's, replaying it; with a `mask` (bool, broadcastable to x, True where
    observed) both are given it, repeated alike."""
    kwargs = mask_kwargs(model, mask)
    if mask is not None:
        kwargs["mask"] = model.check_mask(mask, len(x)).repeat(num_samples, 1, 1, 1)
    x_k = x.repeat(num_samples, *([1] * (x.dim() - 1)))
    guide_trace = poutine.trace(model.guide).get_trace(x_k, **kwargs)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x_k, **kwargs)
    return guide_trace, model_trace


def log_weights(guide_trace, model_trace, num_samples: int, batch: int) -> torch.Tensor:
    """``log p - log q`` ``[K, B]`` of `traces`'s K * B rows."""
    rows = num_samples * batch
    return (log_prob_sum(model_trace, rows) - log_prob_sum(guide_trace, rows)).view(num_samples, batch)


def log_importance_weights(model: ModelAndGuide, x: torch.Tensor, num_samples: int, mask=None) -> torch.Tensor:
    """``log p(x, z_k) - log q(z_k | x)`` ``[K, B]`` in nats for images `x` ``[B, C, H, W]``; with a
    `mask` (bool, broadcastable to x, True where observed) ``log p(x_obs, z_k) - log q(z_k | x_obs)``."""
    guide_trace, model_trace = traces(model, x, num_samples, mask)
    return log_weights(guide_trace, model_trace, num_samples, len(x))


def log_mean_exp(log_w: torch.Tensor) -> torch.Tensor:
    """``log mean_k exp(log_w[k])`` ``[B]`` for ``[K, B]``."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def importance_resample(model: ModelAndGuide, x, mask, num_samples: int = 100, sample: bool = False) -> torch.Tensor:
    """Images `x` ``[B, C, H, W]`` with their unobserved pixels (`mask` False) filled from the model
    by sampling importance resampling (Rubin 1988; MIWAE's imputation, Mattei & Frellsen 2019):

    K = `num_samples` guide samples z_k ~ q(z | x_obs) per image, one z_k resampled with
    probability proportional to w_k = p(x_obs, z_k) / q(z_k | x_obs), and the missing pixels taken
    from p(x | z_k) at site "x": its mean, or a draw with ``sample=True``. The resampled z is a draw
    from p(z | x_obs) as K grows (whatever the guide's quality), so the filled pixels are draws
    from p(x_miss | x_obs); the same weights give `drawzoo.evaluate`'s log p(x_obs). The observed
    pixels are returned exactly as they were. Uses the global torch RNG. K whose one image cannot
    fit in memory is a `MemoryLimitError`; images that cannot all fit in one pass are done in
    several (`drawzoo.memory.images_per_pass`).
    """
    if num_samples < 1:
        raise InputError(f"num_samples must be >= 1, got {num_samples}")
    x = model.check_images(x)
    if mask is None:
        raise InputError("inpainting needs a mask: bool, True where a pixel is observed")
    mask = model.check_mask(mask, x.shape[0])
    per_pass = images_per_pass(num_samples, len(x), x.shape[1:], x.device, lambda: traces(model, x[:1], 1, mask[:1]))
    if per_pass < len(x):  # as many images per pass as the memory holds
        return torch.cat([importance_resample(model, x[i:i + per_pass], mask[i:i + per_pass], num_samples, sample)
                          for i in range(0, len(x), per_pass)])
    guide_trace, model_trace = traces(model, x, num_samples, mask)
    log_w = log_weights(guide_trace, model_trace, num_samples, len(x))
    pick = torch.distributions.Categorical(logits=log_w.T).sample()  # [B]: which z_k of each image
    pixels = model_trace.nodes["x"]["fn"]
    filled = (pixels.sample() if sample else pixels.mean).view(num_samples, *x.shape)
    filled = filled[pick, torch.arange(x.shape[0], device=pick.device)]
    return torch.where(mask, x, filled.to(x))
