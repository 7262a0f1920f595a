"""The fast path (`ZooModel.compile_steps`): step functions run through ``torch.compile``
(`StepFunction`), linear maps whose weight gradient a pass sums once (`StepLinear`), and the flag
`capturing` that is on while `drawzoo.training.step_capture` records a whole training step of a model."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

log = logging.getLogger(__name__)


def has_hooks(module: nn.Module) -> bool:
    """Whether `module` or a submodule has hooks or parametrizations, or global module hooks exist."""
    from torch.nn.modules import module as nn_module
    from torch.nn.utils import parametrize

    if any(getattr(nn_module, name, None) for name in (
            "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
            "_global_backward_pre_hooks", "_global_forward_hooks_always_called")):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               or parametrize.is_parametrized(m) for m in module.modules())


def _compile_failure(error: BaseException) -> bool:
    """Whether `error` is torch.compile failing (no compiler, unsupported code), not the computation."""
    from torch._dynamo.exc import TorchDynamoException

    try:
        from torch._inductor.exc import InductorError
    except ImportError:  # pragma: no cover - older torch
        InductorError = TorchDynamoException
    return isinstance(error, (TorchDynamoException, InductorError))


_capture = threading.local()


def capturing() -> bool:
    """Whether this thread is recording a training step (`drawzoo.training.step_capture`): the model's
    tensors are then fake (shapes, no values), and what it does to Python or Pyro state (e.g.
    `ZooModel.register`'s param-store bookkeeping) is not replayed by the recorded step."""
    return getattr(_capture, "on", False)


@contextlib.contextmanager
def capture_mode():
    """`capturing` is True inside (this thread only)."""
    before = capturing()
    _capture.on = True
    try:
        yield
    finally:
        _capture.on = before


#: Graphs dynamo may compile of one step function in a process (its default is 8): enough for
#: dozens of models, each with its training, evaluation and last-partial-batch graphs.
RECOMPILE_LIMIT = 256


class StepFunction:
    """A pure tensor function of a model's step (e.g. DRAW's encoder or decoder step), run eagerly
    or through ``torch.compile`` (`ZooModel.compile_steps`).

    Compiled, each call with inputs of a shape, dtype, device and grad mode seen before reuses one
    graph (forward and backward fused by inductor); no Pyro machinery is inside. Where compilation
    fails (no C++ compiler, an unsupported platform), the function runs eagerly from then on and
    one warning says why. It runs as plain code inside ``torch.jit.trace`` or an enclosing
    ``torch.compile``, and while the model has hooks or parametrizations (`has_hooks`): a graph
    compiled before one was added would not run it; and while a whole step is recorded
    (`capturing`), whose graph then holds the function's operations.
    """

    def __init__(self, fn: Callable, options: dict | None, model: nn.Module):
        self.fn, self.model = fn, model
        self.compiled = None
        if options is not None:
            # dynamo compiles a graph of a function per model object, grad mode, input shapes and
            # which inputs are None (a step function of a class is one function for all its models);
            # past its limit (8 by default) it runs the function eagerly without a word
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
            self.compiled = torch.compile(fn, **options)
        self.failed: str | None = None  #: why compiling failed, if it did

    def __call__(self, *args):
        if (self.compiled is None or self.failed is not None or torch.jit.is_tracing()
                or torch.compiler.is_compiling() or capturing() or has_hooks(self.model)):
            return self.fn(*args)
        try:
            return self.compiled(*args)
        except Exception as e:  # noqa: BLE001 - sorted out below
            if not _compile_failure(e):
                raise
            out = self.fn(*args)  # if this raises, the inputs were wrong: that error is the caller's
            self.failed = _root_cause(e)
            log.warning("torch.compile failed for %s (%s); running it eagerly", _qualname(self.fn), self.failed)
            return out


def _root_cause(error: BaseException) -> str:
    """``"Type: first line"`` of the innermost exception that `error` wraps."""
    while error.__cause__ is not None or getattr(error, "inner_exception", None) is not None:
        error = error.__cause__ or error.inner_exception
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _qualname(fn) -> str:
    return getattr(fn, "__qualname__", repr(fn))


class StepLinear:
    """A linear map ``y_t = a_t W^T + e`` that one pass applies at each of its steps t, with the
    same W: the concatenation of parameter `blocks` along the inputs, ``[out, in]``; `e` its bias
    ``[out]``, or whatever else the pass adds at every step (e.g. ``[B, out]``).

    A step takes ``(W, e_t) = step(batch_shape)`` and computes ``F.linear(a_t, W) + e_t`` itself
    (inside a compiled step function), then hands its input ``a_t`` ``[*batch_shape, in]`` to `keep`.

    Plain (``defer=False``): W is the concatenation, tracked by autograd, and ``e_t = e``; the
    backward pass takes W's gradient as T products ``g_t^T a_t``, each a new ``[out, in]`` tensor,
    and adds them up one by one. Deferred (``defer=True``, for a pass that is differentiated
    once): the steps see W detached and e_t, a view of e. As each step's gradient g_t reaches its
    e_t, ``g_t^T a_t`` is added into one buffer in place (a product that accumulates: no new
    tensor, no separate addition), and a node ahead of every e_t hands the sum to the parameter
    blocks once all have arrived: the same sum (float rounding apart). Differentiating the pass
    twice (``create_graph=True``) is then an error.
    """

    def __init__(self, blocks: list[Tensor], e: Tensor, defer: bool):
        self.defer = defer
        if not defer:
            self.W, self.e = (blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)), e
            return
        self.W = torch.cat([b.detach() for b in blocks], dim=1)
        self.gradient = _GradientSum(self.W)
        self.e = _GatherGradients.apply(self.gradient, e, *blocks)

    def step(self, batch_shape) -> tuple[Tensor, Tensor]:
        """``(W, e_t)`` for the next step, whose rows have batch shape `batch_shape`."""
        if not self.defer:
            return self.W, self.e
        e = self.e.expand(*batch_shape, self.W.shape[0])
        if e.requires_grad:
            e.register_hook(functools.partial(self.gradient.add, len(self.gradient.inputs)))
        return self.W, e

    def keep(self, a: Tensor) -> None:
        """The input ``a_t`` ``[*batch_shape, in]`` of the step that took the last `step`."""
        if self.defer:
            self.gradient.inputs.append(a.detach())


