"""Checkpoints: one file holding a zoo model's name, config, weights and training state.

Files are written atomically (`drawzoo.files.atomic_write`: temp file, fsync, rename), read with
``torch.load(weights_only=True)`` (plain tensors and builtins only: nothing is unpickled that
could run code), carry a sha256 of their content (so flipped bytes inside a tensor are caught, not
loaded), and refuse to load into a model whose name or config differs, naming each mismatched field.

A file from someone else costs nothing to refuse: its archive must store its tensors uncompressed
and its tensors may hold no more bytes than the file has (no zip bomb, no tensor expanded from a
smaller storage), checked before any tensor is copied; and `check_matches` compares the stored
weights' names and shapes with the model's, which `drawzoo.load` builds on the ``meta`` device
first (no memory) -- so the weights a model is given never take more than the file holds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from pathlib import Path

import torch

from .config import as_dict, config_defaults
from .errors import CheckpointError, first_line
from .files import atomic_write, note_read

log = logging.getLogger(__name__)

FORMAT = "drawzoo-checkpoint"
VERSION = 1


def save_checkpoint(path, model, *, weights_dtype: torch.dtype | None = None, **state) -> Path:
    """Write `model` (``zoo_name``, ``config``, weights) and `state` (optimizer state, epoch, step,
    RNG states, history...: tensors and builtins) to `path`, atomically; `CheckpointError` (and the
    file at `path` left as it was) if a weight is not finite. `weights_dtype`: store the floating
    point weights as this (pretrained files: float16), not as they are."""
    path = Path(path)
    weights = {k: v.detach().cpu().to(weights_dtype) if weights_dtype and v.is_floating_point() else v.detach().cpu()
               for k, v in model.state_dict().items()}
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path}: not written, the weights are not finite ({', '.join(bad[:3])}"
                              f"{', ...' if len(bad) > 3 else ''})")
    payload = {
        "format": FORMAT, "version": VERSION,
        "model": model.zoo_name, "config": as_dict(model.config),
        "state_dict": weights,
        **state,
    }
    payload["sha256"] = digest(payload)
    Path(os.path.realpath(path)).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "checkpoint") as f:
        torch.save(payload, f)
    return path


def digest(payload) -> str:
    """sha256 of a checkpoint's content (its "sha256" entry aside): keys, builtins, tensor bytes."""
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=repr):
                if k != "sha256":
                    h.update(repr(k).encode())
                    feed(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                feed(v)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    feed(payload)
    return h.hexdigest()


def read_checkpoint(path) -> dict:
    """The checkpoint at `path` as a dict; `CheckpointError` (path and reason) if it is missing,
    truncated, corrupted, not a drawzoo checkpoint, or holds more than its size allows."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    size = path.stat().st_size
    _check_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        reason = first_line(e)
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            reason = "it holds objects that are not plain tensors or builtins (refused, not unpickled)"
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted?): {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a drawzoo checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {payload.get('version')}, "
                              f"this drawzoo reads version {VERSION}")
    _check_contents(payload, path, size)
    note_read(path, "checkpoint")
    if payload.get("sha256") != digest(payload):
        raise CheckpointError(f"{path}: corrupted checkpoint (its content does not match its sha256)")
    return payload


def _check_archive(path: Path) -> None:
    """`CheckpointError` unless `path` is a zip archive (torch.save's format) whose records are
    stored, not compressed: what torch.load then reads takes no more memory than the file's size."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted?): not a zip archive")
    with zipfile.ZipFile(path) as archive:
        packed = [info.filename for info in archive.infolist() if info.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise CheckpointError(f"{path}: {packed[0]} is compressed, which torch.save never does: refused, not inflated")


def _check_contents(payload: dict, path, size: int) -> None:
    """`CheckpointError` unless `payload`, read from a file of `size` bytes, is what such a file
    can hold: at most `size` items walked as a tree (no exponential sharing), dense CPU tensors
    holding at most `size` bytes in all (each distinct view once), and the fields a checkpoint has."""
    items, held, views, todo = 0, 0, set(), [payload]
    while todo:
        x = todo.pop()
        items += 1
        if items > size:
            raise CheckpointError(f"{path}: holds more items than a file of {size:,} bytes can (refused)")
        if isinstance(x, dict):
            todo += [*x.keys(), *x.values()]
        elif isinstance(x, (list, tuple, set, frozenset)):
            todo += x
        elif isinstance(x, torch.Tensor):
            if x.layout != torch.strided or x.device.type != "cpu" or x.is_quantized:
                raise CheckpointError(f"{path}: holds a {x.layout} tensor on {x.device}, not a dense CPU one (refused)")
            view = (x.untyped_storage().data_ptr(), x.storage_offset(), tuple(x.shape), x.stride(), x.dtype)
            if view not in views:
                views.add(view)
                held += x.numel() * x.element_size()
    if held > size:
        raise CheckpointError(f"{path}: its tensors would take {held:,} bytes, more than the file's {size:,} "
                              f"(tensors expanded from a smaller storage?): refused")
    weights = payload.get("state_dict")
    if not (isinstance(payload.get("model"), str) and isinstance(payload.get("config"), dict)
            and isinstance(weights, dict) and all(isinstance(v, torch.Tensor) for v in weights.values())):
        raise CheckpointError(f"{path}: not a drawzoo checkpoint (no model name, config or weights)")


def with_defaults(stored: dict, config_cls) -> dict:
    """A checkpoint's `stored` config with the default of each field of `config_cls` it lacks: a field
    added to a model after the checkpoint was written defaults to what the model did before it."""
    return {**config_defaults(config_cls), **stored}


def config_mismatches(stored: dict, config: dict) -> list[str]:
    """``"field: checkpoint has A, given B"`` for each key of `config` that differs from `stored`."""
    return [f"{key}: checkpoint has {stored.get(key)!r}, given {value!r}"
            for key, value in config.items() if stored.get(key) != value]


def check_model(payload: dict, path, name: str) -> None:
    """`CheckpointError` unless the checkpoint at `path` holds the model registered as `name`:
    checked first, before its config or training settings are compared with anything."""
    if payload["model"] != name:
        raise CheckpointError(f"{path}: checkpoint is of model {payload['model']!r}, not {name!r}")


def check_matches(payload: dict, path, model) -> None:
    """`CheckpointError` unless the checkpoint holds `model`'s name, config and weights: the same
    names, shapes and kinds (floating point or not) as `model`'s state dict, which may be on the
    ``meta`` device. The first mismatch is named."""
    check_model(payload, path, model.zoo_name)
    diffs = config_mismatches(with_defaults(payload["config"], type(model.config)), as_dict(model.config))
    if diffs:
        raise CheckpointError(f"{path}: checkpoint config differs from the model's: " + "; ".join(diffs))
    stored, expected = payload["state_dict"], model.state_dict()
    for key in [*expected, *stored]:
        if key not in stored or key not in expected:
            which = "lacks" if key not in stored else "has an extra"
            raise CheckpointError(f"{path}: checkpoint {which} weight {key!r} for its config")
        have, want = stored[key], expected[key]
        if have.shape != want.shape or have.is_floating_point() != want.is_floating_point():
            raise CheckpointError(f"{path}: weight {key!r} is {tuple(have.shape)} {have.dtype} in the checkpoint, "
                                  f"{tuple(want.shape)} {want.dtype} in the model its config makes")


def load_weights(model, payload: dict, path) -> None:
    """Copy the checkpoint's weights into `model` (same name, config and weights, checked first)."""
    check_matches(payload, path, model)
    model.load_state_dict(payload["state_dict"])


class CheckpointLock:
    """An exclusive lock on ``<checkpoint>.lock`` (beside the file a symlink points to), held
    inside ``with``, so that two runs never write one checkpoint; `CheckpointError` if another
    process holds it. None where the platform has no ``fcntl.flock``, or for `path` None.

    A lock lives in its file: if that file is removed (its folder deleted, say), another run
    could lock a new one. `check`, called before each write, finds that out and takes the lock of
    the new file -- or, if another run holds that, raises `CheckpointError` and writes nothing.
    """

    def __init__(self, path):
        self.path = None if path is None else Path(path)
        self.file = None

    def __enter__(self) -> "CheckpointLock":
        self.check()
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()  # releases the lock
            self.file = None

    def check(self) -> None:
        """Hold the lock on the file now at ``<checkpoint>.lock`` (see the class)."""
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform
            return
        if self.path is None or self._holds():
            return
        lock_path = Path(f"{os.path.realpath(self.path)}.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(lock_path, "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            taken = "" if self.file is None else " (its lock file was removed during this run; nothing written)"
            raise CheckpointError(f"{self.path}: another training run is using this checkpoint{taken}") from None
        if self.file is not None:
            log.warning("%s was removed during the run (its folder deleted?): lock taken again", lock_path)
            self.file.close()
        self.file = lock

    def _holds(self) -> bool:
        """Whether the file this lock holds is still the one at its path."""
        if self.file is None:
            return False
        try:
            now = os.stat(self.file.name)
        except FileNotFoundError:
            return False
        held = os.fstat(self.file.fileno())
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)
