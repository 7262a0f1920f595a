"""The fast path of a whole training step (``drawzoo.train(compile=True)``): a model that declares
itself `traceable <drawzoo.models.ZooModel.traceable>` has its step recorded once per batch shape
and replayed from then on, with none of Pyro's per-step bookkeeping.

What is recorded is the plain path's own step -- Pyro's ELBO running the model and the guide, and
the backward pass (`drawzoo.training.loss.ELBOLoss`) -- as the tensor operations it dispatches, on fake
tensors (shapes, no values: ``make_fx(tracing_mode="fake")``): one graph ``(parameters, buffers,
images, keyword tensors) -> (loss, gradients)``. A replay runs it outside autograd, compiled with
the model's ``compile_options`` (`ZooModel.compile_steps <drawzoo.models.ZooModel.compile_steps>`;
inductor, drawing its random numbers through the eager kernels: `replay_options`) or eagerly where
the model is not compiled or compiling fails (one warning: `drawzoo.models.fast_path.StepFunction`).
Its random draws are the plain path's, from the same generator in the same order, so a replay
gives the plain path's loss and gradients: bit for bit when replayed eagerly, up to float rounding
compiled. Model and guide stay plain Pyro code.

A branch on a tensor's value cannot be recorded on fake tensors: recording fails, and that step's
model runs the plain path (one warning). A number Pyro takes out of a tensor (``.item()``: the
ELBO's loss) stays a tensor in the recording, so the replay computes it afresh. What the recording
cannot see, it refuses, so that the plain path runs instead (one warning, saying why): Pyro
handlers around the model, a model or guide replaced on the instance, a subclass that has not
declared itself traceable, hooks, an objective outside `RECORDED_ELBOS` (a user's own ELBO may
keep state between steps), keyword arguments other than tensors and plain values, autocast,
anomaly detection. A recording is reused only while everything it depends on is unchanged: the
shapes, dtypes, devices and strides of the batch, the parameters and buffers, and the keyword
tensors; which parameters require gradients; the keyword values; the objective's settings; grad
mode; the default dtype; train/eval mode; the model's compile options.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import weakref
from unittest import mock

import pyro
import pyro.util
import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO, TraceTailAdaptive_ELBO
from pyro.poutine.runtime import _PYRO_STACK
from torch import Tensor, nn
from torch.fx.experimental.proxy_tensor import make_fx
from torch.overrides import TorchFunctionMode

from ..errors import first_line
from ..evaluation.objectives import AnalyticKL_ELBO
from ..models.fast_path import StepFunction, capture_mode, has_hooks

log = logging.getLogger(__name__)

#: The objectives whose step is recorded: their loss is a function of the traces and their own
#: settings only (a user's own ELBO class, which may keep state between steps, runs the plain path).
RECORDED_ELBOS = (AnalyticKL_ELBO, Trace_ELBO, TraceMeanField_ELBO, RenyiELBO, TraceTailAdaptive_ELBO)

#: The recordings of each model (weakly held: they go with it), shared by its `StepCapture` objects.
_RECORDINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: Keyword values other than tensors that a recording may depend on (kept in its key).
_PLAIN_VALUES = (type(None), bool, numbers.Number, str)


class StepCapture:
    """The recorded steps of `step` for `model` under the Pyro ELBO `elbo`.

    ``step(x, kwargs)`` must add the gradient of the loss on images `x` (and `model`/`guide`
    keyword arguments `kwargs`) to the parameters' ``.grad`` and return the loss, a number (a 0-dim
    tensor while recorded): `drawzoo.training.loss.ELBOLoss`'s plain step. Calling this object does the
    same from a recording (made on the first call with each key), or returns None where it cannot:
    then the caller runs the plain path, as after the one warning that says why.
    """

    def __init__(self, model: nn.Module, elbo, step):
        self.model, self.elbo, self.step = model, elbo, step
        #: key -> recording, or why it failed: the model's, for every StepCapture of it (a recording
        #: depends on the objective's class and settings, which the key holds, not on the object)
        self.graphs: dict[tuple, StepFunction | str] = _RECORDINGS.setdefault(model, {})
        self.warned: set[str] = set()  #: the reasons already given for running the plain path
        self.replays = 0  #: steps replayed so far

    def __call__(self, x: Tensor, kwargs: dict | None = None) -> float | None:
        """The loss (a float) of a replayed step on images `x` ``[B, C, H, W]``, its gradients added
        to the parameters' ``.grad``; None (nothing done) where the plain path must run. `x` must
        have passed the model's ``check_images`` (what model and guide check, a recording does not)."""
        kwargs = kwargs or {}
        reason = self.refusal(kwargs)
        if reason is not None:
            if reason:
                self.warn_once(reason)
            return None
        model = self.model
        params, buffers = list(model.parameters()), list(model.buffers())
        names = sorted(kwargs)
        tensors = [kwargs[k] for k in names if isinstance(kwargs[k], Tensor)]
        inputs = [*params, *buffers, x, *tensors]
        key = (tuple(_layout(t) + (t.requires_grad,) for t in inputs),
               tuple((k, None if isinstance(kwargs[k], Tensor) else (type(kwargs[k]), kwargs[k])) for k in names),
               len(params), torch.is_grad_enabled(), torch.get_default_dtype(), model.training,
               type(self.elbo), self._elbo_state(), repr(model.compile_options))
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = self._record(inputs, len(params), len(buffers), kwargs)
        if isinstance(graph, str):
            self.warn_once(graph)
            return None
        with torch.no_grad():
            loss, *grads = graph(*inputs)
        for p, g in zip(params, grads):
            if g is not None:
                if p.grad is None:
                    p.grad = g
                else:
                    p.grad += g
        self.replays += 1
        return loss.item()

    def refusal(self, kwargs: dict) -> str | None:
        """Why this step cannot be recorded now (a sentence; "" for a model that does not declare
        itself traceable, which says nothing), or None if it can."""
        model, cls = self.model, type(self.model)
        if not cls.__dict__.get("traceable", False):
            declared = next((base for base in cls.__mro__[1:] if base.__dict__.get("traceable", False)), None)
            return "" if declared is None else (
                f"{cls.__name__} subclasses {declared.__name__} but does not declare itself traceable "
                f"(traceable = True: model and guide do the same tensor operations on every batch of a shape)")
        replaced = sorted({"model", "guide", *cls.step_functions} & set(vars(model)))
        if replaced:
            return (f"{', '.join(f'model.{name}' for name in replaced)} was replaced on the instance: only the "
                    f"class's own are known to do the same tensor operations on every batch")
        if type(self.elbo) not in RECORDED_ELBOS:
            return (f"the objective {type(self.elbo).__name__} is not one whose step is recorded "
                    f"({', '.join(c.__name__ for c in RECORDED_ELBOS)}): it may keep state between steps")
        if _PYRO_STACK:
            handlers = ", ".join(type(h).__name__ for h in _PYRO_STACK)
            return f"Pyro handlers are active around the model ({handlers}): a recorded step would not run them"
        if has_hooks(model) or any(p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None)
                                   for p in model.parameters()):
            return "the model has hooks or parametrizations, which a recorded step would not run"
        if torch.is_anomaly_enabled():
            return "autograd's anomaly detection is on: it checks a backward pass that a recorded step does not run"
        if torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda"):
            return "autocast is on"
        for name, value in kwargs.items():
            if not isinstance(value, (Tensor, *_PLAIN_VALUES)):
                return (f"keyword argument {name!r} is a {type(value).__name__}: a recorded step takes tensors "
                        f"and plain values only")
        return None

    def _elbo_state(self) -> tuple:
        """The objective's settings (its attributes), which a recording depends on."""
        return tuple(sorted((k, repr(v)) for k, v in vars(self.elbo).items()))

    def _record(self, inputs: list[Tensor], n_params: int, n_buffers: int, kwargs: dict):
        """The step recorded on fake tensors like `inputs` (parameters, buffers, images, the tensors
        of `kwargs` by name): a graph ``inputs -> (loss, gradients of the parameters)`` to run as a
        step function, or why that failed (a sentence)."""
        model = self.model
        model.register()  # the param store up to date now: while recording, register leaves it alone
        keys = [name for name, _ in model.named_parameters()] + [name for name, _ in model.named_buffers()]

        def recorded(*fakes):
            x, tensors = fakes[n_params + n_buffers], iter(fakes[n_params + n_buffers + 1:])
            fake_kwargs = {k: next(tensors) if isinstance(v, Tensor) else v for k, v in sorted(kwargs.items())}
            with torch.nn.utils.stateless._reparametrize_module(model, dict(zip(keys, fakes))):
                loss = self.step(x, fake_kwargs)
                grads = [p.grad for p in model.parameters()]
            return (torch.as_tensor(loss), *grads)

        # leaves without the gradients the parameters hold so far: the recording computes this step's
        # alone, and a replay adds them up as the plain step does
        leaves = [t.detach().requires_grad_(t.requires_grad) for t in inputs]
        try:
            with _Recording():
                graph = make_fx(recorded, tracing_mode="fake")(*leaves)
        except Exception as e:  # noqa: BLE001 - any failure to record is a reason to run the plain path
            return f"recording the step failed ({type(e).__name__}: {first_line(e)})"
        for node in graph.graph.find_nodes(op="call_function", target=torch.ops.aten.alias.default):
            node.replace_all_uses_with(node.args[0])  # autograd's saved outputs: the same tensor, one call less
        graph.graph.eliminate_dead_code(is_impure_node=_keeps_state)
        constants = [node.target for node in graph.graph.nodes if node.op == "get_attr"]
        if constants:
            return (f"the step reads tensors other than the model's parameters, buffers and inputs "
                    f"({', '.join(constants)}), which a recording would keep as they are now")
        graph.recompile()
        # the model weakly: _RECORDINGS holds this as long as the model lives, and no longer
        return StepFunction(graph, replay_options(model.compile_options), weakref.proxy(model))

    def warn_once(self, reason: str) -> None:
        """Log that the plain path runs because of `reason`, once per reason."""
        if reason not in self.warned:
            self.warned.add(reason)
            log.warning("the fast path runs %s's plain training step: %s", type(self.model).__name__, reason)


