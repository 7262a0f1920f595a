"""Where data lives: the data folder (`data_root`) and drawzoo's cache (`cache_dir`)."""

from __future__ import annotations

import os
from pathlib import Path


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """This user's drawzoo cache: ``$DRAWZOO_CACHE``, else ``$XDG_CACHE_HOME/drawzoo``, else
    ``~/.cache/drawzoo``."""
    xdg = _env_path("XDG_CACHE_HOME")
    return _env_path("DRAWZOO_CACHE") or (xdg or Path.home() / ".cache") / "drawzoo"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: `root` if given, else ``$DRAWZOO_DATA``, else ``cache_dir() / "data"``."""
    if root is not None:
        return Path(root).expanduser()
    return _env_path("DRAWZOO_DATA") or cache_dir() / "data"
