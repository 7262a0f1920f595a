"""Writing files so that no reader ever sees half of one, even after a crash."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import ConfigError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` when the block succeeds and vanishes when it fails.

    The bytes go to a hidden temporary file beside `path` (``.<name>.<random>.tmp``, with the
    umask's permissions), which is flushed and fsynced, renamed over `path` (``os.replace``, atomic
    on POSIX and Windows), and the folder is fsynced so that the rename survives a power cut.
    The folder must exist.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (where the platform can open a folder: not Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_outputs(outputs: dict, inputs: dict | None = None) -> None:
    """`ConfigError` if a path that will be written is one that is read or another one written.

    `outputs` and `inputs` map what names a path (``"--json"``, ``"checkpoint"``) to the path (None:
    not used). Paths are the same if they resolve to one (symlinks followed) or are one file
    (hard links)."""
    written = [(k, Path(v)) for k, v in outputs.items() if v is not None]
    read = [(k, Path(v)) for k, v in (inputs or {}).items() if v is not None]
    for i, (name, path) in enumerate(written):
        for other, other_path in written[:i] + read:
            if path.resolve() == other_path.resolve() or (
                    path.exists() and other_path.exists() and os.path.samefile(path, other_path)):
                raise ConfigError(f"{name} {path} is {other} {other_path}: it would be overwritten; "
                                  "write to another path")
