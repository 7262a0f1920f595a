"""Bad input, numerical extremes: tried, not assumed (see also test_inputs, test_training, test_crash_safety)."""

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

import drawzoo
from tests.conftest import binary_images

SHAPE = (1, 10, 12)


def tiny(**kw):
    torch.manual_seed(0)
    return drawzoo.load("draw", image_shape=SHAPE, T=3, hidden_dim=16, latent_dim=3, write_size=3, **kw)


def loss_of(m, x, seed=7):
    pyro.set_rng_seed(seed)
    return TraceMeanField_ELBO().loss(m.model, m.guide, x)


@pytest.mark.parametrize("name", ["draw", "vae"])
def test_layouts_and_dtypes_give_the_same_loss(name):
    m = tiny() if name == "draw" else drawzoo.load("vae", image_shape=SHAPE, hidden_dim=8, latent_dim=2)
    x = binary_images(4, SHAPE)
    ref = loss_of(m, x)
    variants = {
        "channels_last": x.to(memory_format=torch.channels_last),
        "non_contiguous": x.transpose(2, 3).contiguous().transpose(2, 3),
        "numpy": x.numpy(), "float64": x.double(), "bool": x.bool(),
        "every other row of a batch": torch.stack([x, torch.zeros_like(x)], 1).flatten(0, 1)[::2],
    }
    for what, v in variants.items():
        assert loss_of(m, v) == pytest.approx(ref, rel=1e-6), what


def test_a_batch_of_one():
    m = tiny()
    x = binary_images(1, SHAPE)
    assert np.isfinite(loss_of(m, x))
    assert drawzoo.evaluate(m, x, num_samples=4)["num_images"] == 1
    assert m.reconstruct(x).canvases.shape == (4, 1, *SHAPE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_images_on_another_device_are_moved_to_the_models():
    m = tiny().cuda()
    x = binary_images(2, SHAPE)
    assert m.check_images(x).device.type == "cuda"
    assert loss_of(m, x) == pytest.approx(loss_of(tiny().cuda(), x.cuda()), rel=1e-5)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_training_on_blank_and_full_images_stays_finite(value):
    m = tiny()
    x = torch.full((32, *SHAPE), value)
    history = drawzoo.train(m, x, x[:8], epochs=3, batch_size=8, lr=1e-2, progress=False)
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["valid_loss"]) for h in history)
    assert all(torch.isfinite(p).all() for p in m.parameters())
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.parametrize("extreme", [1e4, -1e4])
def test_attention_driven_to_its_extremes_gives_finite_loss_and_gradients(extreme):
    m = tiny()
    with torch.no_grad():
        for head in (m.reader, m.writer):
            head.glimpse.bias.fill_(extreme)  # centres far off the image, huge/tiny sigma^2, delta, gamma
            head.glimpse.weight.mul_(1e3)
    x = binary_images(4, SHAPE)
    pyro.set_rng_seed(0)
    loss = TraceMeanField_ELBO().differentiable_loss(m.model, m.guide, x)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in m.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    canvases, writes = m.generate(3, return_attention=True)
    assert torch.isfinite(canvases).all() and all(torch.isfinite(f).all() for f in writes)


def test_posterior_scale_stays_positive_and_finite_for_extreme_states():
    m = tiny()
    mu, sigma = m.posterior(torch.full((2, 16), 1e6))
    assert torch.isfinite(mu).all() and (sigma > 0).all() and torch.isfinite(sigma).all()
