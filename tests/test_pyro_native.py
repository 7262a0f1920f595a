"""Zoo models in any Pyro pipeline: batch dimensions Pyro adds, minibatch scaling, decoder reuse
that never changes a number, and models that copy, pickle and train independently."""

import copy
import io
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import (SVI, Predictive, RenyiELBO, ReweightedWakeSleep, Trace_ELBO, TraceMeanField_ELBO,
                        TraceTailAdaptive_ELBO)
from pyro.poutine.util import site_is_subsample

import drawzoo
from drawzoo.errors import InputError
from tests.conftest import binary_images
from tests.zoo_models import TINY_DRAW, tiny_models

TINY = TINY_DRAW
MODELS = tiny_models()


def _latents(trace):
    return {n: s for n, s in trace.nodes.items()
            if s["type"] == "sample" and not site_is_subsample(s) and not s["is_observed"]}


def _log_weights(m, x, guide_trace):
    """``log p(x, z) - log q(z | x)`` per image, for the z's of `guide_trace` (any batch shape)."""
    model_trace = poutine.trace(poutine.replay(m.model, trace=guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    lp = sum(s["log_prob"] for s in model_trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s))
    lq = sum(s["log_prob"] for s in guide_trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s))
    return lp - lq


# -- 1. any batch shape Pyro adds -------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_vectorised_particles_compute_exactly_what_each_particle_computes_alone(name):
    m, x, K = MODELS[name](), binary_images(3), 4
    with pyro.plate("particles", K, dim=-2):
        guide_trace = poutine.trace(m.guide).get_trace(x)
        log_w = _log_weights(m, x, guide_trace)
    assert log_w.shape == (K, 3)
    for k in range(K):  # particle k alone: the guide replays its z's, no particle dimension anywhere
        source = poutine.trace(m.guide).get_trace(x)
        for n, site in _latents(guide_trace).items():
            source.nodes[n]["value"] = site["value"][k]
        alone = poutine.trace(poutine.replay(m.guide, trace=source)).get_trace(x)
        torch.testing.assert_close(log_w[k], _log_weights(m, x, alone), rtol=1e-5, atol=1e-4)


def _estimates(elbo_cls, m, x, vectorize, repeats=12, **kw):
    losses = torch.tensor([elbo_cls(num_particles=16, vectorize_particles=vectorize, max_plate_nesting=1, **kw)
                           .loss(m.model, m.guide, x) for _ in range(repeats)])
    return losses.mean(), losses.std() / math.sqrt(repeats)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("elbo_cls,kw", [(Trace_ELBO, {}), (TraceMeanField_ELBO, {}), (RenyiELBO, {"alpha": 0})],
                         ids=["Trace_ELBO", "TraceMeanField_ELBO", "RenyiELBO-IWAE"])
def test_vectorised_losses_agree_with_sequential_particles(name, elbo_cls, kw):
    """Same estimator, particles in one pass or in a loop: the means of 12 estimates of each agree
    within 5 standard errors of their difference (Monte Carlo error, nats)."""
    m, x = MODELS[name](), binary_images(4)
    vec, vec_se = _estimates(elbo_cls, m, x, True, **kw)
    seq, seq_se = _estimates(elbo_cls, m, x, False, **kw)
    assert abs(vec - seq) < 5 * math.hypot(vec_se, seq_se) + 1e-3 * abs(seq)


