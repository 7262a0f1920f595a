import copy
import gc
import weakref

import pyro
import pytest
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from pyro.infer import SVI, Predictive, RenyiELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO

import drawzoo
from drawzoo.models import DRAW, DrawConfig
from tests.conftest import binary_images

TINY = dict(T=4, hidden_dim=16, latent_dim=3, read_size=2, write_size=3)


def tiny(**overrides):
    return drawzoo.load("draw", **{**TINY, **overrides})


def test_config_defaults_are_the_papers_mnist_setup():
    m = drawzoo.load("draw")
    assert isinstance(m, torch.nn.Module) and isinstance(m.config, DrawConfig)
    c = m.config
    assert (c.T, c.hidden_dim, c.latent_dim, c.read_size, c.write_size, c.attention, c.image_shape) == (
        64, 256, 100, 2, 5, True, (1, 28, 28))


def _sample_sites(trace):
    return {n: s for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 16, 16), (1, 28, 40), (3, 12, 20)])
def test_model_and_guide_have_one_site_per_step_in_one_plate(attention, shape):
    m = tiny(attention=attention, image_shape=shape)
    x = binary_images(5, shape)
    guide_tr = poutine.trace(m.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(m.model, trace=guide_tr)).get_trace(x)
    names = [f"z_{t}" for t in range(m.config.T)]
    assert list(_sample_sites(guide_tr)) == names
    assert list(_sample_sites(model_tr)) == names + ["x"]
    for tr in (guide_tr, model_tr):
        tr.compute_log_prob()
        for name, site in _sample_sites(tr).items():
            assert [f.name for f in site["cond_indep_stack"]] == ["data"]
            assert site["log_prob"].shape == (5,)
            if name.startswith("z_"):
                assert site["value"].shape == (5, m.config.latent_dim)
                assert site["fn"].event_dim == 1
    assert model_tr.nodes["x"]["is_observed"] and torch.equal(model_tr.nodes["x"]["value"], x)
    assert model_tr.nodes["_RETURN"]["value"].shape == (5, *shape)


def test_svi_loss_is_the_papers_reconstruction_plus_latent_loss():
    m = tiny(T=5)
    x = binary_images(6)
    pyro.set_rng_seed(3)
    guide_tr = poutine.trace(m.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(m.model, trace=guide_tr)).get_trace(x)
    L_x = -model_tr.nodes["x"]["fn"].log_prob(x)  # [B], nats
    L_z = 0
    for t in range(m.config.T):
        q = guide_tr.nodes[f"z_{t}"]["fn"].base_dist
        mu, sigma = q.loc, q.scale
        L_z = L_z + 0.5 * (mu ** 2 + sigma ** 2 - torch.log(sigma ** 2)).sum(-1) - m.config.latent_dim / 2
    # L^x by hand: binary cross-entropy of sigmoid(c_T)
    c_T = model_tr.nodes["_RETURN"]["value"]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(c_T, x, reduction="none").sum((1, 2, 3))
    torch.testing.assert_close(L_x, bce)
    pyro.set_rng_seed(3)
    loss = TraceMeanField_ELBO().loss(m.model, m.guide, x)
    assert loss == pytest.approx((L_x + L_z).sum().item(), rel=1e-5)


def test_guide_reads_with_the_previous_decoder_state_and_feeds_it_to_the_encoder():
    m = tiny()
    assert m.encoder.input_size == m.reader.out_dim + m.config.hidden_dim
    assert m.decoder.input_size == m.config.latent_dim
    # the decoder is shared: one set of weights, registered once with Pyro
    tr = poutine.trace(m.guide).get_trace(binary_images(2))
    params = [n for n, s in tr.nodes.items() if s["type"] == "param"]
    assert f"{m.pyro_name}$$$decoder.weight_ih" in params
    assert len(params) == len(list(m.parameters()))


