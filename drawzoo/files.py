"""Writing files so that no reader ever sees half of one, even after a crash."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import stat
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import ConfigError, WriteError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, what: str = "file") -> Iterator[BinaryIO]:
    """A binary file that replaces `path` when the block succeeds and vanishes when it fails.

    The bytes go to a hidden temporary file beside the file (``.<name>.<random>.tmp``), which is
    flushed and fsynced, renamed over it (``os.replace``, atomic on POSIX and Windows), and the
    folder is fsynced so that the rename survives a power cut. The rest is as ``open(path, "wb")``
    would have it: if `path` is a symlink, the file it points to is replaced and the link stays;
    a file replaced keeps its permissions, a new one gets the umask's. The folder must exist.

    When the file cannot be written (disk full, quota, no permission...), `WriteError` (an
    `OSError`) says so in one line, `what` naming the file: ``no space left on device writing
    runs/x.pt; the previous checkpoint is intact``. Errors of the block itself pass unchanged.
    """
    target = Path(os.path.realpath(path))
    existed = target.is_file()
    mode = stat.S_IMODE(target.stat().st_mode) if existed else None
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        f = _TempFile(tmp)
    except OSError as e:
        raise _write_error(e, path, what, existed) from None
    try:
        with f:
            yield f
            f.sync(mode)
        f.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if f.error is None:
            raise
        raise _write_error(f.error, path, what, existed) from None
    _fsync_folder(target.parent)


class _TempFile(io.BufferedWriter):
    """`atomic_write`'s temporary file, which remembers the first `OSError` that writing it
    raised (writers such as ``torch.save`` report it as another error)."""

    def __init__(self, path: Path):
        super().__init__(io.FileIO(path, "xb"))
        self.path, self.error = path, None

    def write(self, data) -> int:
        with self._noting_errors():
            return super().write(data)

    def flush(self) -> None:
        with self._noting_errors():
            super().flush()

    def sync(self, mode: int | None) -> None:
        """Flush and fsync, giving the file permissions `mode` if not None."""
        with self._noting_errors():
            self.flush()
            if mode is not None:
                os.chmod(self.path, mode)
            os.fsync(self.fileno())

    def replace(self, target: Path) -> None:
        """Rename the (closed) file to `target`."""
        with self._noting_errors():
            os.replace(self.path, target)

    @contextlib.contextmanager
    def _noting_errors(self):
        try:
            yield
        except OSError as e:
            self.error = self.error or e
            raise


def _write_error(e: OSError, path, what: str, existed: bool) -> WriteError:
    reason = (e.strerror or str(e)).lower()
    kept = f"the previous {what} is intact" if existed else f"no {what} was written"
    return WriteError(e.errno, f"{reason} writing {path}; {kept}")


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


# -------------------------------------------------------------------------- verified downloads


class DigestMismatch(ValueError):
    """Downloaded bytes that are not the file expected: `size` bytes read (at most one more than
    expected) with sha256 `sha256`. Nothing was kept."""

    def __init__(self, size: int, sha256: str):
        super().__init__(f"{size:,} bytes with sha256 {sha256}")
        self.size, self.sha256 = size, sha256


def fetch(url: str, timeout: float = 60) -> Iterator[bytes]:
    """The body of `url`, in 1 MiB chunks; OSError (or ``http.client.HTTPException``) when the
    network fails."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        while chunk := response.read(1 << 20):
            yield chunk


def save_verified(chunks: Iterable[bytes], dest: Path, sha256: str, size: int | None = None,
                  what: str = "file") -> None:
    """Write `chunks` (e.g. `fetch`'s) to `dest` through `atomic_write`, kept only if their sha256 is
    `sha256` and, when `size` is given, they are `size` bytes: else `DigestMismatch`, and `dest` is
    as it was. With `size`, reading stops one chunk past it, so that a longer body costs no more."""
    with atomic_write(dest, what) as f:
        h, n = hashlib.sha256(), 0
        for chunk in chunks:
            h.update(chunk)
            f.write(chunk)
            n += len(chunk)
            if size is not None and n > size:
                break
        if h.hexdigest() != sha256 or (size is not None and n != size):
            raise DigestMismatch(n, h.hexdigest())
