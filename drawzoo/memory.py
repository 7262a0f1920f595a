"""What a model or a request needs in memory, estimated before it is allocated, against what the
device has: a config or a request that cannot fit is a `MemoryLimitError` naming the field, the
bytes it needs and the bytes available, before any work; one that fits only in parts is done in
passes of `ROWS_PER_PASS` rows (or as many as fit).

Available memory is ``MemAvailable`` of ``/proc/meminfo`` on the CPU (the free physical pages
elsewhere), ``torch.cuda.mem_get_info`` on a GPU; on other devices nothing is refused. Estimates
that refuse are lower bounds (a model's parameters and buffers, the pixels a request must hold),
so that nothing that fits is refused; an allocation that fails anyway is one line from the
``drawzoo`` command (``drawzoo.cli.run_program``).
"""

from __future__ import annotations

import dataclasses
import math
import os

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .errors import MemoryLimitError

#: Rows (images x samples) per vectorised pass: what evaluation, sampling and inpainting take at
#: once unless told otherwise.
ROWS_PER_PASS = 4096
FLOAT_BYTES = 4  #: bytes of a float32 pixel


def available_bytes(device="cpu") -> int | None:
    """Bytes that `device` can still allocate (None: unknown, nothing is refused)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def describe_bytes(n: int) -> str:
    """``313,600,000,000 bytes (292.1 GiB)``."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    unit = max((u for u in range(len(units)) if n >= 1024 ** u), default=0)
    return f"{n:,} bytes ({n / 1024 ** unit:.1f} {units[unit]})"


def check_fits(needed: int, device, what: str) -> None:
    """`MemoryLimitError` if `needed` bytes exceed what `device` has available; `what` names the
    field or request (``--n 100000000000: the samples``)."""
    available = available_bytes(device)
    if available is not None and needed > available:
        raise MemoryLimitError(f"{what} need {describe_bytes(needed)}, more than the {describe_bytes(available)} "
                               f"available on {torch.device(device)}")


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers (works on the ``meta`` device: nothing allocated)."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def check_config_fits(build, config, name: str, device="cpu") -> None:
    """`MemoryLimitError` if the model ``build(config)`` (a dataclass config) cannot be held by
    `device`: its weights counted on a model built on the ``meta`` device, and the field named
    whose value costs the most (set back to its default, the model shrinks the most)."""
    def weights(cfg) -> int:
        with torch.device("meta"):
            return module_bytes(build(cfg))

    available = available_bytes(device)
    try:
        needed = weights(config)
    except Exception:  # a model that cannot be built on the meta device: no estimate, built as it was
        return
    if available is None or needed <= available:
        return
    shrunk = {}
    for field in dataclasses.fields(config):
        default = field.default
        if default is dataclasses.MISSING or getattr(config, field.name) == default:
            continue
        try:
            shrunk[field.name] = weights(dataclasses.replace(config, **{field.name: default}))
        except Exception:  # a default that the other fields do not allow: not the culprit
            continue
    culprit = min((k for k in shrunk if shrunk[k] < needed), key=shrunk.get, default=None)
    what = f"{name}: " + (f"{culprit}={getattr(config, culprit)}" if culprit else "its config")
    check_fits(needed, device, f"{what} makes a model whose weights")


def images_per_pass(num_samples: int, batch: int, image_shape, device, probe=None) -> int:
    """Images per vectorised pass of `num_samples` importance samples each (K rows per image):
    `batch` if its rows are at most `ROWS_PER_PASS`, else as many as the rows that `probe()` (the
    K=1 pass of one image, in a fork of the RNG) allocates say fit in half the available memory
    (at least 1).
    `MemoryLimitError` naming num_samples if even one image's K rows cannot fit: each holds at
    least its image and the likelihood's parameters, float32."""
    per_row = 2 * FLOAT_BYTES * math.prod(image_shape)
    check_fits(num_samples * per_row, device, f"num_samples={num_samples}: one image's {num_samples:,} importance "
               "samples, in one pass,")
    available = available_bytes(device)
    if batch * num_samples <= ROWS_PER_PASS or available is None or probe is None:
        return batch
    with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
        per_row = max(per_row, allocated_bytes(probe))
    return max(1, min(batch, available // 2 // (per_row * num_samples)))


class _Allocations(TorchDispatchMode):
    """Counts the bytes of the new storages that torch operations return (no frees subtracted)."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.bytes += t.untyped_storage().nbytes()
        return out


def allocated_bytes(fn) -> int:
    """Bytes that the tensors ``fn()`` creates take, freed or not: an upper bound of its peak."""
    with _Allocations() as counter:
        fn()
    return counter.bytes