def test_svi_training_lowers_the_loss():
    m = tiny(T=3, hidden_dim=32, image_shape=(1, 8, 8))
    x = binary_images(32, (1, 8, 8))
    x[:, :, 2:6, 2:6] = 1.0  # structure to learn
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), TraceMeanField_ELBO())
    losses = [svi.step(x) / len(x) for _ in range(60)]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_no_attention_reads_the_whole_image_and_writes_a_full_canvas():
    m = tiny(attention=False, image_shape=(3, 6, 10))
    assert m.reader.out_dim == 2 * 3 * 6 * 10
    r, glimpse = m.reader(torch.ones(2, 3, 6, 10), torch.zeros(2, 3, 6, 10), torch.zeros(2, 16))
    assert glimpse is None and torch.equal(r, torch.cat([torch.ones(2, 180), torch.zeros(2, 180)], 1))
    update, glimpse = m.writer(torch.randn(2, 16))
    assert glimpse is None and update.shape == (2, 3, 6, 10)


@pytest.mark.parametrize("particles", [1, 3])
def test_without_attention_the_encoders_product_with_x_once_per_pass_changes_nothing(particles):
    """The encoder's product with r_t = [x, x_hat_t] re-associated, its part with x computed once
    per pass: the loss and every gradient are the plain per-step computation's (the reference: an
    encoder with a hook, which the model runs as it is, every step), in float64 to 1e-12."""
    m = tiny(attention=False, image_shape=(3, 6, 10)).double()
    x = binary_images(5, (3, 6, 10)).double()
    weights = m._pass_weights(x)
    assert weights.x_in_e and weights.posterior is None and weights.decoder is None  # eager: the encoder only
    assert weights.encoder.e.shape == (5, 4 * 16) and weights.encoder.W.shape == (4 * 16, 3 * 6 * 10 + 2 * 16)
    elbo = TraceMeanField_ELBO(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)

    def loss_and_grads():
        pyro.set_rng_seed(3)
        m.zero_grad()
        loss = elbo.differentiable_loss(m.model, m.guide, x)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in m.parameters()]

    loss, grads = loss_and_grads()
    calls = []
    handle = m.encoder.register_forward_hook(lambda *args: calls.append(1))
    assert m._pass_weights(x) is None
    plain, plain_grads = loss_and_grads()
    handle.remove()
    assert len(calls) == m.config.T  # the plain path ran the encoder module at every step
    torch.testing.assert_close(loss, plain, rtol=1e-12, atol=0)
    for g, h in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(g, h, rtol=1e-12, atol=1e-12)
    assert tiny()._pass_weights(binary_images(2)) is None  # attention: x is read through the filterbank


def test_a_replaced_encoder_or_a_mask_keeps_the_plain_per_step_encoder():
    """The encoder's product with x is taken once per pass only for drawzoo's own modules: a
    subclass of nn.LSTMCell (which may compute anything) or a reader of another type runs as it is
    at every step, and so does a mask (the encoder's x is then the canvas where unobserved)."""

    class Cell(torch.nn.LSTMCell):
        pass

    m = tiny(attention=False, image_shape=(1, 6, 6))
    x = binary_images(3, (1, 6, 6))
    assert m._pass_weights(x) is not None
    assert m._pass_weights(x, torch.ones(3, 1, 6, 6, dtype=torch.bool)) is None
    m.encoder = Cell(m.encoder.input_size, m.encoder.hidden_size)
    assert m._pass_weights(x) is None
    m = tiny(attention=False, image_shape=(1, 6, 6))
    m.reader = type("Read", (type(m.reader),), {})(16, (1, 6, 6))
    assert m._pass_weights(x) is None
    m = tiny(attention=False, image_shape=(1, 6, 6))
    m.encoder = torch.nn.LSTMCell(m.encoder.input_size, m.encoder.hidden_size, bias=False)
    assert m._pass_weights(x) is None


def _deferred_pair(attention, shape=(1, 6, 6)):
    """A float64 model and a copy on the fast path with dynamo's eager backend: the step functions
    run as written (no inductor), so the weight gradients, summed in place there as each step's
    arrives, must equal the plain per-step sums to float64 rounding."""
    torch.manual_seed(0)
    m = tiny(attention=attention, image_shape=shape).double()
    return m, copy.deepcopy(m).compile_steps(backend="eager")


