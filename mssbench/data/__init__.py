"""Data layer shared by dataset plugins: where prepared data lives."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_root", "dataset_dir"]


def data_root() -> Path:
    """Root of prepared datasets.

    ``$MSSBENCH_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/mssbench``, else
    ``~/.cache/mssbench``.
    """
    if os.environ.get("MSSBENCH_DATA_DIR"):
        return Path(os.environ["MSSBENCH_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "mssbench"


def dataset_dir(name: str, override: str | os.PathLike[str] | None = None) -> Path:
    """Directory of dataset ``name``'s prepared files (``override`` wins when given)."""
    return Path(override).expanduser() if override else data_root() / name
