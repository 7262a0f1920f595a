"""The fast path (`ZooModel.compile_steps`, ``drawzoo.train(compile=True)``, ``--compile``): the
numbers of the eager model up to float rounding, in every way a model is used.

Compiling takes seconds per graph, so the compiled models are built once per module and shared."""

import copy
import logging
import pickle

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO

import drawzoo
from tests.conftest import binary_images
from tests.zoo_models import TINY_CONV_DRAW

TINY = dict(T=3, hidden_dim=16, latent_dim=4, read_size=3, write_size=3)
CONFIGS = {"draw": ("draw", TINY), "draw-no-attention": ("draw", dict(TINY, attention=False)),
           "vae": ("vae", dict(hidden_dim=32, latent_dim=4)),
           "hvae": ("hvae", dict(latent_dims=(6, 3), hidden_dims=(16, 8))),
           "conv_vae": ("conv_vae", dict(channels=(4, 8), latent_dim=4)),
           "conv_vae-logistic": ("conv_vae", dict(channels=(4, 8), latent_dim=4, likelihood="logistic")),
           "conv_draw": ("conv_draw", TINY_CONV_DRAW)}


@pytest.fixture(scope="module")
def pairs():
    """For each config: an eager model and a compiled copy with the same weights."""
    out = {}
    for key, (name, config) in CONFIGS.items():
        torch.manual_seed(0)
        eager = drawzoo.load(name, **config)
        out[key] = (eager, copy.deepcopy(eager).compile_steps())
    return out


def _fixed_z(m, x, seed=1):
    """A guide trace of `m` on `x`: the z's every evaluation below is conditioned on."""
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        return poutine.trace(m.guide).get_trace(x)


def _log_weight_and_grads(m, x, fixed):
    """``sum_b log p(x, z) - log q(z | x)`` at the z's of trace `fixed` (nats), and its gradient."""
    guide = poutine.trace(poutine.replay(m.guide, trace=fixed)).get_trace(x)
    model = poutine.trace(poutine.replay(m.model, trace=guide)).get_trace(x)
    log_w = model.log_prob_sum() - guide.log_prob_sum()
    return log_w, torch.autograd.grad(log_w, list(m.parameters()))


@pytest.mark.parametrize("key", CONFIGS)
def test_fast_path_gives_the_eager_loss_and_gradients_on_fixed_z(pairs, key):
    eager, fast = pairs[key]
    x = binary_images(4)
    fixed = _fixed_z(eager, x)
    expected, expected_grads = _log_weight_and_grads(eager, x, fixed)
    for _ in range(2):  # the first call compiles; the second runs the cached graphs
        got, grads = _log_weight_and_grads(fast, x, fixed)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        for g, e in zip(grads, expected_grads):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    assert all(fn.compiled is not None and fn.failed is None for fn in fast._steps.values())
    assert set(fast._steps) <= set(type(fast).step_functions) and fast._steps


def test_fast_path_svi_loss_with_vectorised_particles_matches_eager(pairs):
    eager, fast = pairs["draw"]
    x = binary_images(4)
    elbo = TraceMeanField_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    losses = []
    for m in (eager, fast):
        pyro.set_rng_seed(3)  # the same eps: sampling is outside the compiled functions
        losses.append(elbo.differentiable_loss(m.model, m.guide, x))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-4)


def test_evaluate_on_the_fast_path_gives_the_eager_figures_and_reports_images_per_s(pairs):
    eager, fast = pairs["draw"]
    x = binary_images(2)
    expected = drawzoo.evaluate(eager, x, num_samples=2, seed=2)
    got = drawzoo.evaluate(fast, x, num_samples=2, seed=2)
    assert got["nll"] == pytest.approx(expected["nll"], rel=1e-5)
    assert got["neg_elbo"] == pytest.approx(expected["neg_elbo"], rel=1e-5)
    assert got["images_per_s"] > 0 and got["seconds"] > 0 and got["num_images"] == 2


def test_a_copy_of_a_compiled_model_is_compiled_and_its_own(pairs):
    _, fast = pairs["draw"]
    for clone in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        assert clone.compile_options == fast.compile_options
        assert clone._steps == {}  # compiled functions belong to the object that built them
        x = binary_images(4)
        fixed = _fixed_z(clone, x)
        got, _ = _log_weight_and_grads(clone, x, fixed)
        expected, _ = _log_weight_and_grads(fast, x, fixed)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert all(fn.compiled is not None for fn in clone._steps.values())


def _broken_backend(gm, example_inputs):
    raise RuntimeError("no C++ compiler here")


