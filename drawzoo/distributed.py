"""Data-parallel training with torch.distributed, as launched by ``torchrun``.

Without torchrun (no ``WORLD_SIZE`` > 1 in the environment, no process group) everything here is
a single process and a no-op. Under torchrun, `join` initialises the process group from torchrun's
environment -- gloo on the CPU, nccl on CUDA with one device per local rank -- with a timeout
(``DRAWZOO_DIST_TIMEOUT`` seconds, default 120), so that a rank that dies makes the others fail
with an error instead of waiting forever. A group initialised here is destroyed at exit (`leave`):
gloo's worker threads otherwise abort the process (SIGABRT) while the interpreter shuts down.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import first_line


class LostProcesses(RuntimeError):
    """A collective operation of the training processes failed: another process died or hung
    (the message is torch's first line)."""


@contextlib.contextmanager
def _collective():
    """Inside: a `RuntimeError` of torch.distributed is a `LostProcesses`; anything else (a user's
    own RuntimeError in a callback, say) is left as it is, since it comes from no collective."""
    try:
        yield
    except RuntimeError as e:
        raise LostProcesses(first_line(e)) from e


def _collective_device() -> torch.device:
    """Where a tensor made for a collective must be: this process's GPU under nccl, which reduces
    CUDA tensors only; the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@dataclasses.dataclass(frozen=True)
class Group:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that shows progress and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum(self, *values: float) -> list[float]:
        """Each value summed over all processes."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        with _collective():
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def mean_(self, tensors: list[torch.Tensor]) -> None:
        """Replace each tensor (of one dtype and device) by its mean over all processes: one
        all-reduce of them all, flattened."""
        if not self.active:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        with _collective():
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world
        for t, mean in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
            t.copy_(mean.view_as(t))

    def broadcast_(self, tensors: list[torch.Tensor]) -> None:
        """Overwrite each tensor with rank 0's (e.g. a model's ``state_dict().values()``)."""
        if self.active:
            for t in tensors:
                with _collective():
                    dist.broadcast(t, src=0)

    def barrier(self) -> None:
        """Wait until every process got here."""
        if self.active:
            with _collective():
                dist.barrier()

    def gather(self, obj) -> list:
        """`obj` of every process, in rank order."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        with _collective():
            dist.all_gather_object(out, obj)
        return out


def current() -> Group:
    """The process group this process belongs to (a single process if none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return Group(dist.get_rank(), dist.get_world_size())
    return Group()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a process launched alone."""
    return int(os.environ.get("RANK", "0")) == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def join(device: torch.device) -> Group:
    """Join torchrun's process group when launched by it, initialising it here if needed (gloo for
    a CPU `device`, nccl for CUDA); a single-process Group otherwise."""
    if launched_by_torchrun() and not dist.is_initialized():
        # torch._dynamo (which torch.optim imports) imported after init_process_group keeps a
        # reference to the group: destroy_process_group would then leave gloo's threads running,
        # and one that frees a finished collective's tensors while the interpreter shuts down
        # aborts the process (SIGABRT, "terminate called without an active exception")
        import torch._dynamo  # noqa: F401

        if device.type == "cuda":
            torch.cuda.set_device(device)
        timeout = timedelta(seconds=float(os.environ.get("DRAWZOO_DIST_TIMEOUT", "120")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
        atexit.register(leave)
    return current()


def leave() -> None:
    """Destroy the process group, which joins its worker threads (called at exit when `join`
    initialised it)."""
    if dist.is_initialized():
        dist.destroy_process_group()
