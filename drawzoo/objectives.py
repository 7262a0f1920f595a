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

from pyro.infer import ELBO, RenyiELBO, ReweightedWakeSleep, Trace_ELBO, TraceMeanField_ELBO, TraceTailAdaptive_ELBO

from .errors import ObjectiveError


@dataclasses.dataclass(frozen=True)
class Objective:
    """A named objective: a Pyro ELBO class, its fixed arguments, and a line of help."""

    elbo: type
    help: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    min_particles: int = 1


OBJECTIVES = {
    "elbo": Objective(TraceMeanField_ELBO, "negative ELBO, KL terms analytic (DRAW's L^x + L^z)"),
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


def stored(description) -> dict:
    """The `describe` dict a checkpoint holds; checkpoints of drawzoo 0.1 hold the class name only
    (their CLI trained with one particle)."""
    if isinstance(description, str):
        return {"class": description, "num_particles": 1, "vectorize_particles": False}
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
