"""Conv DRAW (`drawzoo.models.ConvDRAW`): its shapes, its sites, its learned prior's KL against a
computation by hand, and that it learns. The tests every zoo model passes (particles, masks,
copies, ...) run on it through tests/zoo_models.py."""

import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI, TraceMeanField_ELBO

import drawzoo
from drawzoo.errors import ConfigError, InputError
from drawzoo.evaluation import kl_terms
from drawzoo.models.base import pixel_likelihood
from tests.conftest import binary_images
from tests.zoo_models import TINY_CONV_DRAW


def tiny(shape=(1, 6, 7), **overrides):
    return drawzoo.load("conv_draw", image_shape=shape, **dict(TINY_CONV_DRAW, **overrides))


def _latents(trace):
    return [n for n, s in trace.nodes.items() if s["type"] == "sample" and n.startswith("z_")]


@pytest.mark.parametrize("shape,latent", [((1, 28, 28), (2, 14, 14)), ((1, 6, 7), (2, 3, 4)), ((3, 5, 9), (2, 3, 5))])
def test_one_latent_feature_map_per_step_at_the_downsampled_grid(shape, latent):
    m, x = tiny(shape), binary_images(3, shape)
    guide_trace = poutine.trace(m.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(m.model, trace=guide_trace)).get_trace(x)
    steps = [f"z_{t}" for t in range(m.config.T)]
    assert _latents(guide_trace) == _latents(model_trace) == steps
    assert m.config.latent_shape == latent
    for name in steps:
        for trace in (guide_trace, model_trace):
            assert trace.nodes[name]["fn"].event_shape == latent
            assert trace.nodes[name]["value"].shape == (3, *latent)
    assert model_trace.nodes["_RETURN"]["value"].shape == (3, *shape)
    assert guide_trace.nodes["_RETURN"]["value"].shape == (3, *shape)


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 6, 7), (2, 13, 8), (1, 28, 28)])
@pytest.mark.parametrize("kernel_size,stride", [(1, 1), (3, 2), (3, 3), (5, 2), (5, 4)])
def test_the_write_draws_on_exactly_the_image_whatever_its_size(shape, kernel_size, stride):
    m = tiny(shape, kernel_size=kernel_size, stride=stride)
    h, c = m._initial_state(2)
    assert m.decode_step(torch.randn(2, *m.config.latent_shape), h, c, m._blank_canvas(2))[2].shape == (2, *shape)


def test_the_learned_priors_kl_is_the_gaussian_kl_computed_by_hand():
    """For the guide's z's: p(z_t | h_dec_{t-1}) from a decoder run by hand (convolutions and LSTM
    gates written out), and KL(q || p) in closed form, per image and step (nats)."""
    m, x = tiny(), binary_images(2, (1, 6, 7))
    with torch.no_grad():  # prior weights away from 0, so that p(z_t | ...) moves with the past
        for p in (*m.prior.parameters(), *m.decoder.parameters()):
            p.copy_(torch.randn_like(p) * 0.5)
    guide_trace = poutine.trace(m.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(m.model, trace=guide_trace)).get_trace(x)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    kls, methods, _ = kl_terms(guide_trace, model_trace, 2)
    assert methods == ["analytic"] * m.config.T
    h = c = torch.zeros(2, m.config.hidden_channels, *m.config.latent_shape[1:])
    prior_means = []
    with torch.no_grad():
        for t in range(m.config.T):
            mu_p, log_sigma_p = F.conv2d(h, m.prior.weight, m.prior.bias, padding=1).chunk(2, dim=1)
            sigma_p = log_sigma_p.exp()
            q = guide_trace.nodes[f"z_{t}"]["fn"].base_dist
            kl = (sigma_p.log() - q.scale.log() + (q.scale ** 2 + (q.loc - mu_p) ** 2) / (2 * sigma_p ** 2) - 0.5)
            torch.testing.assert_close(kls[f"z_{t}"], kl.sum((1, 2, 3)), rtol=1e-5, atol=1e-5)
            prior_means.append(mu_p)
            z = guide_trace.nodes[f"z_{t}"]["value"]
            i, f, g, o = F.conv2d(torch.cat([z, h], 1), m.decoder.weight, m.decoder.bias, padding=1).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
    assert not torch.allclose(prior_means[0], prior_means[1])  # the prior depends on z_0


