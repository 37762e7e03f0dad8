"""Digests of the code a process runs (no torch import: plugin registration uses them)."""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path
from typing import Any

__all__ = ["code_sha256", "file_sha256", "module_code_sha256"]


@functools.lru_cache(maxsize=None)
def code_sha256(path: str) -> str:
    """``sha256:`` over the Python sources of a package directory, or of one module file.

    Each ``*.py`` file below the directory (``__pycache__`` and hidden entries skipped)
    contributes its path relative to the directory and its bytes, in path order, so a file
    renamed, added or changed changes the digest. Computed once per process and path: a
    long-lived worker reports the code as it first read it, which is the code it imported,
    even if the files change later on disk.
    """
    root = Path(path)
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    digest = hashlib.sha256()
    for file in files:
        rel = file.name if file == root else file.relative_to(root).as_posix()
        if "__pycache__" in rel or any(part.startswith(".") for part in rel.split("/")):
            continue
        digest.update(rel.encode() + b"\0" + file.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()


def module_code_sha256(module: Any) -> str | None:
    """:func:`code_sha256` of the top-level package (or single file) a module belongs to."""
    name = getattr(module, "__name__", None)
    top = sys.modules.get(name.split(".")[0]) if isinstance(name, str) else None
    file = getattr(top, "__file__", None) or getattr(module, "__file__", None)
    if not file:
        return None
    where = Path(file).resolve()
    return code_sha256(str(where.parent if where.name == "__init__.py" else where))


@functools.lru_cache(maxsize=None)
def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes, read once per process and path.

    A ``--plugin`` file is digested when it is imported (:func:`mssbench.plugins.import_plugin`),
    so a record written later names the code the process runs even if the file changed since.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
