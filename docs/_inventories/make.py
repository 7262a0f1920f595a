"""Write the intersphinx inventories (``*.inv``) of the projects that drawzoo's docs link to.

The docs are built without a network, here and in CI, so ``docs/conf.py`` gives intersphinx each
project's inventory as a file kept beside this script, while the links it makes go to the
project's online documentation. This script makes those files from the installed packages: it
walks the modules that drawzoo's code and pages use, and writes each public object under the
names that code uses for it (its public path, e.g. ``torch.nn.Linear``, and the path where it is
defined, ``torch.nn.modules.linear.Linear``, which autodoc's base classes and annotations name),
every name pointing at the page and anchor where the project's own documentation has it:

- Python: ``library/MODULE.html#MODULE.NAME``; built-ins in ``functions``, ``stdtypes``,
  ``exceptions`` and ``constants``, as docs.python.org has them.
- PyTorch: ``torch.Tensor`` in ``tensors.html``, ``torch.dtype``/``torch.device`` in
  ``tensor_attributes.html``, functions and modules each on its own page under ``generated/``
  (``generated/torch.nn.Linear.html#torch.nn.Linear``), ``torch.utils.data``,
  ``torch.distributions``, ``torch.distributed`` and ``torch.optim.Optimizer`` on their module's page.
- Pyro: each module on the page whose ``automodule`` documents it (``pyro.infer.svi`` in
  ``inference_algos.html``, anchors by the defining module: ``#pyro.infer.svi.SVI``), the
  distributions as ``pyro.distributions.NAME``.
- NumPy (``reference/generated/numpy.NAME.html``), matplotlib's ``Figure``, Pillow's ``Image``.

Run it after upgrading one of those packages (``python docs/_inventories/make.py``); the files are
small (tens of kB) and the same for the same installed versions. tests/test_docs.py reads them
back with Sphinx's own reader and checks a sample of their links.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import sys
import zlib
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: project -> (the online documentation the links go to, the distribution whose version it records)
PROJECTS = {
    "python": ("https://docs.python.org/3/", None),
    "torch": ("https://docs.pytorch.org/docs/stable/", "torch"),
    "pyro": ("https://docs.pyro.ai/en/stable/", "pyro-ppl"),
    "numpy": ("https://numpy.org/doc/stable/", "numpy"),
    "matplotlib": ("https://matplotlib.org/stable/", "matplotlib"),
    "pillow": ("https://pillow.readthedocs.io/en/stable/", "pillow"),
}


class Inventory:
    """Entries ``name -> (role, uri)``; the first one written for a name is kept."""

    def __init__(self):
        self.entries: dict[str, tuple[str, str]] = {}

    def add(self, name: str, role: str, uri: str) -> None:
        self.entries.setdefault(name, (role, uri))

    def add_object(self, names, role: str, page: str, anchor: str) -> None:
        for name in names:
            self.add(name, role, f"{page}#{anchor}")

    def write(self, path: Path, project: str, version: str) -> None:
        head = (f"# Sphinx inventory version 2\n# Project: {project}\n# Version: {version}\n"
                "# The remainder of this file is compressed using zlib.\n").encode()
        lines = "".join(f"{name} {role} 1 {uri} -\n" for name, (role, uri) in sorted(self.entries.items()))
        path.write_bytes(head + zlib.compress(lines.encode(), 9))


def role_of(obj) -> str:
    if inspect.isclass(obj):
        return "py:exception" if issubclass(obj, BaseException) else "py:class"
    if callable(obj):
        return "py:function"
    return "py:data"


def public(module):
    """(name, object) of the public names of `module`: its ``__all__``, and the classes and functions
    it defines (``os.PathLike`` is not in ``os.__all__``)."""
    names = list(getattr(module, "__all__", []))
    names += [n for n, obj in vars(module).items() if n not in names and (
        not hasattr(module, "__all__") or getattr(obj, "__module__", None) == module.__name__)]
    for name in names:
        if name.startswith("_") or not hasattr(module, name):
            continue
        obj = getattr(module, name)
        if inspect.ismodule(obj):
            continue
        yield name, obj


def canonical(obj) -> str | None:
    """Where `obj` is defined: ``module.qualname``."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname else None


def names_of(public_name: str, obj) -> list[str]:
    found = canonical(obj)
    return [public_name] + ([found] if found and found != public_name else [])


