"""Honest likelihood estimates for any zoo model, through its model/guide pair only.

For images x and K guide samples z_k ~ q(z | x), with log-weights
``log w_k = log p(x, z_k) - log q(z_k | x)`` (nats):

- ``neg_elbo = -mean_k log w_k``, an unbiased estimate of the negative ELBO (DRAW's reported bound);
- ``nll = -log mean_k w_k = -(logsumexp_k log w_k - log K)``, the importance-sampled estimate of
  -log p(x) (the IWAE bound): ``nll <= neg_elbo`` for every image, and it tends to -log p(x) as K grows.

How much each latent site tells (`evaluate(..., per_step=True)`): for every latent site of the guide,
in the order the guide samples them (DRAW: z_0..z_{T-1}, one per glimpse; the VAE: its one z), the
mean ``KL(q(z_t | x, z_<t) || p(z_t | z_<t))`` in nats on the same passes, analytic where
``torch.distributions.kl_divergence`` knows the pair and that is exact (as the ``"elbo"`` objective
takes it, `drawzoo.evaluation.objectives.analytic_kl_sites`; Normal vs Normal, with Pyro's ``to_event``),
else the Monte Carlo estimate
``log q(z_t) - log p(z_t)`` at the sampled z_t; with ``reconstruction = -E_q log p(x | z)`` they add
up to the negative ELBO with analytic KL terms (DRAW's L^x + L^z, the ``"elbo"`` objective's loss).

Which latent units the model uses (`evaluate(..., active_units=True)`): the activity of a unit u
of Burda et al. (2016, the IWAE paper), ``A_u = Var_x(E_q[u | x])``, the variance over the images
of its posterior mean; a unit is active when ``A_u`` exceeds `ACTIVE_UNIT_THRESHOLD` (0.01, the
threshold of the authors' code, github.com/yburda/iwae, iwae.py), and an inactive unit's posterior
is the same for every image: it tells nothing. ``E_q[u | x]`` is the mean over the K samples of
the mean of the distribution that drew u: exact for a site whose distribution depends on x only
(z_1 of the VAEs); for one that depends on the z's drawn before (z_2, DRAW's z_t), the Monte Carlo
average over those, which at K=1 is the estimate of the authors' ``get_units_variances``. Each
unit of a site is one number of its event (DRAW's z_t: ``latent_dim`` units a step).

The log-weights come from `drawzoo.models.importance`: the K samples of an image are drawn in one
vectorised pass (the batch repeated K times), not in a Python loop.

Partially observed images (a mask, True where a pixel is observed, `drawzoo.data.masks`): the same
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

import math
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from torch.distributions import kl_divergence
from tqdm.auto import tqdm

from .. import distributed
from ..data.batching import as_dataset, collate_images
from ..data.masks import check_mask, named_mask
from ..errors import InputError, NoLatentSitesError
from ..memory import ROWS_PER_PASS, images_per_pass
from ..models.importance import (
    importance_resample,  # noqa: F401 - drawzoo.evaluation.importance_resample, as before
    log_importance_weights,
    log_mean_exp,
    log_weights,
    mask_kwargs,
    not_per_image,
    per_image,
    sample_sites,
    traces,
)
from .objectives import analytic_kl_sites

if TYPE_CHECKING:
    from ..models.base import ZooModel



def bits_per_dim(nats: float, image_shape) -> float:
    """`nats` per image in bits per dimension, the unit of the colour literature: ``nats / (C H W ln 2)``."""
    return nats / (math.prod(image_shape) * math.log(2))


def _check_latent_sites(model: ZooModel, x: torch.Tensor, what: str) -> None:
    """`NoLatentSitesError` unless the guide samples a latent site on images `x`; `what` needs them."""
    trace = poutine.trace(model.guide).get_trace(x)
    if not any(not site["is_observed"] for site in sample_sites(trace).values()):
        raise NoLatentSitesError(f"model {model.zoo_name!r} has no latent site (its guide samples none): "
                                 f"no {what} to report")


def kl_terms(guide_trace, model_trace, rows: int) -> tuple[dict[str, torch.Tensor], list[str], torch.Tensor]:
    """Per latent site of the guide (by name, in sampling order): ``KL(q || p)`` ``[rows]`` in nats
    and how it was computed ("analytic" or "monte carlo", see the module's docstring); and the
    reconstruction term ``-log p(x | z)`` ``[rows]`` (the model's observed sites). Both traces must
    have had their log-probabilities computed (`drawzoo.models.importance.log_prob_sum`)."""
    model_sites = sample_sites(model_trace)
    exact = analytic_kl_sites(model_trace, guide_trace)
    kls, methods = {}, []
    for name, q_site in sample_sites(guide_trace).items():
        if q_site["is_observed"]:
            continue
        p_site = model_sites.get(name)
        if p_site is None or p_site["is_observed"]:
            raise ValueError(f"the guide's latent site {name!r} is not a latent site of the model")
        try:
            if name not in exact:  # its model parents depend on it in the guide: no analytic KL
                raise NotImplementedError
            kl = scale_and_mask(kl_divergence(q_site["fn"], p_site["fn"]), q_site["scale"], q_site["mask"])
            methods.append("analytic")
        except NotImplementedError:
            kl = q_site["log_prob"] - p_site["log_prob"]
            methods.append("monte carlo")
        kls[name] = per_image(kl, name, rows, "KL")
    observed = [per_image(site["log_prob"], name, rows) for name, site in model_sites.items() if site["is_observed"]]
    reconstruction = -torch.stack(observed).sum(0) if observed else torch.zeros(rows)
    return kls, methods, reconstruction


ACTIVE_UNIT_THRESHOLD = 0.01
"""A latent unit is active when the variance over the images of its posterior mean exceeds this
(Burda et al. 2016; the threshold of their code)."""


def posterior_means(guide_trace, num_samples: int, batch: int) -> dict[str, torch.Tensor]:
    """Per latent site of the guide (by name, in sampling order): ``E_q[z | x]`` ``[batch, units]``
    (float64) of `drawzoo.models.importance.traces`'s K * B rows, the mean over the K samples of
    each sample's distribution mean (its value where the distribution has no mean); a site's event
    is flattened into its units."""
    rows, means = num_samples * batch, {}
    for name, site in sample_sites(guide_trace).items():
        if site["is_observed"]:
            continue
        try:
            mean = site["fn"].mean
        except NotImplementedError:
            mean = site["value"]
        event = site["fn"].event_dim
        mean = mean.reshape(*mean.shape[:mean.dim() - event], -1) if event else mean.unsqueeze(-1)
        if mean.dim() != 2 or mean.shape[0] not in (1, rows):
            raise not_per_image(name, "batch", mean.shape[:-1], rows)
        means[name] = mean.expand(rows, -1).double().reshape(num_samples, batch, -1).mean(0).cpu()
    return means


def dataset_mask(mask, image_shape, num_images: int, seed: int = 0) -> torch.Tensor:
    """`mask` for a data set of `num_images` images: a name of `drawzoo.data.masks.NAMES` (``random:P``
    drawn per image with `seed`) or a bool tensor broadcastable to ``[N, C, H, W]``; bool
    ``[N, C, H, W]`` on the CPU (a view where it repeats)."""
    if isinstance(mask, str):
        mask = named_mask(mask, image_shape, num_images, seed=seed)
    return check_mask(mask, (num_images, *image_shape), device="cpu")


@torch.no_grad()
def evaluate(model: ZooModel, data: torch.Tensor | np.ndarray | torch.utils.data.Dataset, *, num_samples: int = 1,
             batch_size: int | None = None, seed: int = 0, progress: bool = False,
             compile: bool | None = None, per_step: bool = False, mask=None, nested_k=(),
             per_image: bool = False, active_units: bool = False) -> dict:
    """Per-image means in nats over `data`: the negative ELBO and the importance-sampled NLL.

    The global RNG is left as it was (sampling uses a fork seeded with ``seed``): for one batch the
    z's are those that ``torch.manual_seed(seed)`` and then K vectorised particles of the guide
    draw, so ``nll`` is exactly ``RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True)``'s
    loss per image after the same seeding.

    Under ``torchrun`` each process scores every world-th image (seed ``seed + rank``) and the
    per-image figures are summed over the processes: every process returns the same means.

    Args:
        model: the model to score, a `drawzoo.models.ZooModel`.
        data: tensor or array ``[N, C, H, W]`` in [0, 1], or a Dataset.
        num_samples: K, the importance samples per image.
        batch_size: images scored per pass (K * batch_size rows); by default as many as fit in
            `ROWS_PER_PASS` rows, and never more than the memory holds
            (`drawzoo.memory.images_per_pass`).
        seed: the seed of the sampling.
        progress: show a progress bar.
        compile: run the model's step functions through ``torch.compile``
            (``model.compile_steps()``, which stays), the fast path; None leaves the model as it is.
        per_step: also how much each latent site tells, from the same passes (see the module's
            docstring): the ``"kl_per_step"``, ``"kl_estimate"``, ``"latent_sites"`` and
            ``"reconstruction"`` figures below.
        mask: a name of `drawzoo.data.masks.NAMES` (e.g. "bottom"), or a bool tensor
            broadcastable to ``[N, C, H, W]``, True where observed: also the conditional figures
            below.
        nested_k: smaller sample sizes K' (each dividing ``num_samples``) whose NLL estimates come
            from the same samples: ``"nll_k"`` below.
        per_image: also ``"per_image"``, each image's figures, for standard errors (the figures'
            spread over images) and for scoring a data set in parts.
        active_units: also which latent units the model uses, from the same passes (see the
            module's docstring): the ``"active_units"``, ``"latent_units"`` and ``"unit_activity"``
            figures below.

    Returns:
        ``{"neg_elbo", "nll", "num_samples", "num_images", "seconds", "images_per_s"}`` (the time
        of the scoring passes), and the two figures in bits per dimension (`bits_per_dim`):
        ``"neg_elbo_bits_per_dim"``, ``"nll_bits_per_dim"``. With ``per_step``, also
        ``"kl_per_step"``, the mean KL of each latent site in the guide's order (T floats for DRAW,
        one for the VAE), ``"kl_estimate"``, how each was computed (``"analytic"`` or
        ``"monte carlo"``), ``"latent_sites"``, their names, and ``"reconstruction"``,
        ``-E log p(x | z)``. With a ``mask``, also ``"nll_observed"`` (-log p^(x_obs)),
        ``"cond_nll"`` (``nll - nll_observed``, the importance-sampled estimate of
        -log p(x_miss | x_obs): see the module's docstring for its bias) and
        ``"missing_fraction"`` (of the pixels scored). With ``nested_k``, ``"nll_k"``,
        ``{K': mean over images of the mean over the K/K' disjoint groups of K' samples of
        -log mean_group w}``, an unbiased estimate of E[-log p^_K'] (the K-convergence of the
        estimate at no extra cost; ``nll_k[K] == nll``). With ``per_image``, ``"per_image"``,
        ``{"neg_elbo": [N], "nll": [N], "nll_k": {K': [N]}}`` (float64, CPU, in the order of
        ``data``). With ``active_units``, per latent site in the guide's order (named in
        ``"latent_sites"``): ``"active_units"``, how many of its units have an activity
        ``Var_x(E_q[u | x])`` above `ACTIVE_UNIT_THRESHOLD`, ``"latent_units"``, how many it has,
        and ``"unit_activity"``, each unit's activity.

    Raises:
        ValueError: ``num_samples`` or ``batch_size`` below 1, or a ``nested_k`` that does not
            divide ``num_samples``.
        NoLatentSitesError: ``per_step`` or ``active_units`` for a model without latent sites
            (before any work).
        InputError: a mask that observes every pixel of every image (the conditional figure would
            be 0 by definition).
        MemoryLimitError: K samples of one image cannot fit in memory (before any work).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (None: as many images as fit in {ROWS_PER_PASS} rows), "
                         f"got {batch_size}")
    nested_k = sorted(set(nested_k))
    if any(not isinstance(k, int) or k < 1 or num_samples % k for k in nested_k):
        raise ValueError(f"nested_k must hold sample sizes that divide num_samples={num_samples}, got {nested_k}")
    dataset = as_dataset(data, model.image_shape)
    if mask is not None:
        mask_kwargs(model, mask)  # before any work: the model takes masks
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
    if len(dataset):  # K that cannot fit is refused; a batch that cannot, split
        def probe():
            return traces(model, model.check_images(collate_images([dataset[0]])), 1)
        batch_size = images_per_pass(num_samples, batch_size, model.image_shape, model.device, probe)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_images,
                                         generator=torch.Generator())  # draws nothing from the seeded RNG
    neg_elbo = nll = reconstruction = nll_observed = missing = 0.0
    kl_sums = kl_estimate = latent_sites = None
    moments = None  # active_units: per latent site, the sums over images of E_q[z | x] and of its square
    n = 0
    images = {"neg_elbo": [], "nll": [], **{k: [] for k in nested_k}}  # per image, this process's
    devices = [model.device] if model.device.type == "cuda" else []
    started = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        if (per_step or active_units) and len(dataset):  # before any work
            _check_latent_sites(model, model.check_images(collate_images([dataset[0]])),
                                "KL per step" if per_step else "active units")
        torch.manual_seed(seed + group.rank)
        for x in tqdm(loader, desc=f"evaluate (K={num_samples})", disable=not (progress and group.main),
                      leave=False):
            x = model.check_images(x)
            if mask is not None:  # from the RNG state the unmasked pass starts from, which then goes on as without
                observed = mask[n:n + len(x)]
                with torch.random.fork_rng(devices=devices):
                    log_p_observed = log_mean_exp(log_importance_weights(model, x, num_samples, observed).double())
            guide_trace, model_trace = traces(model, x, num_samples)
            rows = num_samples * len(x)
            log_w = log_weights(guide_trace, model_trace, num_samples, len(x)).double()
            log_p = log_mean_exp(log_w)
            if per_image or nested_k:  # kept only when asked for
                images["neg_elbo"].append(-log_w.mean(0).cpu())
                images["nll"].append(-log_p.cpu())
            for k in nested_k:  # the K/k disjoint groups of k samples: log mean_group w, averaged over groups
                images[k].append(-log_mean_exp(log_w.view(num_samples // k, k, -1).transpose(0, 1)).mean(0).cpu())
            neg_elbo -= log_w.mean(0).sum().item()
            nll -= log_p.sum().item()
            if mask is not None:
                seen = observed.flatten(1).to(log_p.device)  # exact where all or nothing is observed:
                log_p_observed = torch.where(seen.all(1), log_p, torch.where(seen.any(1), log_p_observed, 0.0))
                nll_observed -= log_p_observed.sum().item()
                missing += (~seen).double().mean(1).sum().item()
            n += len(x)
            if per_step:  # per image: the mean over its K samples
                kls, kl_estimate, rec = kl_terms(guide_trace, model_trace, rows)
                latent_sites = list(kls)
                sums = (torch.stack(list(kls.values())).double().sum(1) / num_samples).tolist()
                kl_sums = sums if kl_sums is None else [a + b for a, b in zip(kl_sums, sums)]
                reconstruction += rec.double().sum().item() / num_samples
            if active_units:
                means = posterior_means(guide_trace, num_samples, len(x))
                latent_sites = list(means)
                sums = [(m.sum(0), (m * m).sum(0)) for m in means.values()]
                moments = sums if moments is None else [(a + m, b + m2) for (a, b), (m, m2) in zip(moments, sums)]
    seconds = time.perf_counter() - started
    neg_elbo, nll, nll_observed, missing, n = group.sum(neg_elbo, nll, nll_observed, missing, n)
    result = {"neg_elbo": neg_elbo / n, "nll": nll / n, "num_samples": num_samples, "num_images": int(n),
              "seconds": seconds, "images_per_s": n / seconds}
    result.update({f"{key}_bits_per_dim": bits_per_dim(result[key], model.image_shape) for key in ("neg_elbo", "nll")})
    if nested_k or per_image:
        figures = {key: torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
                   for key, parts in images.items()}
        if group.active:  # process r scored images r, r + world, ...: interleave them back
            figures = _interleave(group.gather(figures))
        result["nll_k"] = {k: figures[k].sum().item() / n for k in nested_k}
        if per_image:
            result["per_image"] = {"neg_elbo": figures["neg_elbo"], "nll": figures["nll"],
                                   "nll_k": {k: figures[k] for k in nested_k}}
    if per_step:
        shares = [share for share in group.gather((kl_sums, reconstruction, kl_estimate, latent_sites))
                  if share[0] is not None]  # a process may have had no images
        kl_sums = [sum(column) for column in zip(*(share[0] for share in shares))]
        result.update(kl_per_step=[kl / n for kl in kl_sums], reconstruction=sum(share[1] for share in shares) / n,
                      kl_estimate=shares[0][2], latent_sites=shares[0][3])
    if active_units:
        shares = [share for share in group.gather((moments, latent_sites)) if share[0] is not None]
        activity = [(sum(s[0][i][1] for s in shares) / n - (sum(s[0][i][0] for s in shares) / n) ** 2).clamp(min=0)
                    for i in range(len(shares[0][0]))]  # Var_x(E_q[u | x]) = E_x[m^2] - E_x[m]^2
        result.update(active_units=[int((a > ACTIVE_UNIT_THRESHOLD).sum()) for a in activity],
                      latent_units=[len(a) for a in activity], unit_activity=[a.tolist() for a in activity],
                      latent_sites=shares[0][1])
    if mask is not None:
        result.update(nll_observed=nll_observed / n, cond_nll=(nll - nll_observed) / n, missing_fraction=missing / n)
    return result


def _interleave(shares: list[dict]) -> dict:
    """The per-image figures of every process back in the data's order: process r scored the images
    r, r + world, r + 2 world, ... (`evaluate` under torchrun)."""
    out = {}
    for key in shares[0]:
        parts = [s[key] for s in shares]
        total = sum(len(p) for p in parts)
        merged = torch.empty(total, dtype=torch.float64)
        for rank, part in enumerate(parts):
            merged[rank::len(parts)] = part
        out[key] = merged
    return out
