"""The named training objectives: Pyro ELBOs that ``drawzoo train --objective`` and the benchmarks offer.

`drawzoo.train` takes any `pyro.infer.ELBO` that fits the model (``elbo=``); these names are the
common ones, made by `make_elbo` with K particles drawn in one vectorised pass:

>>> elbo = make_elbo("iwae", particles=5)    # RenyiELBO(alpha=0, num_particles=5): IWAE training
>>> describe(elbo)
{'class': 'RenyiELBO', 'num_particles': 5, 'vectorize_particles': True, 'alpha': 0}

`describe` is what a checkpoint stores of the objective it was trained with, and `name_of`
turns that back into ``(objective, particles)``, so that a resumed run keeps its objective.
"""

from __future__ import annotations

import dataclasses
import numbers

import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO, RenyiELBO, ReweightedWakeSleep, Trace_ELBO, TraceMeanField_ELBO, TraceTailAdaptive_ELBO
from pyro.infer.util import torch_item
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

from ..errors import ObjectiveError


def analytic_kl_sites(model_trace, guide_trace) -> set[str]:
    """The latent sites whose KL term ``E_q[log q(z) - log p(z | parents)]`` may be taken analytically,
    ``KL(q(z | .) || p(z | parents))`` at the sampled values of everything else: those whose model
    parents the guide samples before them (then integrating z out leaves nothing that depends on z).
    Judged by order, as Pyro's mean-field check does: z qualifies when every latent the model samples
    before z, the guide samples before z too. DRAW's and the VAE's sites all qualify
    (model and guide go through the steps in the same order); a two-stochastic-layer VAE's z_1 does not
    (the model draws it from z_2, which the guide draws from z_1)."""
    guide_order = {name: i for i, name in enumerate(_latents(guide_trace))}
    exact, seen = set(), []
    for name in _latents(model_trace):
        if name in guide_order and all(guide_order.get(before, len(guide_order)) < guide_order[name] for before in seen):
            exact.add(name)
        seen.append(name)
    return exact


class AnalyticKL_ELBO(TraceMeanField_ELBO):
    """Pyro's ``TraceMeanField_ELBO`` (each latent site's KL term analytic, where
    ``torch.distributions.kl_divergence`` knows the pair) restricted to where that is exact
    (`analytic_kl_sites`); the KL terms of the other sites are the Monte Carlo
    ``log q(z) - log p(z | parents)`` at the sampled z, as in ``Trace_ELBO``. Where every site
    qualifies (DRAW, the VAE) it is ``TraceMeanField_ELBO``, computation for computation:
    DRAW's loss is the paper's L^x + L^z. Where one does not (a two-stochastic-layer VAE), it is still the
    negative ELBO, estimated without bias, where ``TraceMeanField_ELBO`` would not be."""

    def _get_trace(self, model, guide, args, kwargs):
        # no mean-field warning: the sites it would warn of are the ones taken by Monte Carlo here
        return Trace_ELBO._get_trace(self, model, guide, args, kwargs)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        exact = analytic_kl_sites(model_trace, guide_trace)
        if exact.issuperset(_latents(model_trace)):
            return super()._differentiable_loss_particle(model_trace, guide_trace)
        elbo = 0.0
        for name, p in model_trace.nodes.items():
            if p["type"] != "sample":
                continue
            if p["is_observed"]:
                elbo = elbo + p["log_prob_sum"]
                continue
            q = guide_trace.nodes[name]
            kl = _analytic_kl(q, p) if name in exact else None
            elbo = elbo - kl if kl is not None else elbo + p["log_prob_sum"] - q["score_parts"].entropy_term.sum()
        for name, q in guide_trace.nodes.items():  # auxiliary guide sites, as TraceMeanField_ELBO takes them
            if q["type"] == "sample" and name not in model_trace.nodes:
                elbo = elbo - q["score_parts"].entropy_term.sum()
        return -(elbo.detach() if torch._C._get_tracing_state() else torch_item(elbo)), -elbo


def _latents(trace) -> list[str]:
    """The latent sample sites of `trace`, in the order it sampled them (no plates)."""
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)]


def _analytic_kl(q_site, p_site):
    """``KL(q || p)`` of a latent site summed over its batch (scaled and masked as the site is),
    or None where ``kl_divergence`` does not know the pair."""
    try:
        kl = kl_divergence(q_site["fn"], p_site["fn"])
    except NotImplementedError:
        return None
    return scale_and_mask(kl, q_site["scale"], q_site["mask"]).sum()


