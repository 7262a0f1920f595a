"""Named objectives (`drawzoo.evaluation.objectives`) and `drawzoo.train` with any Pyro ELBO."""

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import (JitTraceGraph_ELBO, JitTraceMeanField_ELBO, RenyiELBO, ReweightedWakeSleep,
                        Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO, TraceTailAdaptive_ELBO)
from torch.utils.data import DistributedSampler

import drawzoo
from drawzoo.checkpoints import read_checkpoint
from drawzoo.errors import ObjectiveError
from drawzoo.evaluation.objectives import OBJECTIVES, analytic_kl_sites, describe, label, make_elbo, name_of
from drawzoo.training import ELBOLoss
from tests.conftest import binary_images
from tests.zoo_models import tiny_models

TINY = {"draw": dict(T=2, hidden_dim=16, latent_dim=4, read_size=2, write_size=3),
        "vae": dict(hidden_dim=16, latent_dim=4)}
FAST = dict(batch_size=50, lr=1e-2, progress=False)


def tiny(name="draw"):
    torch.manual_seed(0)
    return drawzoo.load(name, **TINY[name])


@pytest.fixture(scope="module")
def images():
    return binary_images(100)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def vectorised(cls, **kw):
    return cls(num_particles=3, vectorize_particles=True, max_plate_nesting=1, **kw)


# -- named objectives -------------------------------------------------------------------------


def test_named_objectives_make_the_pyro_elbos_they_name():
    assert isinstance(make_elbo(), TraceMeanField_ELBO)
    assert describe(make_elbo()) == {"class": "AnalyticKL_ELBO", "num_particles": 1, "vectorize_particles": False}
    iwae = make_elbo("iwae", 5)
    assert isinstance(iwae, RenyiELBO) and iwae.alpha == 0 and iwae.num_particles == 5 and iwae.vectorize_particles
    assert describe(iwae) == {"class": "RenyiELBO", "num_particles": 5, "vectorize_particles": True, "alpha": 0}
    assert label(describe(iwae)) == "RenyiELBO(num_particles=5, vectorize_particles=True, alpha=0)"
    assert type(make_elbo("elbo-mc")) is Trace_ELBO
    assert describe(make_elbo("tail-adaptive", 4))["tail_adaptive_beta"] == -1.0
    for name in OBJECTIVES:  # a checkpoint's description gives the name back
        particles = OBJECTIVES[name].min_particles + 1
        assert name_of(describe(make_elbo(name, particles))) == (name, particles)
    assert name_of("TraceMeanField_ELBO") == ("elbo", 1)  # what drawzoo 0.1 checkpoints hold
    assert name_of(describe(TraceMeanField_ELBO())) == ("elbo", 1)  # what "elbo" was before AnalyticKL_ELBO
    assert name_of(describe(TraceGraph_ELBO())) is None
    assert name_of(describe(RenyiELBO(alpha=0.5, num_particles=3, vectorize_particles=True))) is None


@pytest.mark.parametrize("args,match", [
    (("iwea", 5), "unknown objective 'iwea'; valid: elbo, elbo-mc, iwae, tail-adaptive"),
    (("iwae", 0), "'iwae' needs particles >= 1"), (("iwae", 2.5), "got 2.5"), (("elbo", True), "got True"),
    (("tail-adaptive", 1), "'tail-adaptive' needs particles >= 2"),
])
def test_bad_objectives_are_named(args, match):
    with pytest.raises(ObjectiveError, match=match):
        make_elbo(*args)


# -- any ELBO trains --------------------------------------------------------------------------


ELBOS = {
    "Trace_ELBO": Trace_ELBO, "TraceMeanField_ELBO": TraceMeanField_ELBO, "TraceGraph_ELBO": TraceGraph_ELBO,
    "IWAE": lambda: vectorised(RenyiELBO, alpha=0), "TailAdaptive": lambda: vectorised(TraceTailAdaptive_ELBO),
    "JitTraceMeanField_ELBO": JitTraceMeanField_ELBO, "JitTraceGraph_ELBO": JitTraceGraph_ELBO,
    "ReweightedWakeSleep": ReweightedWakeSleep,
}


