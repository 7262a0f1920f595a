"""The fast path of a whole training step (`drawzoo.training.step_capture`): a replayed step gives the plain
Pyro step's loss and gradients in every case a user can reach, and where it cannot be exact the
plain path runs, after one warning that says why.

Each test runs the plain step and the fast one from the same random seed on the same weights and
compares loss and every gradient. Recordings replay eagerly here (the models are not compiled:
the same operations as the plain path, so the same numbers); one test compiles a recording with
inductor, as ``drawzoo.train(compile=True)`` does."""

import copy
import functools
import logging

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import ReweightedWakeSleep, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled

import drawzoo
from drawzoo.training.loss import ELBOLoss, StepLoss
from drawzoo.models import VAE
from drawzoo.evaluation.objectives import AnalyticKL_ELBO, make_elbo
from drawzoo.training.step_capture import StepCapture
from tests.conftest import binary_images
from tests.zoo_models import tiny_models

TRACEABLE = [case for case in tiny_models() if case.split("-")[0] in ("vae", "hvae", "conv_vae")]
OBJECTIVES = [("elbo", 1), ("elbo-mc", 1), ("iwae", 1), ("iwae", 3), ("tail-adaptive", 3)]


def _images(case, n, seed=0):
    x = binary_images(n, seed=seed)
    return torch.round(x * 255 * 0.7) / 255 if case.endswith("logistic") else x


def _grads(m):
    return [None if p.grad is None else p.grad.clone() for p in m.parameters()]


def _step(m, seed, fn):
    """``fn()``'s loss and the gradients it leaves, from empty ``.grad`` and random seed `seed`."""
    m.zero_grad(set_to_none=True)
    pyro.set_rng_seed(seed)
    return fn(), _grads(m)


def _assert_same(got, expected, rtol=1e-6, atol=1e-6):
    (loss, grads), (expected_loss, expected_grads) = got, expected
    assert loss == pytest.approx(expected_loss, rel=rtol, abs=atol)
    for g, e in zip(grads, expected_grads, strict=True):
        assert (g is None) == (e is None)
        if e is not None:
            torch.testing.assert_close(g, e, rtol=rtol, atol=atol)
            assert g.stride() == e.stride()


def _compare(m, elbo, batches, kwargs=None, replays=None):
    """Plain step and replayed step on each batch of `batches` (same seed each); returns the
    StepCapture. `replays`: how many steps must have been replayed (default: all)."""
    loss = ELBOLoss(m, elbo)
    capture = StepCapture(m, elbo, loss.step)
    for i, x in enumerate(batches):
        expected = _step(m, i, lambda: loss.loss_and_grads(x, **(kwargs or {})))
        got = _step(m, i, lambda: capture(x, kwargs))
        _assert_same(got, expected)
    assert capture.replays == (len(batches) if replays is None else replays)
    return capture


@pytest.mark.parametrize("case", TRACEABLE)
def test_every_traceable_zoo_model_replays_the_plain_step(case):
    objective, particles = ("elbo", 1) if TRACEABLE.index(case) % 2 == 0 else ("iwae", 3)
    m = tiny_models()[case]()
    capture = _compare(m, make_elbo(objective, particles), [_images(case, 4, seed) for seed in range(2)])
    assert len(capture.graphs) == 1 and not capture.warned


@pytest.mark.parametrize("objective,particles", OBJECTIVES)
def test_every_named_objective_replays_the_plain_step(objective, particles):
    m = tiny_models()["hvae"]()
    _compare(m, make_elbo(objective, particles), [binary_images(4, seed=s) for s in range(2)])


@pytest.mark.parametrize("elbo", [Trace_ELBO(num_particles=2), TraceMeanField_ELBO(),
                                  TraceMeanField_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1)],
                         ids=["Trace_ELBO-2-sequential", "TraceMeanField_ELBO", "TraceMeanField_ELBO-2-vectorised"])
def test_a_users_own_pyro_elbo_replays_the_plain_step(elbo):
    _compare(tiny_models()["vae"](), elbo, [binary_images(4, seed=s) for s in range(2)])


def test_changed_objective_settings_record_again():
    m = tiny_models()["hvae"]()
    elbo = make_elbo("iwae", 2)
    capture = _compare(m, elbo, [binary_images(4)])
    elbo.num_particles = 3  # e.g. in an on_epoch callback
    _compare(m, elbo, [binary_images(4)])
    assert len(capture.graphs) == 2  # the recordings are the model's, kept for both objectives' settings