@pytest.mark.parametrize("name", MODELS)
def test_iwae_loss_is_drawzoos_importance_sampled_nll(name):
    """RenyiELBO(alpha=0, K) per image is the IWAE bound that `drawzoo.evaluate(num_samples=K)`
    reports: with the same seed both draw the same z's (to float rounding)."""
    m, x, K = MODELS[name](), binary_images(5), 8
    torch.manual_seed(3)
    loss = RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=1).loss(m.model, m.guide, x)
    nll = drawzoo.evaluate(m, x, num_samples=K, seed=3)["nll"]
    assert loss / len(x) == pytest.approx(nll, rel=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_parallel_predictive_posterior_and_prior(name):
    m, x = MODELS[name](), binary_images(3)
    post = Predictive(m.model, guide=m.guide, num_samples=5, parallel=True)(x)
    prior = Predictive(m.model, num_samples=5, parallel=True)(None, batch_size=2)
    events = {n: s["fn"].event_shape for n, s in _latents(poutine.trace(m.guide).get_trace(x)).items()}
    support = poutine.trace(m.model).get_trace(x).nodes["x"]["fn"].support
    for samples, B in ((post, 3), (prior, 2)):
        assert samples["x"].shape == (5, B, *m.image_shape)
        assert bool(support.check(samples["x"]).all())  # binary pixels, or 8-bit levels for "logistic"
        assert set(samples) == {"x", *events}
        for site, event in events.items():
            assert samples[site].shape == (5, B, *event), site
    with pyro.plate("samples", 5, dim=-2):  # the model's own return value keeps Pyro's dimensions too
        assert m.model(None, batch_size=2).shape[:2] == (5, 2)


@pytest.mark.parametrize("name", MODELS)
def test_every_particle_based_pyro_objective_trains(name):
    m, x = MODELS[name](), binary_images(4)
    for elbo in (TraceTailAdaptive_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1),
                 ReweightedWakeSleep(),  # its defaults: 2 vectorised particles
                 RenyiELBO(alpha=0.5, num_particles=3, vectorize_particles=True, max_plate_nesting=1)):
        before = [p.detach().clone() for p in m.parameters()]
        SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), elbo).step(x)  # (tail-adaptive reports no loss)
        assert all(torch.isfinite(p).all() for p in m.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters())), type(elbo).__name__


@pytest.mark.parametrize("name", MODELS)
def test_a_plate_on_the_data_dimension_is_an_error_that_says_what_to_do(name):
    m = MODELS[name]()
    with pytest.raises(InputError, match="max_plate_nesting >= 1"):
        Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=0).loss(m.model, m.guide, binary_images(2))


# -- 2. minibatch scaling ---------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_num_data_scales_every_site_like_a_subsampled_plate(name):
    m, x, N = MODELS[name](), binary_images(4), 1000
    guide_trace = poutine.trace(m.guide).get_trace(x, num_data=N)
    model_trace = poutine.trace(poutine.replay(m.model, trace=guide_trace)).get_trace(x, num_data=N)
    for trace in (guide_trace, model_trace):
        sites = [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]
        assert sites and all(s["scale"] == N / 4 for s in sites)
        assert all([(f.name, f.size, f.full_size, f.dim) for f in s["cond_indep_stack"]] == [("data", 4, N, -1)]
                   for s in sites)
    torch.manual_seed(0)
    scaled = Trace_ELBO().loss(lambda x: m.model(x, num_data=N), lambda x: m.guide(x, num_data=N), x)
    torch.manual_seed(0)
    assert scaled == pytest.approx(Trace_ELBO().loss(m.model, m.guide, x) * N / 4, rel=1e-5)


@pytest.mark.parametrize("bad", [3, 0, 2.5, "10", True])
def test_num_data_must_be_an_integer_at_least_the_batch(bad):
    m = MODELS["draw"]()
    with pytest.raises(InputError, match="num_data"):
        m.guide(binary_images(4), num_data=bad)


# -- 3. the model's reuse of the guide's decoder never changes a number -----------------------


def _model_log_p_and_grads(m, guide_trace, x, reuse):
    """The model's log p(x, z) (nats, summed) replaying `guide_trace`, and its gradients (or the
    error autograd raises, e.g. for parameters modified in place after the guide saved them)."""
    m.reuse_guide_decoder = reuse
    log_p = poutine.trace(poutine.replay(m.model, trace=guide_trace)).get_trace(x).log_prob_sum()
    params = [p for p in m.parameters() if p.requires_grad]
    try:
        grads = torch.autograd.grad(log_p, params, retain_graph=True, allow_unused=True) if log_p.requires_grad else []
    except RuntimeError as e:
        return log_p.detach(), str(e).split(":")[0]
    return log_p.detach(), [None if g is None else g.clone() for g in grads]


def _plus(tensor, amount=0.05):
    return tensor + amount * torch.randn_like(tensor)


def _change_data(m, tr):
    m.decoder.weight_hh.data.copy_(_plus(m.decoder.weight_hh.data))


def _vector_to_parameters(m, tr):
    vec = torch.nn.utils.parameters_to_vector(m.parameters())
    torch.nn.utils.vector_to_parameters(_plus(vec.detach()), m.parameters())


def _assign_state(m, tr):
    m.load_state_dict({k: _plus(v) for k, v in m.state_dict().items()}, assign=True)