@pytest.mark.parametrize("model", ["draw", "vae"])
@pytest.mark.parametrize("make", ELBOS.values(), ids=ELBOS.keys())
def test_every_pyro_elbo_trains_a_zoo_model(images, model, make):
    m = tiny(model)
    before = _weights(m)
    history = drawzoo.train(m, images, epochs=1, **FAST, elbo=make())
    assert history[-1]["step"] == 2
    # per image: random 28 x 28 binary images cost ~0.6 nats a pixel (a sum over the batch would be 50x)
    assert 100 < history[-1]["train_loss"] < 2000
    after = _weights(m)
    assert all(torch.isfinite(w).all() for w in after.values())
    assert all(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("make", [lambda: RenyiELBO(alpha=0, num_particles=1), TraceGraph_ELBO],
                         ids=["RenyiELBO-K1", "TraceGraph_ELBO"])
def test_loss_and_grads_are_per_image_for_elbos_with_and_without_a_differentiable_loss(images, make):
    """With one particle and reparametrised z's, IWAE and TraceGraph_ELBO estimate what Trace_ELBO
    does from the same z's: through their own loss_and_grads and divided by B afterwards, they
    give Trace_ELBO's differentiable loss / B and its gradient."""
    m, x = tiny(), images[:10]
    results = []
    for elbo in (Trace_ELBO(), make()):
        m.zero_grad(set_to_none=True)
        pyro.set_rng_seed(1)
        loss = ELBOLoss(m, elbo).loss_and_grads(x)
        results.append((loss, [p.grad.clone() for p in m.parameters()]))
    (loss, grads), (other_loss, other_grads) = results
    assert not hasattr(elbo, "differentiable_loss")  # trained by its own loss_and_grads
    assert other_loss == pytest.approx(loss, rel=1e-5) and 100 < loss < 2000
    for g, h in zip(grads, other_grads, strict=True):
        torch.testing.assert_close(h, g, rtol=1e-4, atol=1e-6)


def test_tail_adaptive_trains_on_pyros_gradient_and_shows_its_surrogate(images):
    """Pyro's TraceTailAdaptive_ELBO loss is +inf (no estimate); drawzoo differentiates the same
    surrogate without it, and shows the surrogate's tail-weighted mean of -log w per image."""
    m, x, elbo = tiny(), images[:10], vectorised(TraceTailAdaptive_ELBO)
    pyro.set_rng_seed(2)
    pyros = elbo.differentiable_loss(m.model, m.guide, x)
    pyros.backward()
    expected = [p.grad / len(x) for p in m.parameters()]
    m.zero_grad(set_to_none=True)
    pyro.set_rng_seed(2)
    loss = ELBOLoss(m, elbo).loss_and_grads(x)
    assert pyros.item() == float("inf") and 100 < loss < 2000
    for p, g in zip(m.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_a_train_step_is_pyros_loss_and_grads_over_the_batch_size_then_clipped_adam(images):
    """One step of `drawzoo.train` with IWAE (K=3) is, to the bit: seed, Pyro's loss_and_grads on
    the epoch's shuffled batch, gradients / B, clipping, Adam."""
    x, seed, lr, clip = images[:50], 7, 1e-2, 5.0
    trained = tiny()
    history = drawzoo.train(trained, x, epochs=1, batch_size=50, lr=lr, seed=seed, clip_norm=clip, progress=False,
                            elbo=vectorised(RenyiELBO, alpha=0))
    by_hand = tiny()
    batch = x[list(DistributedSampler(x, num_replicas=1, rank=0, shuffle=True, seed=seed))]
    pyro.set_rng_seed(seed)
    loss = vectorised(RenyiELBO, alpha=0).loss_and_grads(by_hand.model, by_hand.guide, batch)
    for p in by_hand.parameters():
        p.grad /= len(batch)
    assert torch.nn.utils.clip_grad_norm_(by_hand.parameters(), clip) > clip  # clipping took part
    torch.optim.Adam(by_hand.parameters(), lr=lr).step()
    assert history[0]["train_loss"] == loss / len(batch)
    for name, w in _weights(by_hand).items():
        assert torch.equal(trained.state_dict()[name], w), name


def test_an_iwae_run_resumes_to_the_weights_of_an_uninterrupted_run(images, tmp_path):
    kw = dict(seed=3, **FAST)
    straight = tiny()
    full = drawzoo.train(straight, images, epochs=2, elbo=make_elbo("iwae", 3), **kw)
    path = tmp_path / "run.pt"
    drawzoo.train(tiny(), images, epochs=1, checkpoint=path, elbo=make_elbo("iwae", 3), **kw)
    assert read_checkpoint(path)["elbo"] == describe(make_elbo("iwae", 3))
    resumed = tiny()
    rest = drawzoo.train(resumed, images, epochs=2, checkpoint=path, objective="iwae", particles=3, **kw)  # the same
    assert [h["train_loss"] for h in rest] == [h["train_loss"] for h in full]
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in straight.state_dict().items())
    with pytest.raises(drawzoo.CheckpointError, match=r"objective: checkpoint has 'iwae', given 'elbo'; "
                       r"particles: checkpoint has 3, given 1"):
        drawzoo.train(tiny(), images, epochs=2, max_steps=3, checkpoint=path, elbo=make_elbo("elbo"), **kw)


@pytest.mark.parametrize("elbo,match", [
    (TraceTailAdaptive_ELBO(), r"elbo TraceTailAdaptive_ELBO\(num_particles=1, vectorize_particles=False, "
     r"tail_adaptive_beta=-1.0\) cannot train model 'draw': TraceTailAdaptive_ELBO only implemented for "
     r"vectorize_particles==True"),
    (Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=0),
     r"elbo Trace_ELBO\(num_particles=2, vectorize_particles=True\) cannot train model 'draw': "
     r".*max_plate_nesting >= 1"),
], ids=["tail-adaptive-unvectorised", "no-room-for-particles"])
def test_an_elbo_that_cannot_train_the_model_stops_before_any_step(images, tmp_path, elbo, match):
    """It fails on the first batch: no optimizer step, no checkpoint."""
    m = tiny()
    before = _weights(m)
    with pytest.raises(ObjectiveError, match=match):
        drawzoo.train(m, images, epochs=1, checkpoint=tmp_path / "run.pt", elbo=elbo, **FAST)
    assert not (tmp_path / "run.pt").exists()
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("elbo", ["iwae", TraceMeanField_ELBO, lambda x: x], ids=["str", "class", "function"])
def test_elbo_must_be_a_pyro_elbo(images, elbo):
    with pytest.raises(ObjectiveError, match=r"elbo must be a pyro.infer.ELBO instance .*make_elbo\('iwae', 5\)\), "
                       r"got (str|ABCMeta|function)"):
        drawzoo.train(tiny(), images, epochs=1, elbo=elbo, **FAST)