def _elbo_and_grads(m, x, elbo, mask=None, seed=3):
    pyro.set_rng_seed(seed)
    m.zero_grad()
    loss = elbo.differentiable_loss(m.model, m.guide, x, mask=mask)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in m.parameters()]


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_deferred_weight_gradients_equal_the_per_step_sums(attention, particles, masked):
    """On the fast path the encoder's, posterior's and decoder's per-step weight gradients are summed
    in place as they arrive (`StepLinear`): the same loss and every gradient as the plain model's
    per-step products, in float64 to 1e-12, with vectorised particles (whose batch shape grows after the
    first step) and with a mask."""
    m, fast = _deferred_pair(attention)
    x = binary_images(5, (1, 6, 6)).double()
    mask = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(1)) < 0.7 if masked else None
    weights = fast._pass_weights(x, mask)
    assert weights.encoder.defer and weights.posterior.defer and weights.decoder.defer
    assert weights.x_in_e == (not attention and not masked)
    elbo = TraceMeanField_ELBO(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)
    loss, grads = _elbo_and_grads(m, x, elbo, mask)
    got, got_grads = _elbo_and_grads(fast, x, elbo, mask)
    torch.testing.assert_close(got, loss, rtol=1e-12, atol=0)
    for g, e in zip(got_grads, grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # no gradients: nothing deferred
        assert fast._pass_weights(x) is None if attention else not fast._pass_weights(x).encoder.defer


@pytest.mark.filterwarnings("ignore:decoder.weight_ih was not registered in the param store")
def test_deferred_weight_gradients_in_every_way_autograd_is_used():
    """Twice through one graph (retain_graph), the gradient of some parameters only
    (autograd.grad), frozen parameters, a hook on a weight: each as the plain model's. A second
    derivative through the deferred product is an error, not a wrong number."""
    m, fast = _deferred_pair(attention=True)
    x = binary_images(4, (1, 6, 6)).double()
    elbo = TraceMeanField_ELBO()

    def twice(model):
        pyro.set_rng_seed(3)
        model.zero_grad()
        loss = elbo.differentiable_loss(model.model, model.guide, x)
        loss.backward(retain_graph=True)
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    for g, e in zip(twice(fast), twice(m), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)

    def some(model):
        pyro.set_rng_seed(3)
        loss = elbo.differentiable_loss(model.model, model.guide, x)
        return torch.autograd.grad(loss, [model.encoder.weight_hh, model.decoder.bias_ih])

    for g, e in zip(some(fast), some(m), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)

    seen = {}
    for key, model in (("fast", fast), ("plain", m)):
        model.decoder.weight_ih.requires_grad_(False)
        handle = model.encoder.weight_ih.register_hook(lambda g, key=key: seen.setdefault(key, []).append(g.clone()))
        pyro.set_rng_seed(3)
        model.zero_grad()
        elbo.differentiable_loss(model.model, model.guide, x).backward()
        handle.remove()
        assert model.decoder.weight_ih.grad is None
        model.decoder.weight_ih.requires_grad_(True)
    assert len(seen["fast"]) == len(seen["plain"]) == 1  # the hook sees the summed gradient, once
    torch.testing.assert_close(seen["fast"][0], seen["plain"][0], rtol=1e-12, atol=1e-12)

    pyro.set_rng_seed(3)
    loss = elbo.differentiable_loss(fast.model, fast.guide, x)
    (grad,) = torch.autograd.grad(loss, [fast.encoder.weight_hh], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


def test_a_pass_with_deferred_weight_gradients_is_freed_without_the_garbage_collector():
    """No reference cycle through the deferred gradients' backward node: once the loss is gone,
    the pass (its kept inputs, the graph) is freed by reference counting alone."""
    _, fast = _deferred_pair(attention=False)
    x = binary_images(4, (1, 6, 6)).double()
    passes = []
    pass_weights = fast._pass_weights
    fast._pass_weights = lambda *args: passes.append(pass_weights(*args)) or passes[-1]
    gc.disable()
    try:
        loss = TraceMeanField_ELBO().differentiable_loss(fast.model, fast.guide, x)
        loss.backward()
        (weights,) = passes
        refs = [weakref.ref(obj) for linear in weights[:3] for obj in (linear.gradient, linear.e)]
        assert len(weights.encoder.gradient.inputs) == fast.config.T
        del loss, weights
        passes.clear()
        assert [ref() for ref in refs] == [None] * 6
    finally:
        gc.enable()


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 12, 20)])
def test_generate_returns_the_canvas_through_time(shape):
    m = tiny(image_shape=shape)
    canvases = m.generate(7)
    assert canvases.shape == (m.config.T + 1, 7, *shape)
    assert canvases.min() >= 0 and canvases.max() <= 1
    assert torch.all(canvases[0] == 0.5)  # the blank initial canvas
    canvases, writes = m.generate(7, return_attention=True)
    assert set(writes._fields) == {"g_x", "g_y", "delta", "sigma2", "gamma"}
    for f in writes:
        assert f.shape == (m.config.T, 7) and torch.isfinite(f).all()
    # pixel units: the initial grid is centred on the image
    _, H, W = shape
    assert writes.g_x.mean().item() == pytest.approx((W + 1) / 2, abs=W / 4)
    assert writes.g_y.mean().item() == pytest.approx((H + 1) / 2, abs=H / 4)


