"""Checksums of input files and atomically written JSON manifests."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Mapping

from mssbench.errors import DataError

__all__ = ["file_facts", "read_json", "sha256_file", "write_json_atomic"]

_CHUNK = 4 << 20


def sha256_file(path: str | Path, stop: threading.Event | None = None) -> str:
    """Hex sha256 of the bytes of ``path`` as stored (read in 4 MiB chunks).

    hashlib releases the GIL, so a thread can hash the inputs while the main thread parses
    them; setting ``stop`` ends the hashing early, and the result is then ``""``.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            if stop is not None and stop.is_set():
                return ""
            h.update(chunk)
    return h.hexdigest()


def file_facts(path: str | Path) -> dict[str, Any]:
    """``{"file", "bytes", "sha256"}`` of an input file: what a record needs to name it.

    Raises:
        DataError: The file cannot be read.
    """
    path = Path(path)
    try:
        return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def write_json_atomic(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` so that a reader sees the old file or the new one.

    The text goes to a temporary file in the same folder, is flushed to disk and then renamed
    over ``path``; an interruption leaves at most the temporary file, never a half file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when the file is missing or not a JSON object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
