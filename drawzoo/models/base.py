"""What every zoo model shares: a typed config, input checks, and the Pyro building blocks.

A zoo model is a `torch.nn.Module` with

- ``Config``: a frozen dataclass of its hyper-parameters (``model.config`` is an instance);
- ``model(x=None, *, batch_size=None, num_data=None, mask=None)``: the generative story, ``x``
  observed at site ``"x"`` (sampled when ``x`` is None), every site inside the data plate (`data_plate`);
- ``guide(x, *, num_data=None, mask=None)``: the amortised posterior over the same latent sites;
- ``generate(n)``: images through time ``[steps, n, C, H, W]`` in [0, 1].

The data plate is ``pyro.plate("data", B, dim=-1)``: a model declares one plate, and Pyro may add
batch dimensions left of it (vectorised particles, ``Predictive(parallel=True)``), so a site's
value is ``[..., B, *event]`` and every network must take any leading batch shape. ``num_data=N``
scales every site by N / B, exactly as a subsampled ``pyro.plate`` does.

``mask`` (bool, broadcastable to ``x``, True where a pixel is observed; `drawzoo.data.masks`) makes the
images partially observed: the likelihood counts the observed pixels only (`pixel_likelihood`),
and the guide never looks at the values of unobserved pixels (each model says what it reads
there instead). `inpaint` fills the unobserved pixels from the model.

Subclassing `ZooModel` gives a third-party model the same checks, plate, naming and param-store
handling for free. Parts only some models use live beside this module, their names importable
from here too: `drawzoo.models.layers` (LSTM steps, the Gaussian posterior) and
`drawzoo.models.fast_path` (`StepFunction` under ``torch.compile``, `StepLinear`).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import numbers
from collections import defaultdict
from typing import ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.params import param_with_module_name
from torch import Tensor, nn

from ..config import build_config
from ..data.images import check_images
from ..data.masks import check_mask
from ..errors import ConfigError, InputError
from . import likelihoods

# Third-party models import these from here (DEVELOPERS.md: base.lstm_step, base.StepLinear, ...);
# their home is layers.py (network parts) and fast_path.py (torch.compile, deferred gradients).
from .fast_path import RECOMPILE_LIMIT, StepFunction, StepLinear, capturing, has_hooks  # noqa: F401
from .importance import importance_resample
from .layers import GaussianPosterior, cat_features, lstm_step, lstm_update  # noqa: F401

_instances: defaultdict[str, itertools.count] = defaultdict(itertools.count)
log = logging.getLogger(__name__)


def _pyro_name(zoo_name: str) -> str:
    """A per-instance name for `pyro.module`: ``draw``, then ``draw_1``, ``draw_2``, ...

    Pyro's param store is global and keyed by name; two live models sharing one name would
    silently train each other's parameters.
    """
    n = next(_instances[zoo_name])
    return zoo_name if n == 0 else f"{zoo_name}_{n}"


#: The dimension of the data plate; Pyro's own batch dimensions (particles, samples) go left of it.
DATA_DIM = -1


def pixel_likelihood(logits: Tensor, mask: Tensor | None = None) -> dist.Distribution:
    """``Bernoulli(logits)`` over every pixel of ``[..., B, C, H, W]``, one event per image; with a
    bool `mask` broadcastable to the pixels, only those where it is True count (``.mask`` before
    ``to_event``: an unobserved pixel adds 0 to the log-probability).

    Its log-probability is the negative binary cross-entropy, which is also defined for grey
    values in [0, 1] (then it is a reconstruction score, not a normalised likelihood), so
    support validation is off. It is the ``"bernoulli"`` one of `drawzoo.models.likelihoods`,
    where the other pixel likelihoods are.
    """
    return likelihoods.get("bernoulli").distribution(logits, mask)


def standard_normal(batch_size: int, dim: int, like: Tensor) -> dist.Distribution:
    """The prior ``Normal(0, I)`` over ``[batch_size, dim]``, one event per row."""
    zeros = like.new_zeros(batch_size, dim)
    return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)


@torch.no_grad()
def one_step_generate(model, n: int) -> Tensor:
    """Pixel means of `n` prior samples of a `model` that draws in one step (its ``model`` returns
    the decoder's output, the parameters of its `likelihood`: logits for a model without one),
    ``[1, n, C, H, W]`` in [0, 1]: the VAEs' `generate`."""
    with poutine.block():
        out = model.model(batch_size=n)
    return (model.likelihood or likelihoods.get("bernoulli")).mean(out)[None]


class ZooModel(nn.Module):
    """Base class of zoo models; see the module docstring for the interface.

    A model is an ordinary object: ``copy.deepcopy``, pickling and ``torch.save``/``torch.load``
    work at any moment, and every copy gets a Pyro name of its own (`_pyro_name`), so that copies
    never share entries of Pyro's global param store.
    """

    Config: ClassVar[type]
    zoo_name: ClassVar[str]
    #: Attributes that hold the tensors of a pass in progress, not the model: never copied.
    _transient: ClassVar[tuple[str, ...]] = ()
    #: Methods that are pure tensor functions of one step (no Pyro inside): what `compile_steps` compiles.
    step_functions: ClassVar[tuple[str, ...]] = ()
    #: Whether this class's ``model`` and ``guide`` (step functions included) do the same tensor
    #: operations on every batch of a shape, given the same keyword arguments: no branch on tensor
    #: values (input checks that raise aside) and no Python state that changes between steps. Then
    #: ``drawzoo.train(compile=True)`` records a whole training step once per batch shape and
    #: replays it (`drawzoo.training.step_capture`). Each class declares it itself: a subclass, which may have
    #: changed anything, is not traceable until it declares so too.
    traceable: ClassVar[bool] = False

    def __init__(self, config=None, **overrides):
        super().__init__()
        if config is None:
            config = build_config(self.Config, overrides, model_name=self.zoo_name)
        elif not isinstance(config, self.Config):
            raise ConfigError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}")
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.pyro_name = _pyro_name(self.zoo_name)
        self.compile_options: dict | None = None  #: ``torch.compile`` options of the step functions, or None: eager
        self._steps: dict[str, StepFunction] = {}

    # -- the fast path ----------------------------------------------------------------------------

    def compile_steps(self, enabled: bool = True, **options) -> ZooModel:
        """Run the model's `step_functions` through ``torch.compile(fn, **options)`` (or eagerly again
        with ``enabled=False``); returns the model. Model and guide stay plain Pyro code; only the
        pure tensor work of each step is compiled, one graph per input shape reused by every step.

        Losses and gradients are those of the eager functions up to float rounding. The first call
        with each new input shape compiles (seconds; inductor caches the code on disk for the next
        process; a second shape compiles a graph for any batch size). `options` go to
        ``torch.compile``, e.g. ``mode="reduce-overhead"`` for CUDA graphs.
        """
        self.compile_options = dict(options) if enabled else None
        self._steps = {}
        if enabled and not self.step_functions:
            log.warning("%s declares no step_functions: compile_steps changes nothing", type(self).__name__)
        if enabled and not torch._dynamo.is_dynamo_supported():
            log.warning("torch.compile is not supported on this platform; %s runs eagerly", type(self).__name__)
            self.compile_options = None
        return self

    def step_fn(self, name: str) -> StepFunction:
        """The step function `name` (a method in `step_functions`), compiled if `compile_steps` said so."""
        method = getattr(self, name)
        fn = self._steps.get(name)
        if fn is None or fn.fn != method:  # a method set on the instance since counts from then on
            fn = self._steps[name] = StepFunction(method, self.compile_options, self)
        return fn

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.config.image_shape)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def likelihood(self) -> likelihoods.PixelLikelihood | None:
        """The pixel likelihood (`drawzoo.models.likelihoods`) that the config's ``likelihood`` field
        names, or None for a model without that field."""
        name = getattr(self.config, "likelihood", None)
        return None if name is None else likelihoods.get(name)

    def check_images(self, x, name: str = "x") -> Tensor:
        """`x` checked against ``image_shape`` (and, where the model has a `likelihood`, against
        what it scores: 8-bit levels for "logistic") and moved to the model's device and dtype."""
        x = check_images(x, self.image_shape, device=self.device, dtype=self.dtype, name=name)
        return x if self.likelihood is None else self.likelihood.check_data(x, name)

    def check_mask(self, mask, batch_size: int) -> Tensor | None:
        """`mask` (None: every pixel observed) checked (`drawzoo.data.masks.check_mask`) and expanded to
        ``[batch_size, C, H, W]`` on the model's device."""
        return None if mask is None else check_mask(mask, (batch_size, *self.image_shape), device=self.device)

    def _data(self, x, batch_size: int | None) -> tuple[Tensor | None, int]:
        """``(checked x or None, B)`` for ``model(x=None, *, batch_size=None)``."""
        if x is None:
            if batch_size is None or batch_size < 1:
                raise InputError("model(x=None) samples images: give batch_size >= 1")
            return None, int(batch_size)
        x = self.check_images(x)
        if batch_size is not None and batch_size != x.shape[0]:
            raise InputError(f"batch_size={batch_size} contradicts x with {x.shape[0]} images")
        return x, x.shape[0]

    def data_plate(self, batch_size: int, num_data: int | None = None) -> pyro.plate:
        """``pyro.plate("data")`` over the `batch_size` images of a batch, at dim -1 (`DATA_DIM`).

        With ``num_data=N`` the batch stands for a data set of N images: the plate has size N and
        the batch as its subsample, so that every site inside is scaled by N / B, as in a
        subsampled ``pyro.plate("data", N, subsample_size=B)``. Without it, no scaling.
        """
        plate_dims = [f.dim for f in _enclosing_plates()]
        if DATA_DIM in plate_dims:
            raise InputError(
                f"{type(self).__name__} puts its images in pyro.plate('data', dim={DATA_DIM}), and an enclosing plate "
                f"uses that dim too; give Pyro max_plate_nesting >= 1 (e.g. Trace_ELBO(max_plate_nesting=1), "
                f"Predictive(..., max_plate_nesting=1)) or put your own plates at dim <= {DATA_DIM - 1}")
        if num_data is None:
            return pyro.plate("data", batch_size, dim=DATA_DIM)
        if not isinstance(num_data, numbers.Integral) or isinstance(num_data, bool) or num_data < batch_size:
            raise InputError(f"num_data (the size of the data set the batch is drawn from) must be an integer "
                             f">= the batch size {batch_size}, got {num_data!r}")
        subsample = torch.arange(batch_size, device=self.device)
        return pyro.plate("data", int(num_data), subsample=subsample, dim=DATA_DIM)

    def register(self) -> None:
        """``pyro.module(self.pyro_name, self)``, with the model's own parameters as the truth.

        Pyro's param store keeps the first tensor it saw under a name and, by default, trains that
        one; after ``load_state_dict(..., assign=True)``, ``module.to(...)`` with new parameter
        objects, or ``pyro.get_param_store()`` entries from elsewhere, it would train tensors the
        model no longer computes with. Here any such stale entry is replaced by the model's
        current parameter first (not while a training step is recorded, `fast_path.capturing`:
        the parameters are stand-ins then, and the store was brought up to date before).
        """
        if not capturing():
            store = pyro.get_param_store()
            for name, p in self.named_parameters():
                full = param_with_module_name(self.pyro_name, name)
                if full in store and store[full] is not p:
                    del store[full]
        pyro.module(self.pyro_name, self)

    # -- a model is an object ------------------------------------------------------------------

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in self._transient:
            state[name] = None
        state["_steps"] = {}  # compiled functions belong to this object; a copy compiles its own
        for p in self.parameters():  # Pyro's weak reference to the param store's tensor (a cache)
            p.__dict__.pop("unconstrained", None)
        return state

    def __setstate__(self, state):
        state.setdefault("compile_options", None)
        state["_steps"] = {}
        super().__setstate__(state)
        self.pyro_name = _pyro_name(self.zoo_name)  # a copy is a model of its own

    def extra_repr(self) -> str:
        return f"config={self.config}"

    def model(self, x=None, *, batch_size=None, num_data=None, mask=None):
        """The generative story, a Pyro model: every site inside the data plate (`data_plate`).

        Args:
            x: images ``[B, C, H, W]`` in [0, 1], observed at site ``"x"``; sampled when None.
            batch_size: B when ``x`` is None.
            num_data: the size of the data set the batch is drawn from: every site is scaled by
                N / B, exactly as a subsampled ``pyro.plate`` does.
            mask: bool, broadcastable to ``x``, True where a pixel is observed
                (`drawzoo.data.masks`): the likelihood counts the observed pixels only.
        """
        raise NotImplementedError

    def guide(self, x, *, num_data=None, mask=None):
        """The amortised posterior over the same latent sites as `model`, a Pyro guide.

        Args:
            x: images ``[B, C, H, W]`` in [0, 1].
            num_data: as for `model`.
            mask: as for `model`; the guide never looks at the values of unobserved pixels (each
                model says what it reads there instead).
        """
        raise NotImplementedError

    @torch.no_grad()
    def inpaint(self, x, mask, num_samples: int = 100, sample: bool = False) -> Tensor:
        """Fill the unobserved pixels of images ``x`` from p(x_miss | x_obs), by sampling importance
        resampling (`drawzoo.models.importance.importance_resample`): K = ``num_samples`` z's from
        the guide given the observed pixels, one resampled per image with weight
        p(x_obs, z) / q(z | x_obs), and the missing pixels from p(x | z).

        Args:
            x: images ``[B, C, H, W]`` in [0, 1]; the values of the unobserved pixels are not used.
            mask: bool, broadcastable to ``x``, True where a pixel is observed, False where it is
                filled.
            num_samples: K, the z's drawn per image.
            sample: a binary draw of the missing pixels; else their means (Bernoulli
                probabilities).

        Returns:
            ``[B, C, H, W]`` with the observed pixels of ``x`` exactly as they were.
        """
        return importance_resample(self, x, mask, num_samples, sample=sample)

    def generate(self, n: int) -> Tensor:
        """Sample ``n`` images from the prior, through time.

        Args:
            n: how many images.

        Returns:
            Images through time ``[steps, n, C, H, W]`` in [0, 1].
        """
        raise NotImplementedError


def _enclosing_plates() -> list:
    """The vectorised plates (and Pyro's particle/sample plates) the caller runs inside."""
    from pyro.poutine.indep_messenger import IndepMessenger
    from pyro.poutine.runtime import _PYRO_STACK

    return [m for m in _PYRO_STACK if isinstance(m, IndepMessenger) and m.dim is not None]
