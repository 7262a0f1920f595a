"""The IWAE paper's VAEs (`drawzoo.models.HVAE`): sizes, sites, the density, IWAE training."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, RenyiELBO

import drawzoo
from drawzoo.cli import main
from drawzoo.models import HVAEConfig
from tests.conftest import binary_images


def test_defaults_are_the_papers_two_layer_model_and_one_layer_is_a_config():
    m = drawzoo.load("hvae")
    assert (m.config.latent_dims, m.config.hidden_dims) == ((100, 50), (200, 100)) and m.layers == 2
    # x -> 200 -> 200 -> z1 (100) -> 100 -> 100 -> z2 (50), mirrored in p
    assert [layer.out_features for layer in m.encoders[0] if isinstance(layer, torch.nn.Linear)] == [200, 200, 200]
    assert [layer.out_features for layer in m.encoders[1] if isinstance(layer, torch.nn.Linear)] == [100, 100, 100]
    assert [layer.out_features for layer in m.priors[0] if isinstance(layer, torch.nn.Linear)] == [100, 100, 200]
    for net in (*m.encoders, *m.priors, m.decoder):  # two tanh layers each
        assert sum(isinstance(layer, torch.nn.Tanh) for layer in net.modules()) == 2
    one = drawzoo.load("hvae", latent_dims=(50,), hidden_dims=(200,))
    assert one.layers == 1 and len(one.priors) == 0
    assert one.num_parameters() == (784 * 200 + 200) + (200 * 200 + 200) + (200 * 100 + 100) + (
        50 * 200 + 200) + (200 * 200 + 200) + (200 * 784 + 784)


@pytest.mark.parametrize("overrides, match", [
    (dict(latent_dims=(100, 50), hidden_dims=(300,)), "one width per stochastic layer"),
    (dict(latent_dims=(0, 5), hidden_dims=(3, 3)), "'latent_dims' must be positive"),
    (dict(latent_dims=(4,), hidden_dims=(-1,)), "'hidden_dims' must be positive"),
    (dict(latent_dims=()), "one or more values"),
    (dict(latent_dims=(2.5,), hidden_dims=(3,)), r"'latent_dims\[0\]' must be an integer"),
])
def test_bad_configs_are_refused_naming_the_field(overrides, match):
    with pytest.raises(drawzoo.ConfigError, match=match):
        HVAEConfig(**overrides)


@pytest.mark.parametrize("dims, sites", [((6, 3), ["z_1", "z_2"]), ((4,), ["z_1"]), ((5, 4, 3), ["z_1", "z_2", "z_3"])])
def test_sites_shapes_and_order(dims, sites):
    m = drawzoo.load("hvae", latent_dims=dims, hidden_dims=(8,) * len(dims), image_shape=(1, 6, 7))
    x = binary_images(4, (1, 6, 7))
    guide = poutine.trace(m.guide).get_trace(x)
    model = poutine.trace(poutine.replay(m.model, trace=guide)).get_trace(x)
    latent = [n for n, s in guide.nodes.items() if s["type"] == "sample" and n != "data"]
    assert latent == sites  # bottom-up in the guide, top-down in the model
    assert [n for n, s in model.nodes.items() if s["type"] == "sample" and n != "data"] == sites[::-1] + ["x"]
    for name, d in zip(sites, dims):
        assert guide.nodes[name]["value"].shape == (4, d)
        assert {f.name for f in model.nodes[name]["cond_indep_stack"]} == {"data"}
    assert model.nodes["x"]["is_observed"] and m.generate(3).shape == (1, 3, 1, 6, 7)


def _normal(z, out):
    """log N(z; mu, exp(log_sigma)) summed over the last dim, ``out = [mu, log_sigma]``, by hand."""
    mu, log_sigma = out.chunk(2, dim=-1)
    return (-0.5 * ((z - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)


def _tanh_mlp(net, h):
    """The two tanh layers and the last linear map of `net`, by hand from its weights."""
    linears = [layer for layer in net.modules() if isinstance(layer, torch.nn.Linear)]
    for layer in linears[:2]:
        h = torch.tanh(h @ layer.weight.T + layer.bias)
    return h @ linears[2].weight.T + linears[2].bias


def test_the_two_layer_log_density_is_the_hand_computation_at_fixed_z():
    m = drawzoo.load("hvae", image_shape=(1, 3, 4), latent_dims=(3, 2), hidden_dims=(5, 4)).double()
    x = binary_images(2, (1, 3, 4)).double()
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(2, 3, generator=g, dtype=torch.float64), torch.randn(2, 2, generator=g, dtype=torch.float64)
    trace = poutine.trace(poutine.condition(m.model, {"z_1": z1, "z_2": z2})).get_trace(x)
    trace.compute_log_prob()
    logits = _tanh_mlp(m.decoder, z1)
    expected = {
        "z_2": (-0.5 * z2 ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1),
        "z_1": _normal(z1, _tanh_mlp(m.priors[0], z2)),
        "x": (x.flatten(1) * logits - torch.nn.functional.softplus(logits)).sum(-1),
    }
    for name, value in expected.items():
        torch.testing.assert_close(trace.nodes[name]["log_prob"], value)
    # and q: log q(z_1 | x) + log q(z_2 | z_1)
    guide = poutine.trace(poutine.condition(m.guide, {"z_1": z1, "z_2": z2})).get_trace(x)
    guide.compute_log_prob()
    torch.testing.assert_close(guide.nodes["z_1"]["log_prob"], _normal(z1, _tanh_mlp(m.encoders[0], x.flatten(1))))
    torch.testing.assert_close(guide.nodes["z_2"]["log_prob"], _normal(z2, _tanh_mlp(m.encoders[1], z1)))


def guide_sites(trace):
    return [n for n, s in trace.nodes.items() if s["type"] == "sample" and n != "data"]


@pytest.mark.parametrize("dims", [(6, 3), (4,)])
def test_vectorised_iwae_particles_are_the_mean_of_log_mean_exp(dims):
    m = drawzoo.load("hvae", latent_dims=dims, hidden_dims=(8,) * len(dims))
    x = binary_images(3)
    K = 7
    elbo = RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(4)
    loss = elbo.loss(m.model, m.guide, x)
    # the same particles, one trace with a particle plate left of the data plate, by hand
    pyro.set_rng_seed(4)
    with pyro.plate("particles", K, dim=-2):
        guide = poutine.trace(m.guide).get_trace(x)
        model = poutine.trace(poutine.replay(m.model, trace=guide)).get_trace(x)
    assert guide.nodes["z_1"]["value"].shape == (K, 3, dims[0])
    log_w = sum(model.nodes[n]["fn"].log_prob(model.nodes[n]["value"]) for n in ["x", *guide_sites(guide)]) - sum(
        guide.nodes[n]["fn"].log_prob(guide.nodes[n]["value"]) for n in guide_sites(guide))
    assert log_w.shape == (K, 3)
    expected = -(torch.logsumexp(log_w, 0) - math.log(K)).sum().item()
    assert loss == pytest.approx(expected, rel=1e-5)
    samples = Predictive(m.model, guide=m.guide, num_samples=2, parallel=True, return_sites=["z_1"])(x)
    assert samples["z_1"].shape == (2, 3, dims[0])


def test_trains_on_the_iwae_bound_from_the_command_line(tmp_path, capsys):
    data = tmp_path / "images.npy"
    np.save(data, binary_images(24, (1, 6, 7)).numpy())
    checkpoint = tmp_path / "hvae.pt"
    code = main(["train", "hvae", "--latent-dims", "4", "2", "--hidden-dims", "8", "6", "--data", str(data),
                 "--objective", "iwae", "--particles", "3", "--epochs", "2", "--batch-size", "8",
                 "--checkpoint", str(checkpoint), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    trained = drawzoo.load(checkpoint=checkpoint)
    assert (trained.config.latent_dims, trained.config.hidden_dims) == ((4, 2), (8, 6))
    assert "epoch 2: train" in out