@dataclasses.dataclass(frozen=True)
class Objective:
    """A named objective: a Pyro ELBO class, its fixed arguments, and a line of help."""

    elbo: type
    help: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    min_particles: int = 1


OBJECTIVES = {
    "elbo": Objective(AnalyticKL_ELBO, "negative ELBO, KL terms analytic where exact (DRAW's L^x + L^z)"),
    "elbo-mc": Objective(Trace_ELBO, "negative ELBO, KL terms estimated from the sampled z's"),
    "iwae": Objective(RenyiELBO, "-log mean_k w_k over the K particles: IWAE (K=1: the ELBO)", {"alpha": 0}),
    "tail-adaptive": Objective(TraceTailAdaptive_ELBO, "tail-adaptive f-divergence, K >= 2 (shows its surrogate)",
                               min_particles=2),
}
DEFAULT = "elbo"

#: Arguments of an ELBO class, besides its particles, that change the objective: part of `describe`.
HYPERPARAMETERS = {RenyiELBO: ("alpha",), TraceTailAdaptive_ELBO: ("tail_adaptive_beta",),
                   ReweightedWakeSleep: ("insomnia", "num_sleep_particles")}


def check(objective: str, particles: int) -> None:
    """`ObjectiveError` unless `objective` is a name of `OBJECTIVES` and `particles` an integer of at
    least its minimum."""
    if objective not in OBJECTIVES:
        raise ObjectiveError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    minimum = OBJECTIVES[objective].min_particles
    if not isinstance(particles, numbers.Integral) or isinstance(particles, bool) or particles < minimum:
        raise ObjectiveError(f"objective {objective!r} needs particles >= {minimum} (an integer), got {particles!r}")


def make_elbo(objective: str = DEFAULT, particles: int = 1) -> ELBO:
    """The Pyro ELBO of the named `objective` with `particles` samples per image (K > 1 are
    vectorised: a particle dimension left of the data plate, ``max_plate_nesting=1``)."""
    check(objective, particles)
    spec = OBJECTIVES[objective]
    return spec.elbo(**spec.kwargs, num_particles=int(particles), vectorize_particles=particles > 1,
                     max_plate_nesting=1)


def describe(elbo: ELBO) -> dict:
    """What defines `elbo`'s objective, as builtins (what a checkpoint stores): ``class``,
    ``num_particles``, ``vectorize_particles``, and e.g. ``alpha`` for `RenyiELBO`."""
    description = {"class": type(elbo).__name__, "num_particles": elbo.num_particles,
                   "vectorize_particles": elbo.vectorize_particles}
    for cls, names in HYPERPARAMETERS.items():
        if isinstance(elbo, cls):
            description.update({name: getattr(elbo, name) for name in names})
    return description


def label(description: dict) -> str:
    """``RenyiELBO(num_particles=5, vectorize_particles=True, alpha=0)`` for a `describe` dict."""
    args = ", ".join(f"{k}={v!r}" for k, v in description.items() if k != "class")
    return f"{description['class']}({args})"


#: Classes older checkpoints name for an objective that is now another class: "elbo" was Pyro's
#: ``TraceMeanField_ELBO`` before `AnalyticKL_ELBO`, the same computation for every model whose
#: model and guide sample their latents in the same order (every zoo model of that time).
RENAMED = {"TraceMeanField_ELBO": AnalyticKL_ELBO.__name__}


def stored(description) -> dict:
    """The `describe` dict a checkpoint holds, as the objective is named now (`RENAMED`);
    checkpoints of drawzoo 0.1 hold the class name only (their CLI trained with one particle)."""
    if isinstance(description, str):
        description = {"class": description, "num_particles": 1, "vectorize_particles": False}
    if description.get("class") in RENAMED:
        description = {**description, "class": RENAMED[description["class"]]}
    return description


def name_of(description) -> tuple[str, int] | None:
    """``(objective, particles)`` whose `make_elbo` has this description (or a checkpoint's stored
    one); None if no named objective does."""
    description = stored(description)
    particles = description.get("num_particles")
    for objective, spec in OBJECTIVES.items():
        if (spec.elbo.__name__ == description["class"] and isinstance(particles, int)
                and particles >= spec.min_particles and describe(make_elbo(objective, particles)) == description):
            return objective, particles
    return None