def test_generate_leaves_no_sites_in_an_outer_trace():
    m = tiny()
    tr = poutine.trace(lambda: m.generate(2)).get_trace()
    assert not [n for n, s in tr.nodes.items() if s["type"] in ("sample", "param")]


def test_reconstruct_returns_read_and_write_attention_per_step():
    m = tiny()
    x = binary_images(3)
    rec = m.reconstruct(x)
    assert rec.canvases.shape == (m.config.T + 1, 3, 1, 28, 28)
    for glimpses in (rec.reads, rec.writes):
        assert all(f.shape == (m.config.T, 3) for f in glimpses)
    # the first read happens before any decoding: from h_dec_0 = 0, i.e. at the bias
    assert torch.allclose(rec.reads.g_x[0], torch.full((3,), 14.5))
    assert tiny(attention=False).reconstruct(x).reads is None


def test_generate_with_attention_on_a_model_without_it_is_an_error():
    with pytest.raises(drawzoo.ConfigError, match="attention"):
        tiny(attention=False).generate(2, return_attention=True)


def test_predictive_with_the_guide():
    m = tiny()
    x = binary_images(4)
    samples = Predictive(m.model, guide=m.guide, num_samples=3, return_sites=["z_0", "z_3", "_RETURN"])(x)
    assert samples["z_0"].shape == (3, 4, m.config.latent_dim)
    assert samples["_RETURN"].shape == (3, 4, 1, 28, 28)
    prior = Predictive(m.model, num_samples=2, return_sites=["x"])(None, batch_size=5)
    assert prior["x"].shape == (2, 5, 1, 28, 28) and set(prior["x"].unique().tolist()) <= {0.0, 1.0}


def test_condition_on_latent_sites():
    m = tiny()
    zs = {f"z_{t}": torch.zeros(2, m.config.latent_dim) for t in range(m.config.T)}
    tr = poutine.trace(poutine.condition(m.model, data=zs)).get_trace(None, batch_size=2)
    for name, value in zs.items():
        assert tr.nodes[name]["is_observed"] and torch.equal(tr.nodes[name]["value"], value)
    # fixing every z makes the canvas deterministic
    again = poutine.trace(poutine.condition(m.model, data=zs)).get_trace(None, batch_size=2)
    torch.testing.assert_close(tr.nodes["_RETURN"]["value"], again.nodes["_RETURN"]["value"])