def replay_options(options: dict | None) -> dict | None:
    """The ``torch.compile`` options of a recorded step: the model's (`ZooModel.compile_steps`; None:
    replayed eagerly), with inductor drawing random numbers through the eager kernels
    (``fallback_random``): the plain path's draws, not inductor's own generator's."""
    if options is None or options.get("backend", "inductor") != "inductor":
        return options
    import torch._inductor

    options = dict(options)
    mode = options.pop("mode", None)  # torch.compile takes a mode or options, not both
    inductor = torch._inductor.list_mode_options(mode) if mode else {}
    return {**options, "options": {**inductor, **options.get("options", {}), "fallback_random": True}}


def _layout(t: Tensor) -> tuple:
    return t.shape, t.dtype, t.device, t.stride()


def _keeps_state(node: torch.fx.Node) -> bool:
    """Whether dead-code elimination must keep `node`: it changes state (in place), or draws
    random numbers (leaving it out would shift every later draw)."""
    target = node.target
    return node.is_impure() or (isinstance(target, torch._ops.OpOverload)
                                and torch.Tag.nondeterministic_seeded in target.tags)


class _Recording(TorchFunctionMode):
    """While a step is recorded: Pyro's validation off (it checks values, which fake tensors do
    not have; the plain path validates the first step of each batch shape), `capturing` on,
    ``Tensor.item()`` the tensor itself (detached), so that the loss Pyro turns into a number is
    recomputed by each replay, and Pyro's NaN warning off (it looks at values; a training run
    checks every loss itself)."""

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(validation_off())
        self._stack.enter_context(capture_mode())
        self._stack.enter_context(mock.patch.object(pyro.util, "torch_isnan", _no_nan))
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self._stack.close()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is Tensor.item:
            return args[0].detach()
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def validation_off():
    """Pyro's validation off while inside; after, every flag as it was (torch.distributions' default
    `validate_args` too, which `pyro.validation_enabled` would set to Pyro's own flag)."""
    validate_args = torch.distributions.Distribution._validate_args
    try:
        with pyro.validation_enabled(False):
            yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate_args)


def _no_nan(value) -> bool:
    return False if isinstance(value, Tensor) else value != value

