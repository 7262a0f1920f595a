"""`drawzoo.train` runs Pyro's validation on the first step of each batch shape (`TrainConfig.validate`)."""

import contextlib
import logging
import math

import pyro
import pyro.distributions
import pyro.infer.util
import pyro.poutine.util
import pytest
import torch
from torch.distributions import Distribution

import drawzoo
from drawzoo.models import VAE
from tests.conftest import binary_images

SHAPE = (1, 4, 4)
FAST = dict(batch_size=10, progress=False)
ON, OFF = (True,) * 4, (False,) * 4


def flags() -> tuple[bool, ...]:
    """Pyro's three validation flags (inference, poutine, distributions) and torch.distributions'
    default `validate_args`."""
    return (pyro.infer.util.is_validation_enabled(), pyro.poutine.util.is_validation_enabled(),
            pyro.distributions.is_validation_enabled(), Distribution._validate_args)


def tiny(cls, **kw):
    torch.manual_seed(0)
    return cls(image_shape=SHAPE, hidden_dim=4, latent_dim=2, **kw)


class Recording(VAE):
    """A VAE whose guide records the batch size and the `flags` of each call in `seen`; its call
    number `fail_at` raises."""

    def __init__(self, fail_at=None, **kw):
        super().__init__(**kw)
        self.seen, self.fail_at = [], fail_at

    def guide(self, x, **kw):
        self.seen.append((x.shape[0], flags()))
        if len(self.seen) == self.fail_at:
            raise RuntimeError("boom")
        return super().guide(x, **kw)


class PlateBugAt5(VAE):
    """A VAE whose guide has a bug that only batches of 5 show: a plate the model lacks, which
    Pyro's validation rejects and which, unchecked, silently doubles the loss."""

    def guide(self, x, **kw):
        with pyro.plate("oops", 2, dim=-2) if x.shape[0] == 5 else contextlib.nullcontext():
            return super().guide(x, **kw)


class NaNAfter(VAE):
    """A VAE whose encoder's activations turn NaN from its third call on (the third step)."""

    calls = 0

    def encode(self, x):
        self.calls += 1
        mu, sigma = super().encode(x)
        return (mu * math.nan if self.calls > 2 else mu), sigma


@pytest.mark.parametrize("settings,validated", [
    ({}, [True, False, True, False, False, False]),  # the default, "first": the first 10 and the first 5
    (dict(validate="first"), [True, False, True, False, False, False]),
    (dict(validate="every"), [True] * 6),
])
def test_pyro_validates_the_first_step_of_each_batch_shape(settings, validated):
    model = tiny(Recording)
    drawzoo.train(model, binary_images(25, SHAPE), epochs=2, **settings, **FAST)  # batches of 10, 10 and 5
    assert model.seen == [(B, ON if on else OFF) for B, on in zip([10, 10, 5] * 2, validated)]
    assert flags() == ON


@pytest.mark.parametrize("validate", ["first", "every"])
def test_never_while_pyro_validation_is_off_globally(validate):
    model = tiny(Recording)
    with pyro.validation_enabled(False):
        drawzoo.train(model, binary_images(25, SHAPE), epochs=2, validate=validate, **FAST)
        assert [f for _, f in model.seen] == [OFF] * 6 and flags() == OFF
    assert flags() == ON


def test_every_flag_is_as_it_was_after_a_step_that_raises_and_torch_s_own_is_kept():
    model = tiny(Recording, fail_at=2)  # the second step, which runs without validation, raises
    with pytest.raises(RuntimeError, match="boom"):
        drawzoo.train(model, binary_images(25, SHAPE), epochs=1, **FAST)
    assert model.seen[-1] == (10, OFF) and flags() == ON
    Distribution.set_default_validate_args(False)  # torch's own default, set apart from Pyro's
    try:
        drawzoo.train(tiny(Recording), binary_images(25, SHAPE), epochs=1, **FAST)
        assert flags() == (True, True, True, False)
    finally:
        Distribution.set_default_validate_args(True)


def test_a_bug_that_only_a_new_batch_shape_shows_is_caught():
    x = binary_images(25, SHAPE)
    with pyro.validation_enabled(False):  # unchecked, it is a wrong loss and no error
        assert drawzoo.train(tiny(PlateBugAt5), x, epochs=1, **FAST)[-1]["step"] == 3
    # validated on the first batch of 5 (step 3), not only on the first step
    with pytest.warns(UserWarning, match="plate statements in guide but not model"):
        with pytest.raises(ValueError, match='at site "z", plate stack overflow'):
            drawzoo.train(tiny(PlateBugAt5), x, epochs=1, **FAST)
    assert flags() == ON


def test_a_nan_mid_run_is_skipped_by_drawzoo_not_raised_by_pyro(caplog):
    x = binary_images(40, SHAPE)  # 4 batches of 10: step 1 validated, NaN from step 3
    with pytest.raises(drawzoo.TrainingError, match="2 non-finite losses in a row, up to step 4"):
        drawzoo.train(tiny(NaNAfter), x, epochs=1, max_bad_steps=2, **FAST)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["non-finite loss or gradient at step 3: update skipped"]
    # validated on every step, Pyro's check of the distribution's arguments stops the run instead
    with pytest.raises(ValueError, match="Expected parameter loc"):
        drawzoo.train(tiny(NaNAfter), x, epochs=1, max_bad_steps=2, validate="every", **FAST)
