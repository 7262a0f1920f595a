"""Writing files so that no reader ever sees half of one, even after a crash (`atomic_write`), and
outputs that never replace model weights or a file the process reads (`output_file`)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import secrets
import stat
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import ConfigError, WriteError

try:
    import fcntl
except ImportError:  # Windows: temporaries are not locked, and none is removed as stale
    fcntl = None


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

    The temporary file is locked while it is written; those of the same file that a killed writer
    left (no lock held) are removed first.
    """
    target = Path(os.path.realpath(path))
    existed = target.is_file()
    mode = stat.S_IMODE(target.stat().st_mode) if existed else None
    _remove_stale_temporaries(target)
    try:
        f = _TempFile.create(target)
    except OSError as e:
        raise _write_error(e, path, what, existed) from None
    try:
        with f:
            yield f
            f.sync(mode)
        f.replace(target)
    except BaseException:
        f.path.unlink(missing_ok=True)
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

    @classmethod
    def create(cls, target: Path) -> _TempFile:
        """A new temporary file beside `target`, locked (`_remove_stale_temporaries` leaves it)."""
        while True:
            f = cls(target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp"))
            if fcntl is None:
                return f
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(f.fileno()).st_nlink:  # not removed as stale before it was locked
                return f
            f.close()

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


def _stale_temporaries(target: Path) -> list[Path]:
    """The temporary files of `target` (``.<name>.<8 hex>.tmp``) beside it that no writer holds."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{8}}\.tmp")
    try:
        names = [name for name in os.listdir(target.parent) if pattern.fullmatch(name)]
    except OSError:
        return []
    stale = []
    for name in names if fcntl is not None else ():  # without flock (Windows) none is known to be stale
        try:
            with open(target.parent / name, "rb") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on close
        except OSError:  # held by a live writer, or gone
            continue
        stale.append(target.parent / name)
    return stale


def _remove_stale_temporaries(target: Path) -> None:
    """Remove what writers of `target` killed mid-write (SIGKILL, power cut) left beside it."""
    for path in _stale_temporaries(target):
        with contextlib.suppress(OSError):
            path.unlink()


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


# ------------------------------------------------------------------------------------- outputs

#: The files this process has read (`note_read`), by (device, inode, mtime): what each was read as.
_READ: dict[tuple[int, int, int], str] = {}
#: How a file written by ``torch.save`` starts: a zip archive, or the legacy pickle's magic number.
_ZIP_MAGIC, _LEGACY_TORCH_MAGIC = b"PK\x03\x04", b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_dev, st.st_ino, st.st_mtime_ns


def note_read(path: str | os.PathLike, role: str = "input") -> None:
    """Remember that this process reads `path` (as `role`: "data", "recipe"...): no output
    (`output_file`) will replace it while it is unchanged."""
    with contextlib.suppress(OSError):
        _READ.setdefault(_identity(os.stat(path)), role)


def holds_weights(path: str | os.PathLike) -> bool:
    """Whether `path` is a file written by ``torch.save``: a checkpoint, pretrained weights, a
    state dict (read by its first bytes and, for a zip archive, its record names)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            if head.startswith(_ZIP_MAGIC):
                f.seek(0)
                with zipfile.ZipFile(f) as archive:
                    return any(name == "data.pkl" or name.endswith("/data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return head.startswith(b"\x80") and _LEGACY_TORCH_MAGIC in head


def check_output(path: str | os.PathLike, what: str = "file", name: str | None = None) -> None:
    """`ConfigError` if writing the output `what` to `path` would replace model weights
    (`holds_weights`) or a file this process read (`note_read`); `name` (``"--json"``) prefixes the
    message. Symlinks are followed, as writing them would."""
    label = f"{name} {path}" if name else str(path)
    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode) and holds_weights(path):
        raise ConfigError(f"{label} holds model weights (a checkpoint or pretrained weights): refusing to replace "
                          f"it with the {what}; write to another path")
    role = _READ.get(_identity(st))
    if role is not None:
        raise ConfigError(f"{label} is the {role} this run reads: refusing to replace it with the {what}; "
                          "write to another path")


@contextlib.contextmanager
def output_file(path: str | os.PathLike, what: str = "file") -> Iterator[BinaryIO]:
    """`atomic_write` for every output drawzoo and its benchmarks write (JSON, pictures, plots,
    tables, manifests): first `check_output`, so that an output never replaces a checkpoint,
    pretrained weights or a file the process reads."""
    check_output(path, what)
    with atomic_write(path, what) as f:
        yield f


def write_output(path: str | os.PathLike, content: str | bytes, what: str = "file") -> None:
    """Write `content` (text as UTF-8) to `path` through `output_file`."""
    with output_file(path, what) as f:
        f.write(content.encode() if isinstance(content, str) else content)


def check_outputs(outputs: dict, inputs: dict | None = None, *, checkpoints: bool = False) -> None:
    """`ConfigError` if a path that will be written is one that is read or another one written, or,
    unless the outputs are `checkpoints` (``drawzoo train``'s), one that `check_output` refuses:
    model weights. A command calls it before any work; `output_file` checks again when it writes.

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
        if not checkpoints:
            check_output(path, "output", name)


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