def _assign_equal_values(m, tr):  # new parameter objects with the very same values
    m.load_state_dict({k: v.clone() for k, v in m.state_dict().items()}, assign=True)


def _edit_z_data(m, tr):
    tr.nodes["z_1"]["value"].data.add_(0.5)


def _edit_z_in_place(m, tr):
    with torch.no_grad():
        tr.nodes["z_2"]["value"].mul_(-1)


def _edit_returned_canvas(m, tr):
    tr.nodes["_RETURN"]["value"].data.fill_(3.0)


def _optimizer_step(m, tr):
    with torch.no_grad():
        for p in m.writer.parameters():
            p.add_(0.01)


def _freeze_decoder(m, tr):
    m.decoder.requires_grad_(False)


def _hook_on_writer(m, tr):
    m.writer.register_forward_hook(lambda module, inputs, out: (out[0] * 0.5, out[1]))


PERTURBATIONS = [_change_data, _vector_to_parameters, _assign_state, _assign_equal_values, _edit_z_data,
                 _edit_z_in_place, _edit_returned_canvas, _optimizer_step, _freeze_decoder, _hook_on_writer]


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("perturb", PERTURBATIONS, ids=lambda f: f.__name__.strip("_"))
def test_whatever_changes_between_guide_and_model_the_model_computes_what_a_recompute_does(attention, perturb):
    m, x = drawzoo.load("draw", **TINY, attention=attention), binary_images(3)
    guide_trace = poutine.trace(m.guide).get_trace(x)
    perturb(m, guide_trace)
    (fast_log_p, fast_grads) = _model_log_p_and_grads(m, guide_trace, x, reuse=True)
    (plain_log_p, plain_grads) = _model_log_p_and_grads(m, guide_trace, x, reuse=False)
    assert fast_log_p == plain_log_p  # bit for bit
    if isinstance(plain_grads, str):  # an autograd error: the same one
        assert fast_grads == plain_grads
        return
    assert len(fast_grads) == len(plain_grads)
    for a, b in zip(fast_grads, plain_grads):  # sums of the same terms, perhaps in another order
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("guide_mode,model_mode", [
    (torch.no_grad, torch.enable_grad), (torch.enable_grad, torch.no_grad), (torch.inference_mode, torch.no_grad),
    (torch.enable_grad, lambda: torch.autocast("cpu", dtype=torch.bfloat16))])
def test_a_guide_and_a_model_under_other_autograd_modes_do_not_share_a_decoder_pass(guide_mode, model_mode):
    m, x = drawzoo.load("draw", **TINY), binary_images(3)
    with guide_mode():
        guide_trace = poutine.trace(m.guide).get_trace(x)
    with model_mode():
        fast = poutine.trace(poutine.replay(m.model, trace=guide_trace)).get_trace(x).log_prob_sum()
        m.reuse_guide_decoder = False
        plain = poutine.trace(poutine.replay(m.model, trace=guide_trace)).get_trace(x).log_prob_sum()
    assert torch.equal(fast, plain) and fast.requires_grad == plain.requires_grad


def test_a_frozen_encoder_still_trains_the_decoder_and_writer():
    m, x = drawzoo.load("draw", **TINY), binary_images(4)

    def frozen_guide(x):
        with torch.no_grad():
            return m.guide(x)

    decoding = {n: p.detach().clone() for n, p in m.named_parameters() if n.startswith(("decoder", "writer"))}
    encoding = {n: p.detach().clone() for n, p in m.named_parameters() if n.startswith(("encoder", "reader", "post"))}
    svi = SVI(m.model, frozen_guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(2):
        svi.step(x)
    params = dict(m.named_parameters())
    assert all(not torch.equal(v, params[n]) for n, v in decoding.items())
    assert all(torch.equal(v, params[n]) for n, v in encoding.items())


def test_the_plain_case_still_reuses_the_guides_decoder(monkeypatch):
    m = drawzoo.load("draw", **TINY)
    calls = []
    original = m.decoder.forward
    monkeypatch.setattr(m.decoder, "forward", lambda *a: calls.append(1) or original(*a))
    Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1).loss(m.model, m.guide, binary_images(2))
    assert len(calls) == TINY["T"]  # decoded once per step, by the guide, for all 4 particles at once


# -- 4. a model is an object ------------------------------------------------------------------


def _svi_step(m, x):
    SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), TraceMeanField_ELBO()).step(x)