def members(cls):
    """(name, object, role) of the public methods and properties a class defines itself."""
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property) or type(value).__name__ in ("getset_descriptor", "member_descriptor"):
            yield name, "py:attribute"
        elif isinstance(value, (staticmethod, classmethod)) or callable(value):
            yield name, "py:method"


# --- Python -----------------------------------------------------------------------------------

STDLIB = ["abc", "argparse", "collections", "collections.abc", "contextlib", "copy", "dataclasses", "datetime",
          "enum", "functools", "hashlib", "http.client", "importlib", "importlib.metadata", "inspect", "io",
          "itertools", "json", "logging", "math", "os", "os.path", "pathlib", "random", "re", "shutil", "signal",
          "socket", "subprocess", "tempfile", "threading", "time", "tomllib", "types", "typing", "urllib.parse",
          "urllib.request", "warnings", "zlib"]
STDTYPES = {"str", "bytes", "bytearray", "list", "tuple", "dict", "set", "frozenset", "range", "memoryview"}
CONSTANTS = ["None", "True", "False", "Ellipsis", "NotImplemented"]


def python() -> Inventory:
    inv = Inventory()
    for name in CONSTANTS:
        inv.add(name, "py:data", f"library/constants.html#{name}")
    for name, obj in vars(builtins).items():
        if name.startswith("_") or name in CONSTANTS:
            continue
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            inv.add(name, "py:exception", f"library/exceptions.html#{name}")
        elif inspect.isclass(obj):
            page = "stdtypes" if name in STDTYPES else "functions"
            inv.add(name, "py:class", f"library/{page}.html#{name}")
            for member, role in members(obj):
                inv.add(f"{name}.{member}", role, f"library/stdtypes.html#{name}.{member}")
        elif callable(obj):
            inv.add(name, "py:function", f"library/functions.html#{name}")
    for modname in STDLIB:
        module = importlib.import_module(modname)
        page = f"library/{modname}.html"
        inv.add(modname, "py:module", f"{page}#module-{modname}")
        defined_here = getattr(module, "__all__", None) is None
        for name, obj in public(module):
            where = getattr(obj, "__module__", None)
            if defined_here and (inspect.isclass(obj) or inspect.isfunction(obj)) and where != modname:
                continue  # imported into the module, documented elsewhere
            full = f"{modname}.{name}"
            inv.add(full, role_of(obj), f"{page}#{full}")
            if inspect.isclass(obj):
                for member, role in members(obj):
                    inv.add(f"{full}.{member}", role, f"{page}#{full}.{member}")
    return inv


# --- PyTorch ----------------------------------------------------------------------------------