def test_where_compilation_fails_the_model_runs_eagerly_with_one_warning(caplog):
    """Each step function warns once, with the reason, and from then on computes eagerly."""
    torch.manual_seed(0)
    eager = drawzoo.load("draw", **TINY)
    broken = copy.deepcopy(eager).compile_steps(backend=_broken_backend)
    x = binary_images(4)
    fixed = _fixed_z(eager, x)
    expected, _ = _log_weight_and_grads(eager, x, fixed)
    with caplog.at_level(logging.WARNING, logger="drawzoo"):
        for _ in range(3):
            got, _ = _log_weight_and_grads(broken, x, fixed)
            # eager step functions, with the fast path's concatenated products: float rounding apart
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-5)
    warnings = [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
    # each step function that tried to compile warned once, naming why (one whose code dynamo had
    # already stopped compiling in this process, at its recompile limit, runs eagerly without trying)
    assert warnings and len(warnings) == len(set(warnings)) <= len(broken._steps)
    assert all("RuntimeError: no C++ compiler here" in w for w in warnings)
    assert sum(fn.failed is not None for fn in broken._steps.values()) == len(warnings)


def test_compile_steps_off_again_is_eager():
    m = drawzoo.load("draw", **TINY).compile_steps()
    assert m.compile_options is not None
    m.compile_steps(False)
    assert m.compile_options is None and m._steps == {}
    m.guide(binary_images(4))
    assert all(fn.compiled is None for fn in m._steps.values())


def test_train_resumes_across_the_fast_path_both_ways(tmp_path):
    x = binary_images(8)
    settings = dict(batch_size=4, lr=1e-3, progress=False)
    torch.manual_seed(0)
    plain = drawzoo.load("draw", **TINY)
    drawzoo.train(plain, x, epochs=1, checkpoint=tmp_path / "a.pt", **settings)
    resumed = drawzoo.load(checkpoint=tmp_path / "a.pt")
    history = drawzoo.train(resumed, x, epochs=2, checkpoint=tmp_path / "a.pt", compile=True, **settings)
    assert [r["epoch"] for r in history] == [1, 2]
    assert resumed.compile_options is not None  # the model stays on the fast path
    again = drawzoo.load(checkpoint=tmp_path / "a.pt")  # written on the fast path, resumed eagerly
    history = drawzoo.train(again, x, epochs=3, checkpoint=tmp_path / "a.pt", **settings)
    assert [r["epoch"] for r in history] == [1, 2, 3] and again.compile_options is None
    # an uninterrupted eager run reaches the same weights up to float rounding
    torch.manual_seed(0)
    straight = drawzoo.load("draw", **TINY)
    drawzoo.train(straight, x, epochs=3, **settings)
    for a, b in zip(again.state_dict().values(), straight.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _compiled_pair():
    torch.manual_seed(0)
    eager = drawzoo.load("draw", **TINY)
    fast = copy.deepcopy(eager).compile_steps()
    x = binary_images(4)
    fixed = _fixed_z(eager, x)
    _log_weight_and_grads(fast, x, fixed)  # compiled before the change below
    return eager, fast, x, fixed


def test_a_hook_added_after_compiling_is_run_as_eagerly():
    eager, fast, x, fixed = _compiled_pair()
    for m in (eager, fast):
        m.writer.register_forward_hook(lambda module, inputs, out: (2 * out[0], out[1]))
    expected, expected_grads = _log_weight_and_grads(eager, x, fixed)
    got, grads = _log_weight_and_grads(fast, x, fixed)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_a_step_method_set_on_the_model_after_use_is_the_one_that_runs():
    eager, fast, x, fixed = _compiled_pair()
    for m in (eager, fast):
        plain = type(m).decode_encode_step
        m.decode_encode_step = lambda z, *rest, m=m, plain=plain: plain(m, 0.5 * z, *rest)
    expected, _ = _log_weight_and_grads(eager, x, fixed)
    got, _ = _log_weight_and_grads(fast, x, fixed)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    unchanged, _ = _log_weight_and_grads(_compiled_pair()[0], x, fixed)
    assert not torch.allclose(got, unchanged)


def test_many_models_in_one_process_each_compile_their_step_functions():
    """Dynamo compiles a graph of a step function per configuration it meets (shapes, dtype, grad
    mode, which inputs are None); past its default limit of 8 per function it runs the function
    eagerly from then on, without a word. The fast path raises that limit: here twelve models of
    twelve sizes (static shapes: one graph each) are all compiled."""
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    x = binary_images(2)
    with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
        for i in range(12):
            m = drawzoo.load("draw", **dict(TINY, T=2, hidden_dim=8 + i)).compile_steps(backend=counting)
            before = len(graphs)
            with torch.no_grad():
                m.guide(x)
            assert len(graphs) > before, f"model {i + 1} ran its step functions eagerly"
