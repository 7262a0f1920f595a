"""The named pixel likelihoods (`drawzoo.models.likelihoods`): the discretised logistic against a
direct float64 computation, its 256 levels summing to 1, sampling, mean, expand; the data check;
the ``likelihood`` config field, and checkpoints written before it."""

import math

import pyro
import pytest
import torch
from pyro import poutine

import drawzoo
from drawzoo.checkpoints import digest, read_checkpoint
from drawzoo.errors import CheckpointError, ConfigError, InputError
from drawzoo.models import likelihoods
from drawzoo.models.base import pixel_likelihood
from drawzoo.models.likelihoods import LEVELS, DiscretizedLogistic
from tests.conftest import binary_images

GRID = torch.arange(LEVELS, dtype=torch.float64) / (LEVELS - 1)


def direct_log_prob(value, loc, log_scale):
    """log P(X = value) in float64 from the logistic's CDF, edges at 0 and 255 taking the tails."""
    value, loc, s = (torch.as_tensor(t, dtype=torch.float64) for t in (value, loc, math.exp(log_scale)))
    cdf = lambda t: 1 / (1 + torch.exp(-(t - loc) / s))  # noqa: E731
    sf = lambda t: 1 / (1 + torch.exp((t - loc) / s))  # noqa: E731  # 1 - cdf, without cancellation
    h, inf = 0.5 / 255, torch.tensor(math.inf, dtype=torch.float64)
    upper, lower = torch.where(value >= 1, inf, value + h), torch.where(value <= 0, -inf, value - h)
    # the difference on the side of loc where it does not cancel
    return torch.log(torch.where(value < loc, cdf(upper) - cdf(lower), sf(lower) - sf(upper)))


@pytest.mark.parametrize("loc, log_scale", [(0.5, -3.0), (0.02, -5.0), (0.97, -4.0), (0.3, 0.5), (-0.4, -2.0),
                                            (0.5, -8.0), (1.6, -6.0)])
def test_logistic_matches_a_direct_float64_computation_and_its_levels_sum_to_one(loc, log_scale):
    pixels = DiscretizedLogistic(torch.tensor(loc, dtype=torch.float64), torch.tensor(log_scale, dtype=torch.float64))
    log_p = pixels.log_prob(GRID)
    assert log_p.shape == (LEVELS,) and torch.isfinite(log_p).all()
    expected = direct_log_prob(GRID, loc, log_scale)
    big = expected > -30  # where the direct computation has precision left
    torch.testing.assert_close(log_p[big], expected[big], rtol=1e-9, atol=1e-9)
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    single = DiscretizedLogistic(torch.tensor(loc), torch.tensor(log_scale)).log_prob(GRID.float())  # float32
    torch.testing.assert_close(single.exp().double(), log_p.exp(), rtol=0, atol=2e-6)
    assert single.exp().sum().item() == pytest.approx(1.0, abs=1e-4)


def test_logistic_log_prob_is_finite_where_a_level_is_far_in_the_tail():
    """PixelCNN++'s tiny-probability case: a level 0.5 away from a sharp logistic (probability ~e^-1000)."""
    pixels = DiscretizedLogistic(torch.tensor([0.0, 1.0]), torch.tensor([-8.0, -8.0]))
    log_p = pixels.log_prob(torch.tensor([128 / 255, 127 / 255]))
    assert torch.isfinite(log_p).all() and (log_p < -1000).all()
    loc = torch.tensor(0.0, requires_grad=True)
    DiscretizedLogistic(loc, torch.tensor(-8.0)).log_prob(torch.tensor(128 / 255)).backward()
    assert torch.isfinite(loc.grad)


def test_log_scale_is_clamped():
    low, high = likelihoods.LOG_SCALE_RANGE
    pixels = DiscretizedLogistic(torch.zeros(2), torch.tensor([-50.0, 50.0]))
    assert pixels.log_scale.tolist() == [low, high]
    assert torch.isfinite(pixels.log_prob(torch.tensor([0.0, 100 / 255]))).all()


def test_logistic_sample_mean_support_and_expand():
    loc, log_scale = torch.tensor([[0.1, 0.5, 0.9]]), torch.tensor([[-3.0, -2.0, -4.0]])
    pixels = DiscretizedLogistic(loc, log_scale)
    torch.manual_seed(0)
    n = 100_000
    draws = pixels.sample((n,))
    assert draws.shape == (n, 1, 3) and bool(pixels.support.check(draws).all())
    assert torch.equal(draws * 255, (draws * 255).round()) and draws.min() >= 0 and draws.max() <= 1
    exact_mean = torch.stack([(GRID * direct_log_prob(GRID, l, s).exp()).sum()
                              for l, s in zip(loc[0].tolist(), log_scale[0].tolist())])
    torch.testing.assert_close(pixels.mean[0].double(), exact_mean, rtol=0, atol=1e-6)
    standard_error = draws.double().std(0)[0] / math.sqrt(n)
    assert ((draws.double().mean(0)[0] - exact_mean).abs() < 5 * standard_error).all()
    level_0 = direct_log_prob(0.0, 0.1, -3.0).exp().item()  # the tail below 0 falls on level 0
    assert (draws[:, 0, 0] == 0).double().mean().item() == pytest.approx(level_0, abs=5 * math.sqrt(level_0 / n))
    wide = pixels.expand((4, 2, 3))
    assert wide.batch_shape == (4, 2, 3) and wide.sample().shape == (4, 2, 3)
    torch.testing.assert_close(wide.log_prob(draws[:4, :, :].expand(4, 2, 3))[:, 0], pixels.log_prob(draws[:4])[:, 0])
    masked = pixels.mask(torch.tensor([True, False, True])).to_event(2)
    assert masked.log_prob(draws[0]).item() == pytest.approx(pixels.log_prob(draws[0])[0, [0, 2]].sum().item())


