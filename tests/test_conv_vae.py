"""The convolutional VAE (`drawzoo.models.ConvVAE`): shapes of any image size, leading batch
dimensions, both likelihoods, masks, (the fast path: tests/test_fast_path.py)."""

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO

import drawzoo
from drawzoo.errors import ConfigError
from drawzoo.models import ConvVAE, ConvVAEConfig
from tests.conftest import binary_images
from tests.test_cli import colour_pictures, run

TINY = dict(channels=(4, 8), latent_dim=3)


def eight_bit(n, shape, seed=0):
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed)) / 255


def test_defaults_and_interface():
    m = drawzoo.load("conv_vae")
    assert isinstance(m, ConvVAE) and isinstance(m.config, ConvVAEConfig)
    assert (m.config.channels, m.config.latent_dim, m.config.likelihood) == ((32, 64), 32, "bernoulli")
    x = binary_images(4)
    guide_tr = poutine.trace(m.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(m.model, trace=guide_tr)).get_trace(x)
    assert guide_tr.nodes["z"]["value"].shape == (4, 32) and model_tr.nodes["x"]["is_observed"]
    assert m.generate(5).shape == (1, 5, 1, 28, 28)


@pytest.mark.parametrize("shape", [(1, 6, 7), (3, 32, 32), (3, 1, 5), (1, 28, 28)])
@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic"])
def test_any_image_shape_and_both_likelihoods(shape, likelihood):
    m = drawzoo.load("conv_vae", image_shape=shape, likelihood=likelihood, **TINY)
    x = eight_bit(3, shape)
    assert m.decode(torch.zeros(2, 3, 3)).shape == (2, 3, m.likelihood.params_per_channel * shape[0], *shape[1:])
    assert torch.isfinite(torch.tensor(TraceMeanField_ELBO().loss(m.model, m.guide, x)))
    images = m.generate(2)
    assert images.shape == (1, 2, *shape) and images.min() >= 0 and images.max() <= 1
    assert Predictive(m.model, guide=m.guide, num_samples=2, return_sites=["z"])(x)["z"].shape == (2, 3, 3)


def test_leading_batch_dimensions_are_the_flattened_batch():
    m = drawzoo.load("conv_vae", image_shape=(3, 6, 7), likelihood="logistic", **TINY)
    x = eight_bit(4, (3, 6, 7))
    mu, sigma = m.encode(x[None].expand(2, 4, 3, 6, 7))
    assert mu.shape == sigma.shape == (2, 4, 3)
    torch.testing.assert_close(mu[1], m.encode(x)[0])
    z = torch.randn(2, 4, 3)
    out = m.decode(z)
    assert out.shape == (2, 4, 6, 6, 7)
    torch.testing.assert_close(out[1], m.decode(z[1]))


def test_the_encoder_sees_unobserved_pixels_as_zero():
    m, x = drawzoo.load("conv_vae", image_shape=(1, 6, 7), **TINY), binary_images(3, (1, 6, 7))
    mask = torch.rand(3, 1, 6, 7, generator=torch.Generator().manual_seed(1)) < 0.6
    with torch.no_grad():
        pyro.set_rng_seed(2)
        masked = poutine.trace(m.guide).get_trace(x, mask=mask).nodes["z"]["fn"].mean
        pyro.set_rng_seed(2)
        zero_filled = poutine.trace(m.guide).get_trace(x * mask).nodes["z"]["fn"].mean
    assert torch.equal(masked, zero_filled)


def test_svi_lowers_the_logistic_loss():
    m = drawzoo.load("conv_vae", image_shape=(3, 8, 8), likelihood="logistic", **TINY)
    x = eight_bit(32, (3, 8, 8))
    x[:16, :, :4] = 1.0
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x) / len(x) for _ in range(60)]
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])


def test_bad_channels_are_an_error():
    with pytest.raises(ConfigError, match="config 'channels' must be positive"):
        drawzoo.load("conv_vae", channels=(0, 4))


def test_cli_trains_and_scores_colour_pictures_with_the_logistic_likelihood(capsys, tmp_path):
    folder, ckpt = colour_pictures(tmp_path / "pictures", n=12, size=9), tmp_path / "c.pt"
    code, out, err = run(capsys, "train", "conv_vae", "--data", folder, "--likelihood", "logistic", "--channels", 4, 8,
                         "--latent-dim", 3, "--epochs", 1, "--batch-size", 4, "--checkpoint", ckpt, "--quiet")
    assert code == 0, err
    assert "image_shape=(3, 9, 9)" in out and "likelihood='logistic'" in out
    code, out, err = run(capsys, "eval", ckpt, "--data", folder, "-k", 2, "--quiet")
    assert code == 0 and "bits/dim" in out, err
    code, _, err = run(capsys, "sample", ckpt, "--n", 4, "--out", tmp_path / "s.png")
    assert code == 0, err