# -- "elbo": analytic KL terms only where they are exact ----------------------------------------


def test_analytic_kl_sites_are_those_whose_model_parents_the_guide_samples_first():
    x = binary_images(2)
    for model, exact in ((drawzoo.load("hvae", latent_dims=(6, 3), hidden_dims=(16, 8)), {"z_2"}),
                         (drawzoo.load("hvae", latent_dims=(4,), hidden_dims=(16,)), {"z_1"}),
                         (drawzoo.load("draw", T=3, hidden_dim=16, latent_dim=4), {"z_0", "z_1", "z_2"})):
        guide = poutine.trace(model.guide).get_trace(x)
        trace = poutine.trace(poutine.replay(model.model, guide)).get_trace(x)
        assert analytic_kl_sites(trace, guide) == exact


def test_elbo_is_unbiased_where_pyros_mean_field_elbo_is_not():
    """A two-layer HVAE's z_1 is drawn from z_2 in the model and before it in the guide: its KL term
    cannot be analytic. With p(z_1 | z_2) made to depend strongly on z_2, TraceMeanField_ELBO is
    off by nats; "elbo" agrees with the Monte Carlo ELBO (the same expectation, 4000 particles)."""
    torch.manual_seed(0)
    m, x = drawzoo.load("hvae", latent_dims=(6, 3), hidden_dims=(16, 8)), binary_images(8)
    with torch.no_grad():
        for p in m.priors.parameters():
            p.mul_(4)

    def loss(elbo):
        pyro.set_rng_seed(1)
        return elbo.loss(m.model, m.guide, x) / len(x)

    K = dict(num_particles=4000, vectorize_particles=True, max_plate_nesting=1)
    exact, mc = loss(make_elbo("elbo", 4000)), loss(make_elbo("elbo-mc", 4000))
    with pytest.warns(UserWarning, match="mean field"):
        with pyro.validation_enabled():
            mean_field = loss(TraceMeanField_ELBO(**K))
    assert exact == pytest.approx(mc, abs=0.3)
    assert abs(mean_field - mc) > 5


@pytest.mark.parametrize("name", ["draw", "vae", "conv_draw", "hvae-one-layer"])
def test_elbo_is_pyros_mean_field_elbo_where_every_site_is_exact(name):
    m, x = tiny_models()[name](), binary_images(3)
    for particles in (1, 3):
        kw = dict(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)
        pyro.set_rng_seed(2)
        ours = make_elbo("elbo", particles).differentiable_loss(m.model, m.guide, x)
        pyro.set_rng_seed(2)
        assert torch.equal(ours, TraceMeanField_ELBO(**kw).differentiable_loss(m.model, m.guide, x))