def test_the_bernoulli_likelihood_is_the_base_pixel_likelihood_exactly():
    logits, x = torch.randn(3, 2, 1, 4, 5), binary_images(2, (1, 4, 5))
    mask = torch.rand(2, 1, 4, 5) < 0.5
    bernoulli = likelihoods.get("bernoulli")
    assert bernoulli.params_per_channel == 1
    for m in (None, mask):
        expected = pyro.distributions.Bernoulli(logits=logits, validate_args=False)
        expected = (expected if m is None else expected.mask(m)).to_event(3).log_prob(x)
        assert torch.equal(bernoulli.distribution(logits, m).log_prob(x), expected)
        assert torch.equal(pixel_likelihood(logits, m).log_prob(x), expected)
    assert torch.equal(bernoulli.mean(logits), torch.sigmoid(logits))


def test_the_logistic_likelihood_reads_locations_then_log_scales():
    out = torch.randn(5, 2 * 3, 4, 4)
    logistic = likelihoods.get("logistic")
    pixels = logistic.distribution(out)
    assert logistic.params_per_channel == 2 and pixels.batch_shape == (5,) and pixels.event_shape == (3, 4, 4)
    x = torch.randint(0, 256, (5, 3, 4, 4)) / 255
    expected = DiscretizedLogistic(out[:, :3], out[:, 3:]).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(pixels.log_prob(x), expected)


def test_off_grid_data_is_an_error_before_any_work_and_on_grid_data_is_not():
    m = drawzoo.load("vae", image_shape=(3, 4, 4), hidden_dim=8, latent_dim=2, likelihood="logistic")
    on_grid = torch.randint(0, 256, (2, 3, 4, 4)) / 255
    assert torch.isfinite(poutine.trace(m.guide).get_trace(on_grid).log_prob_sum())
    grey = on_grid.clone()
    grey[0, 0, 0, 0] = 0.5  # 127.5 / 255
    for call in (m.guide, m.model, lambda x: drawzoo.evaluate(m, x)):
        with pytest.raises(InputError, match=r"not 8-bit levels k/255 .*'logistic'.*torch.round\(x \* 255\) / 255"):
            call(grey)
    drawzoo.load("vae", image_shape=(3, 4, 4), hidden_dim=8, latent_dim=2).guide(grey)  # bernoulli: grey is fine


def test_the_likelihood_field_is_validated_and_sizes_the_decoder():
    with pytest.raises(ConfigError, match="config 'likelihood' must be one of 'bernoulli', 'logistic', got 'gauss'"):
        drawzoo.load("vae", likelihood="gauss")
    m = drawzoo.load("vae", image_shape=(3, 5, 6), hidden_dim=8, latent_dim=2, likelihood="logistic")
    assert m.decode(torch.zeros(7, 2)).shape == (7, 6, 5, 6)
    assert m.generate(3).shape == (1, 3, 3, 5, 6) and 0 <= m.generate(3).min() and m.generate(3).max() <= 1
    assert drawzoo.load("vae").likelihood.name == "bernoulli"


@pytest.mark.parametrize("name", ["vae", "conv_vae"])
def test_a_checkpoint_written_before_the_likelihood_field_loads_and_resumes_as_bernoulli(name, tmp_path):
    model, x, path = drawzoo.load(name, image_shape=(1, 6, 7), latent_dim=2), binary_images(4, (1, 6, 7)), tmp_path / "old.pt"
    settings = dict(batch_size=4, checkpoint=path, progress=False)
    drawzoo.train(model, x, epochs=1, **settings)
    payload = read_checkpoint(path)
    del payload["config"]["likelihood"]  # as the release before the field wrote it
    payload["sha256"] = digest(payload)
    torch.save(payload, path)
    loaded = drawzoo.load(checkpoint=path)
    assert loaded.config.likelihood == "bernoulli" and loaded.config == model.config
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert drawzoo.load(checkpoint=path, likelihood="bernoulli").config == model.config
    with pytest.raises(CheckpointError, match="likelihood: checkpoint has 'bernoulli', given 'logistic'"):
        drawzoo.load(checkpoint=path, likelihood="logistic")
    assert [r["epoch"] for r in drawzoo.train(loaded, x, epochs=2, **settings)] == [1, 2]  # resumes
