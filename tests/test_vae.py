import pyro
import pytest
from pyro import poutine
from pyro.infer import SVI, Predictive, TraceMeanField_ELBO

import drawzoo
from drawzoo.models import VAEConfig
from tests.conftest import binary_images


def test_defaults_and_interface():
    m = drawzoo.load("vae")
    assert isinstance(m.config, VAEConfig) and (m.config.hidden_dim, m.config.latent_dim) == (400, 50)
    x = binary_images(4)
    guide_tr = poutine.trace(m.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(m.model, trace=guide_tr)).get_trace(x)
    assert guide_tr.nodes["z"]["value"].shape == (4, 50)
    assert model_tr.nodes["x"]["is_observed"]
    assert m.generate(5).shape == (1, 5, 1, 28, 28)


@pytest.mark.parametrize("shape", [(3, 12, 20), (1, 28, 40)])
def test_colour_and_non_square(shape):
    m = drawzoo.load("vae", image_shape=shape, hidden_dim=16, latent_dim=2)
    x = binary_images(3, shape)
    assert TraceMeanField_ELBO().loss(m.model, m.guide, x) > 0
    assert m.generate(2).shape == (1, 2, *shape)
    assert Predictive(m.model, guide=m.guide, num_samples=2, return_sites=["z"])(x)["z"].shape == (2, 3, 2)


def test_svi_training_lowers_the_loss():
    m = drawzoo.load("vae", image_shape=(1, 8, 8), hidden_dim=32, latent_dim=2)
    x = binary_images(64, (1, 8, 8))
    x[:32, :, :4] = 1.0
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), TraceMeanField_ELBO())
    losses = [svi.step(x) / len(x) for _ in range(100)]
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
