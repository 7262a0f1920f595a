"""Scoring a zoo model through its model/guide pair: `evaluate` and its estimators.

- `scoring`: `evaluate` (negative ELBO, importance-sampled NLL, KL per step, active units,
  conditional NLL);
- `objectives`: the named objectives (Pyro ELBOs) that training and scoring share.

Its estimators take their importance weights from `drawzoo.models.importance` (the guide as
proposal: the models' inpainting samples from it too) and partially observed images as masks,
`drawzoo.data.masks` (the models' likelihoods take them): the models sit below evaluation, so
those two sit below the models. Nothing here imports the training loop.
"""

from ..models.importance import importance_resample, log_importance_weights, log_mean_exp, log_weights, traces
from .scoring import (
    ACTIVE_UNIT_THRESHOLD,
    ROWS_PER_PASS,
    bits_per_dim,
    dataset_mask,
    evaluate,
    kl_terms,
    posterior_means,
)

__all__ = ["ACTIVE_UNIT_THRESHOLD", "ROWS_PER_PASS", "bits_per_dim", "dataset_mask", "evaluate", "importance_resample",
           "kl_terms", "log_importance_weights", "log_mean_exp", "log_weights", "posterior_means", "traces"]
