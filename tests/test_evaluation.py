import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pytest
import torch

import drawzoo
from drawzoo.config import check_fields
from drawzoo.evaluation import log_importance_weights
from drawzoo.models import ZooModel
from tests.conftest import binary_images


@dataclass(frozen=True)
class LinearGaussianConfig:
    image_shape: tuple[int, int, int] = (1, 2, 2)

    def __post_init__(self):
        check_fields(self)


class LinearGaussian(ZooModel):
    """z ~ N(0, 1); x ~ N(w z + b, s^2 I): log p(x) = log N(x; b, w w^T + s^2 I) in closed form.
    The guide is a deliberately imperfect Gaussian, so the ELBO is loose and IS must do the work."""

    Config = LinearGaussianConfig
    zoo_name = "linear_gaussian"

    def __init__(self, config=None):
        super().__init__(config)
        self.w = torch.nn.Parameter(torch.tensor([0.3, -0.2, 0.25, 0.1]))
        self.b = torch.nn.Parameter(torch.full((4,), 0.5))
        self.s = 0.2

    def model(self, x=None, *, batch_size=None):
        x, B = self._data(x, batch_size)
        with pyro.plate("data", B):
            z = pyro.sample("z", dist.Normal(torch.zeros(B, 1), 1.0).to_event(1))
            mean = (z * self.w + self.b).view(B, 1, 2, 2)
            pyro.sample("x", dist.Normal(mean, self.s).to_event(3), obs=x)

    def guide(self, x):
        x = self.check_images(x)
        # exact posterior: precision 1 + |w|^2 / s^2, mean (w . (x - b)) / s^2 / precision
        r = x.flatten(1) - self.b
        precision = 1 + (self.w ** 2).sum() / self.s ** 2
        mean = (r @ self.w) / self.s ** 2 / precision
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal((mean + 0.3)[:, None], 1.6 / precision.sqrt()).to_event(1))

    def exact_log_px(self, x):
        cov = torch.outer(self.w, self.w) + self.s ** 2 * torch.eye(4)
        return dist.MultivariateNormal(self.b, cov).log_prob(x.flatten(1))


def test_nll_converges_to_the_exact_log_likelihood():
    m = LinearGaussian()
    x = torch.rand(64, 1, 2, 2)
    with torch.no_grad():
        exact = -m.exact_log_px(x).mean().item()
        errors = {}
        for K in (1, 10, 100, 3000):
            r = drawzoo.evaluate(m, x, num_samples=K)
            assert r["nll"] <= r["neg_elbo"] + 1e-9
            errors[K] = r["nll"] - exact
    assert errors[1] > 0.3  # the guide is imperfect: the ELBO is loose
    assert 0.01 < errors[10] < errors[1] / 5
    assert abs(errors[100]) < 0.02 and abs(errors[3000]) < 3e-3


@pytest.mark.parametrize("name,kw", [("draw", dict(T=3, hidden_dim=16, latent_dim=3)),
                                     ("draw", dict(T=3, hidden_dim=16, latent_dim=3, attention=False)),
                                     ("vae", dict(hidden_dim=16, latent_dim=3))])
def test_nll_is_below_the_negative_elbo(name, kw):
    m = drawzoo.load(name, image_shape=(1, 8, 8), **kw)
    x = binary_images(12, (1, 8, 8))
    r = drawzoo.evaluate(m, x, num_samples=20, batch_size=5)
    assert r["num_images"] == 12 and r["num_samples"] == 20
    assert r["nll"] < r["neg_elbo"]
    log_w = log_importance_weights(m, m.check_images(x), 20)
    assert log_w.shape == (20, 12)
    per_image_nll = -(torch.logsumexp(log_w, 0) - math.log(20))
    assert torch.all(per_image_nll <= -log_w.mean(0) + 1e-5)