def test_changing_batch_sizes_record_one_step_each():
    m = tiny_models()["vae"]()
    capture = _compare(m, make_elbo(), [binary_images(n, seed=n) for n in (8, 5, 8, 3, 5)])
    assert len(capture.graphs) == 3


@pytest.mark.parametrize("case", ["hvae", "conv_vae-logistic"])
def test_masks_are_inputs_of_the_recording(case):
    """Two masks of the same shape share a recording, and each replay reads its own."""
    m = tiny_models()[case]()
    x = _images(case, 4)
    capture = None
    for seed in range(2):
        mask = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) < 0.5
        capture = _compare(m, make_elbo(), [x, x], kwargs={"mask": mask})
    assert len(capture.graphs) == 1
    _compare(m, make_elbo(), [x], kwargs={"mask": torch.ones(28, 28, dtype=torch.bool)})  # broadcast
    assert len(capture.graphs) == 2


def test_num_data_is_part_of_the_recordings_key():
    m = tiny_models()["hvae"]()
    x = binary_images(4)
    for num_data in (4, 100, 100, 7):
        capture = _compare(m, make_elbo("iwae", 2), [x], kwargs={"num_data": num_data})
    assert len(capture.graphs) == 3


def test_gradients_add_to_what_the_parameters_hold():
    m = tiny_models()["vae"]()
    loss = ELBOLoss(m, make_elbo())
    capture = StepCapture(m, loss.elbo, loss.step)
    x = binary_images(4)
    results = []
    for fn in (lambda: loss.loss_and_grads(x), lambda: capture(x)):
        m.zero_grad(set_to_none=True)
        for seed in (1, 2):  # two steps without zeroing: the gradients add up
            pyro.set_rng_seed(seed)
            fn()
        results.append(_grads(m))
    for g, e in zip(*results):
        torch.testing.assert_close(g, e)


def test_a_frozen_parameter_gets_no_gradient_in_either():
    m = tiny_models()["hvae"]()
    capture = _compare(m, make_elbo(), [binary_images(4)])
    m.decoder[0].weight.requires_grad_(False)
    _compare(m, make_elbo(), [binary_images(4)])
    assert m.decoder[0].weight.grad is None and len(capture.graphs) == 2


def test_recording_leaves_pyro_torch_and_the_param_store_as_they_were():
    m = tiny_models()["vae"]()
    validation = is_validation_enabled(), torch.distributions.Distribution._validate_args
    _compare(m, make_elbo(), [binary_images(4)])
    assert (is_validation_enabled(), torch.distributions.Distribution._validate_args) == validation
    assert torch.ones(()).item() == 1.0 and pyro.util.torch_isnan(torch.tensor(float("nan")))
    store = pyro.get_param_store()
    for name, p in m.named_parameters():  # the store holds the model's own tensors, not stand-ins
        assert store[f"{m.pyro_name}$$${name}"] is p


# -- where the fast path runs the plain step, with one warning -------------------------------------

def _fallback(m, elbo, reason, caplog, x=None, before=None, steps=3):
    """StepLoss on the fast path gives the plain StepLoss's numbers step by step, and logs one
    warning containing `reason`. `before(m)` changes the model (both copies see it)."""
    x = binary_images(4) if x is None else x
    plain, fast = StepLoss(ELBOLoss(m, elbo), "first"), StepLoss(ELBOLoss(m, elbo), "first", fast=True)
    with caplog.at_level(logging.WARNING, logger="drawzoo"):
        for i in range(steps):
            _assert_same(_step(m, i, lambda: fast(x)), _step(m, i, lambda: plain(x)))
    warnings = [r.getMessage() for r in caplog.records if "plain training step" in r.getMessage()]
    assert len(warnings) == 1 and reason in warnings[0], warnings
    assert fast.capture.replays == 0
    return warnings[0]


@pytest.mark.parametrize("handler", [lambda: poutine.scale(scale=0.5), lambda: poutine.block(hide=["z"]),
                                     lambda: poutine.mask(mask=torch.tensor([True, False, True, True]))],
                         ids=["scale", "block", "mask"])
def test_pyro_handlers_around_the_model_run_the_plain_step(handler, caplog):
    m = tiny_models()["vae"]()
    with handler():
        _fallback(m, make_elbo(), "Pyro handlers are active around the model", caplog)