class _GradientSum:
    """W's gradient ``sum_t g_t^T a_t`` as a deferred `StepLinear`'s steps' g_t arrive. Kept apart
    from the StepLinear, which holds e (an output of `_GatherGradients`): the backward node
    refers to this, and nothing here to e or the graph, so a pass is freed without a cycle."""

    def __init__(self, W: Tensor):
        self.W = W
        self.inputs: list[Tensor] = []  #: a_t of each step, detached
        self.total: Tensor | None = None  #: the sum so far, during a backward pass

    def add(self, t: int, g: Tensor) -> None:
        """Add ``g_t^T a_t`` (all rows of step t) in place: a product that accumulates."""
        g, a = g.reshape(-1, g.shape[-1]).t(), self.inputs[t].reshape(-1, self.W.shape[1])
        if self.total is None:
            self.total = g @ a
        else:
            self.total.addmm_(g, a)


class _GatherGradients(torch.autograd.Function):
    """Forward: `e` as it is. Backward (after every step's e_t, which all read its output, has
    added its part to the `_GradientSum`): W's gradient, split into the parameter blocks."""

    @staticmethod
    def forward(ctx, gradient: _GradientSum, e: Tensor, *blocks: Tensor) -> Tensor:
        ctx.gradient, ctx.widths = gradient, [b.shape[1] for b in blocks]
        return e.view_as(e)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_e: Tensor):
        gradient = ctx.gradient
        grad_W = torch.zeros_like(gradient.W) if gradient.total is None else gradient.total
        gradient.total = None  # a second backward pass (retain_graph=True) adds up its own
        return (None, grad_e, *grad_W.split(ctx.widths, dim=1))