def torch_inventory() -> Inventory:
    import torch
    import torch.distributed
    import torch.distributions
    import torch.nn
    import torch.nn.functional
    import torch.nn.utils
    import torch.optim
    import torch.optim.lr_scheduler
    import torch.utils.data

    inv = Inventory()

    def generated(full, obj, role=None):
        inv.add_object(names_of(full, obj), role or role_of(obj), f"generated/{full}.html", full)

    inv.add_object(["torch.Tensor", "torch._tensor.Tensor"], "py:class", "tensors.html", "torch.Tensor")
    for name, role in members(torch.Tensor):
        inv.add(f"torch.Tensor.{name}", role, f"generated/torch.Tensor.{name}.html#torch.Tensor.{name}")
    for name, role in members(torch._C.TensorBase):
        inv.add(f"torch.Tensor.{name}", role, f"generated/torch.Tensor.{name}.html#torch.Tensor.{name}")
    for name in ("dtype", "device", "layout", "memory_format"):
        inv.add(f"torch.{name}", "py:class", f"tensor_attributes.html#torch.{name}")
    inv.add("torch.Size", "py:class", "size.html#torch.Size")
    for name, obj in public(torch):
        if name in ("Tensor", "dtype", "device", "layout", "memory_format", "Size") or name.endswith("Tensor"):
            continue
        if inspect.isclass(obj) or callable(obj):
            generated(f"torch.{name}", obj)
    for name, obj in public(torch.nn):
        if inspect.isclass(obj) and issubclass(obj, torch.nn.Module):
            generated(f"torch.nn.{name}", obj, "py:class")
    module_page = "generated/torch.nn.Module.html"
    for name, role in members(torch.nn.Module):
        inv.add(f"torch.nn.Module.{name}", role, f"{module_page}#torch.nn.Module.{name}")
        inv.add(f"torch.nn.modules.module.Module.{name}", role, f"{module_page}#torch.nn.Module.{name}")
    parameter = "torch.nn.parameter.Parameter"
    inv.add_object([parameter, "torch.nn.Parameter"], "py:class", f"generated/{parameter}.html", parameter)
    for name, obj in public(torch.nn.functional):
        if inspect.isfunction(obj) or inspect.isbuiltin(obj):
            inv.add(f"torch.nn.functional.{name}", "py:function",
                    f"generated/torch.nn.functional.{name}.html#torch.nn.functional.{name}")
    for name in ("clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters"):
        generated(f"torch.nn.utils.{name}", getattr(torch.nn.utils, name), "py:function")
    for name, obj in public(torch.utils.data):
        if inspect.isclass(obj) or inspect.isfunction(obj):
            full = f"torch.utils.data.{name}"
            inv.add_object(names_of(full, obj), role_of(obj), "data.html", full)
    for name, obj in public(torch.distributions):
        if inspect.isclass(obj) and issubclass(obj, torch.distributions.Distribution):
            full = canonical(obj)
            inv.add_object([full, f"torch.distributions.{name}"], "py:class", "distributions.html", full)
    inv.add_object(["torch.optim.Optimizer", "torch.optim.optimizer.Optimizer"], "py:class", "optim.html",
                   "torch.optim.Optimizer")
    for name, obj in public(torch.optim):
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer:
            generated(f"torch.optim.{name}", obj, "py:class")
    for name, obj in public(torch.optim.lr_scheduler):
        if inspect.isclass(obj) and obj.__module__ == "torch.optim.lr_scheduler":
            generated(f"torch.optim.lr_scheduler.{name}", obj, "py:class")
    if torch.distributed.is_available():
        for name in ("init_process_group", "destroy_process_group", "is_initialized", "is_available", "get_rank",
                     "get_world_size", "barrier", "all_reduce", "broadcast", "all_gather", "ReduceOp"):
            full = f"torch.distributed.{name}"
            obj = getattr(torch.distributed, name)
            inv.add_object(names_of(full, obj), role_of(obj), "distributed.html", full)
    for name in ("is_available", "device_count", "synchronize", "manual_seed", "manual_seed_all", "empty_cache"):
        generated(f"torch.cuda.{name}", getattr(torch.cuda, name), "py:function")
    return inv


# --- Pyro -------------------------------------------------------------------------------------

#: each module's page: the page whose ``automodule`` documents it (pyro's docs/source/*.rst)
PYRO_PAGES = {
    "pyro.primitives": "primitives.html",
    **{f"pyro.infer.{m}": "inference_algos.html" for m in (
        "svi", "elbo", "trace_elbo", "tracegraph_elbo", "traceenum_elbo", "trace_mean_field_elbo",
        "trace_tail_adaptive_elbo", "renyi_elbo", "tracetmc_elbo", "importance", "rws", "smcfilter", "svgd",
        "energy_distance", "discrete", "predictive", "abstract_infer")},
    "pyro.poutine.handlers": "poutine.html", "pyro.poutine.runtime": "poutine.html",
    "pyro.poutine.util": "poutine.html", "pyro.poutine.messenger": "poutine.html",
    **{f"pyro.optim.{m}": "optimization.html" for m in (
        "optim", "lr_scheduler", "adagrad_rmsprop", "clipped_adam", "horovod", "pytorch_optimizers", "multi")},
    "pyro.nn.module": "nn.html",
    "pyro.params.param_store": "parameters.html",
    "pyro.contrib.autoname": "contrib.autoname.html", "pyro.contrib.autoname.named": "contrib.autoname.html",
    "pyro.contrib.autoname.scoping": "contrib.autoname.html",
}
PYRO_NAMESPACES = ["pyro", "pyro.infer", "pyro.poutine", "pyro.optim", "pyro.nn", "pyro.params",
                   "pyro.contrib.autoname"]


def pyro_page(module: str) -> str | None:
    if module.startswith("pyro.poutine.") and module.endswith("_messenger"):
        return "poutine.html"
    return PYRO_PAGES.get(module)