def test_the_loss_goes_down_over_a_few_svi_steps():
    torch.manual_seed(0)
    m, x = tiny(), binary_images(8, (1, 6, 7))
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 3e-2}), TraceMeanField_ELBO())
    losses = [svi.step(x) / len(x) for _ in range(40)]
    assert sum(losses[-5:]) < 0.9 * sum(losses[:5])  # nats per image, the mean of 5 steps


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 6, 7)])
def test_generate_returns_the_canvases_through_time(shape):
    m = tiny(shape)
    canvases = m.generate(5)
    assert canvases.shape == (m.config.T, 5, *shape)
    assert ((canvases >= 0) & (canvases <= 1)).all()
    assert not torch.equal(canvases[0], canvases[-1])
    assert m._canvases is None  # nothing of the pass is kept


def test_bernoulli_canvases_are_logits_read_through_the_sigmoid():
    m, x = tiny(), binary_images(3, (1, 6, 7))
    canvas = torch.randn(3, 1, 6, 7)
    site = m.pixels(canvas)
    assert torch.equal(site.log_prob(x), pixel_likelihood(canvas).log_prob(x))
    dec = m._initial_state(3)
    h, c, mu, sigma = m.encode_step(x, canvas, dec[0], *m._initial_state(3))
    r = m.reader(torch.cat([x, x - torch.sigmoid(canvas)], -3))
    h_ref, _ = m.encoder(torch.cat([r, dec[0]], -3), m._initial_state(3))
    torch.testing.assert_close(h, h_ref)


def test_the_logistic_likelihood_draws_8_bit_colour_images_in_bits_per_dimension():
    torch.manual_seed(0)
    shape = (3, 6, 7)
    m = tiny(shape, likelihood="logistic")
    assert m.writer.out_channels == 2 * 3 and m._blank_canvas(2).shape == (2, 6, 6, 7)
    x = torch.randint(0, 256, (4, *shape)) / 255
    trace = poutine.trace(poutine.replay(m.model, trace=poutine.trace(m.guide).get_trace(x))).get_trace(x)
    assert trace.nodes["x"]["fn"].event_shape == shape and torch.isfinite(trace.log_prob_sum())
    canvases = m.generate(2)
    assert canvases.shape == (m.config.T, 2, *shape) and ((canvases >= 0) & (canvases <= 1)).all()
    # the encoder's error image is x minus the canvas's location maps
    canvas = torch.randn(4, 6, 6, 7)
    dec = m._initial_state(4)
    h, *_ = m.encode_step(x, canvas, dec[0], *m._initial_state(4))
    r = m.reader(torch.cat([x, x - canvas[:, :3]], -3))
    torch.testing.assert_close(h, m.encoder(torch.cat([r, dec[0]], -3), m._initial_state(4))[0])
    result = drawzoo.evaluate(m, x, num_samples=3)
    assert result["nll_bits_per_dim"] == pytest.approx(result["nll"] / (3 * 6 * 7 * math.log(2)))
    with pytest.raises(InputError, match="not 8-bit levels k/255"):
        m.guide(torch.full((1, *shape), 0.5))


@pytest.mark.parametrize("bad,match", [
    (dict(kernel_size=4), "'kernel_size' must be odd"),
    (dict(kernel_size=3, stride=4), "'stride'=4 is larger than 'kernel_size'=3"),
    (dict(hidden_channels=0), "'hidden_channels' must be >= 1"),
    (dict(latent_channels=2.5), "'latent_channels' must be an integer"),
])
def test_bad_configs_are_errors_naming_the_field(bad, match):
    with pytest.raises(ConfigError, match=match):
        drawzoo.load("conv_draw", **bad)