def test_iwae_bound_and_tracegraph_elbo_run_and_are_ordered():
    m = tiny()
    x = binary_images(4)
    pyro.set_rng_seed(1)
    elbo = sum(Trace_ELBO(num_particles=50).loss(m.model, m.guide, x) for _ in range(4)) / 4
    iwae = sum(RenyiELBO(alpha=0, num_particles=50).loss(m.model, m.guide, x) for _ in range(4)) / 4
    assert iwae < elbo  # the IWAE bound is tighter (a loss, so lower)
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-3}), TraceGraph_ELBO())
    assert torch.isfinite(torch.tensor(svi.step(x)))
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-3}), RenyiELBO(alpha=0, num_particles=3))
    assert torch.isfinite(torch.tensor(svi.step(x)))


def test_two_models_do_not_share_pyro_parameters():
    x = binary_images(4)
    a = tiny()
    SVI(a.model, a.guide, pyro.optim.Adam({"lr": 1e-2}), TraceMeanField_ELBO()).step(x)
    b = tiny()  # same name, same shapes: Pyro's global param store must not mix them up
    assert a.pyro_name != b.pyro_name
    svi = SVI(b.model, b.guide, pyro.optim.Adam({"lr": 1e-2}), TraceMeanField_ELBO())
    before = {k: v.clone() for k, v in b.state_dict().items()}
    svi.step(x)
    assert all(not torch.equal(before[k], v) for k, v in b.state_dict().items())


def test_direct_construction_matches_load():
    m = DRAW(DrawConfig(T=2, hidden_dim=8, latent_dim=2))
    assert m.config.T == 2 and DRAW(T=3).config.T == 3


def _loss_and_grads(m, x, reuse, elbo):
    m.reuse_guide_decoder = reuse
    m.zero_grad()
    pyro.set_rng_seed(11)
    loss = elbo.loss_and_grads(m.model, m.guide, x)
    return torch.tensor(loss), {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("elbo", [TraceMeanField_ELBO(), Trace_ELBO(), RenyiELBO(alpha=0, num_particles=3)])
def test_reusing_the_guides_decoder_gives_the_same_loss_and_gradients(attention, elbo):
    m = tiny(attention=attention, T=5)
    x = binary_images(6)
    plain_loss, plain_grads = _loss_and_grads(m, x, False, elbo)
    fast_loss, fast_grads = _loss_and_grads(m, x, True, elbo)
    torch.testing.assert_close(fast_loss, plain_loss, rtol=1e-5, atol=1e-5)
    for name, g in plain_grads.items():
        torch.testing.assert_close(fast_grads[name], g, rtol=1e-5, atol=1e-5, msg=name)


def test_the_model_runs_the_decoder_once_per_step_when_replaying_the_guide(monkeypatch):
    m = tiny(T=5)
    calls = []
    original = m.decoder.forward
    monkeypatch.setattr(m.decoder, "forward", lambda *a: calls.append(1) or original(*a))
    TraceMeanField_ELBO().loss(m.model, m.guide, binary_images(2))
    assert len(calls) == 5


def test_a_stale_or_conditioned_guide_pass_is_not_reused():
    m = tiny(T=4)
    x = binary_images(3)
    guide_tr = poutine.trace(m.guide).get_trace(x)
    with torch.no_grad():  # a parameter changes between guide and model: recompute
        m.decoder.bias_ih.add_(1.0)
    m.reuse_guide_decoder = False
    expected = poutine.replay(m.model, trace=guide_tr)(x)
    m.reuse_guide_decoder = True
    poutine.trace(m.guide).get_trace(x)  # a fresh pass whose z's differ from guide_tr's
    with torch.no_grad():
        m.decoder.bias_ih.add_(0.0)
    torch.testing.assert_close(poutine.replay(m.model, trace=guide_tr)(x), expected)
    # conditioning z_0 or a later z_t on a new value: from there on the model decodes by itself
    for site in ("z_0", "z_2"):
        m.reuse_guide_decoder = True
        guide_tr = poutine.trace(m.guide).get_trace(x)
        z = {site: torch.zeros(3, m.config.latent_dim)}
        fast = poutine.replay(poutine.condition(m.model, data=z), trace=guide_tr)(x)
        m.reuse_guide_decoder = False
        plain = poutine.replay(poutine.condition(m.model, data=z), trace=guide_tr)(x)
        torch.testing.assert_close(fast, plain)
