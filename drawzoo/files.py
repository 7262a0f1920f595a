"""Writing files so that no reader ever sees half of one, even after a crash."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


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