def _snapshot(m):
    return [p.detach().clone() for p in m.parameters()]


def _moved(before, m):
    return all(not torch.equal(a, b) for a, b in zip(before, m.parameters()))


def _unmoved(before, m):
    return all(torch.equal(a, b) for a, b in zip(before, m.parameters()))


@pytest.mark.parametrize("name", MODELS)
def test_copies_deepcopy_and_torch_save_are_independent_models(name):
    m, x = MODELS[name](), binary_images(3)
    _svi_step(m, x)
    m.guide(x)  # a pass in progress: its tensors are not copied
    buffer = io.BytesIO()
    torch.save(m, buffer)
    buffer.seek(0)
    copies = [copy.deepcopy(m), torch.load(buffer, weights_only=False)]
    assert len({m.pyro_name, *(c.pyro_name for c in copies)}) == 3
    for c in copies:
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), c.state_dict().values()))
    for trained in [m, *copies]:
        others = [(o, _snapshot(o)) for o in [m, *copies] if o is not trained]
        before = _snapshot(trained)
        _svi_step(trained, x)
        assert _moved(before, trained)
        assert all(_unmoved(snap, o) for o, snap in others)


@pytest.mark.parametrize("name", MODELS)
def test_svi_trains_the_parameters_the_model_has_now(name):
    """After ``load_state_dict(assign=True)`` the param store's old entries are not what trains."""
    m, x = MODELS[name](), binary_images(3)
    _svi_step(m, x)
    m.load_state_dict({k: v.clone() for k, v in m.state_dict().items()}, assign=True)
    before = _snapshot(m)
    _svi_step(m, x)
    assert _moved(before, m)


# -- a third-party model gets all of it from ZooModel -------------------------------------------


def test_a_model_written_on_zoomodel_gets_particles_num_data_and_copies():
    from dataclasses import dataclass

    from drawzoo.config import param
    from drawzoo.models import ZooModel
    from drawzoo.models.base import GaussianPosterior, pixel_likelihood, standard_normal

    @dataclass(frozen=True)
    class FactorConfig:
        image_shape: tuple[int, int, int] = param((1, 28, 28), "image size")
        latent_dim: int = param(3, "size of z")

    class Factor(ZooModel):
        """z ~ N(0, I); x ~ Bernoulli(W z): written as a third party would, on the base class only."""

        Config, zoo_name = FactorConfig, "factor"

        def __init__(self, config=None, **overrides):
            super().__init__(config, **overrides)
            pixels = math.prod(self.image_shape)
            self.decoder = torch.nn.Sequential(torch.nn.Linear(self.config.latent_dim, pixels),
                                               torch.nn.Unflatten(-1, self.image_shape))
            self.encoder = torch.nn.Sequential(torch.nn.Flatten(-3), GaussianPosterior(pixels, self.config.latent_dim))

        def model(self, x=None, *, batch_size=None, num_data=None):
            x, B = self._data(x, batch_size)
            self.register()
            with self.data_plate(B, num_data):
                z = pyro.sample("z", standard_normal(B, self.config.latent_dim, x if x is not None else self.decoder[0].weight))
                pyro.sample("x", pixel_likelihood(self.decoder(z)), obs=x)

        def guide(self, x, *, num_data=None):
            x = self.check_images(x)
            self.register()
            with self.data_plate(len(x), num_data):
                mu, sigma = self.encoder(x)
                pyro.sample("z", pyro.distributions.Normal(mu, sigma).to_event(1))

    m, x = Factor(), binary_images(4)
    iwae = RenyiELBO(alpha=0, num_particles=6, vectorize_particles=True, max_plate_nesting=1)
    torch.manual_seed(1)
    assert iwae.loss(m.model, m.guide, x) / 4 == pytest.approx(drawzoo.evaluate(m, x, num_samples=6, seed=1)["nll"],
                                                               rel=1e-4)
    assert Predictive(m.model, guide=m.guide, num_samples=3, parallel=True)(x)["x"].shape == (3, 4, 1, 28, 28)
    trace = poutine.trace(m.guide).get_trace(x, num_data=40)
    assert trace.nodes["z"]["scale"] == 10
    twin = copy.deepcopy(m)
    before = _snapshot(m)
    _svi_step(twin, x)
    assert _unmoved(before, m) and twin.pyro_name != m.pyro_name