def pyro_inventory() -> Inventory:
    import pyro
    import pyro.contrib.autoname
    import pyro.distributions
    import pyro.infer
    import pyro.nn
    import pyro.optim
    import pyro.params
    import pyro.poutine

    inv = Inventory()
    for module in sorted(PYRO_PAGES):
        inv.add(module, "py:module", f"{PYRO_PAGES[module]}#module-{module}")

    def add(public_name, obj):
        where = getattr(obj, "__module__", None)
        page = isinstance(where, str) and pyro_page(where)
        # pyro.optim's wrappers of torch's optimizers are made by a lambda: named by their attribute
        full = canonical(obj) or (page and f"{where}.{public_name.rpartition('.')[2]}")
        if page and full:
            inv.add_object([full, public_name], role_of(obj), page, full)
            if inspect.isclass(obj):
                for member, role in members(obj):
                    inv.add_object([f"{full}.{member}", f"{public_name}.{member}"], role, page, f"{full}.{member}")

    for namespace in PYRO_NAMESPACES:
        module = importlib.import_module(namespace)
        for name, obj in public(module):
            add(f"{namespace}.{name}", obj)
    for module_name in PYRO_PAGES:
        module = importlib.import_module(module_name)
        for name, obj in public(module):
            if getattr(obj, "__module__", None) == module_name:
                add(f"{module_name}.{name}", obj)
    # the distributions are documented as pyro.distributions.NAME (an autoclass each)
    for name, obj in public(pyro.distributions):
        if inspect.isclass(obj) and issubclass(obj, pyro.distributions.Distribution):
            documented = f"pyro.distributions.{name}"
            inv.add_object([documented] + ([canonical(obj)] if canonical(obj) else []), "py:class",
                           "distributions.html", documented)
    mixin = "pyro.distributions.torch_distribution.TorchDistributionMixin"
    inv.add(mixin, "py:class", f"distributions.html#{mixin}")
    trace = "pyro.poutine.Trace"
    inv.add_object([trace, canonical(pyro.poutine.Trace)], "py:class", "poutine.html", trace)
    for member, role in members(pyro.poutine.Trace):
        inv.add_object([f"{trace}.{member}"], role, "poutine.html", f"{trace}.{member}")
    return inv


# --- NumPy, matplotlib, Pillow ----------------------------------------------------------------

def numpy_inventory() -> Inventory:
    import numpy

    inv = Inventory()
    for name, obj in public(numpy):
        if inspect.isclass(obj) or callable(obj):
            full = f"numpy.{name}"
            inv.add(full, role_of(obj), f"reference/generated/{full}.html#{full}")
    for name, role in members(numpy.ndarray):
        full = f"numpy.ndarray.{name}"
        inv.add(full, role, f"reference/generated/{full}.html#{full}")
    for name in ("Generator", "default_rng"):
        full = f"numpy.random.{name}"
        inv.add(full, role_of(getattr(numpy.random, name)), f"reference/random/generator.html#{full}")
    return inv


def matplotlib_inventory() -> Inventory:
    from matplotlib.figure import Figure

    inv = Inventory()
    full = "matplotlib.figure.Figure"
    inv.add_object([full], "py:class", f"api/_as_gen/{full}.html", full)
    return inv


def pillow_inventory() -> Inventory:
    from PIL import Image

    inv = Inventory()
    inv.add("PIL.Image", "py:module", "reference/Image.html#module-PIL.Image")
    inv.add_object(["PIL.Image.Image"], "py:class", "reference/Image.html", "PIL.Image.Image")
    for name in ("open", "new", "fromarray"):
        inv.add_object([f"PIL.Image.{name}"], "py:function", "reference/Image.html", f"PIL.Image.{name}")
    for name, role in members(Image.Image):
        full = f"PIL.Image.Image.{name}"
        inv.add(full, role, f"reference/Image.html#{full}")
    return inv


MAKERS = {"python": python, "torch": torch_inventory, "pyro": pyro_inventory, "numpy": numpy_inventory,
          "matplotlib": matplotlib_inventory, "pillow": pillow_inventory}


def main() -> int:
    for project, make in MAKERS.items():
        dist = PROJECTS[project][1]
        version = metadata.version(dist) if dist else f"{sys.version_info.major}.{sys.version_info.minor}"
        inv = make()
        path = HERE / f"{project}.inv"
        inv.write(path, project, version)
        print(f"{path.name}: {len(inv.entries)} names, {path.stat().st_size:,} bytes ({project} {version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