def test_evaluate_is_seeded_and_leaves_the_global_rng_alone():
    m = drawzoo.load("vae", image_shape=(1, 8, 8), hidden_dim=16, latent_dim=3)
    x = binary_images(10, (1, 8, 8))
    torch.manual_seed(5)
    state = torch.get_rng_state()
    def figures(seed):
        result = drawzoo.evaluate(m, x, num_samples=7, seed=seed)
        assert result["seconds"] > 0 and result["images_per_s"] > 0
        return {k: v for k, v in result.items() if k not in ("seconds", "images_per_s")}

    a = figures(1)
    assert torch.equal(torch.get_rng_state(), state)
    assert a == figures(1)
    assert a != figures(2)


def test_single_sample_nll_equals_neg_elbo_and_batches_do_not_matter():
    m = drawzoo.load("draw", image_shape=(1, 8, 8), T=2, hidden_dim=8, latent_dim=2)
    x = binary_images(9, (1, 8, 8))
    r = drawzoo.evaluate(m, x, num_samples=1)
    assert r["nll"] == pytest.approx(r["neg_elbo"])
    a = drawzoo.evaluate(m, x, num_samples=4, batch_size=9)
    b = drawzoo.evaluate(m, x, num_samples=4, batch_size=2)
    assert a["neg_elbo"] == pytest.approx(b["neg_elbo"], rel=0.05)


def test_figures_in_bits_per_dimension_are_the_nats_over_c_h_w_ln_2():
    m = drawzoo.load("vae", image_shape=(3, 5, 6), hidden_dim=8, latent_dim=2)
    r = drawzoo.evaluate(m, binary_images(4, (3, 5, 6)), num_samples=3)
    for key in ("neg_elbo", "nll"):
        assert r[f"{key}_bits_per_dim"] == pytest.approx(r[key] / (3 * 5 * 6 * math.log(2)), rel=1e-12)
    assert drawzoo.evaluation.bits_per_dim(90 * math.log(2), (1, 9, 10)) == pytest.approx(1.0)


def test_nested_k_and_per_image_figures_come_from_the_same_samples():
    """nll_k[K'] averages -log mean w over the K/K' disjoint groups of the K log-weights that give nll:
    K'=1 is the -ELBO estimate, K'=K the NLL; per-image figures average to the means; K' estimates
    approach the exact NLL from above as K' grows."""
    m = LinearGaussian()
    x = torch.rand(30, 1, 2, 2)
    with torch.no_grad():
        r = drawzoo.evaluate(m, x, num_samples=1000, nested_k=(1, 10, 100, 1000), per_image=True, batch_size=7)
        torch.manual_seed(0)  # evaluate's own seeding: its first pass (7 images) draws these log-weights
        log_w = log_importance_weights(m, x[:7], 1000).double()
        exact = -m.exact_log_px(x).mean().item()
    assert r["nll_k"][1] == pytest.approx(r["neg_elbo"], rel=1e-12)
    assert r["nll_k"][1000] == pytest.approx(r["nll"], rel=1e-12)
    assert r["nll_k"][1] > r["nll_k"][10] > r["nll_k"][100] > r["nll_k"][1000] > exact - 0.01
    images = r["per_image"]
    assert images["nll"].dtype == torch.float64 and images["nll"].shape == (30,)
    assert images["nll"].mean().item() == pytest.approx(r["nll"], rel=1e-12)
    assert images["neg_elbo"].mean().item() == pytest.approx(r["neg_elbo"], rel=1e-12)
    by_hand = -(torch.logsumexp(log_w.view(10, 100, 7), 1) - math.log(100)).mean(0)
    assert torch.allclose(images["nll_k"][100][:7], by_hand, rtol=1e-9)
    with pytest.raises(ValueError, match="nested_k must hold sample sizes that divide num_samples=10"):
        drawzoo.evaluate(m, x, num_samples=10, nested_k=(3,))


def test_evaluate_rejects_bad_input():
    m = drawzoo.load("vae", image_shape=(1, 8, 8), hidden_dim=16, latent_dim=3)
    with pytest.raises(drawzoo.InputError, match=r"values in \[0, 1\]"):
        drawzoo.evaluate(m, torch.rand(4, 1, 8, 8) * 255)
    with pytest.raises(ValueError, match="num_samples"):
        drawzoo.evaluate(m, torch.rand(4, 1, 8, 8), num_samples=0)
