"""Checkpoints: one file holding a zoo model's name, config, weights and training state.

Files are written atomically (`drawzoo.files.atomic_write`: temp file, fsync, rename), read with
``torch.load(weights_only=True)`` (plain tensors and builtins only: nothing is unpickled that
could run code), carry a sha256 of their content (so flipped bytes inside a tensor are caught, not
loaded), and refuse to load into a model whose name or config differs, naming each mismatched field.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .config import as_dict
from .errors import CheckpointError, first_line
from .files import atomic_write

FORMAT = "drawzoo-checkpoint"
VERSION = 1


def save_checkpoint(path, model, **state) -> Path:
    """Write `model` (``zoo_name``, ``config``, weights) and `state` (optimizer state, epoch, step,
    RNG states, history...: tensors and builtins) to `path`, atomically; `CheckpointError` (and the
    file at `path` left as it was) if a weight is not finite."""
    path = Path(path)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
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
    truncated, corrupted, or not a drawzoo checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
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
    if payload.get("sha256") != digest(payload):
        raise CheckpointError(f"{path}: corrupted checkpoint (its content does not match its sha256)")
    return payload


def config_mismatches(stored: dict, config: dict) -> list[str]:
    """``"field: checkpoint has A, given B"`` for each key of `config` that differs from `stored`."""
    return [f"{key}: checkpoint has {stored.get(key)!r}, given {value!r}"
            for key, value in config.items() if stored.get(key) != value]


def check_matches(payload: dict, path, model) -> None:
    """`CheckpointError` unless the checkpoint holds `model`'s name and config."""
    if payload["model"] != model.zoo_name:
        raise CheckpointError(f"{path}: checkpoint is of model {payload['model']!r}, not {model.zoo_name!r}")
    diffs = config_mismatches(payload["config"], as_dict(model.config))
    if diffs:
        raise CheckpointError(f"{path}: checkpoint config differs from the model's: " + "; ".join(diffs))


def load_weights(model, payload: dict, path) -> None:
    """Copy the checkpoint's weights into `model` (same name and config, checked first)."""
    check_matches(payload, path, model)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model: {e}") from None