def test_a_guide_wrapped_on_the_instance_runs_the_plain_step(caplog):
    m = tiny_models()["vae"]()
    m.guide = poutine.scale(m.guide, scale=2.0)
    _fallback(m, make_elbo(), "model.guide was replaced on the instance", caplog)


def test_a_model_replaced_on_the_instance_runs_the_plain_step(caplog):
    m = tiny_models()["hvae"]()
    m.model = functools.partial(type(m).model, m, num_data=40)
    _fallback(m, make_elbo(), "model.model was replaced on the instance", caplog)


def test_a_step_function_replaced_on_the_instance_runs_the_plain_step(caplog):
    m = tiny_models()["vae"]()
    m.decode = lambda z: VAE.decode(m, 0.5 * z)
    _fallback(m, make_elbo(), "model.decode was replaced on the instance", caplog)


class _ValueBranchVAE(VAE):
    """Declares itself traceable, but its guide branches on a tensor's value."""

    traceable = True

    def guide(self, x, *, num_data=None, mask=None):
        if x.mean() > 0.5:
            x = 1 - x
        return super().guide(x, num_data=num_data, mask=mask)


class _PlainSubclass(VAE):
    """A subclass of a traceable model that does not declare itself traceable."""


def test_a_subclass_that_does_not_declare_itself_traceable_runs_the_plain_step(caplog):
    m = _PlainSubclass(hidden_dim=8, latent_dim=2)
    _fallback(m, make_elbo(), "_PlainSubclass subclasses VAE but does not declare itself traceable", caplog)


def test_a_branch_on_a_tensors_value_cannot_be_recorded_and_runs_the_plain_step(caplog):
    m = _ValueBranchVAE(hidden_dim=8, latent_dim=2)
    for x in (binary_images(4), 1 - binary_images(4)):  # both branches: the plain numbers each time
        caplog.clear()
        _fallback(m, make_elbo(), "recording the step failed", caplog, x=x)


def test_a_model_without_the_declaration_runs_the_plain_step_silently(caplog):
    m = drawzoo.load("draw", T=2, hidden_dim=8, latent_dim=2, read_size=2, write_size=2)
    plain, fast = StepLoss(ELBOLoss(m, make_elbo()), "first"), StepLoss(ELBOLoss(m, make_elbo()), "first", fast=True)
    x = binary_images(4)
    with caplog.at_level(logging.WARNING, logger="drawzoo"):
        for i in range(2):
            _assert_same(_step(m, i, lambda: fast(x)), _step(m, i, lambda: plain(x)))
    assert not caplog.records and fast.capture.replays == 0


class _AnnealedELBO(AnalyticKL_ELBO):
    """A user's objective with state that changes between steps."""

    beta = 1.0

    def differentiable_loss(self, model, guide, *args, **kwargs):
        self.beta *= 0.5
        return self.beta * super().differentiable_loss(model, guide, *args, **kwargs)


@pytest.mark.parametrize("elbo", [_AnnealedELBO(), ReweightedWakeSleep(num_particles=2, vectorize_particles=True,
                                                                       max_plate_nesting=1)],
                         ids=["own-subclass", "ReweightedWakeSleep"])
def test_an_objective_whose_step_is_not_recorded_runs_the_plain_step(elbo, caplog):
    m = tiny_models()["vae"]()
    if isinstance(elbo, _AnnealedELBO):  # each StepLoss anneals its own copy, in step
        fast_elbo = _AnnealedELBO()
        plain, fast = StepLoss(ELBOLoss(m, elbo), "first"), StepLoss(ELBOLoss(m, fast_elbo), "first", fast=True)
        x = binary_images(4)
        with caplog.at_level(logging.WARNING, logger="drawzoo"):
            for i in range(3):
                _assert_same(_step(m, i, lambda: fast(x)), _step(m, i, lambda: plain(x)))
        assert [r.getMessage() for r in caplog.records if "_AnnealedELBO is not one" in r.getMessage()]
        return
    _fallback(m, elbo, "the objective ReweightedWakeSleep is not one whose step is recorded", caplog)


@pytest.mark.parametrize("hook", ["forward", "gradient"])
def test_hooks_run_the_plain_step(hook, caplog):
    m = tiny_models()["vae"]()
    if hook == "forward":
        m.decoder[0].register_forward_hook(lambda module, inputs, out: 2 * out)
    else:
        m.decoder[0].weight.register_hook(lambda g: 3 * g)
    _fallback(m, make_elbo(), "hooks or parametrizations", caplog)


def test_validate_every_runs_the_plain_step(caplog):
    m = tiny_models()["vae"]()
    x = binary_images(4)
    plain, fast = StepLoss(ELBOLoss(m, make_elbo()), "every"), StepLoss(ELBOLoss(m, make_elbo()), "every", fast=True)
    with caplog.at_level(logging.WARNING, logger="drawzoo"):
        for i in range(3):
            _assert_same(_step(m, i, lambda: fast(x)), _step(m, i, lambda: plain(x)))
    assert len([r for r in caplog.records if "validate='every'" in r.getMessage()]) == 1


def test_a_tensor_read_from_outside_the_model_is_not_kept_in_a_recording(caplog):
    class Shifted(VAE):
        traceable = True

        def decode(self, z):
            return super().decode(z) + self.shift

    m = Shifted(hidden_dim=8, latent_dim=2)
    m.shift = torch.zeros(1)  # a plain attribute: neither parameter nor buffer
    # a real tensor among fake ones: recording fails (were it kept, the graph would hold it as it is now)
    _fallback(m, make_elbo(), "recording the step failed", caplog)


# -- on the fast path of drawzoo.train ----------------------------------------------------------------

def test_the_first_step_of_each_shape_is_plain_and_validated_the_later_ones_replayed():
    m = tiny_models()["vae"]()
    step = StepLoss(ELBOLoss(m, make_elbo()), "first", fast=True)
    for n in (4, 4, 4, 3, 3):
        step(binary_images(n))
    assert step.capture.replays == 3 and step.validated == {(4, 1, 28, 28), (3, 1, 28, 28)}


def test_train_on_the_fast_path_follows_the_plain_run():
    """Two epochs with a partial last batch: the same losses, and weights up to float rounding
    (fused Adam on the fast path)."""
    x = binary_images(10)
    settings = dict(epochs=2, batch_size=4, lr=1e-3, progress=False)
    torch.manual_seed(0)
    plain = tiny_models()["hvae"]()
    fast = tiny_models()["hvae"]()
    fast.load_state_dict(plain.state_dict())
    fast.compile_steps(backend="eager")  # dynamo without inductor: seconds, not minutes, for a test
    expected = drawzoo.train(plain, x, **settings)
    got = drawzoo.train(fast, x, compile=True, **settings)
    for a, b in zip(got, expected):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    for a, b in zip(fast.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_recording_compiled_by_inductor_draws_the_plain_steps_random_numbers():
    """The fast path compiles a recording with the model's compile options (inductor by default),
    with inductor's random numbers from the eager kernels: the plain step's loss and gradients
    up to float rounding. (The plain step runs on an eager copy: one graph to compile, not three.)"""
    eager = drawzoo.load("hvae", latent_dims=(3,), hidden_dims=(8,))
    fast = copy.deepcopy(eager).compile_steps()
    elbo = make_elbo("iwae", 2)
    plain, capture = ELBOLoss(eager, elbo), StepCapture(fast, elbo, ELBOLoss(fast, elbo).step)
    for i, x in enumerate([binary_images(4, seed=s) for s in range(2)]):
        _assert_same(_step(fast, i, lambda: capture(x)), _step(eager, i, lambda: plain.loss_and_grads(x)),
                     rtol=1e-4, atol=1e-5)
    (graph,) = capture.graphs.values()
    assert capture.replays == 2 and graph.compiled is not None and graph.failed is None


@pytest.mark.parametrize("saved_fused,fused", [(None, True), (True, None)])
def test_a_resumed_run_steps_with_its_own_adam_implementation(saved_fused, fused):
    """A checkpoint written by a plain run resumes on the fast path with fused Adam, and back:
    the optimizer's state is the checkpoint's, its implementation the resuming run's."""
    from drawzoo.training.state import _implementation_of

    p = torch.nn.Parameter(torch.randn(3))
    writer = torch.optim.Adam([p], lr=1e-3, fused=saved_fused)
    p.grad = torch.randn(3)
    writer.step()
    reader = torch.optim.Adam([p], lr=1e-3, fused=fused)
    reader.load_state_dict(_implementation_of(reader, writer.state_dict()))
    assert reader.param_groups[0]["fused"] == fused and reader.state[p]["step"] == 1
    reader.step()


def test_a_model_with_recordings_is_freed_with_them():
    import gc
    import weakref

    m = tiny_models()["vae"]()
    _compare(m, make_elbo(), [binary_images(4)])
    alive = weakref.ref(m)
    del m
    gc.collect()
    assert alive() is None
