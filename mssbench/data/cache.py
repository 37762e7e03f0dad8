"""The columnar cache a dataset's prepare step writes and its loader reads.

Layout of a cache folder ``dest``: one folder per split holding one ``.npy`` file per array
(``train/categorical.npy``, ...) and ``manifest.json``, written last. :func:`write_cache`
builds everything in a hidden folder next to ``dest`` and renames it into place only once
complete, so a prepare that fails or is interrupted leaves nothing :func:`read_cache` accepts
(the AliExpress ingest follows the same rule with its own streaming writer).

The manifest records the cache format and version, when and by which mssbench it was written,
each array's file, dtype, shape and size (checked on every read), and whatever the dataset adds
(its input files with checksums, row and label counts).
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

import mssbench
from mssbench.data.manifest import read_json, write_json_atomic
from mssbench.errors import DataError

__all__ = ["MANIFEST", "read_cache", "write_cache"]

MANIFEST = "manifest.json"
_RESERVED = ("format", "cache_version", "created", "mssbench", "arrays")


def _partial(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.partial-{os.getpid()}"


def _swap(work: Path, dest: Path) -> None:
    """Put the finished ``work`` folder at ``dest``, replacing a previous cache."""
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        os.rename(dest, old)
        os.rename(work, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(work, dest)


def write_cache(
    dest: str | Path,
    splits: Mapping[str, Mapping[str, np.ndarray]],
    meta: Mapping[str, Any],
    *,
    cache_format: str,
    version: int,
) -> dict[str, Any]:
    """Write ``splits`` as ``.npy`` arrays and a manifest to ``dest``, atomically.

    Args:
        dest: The cache folder (replaced as a whole if it exists).
        splits: Split name -> array name -> array (any NumPy dtype but object).
        meta: Dataset facts for the manifest (input files, counts); JSON-serialisable, without
            the keys the cache sets itself (format, cache_version, created, mssbench, arrays).
        cache_format: The format name :func:`read_cache` expects (``"mssbench-kuairand"``).
        version: Version of the format; bump it when the arrays change meaning.

    Returns:
        The manifest written.

    Raises:
        DataError: The folder cannot be written (nothing is left behind).
    """
    dest = Path(dest)
    clash = sorted(set(meta) & set(_RESERVED))
    if clash:
        raise ValueError(f"meta must not set {', '.join(clash)}")
    work = _partial(dest)
    shutil.rmtree(work, ignore_errors=True)
    try:
        arrays: dict[str, dict[str, Any]] = {}
        for split, named in splits.items():
            (work / split).mkdir(parents=True)
            arrays[split] = {}
            for name, array in named.items():
                if array.dtype == object:
                    raise ValueError(f"{split}/{name}: object arrays cannot be cached")
                file = f"{split}/{name}.npy"
                np.save(work / file, np.ascontiguousarray(array), allow_pickle=False)
                arrays[split][name] = {
                    "file": file,
                    "dtype": array.dtype.str,
                    "shape": list(array.shape),
                    "bytes": (work / file).stat().st_size,
                }
        manifest = {
            "format": cache_format,
            "cache_version": version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "mssbench": mssbench.__version__,
            **meta,
            "arrays": arrays,
        }
        write_json_atomic(work / MANIFEST, manifest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        _swap(work, dest)
    except OSError as exc:
        raise DataError(f"cannot write the cache {dest} ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def read_cache(
    dest: str | Path, *, cache_format: str, version: int, missing: str
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """The manifest and arrays of a complete cache, each array checked against the manifest.

    Args:
        dest: The cache folder.
        cache_format: Format name the cache must have.
        version: Format version the cache must have.
        missing: What to tell the user when there is no cache (what to download and run).

    Returns:
        ``(manifest, {split: {name: array}})``; arrays are memory-mapped copy-on-write.

    Raises:
        DataError: No cache (the message ends with ``missing``), another format or version, or
            an array file that is missing or not the size the manifest says.
    """
    dest = Path(dest)
    manifest = read_json(dest / MANIFEST)
    if manifest is None or manifest.get("format") != cache_format:
        raise DataError(f"no prepared data in {dest}: {missing}")
    if manifest.get("cache_version") != version:
        raise DataError(
            f"the cache in {dest} has format v{manifest.get('cache_version')}, this mssbench "
            f"reads v{version}: {missing}"
        )
    out: dict[str, dict[str, np.ndarray]] = {}
    for split, named in manifest["arrays"].items():
        out[split] = {}
        for name, facts in named.items():
            path = dest / facts["file"]
            size = path.stat().st_size if path.is_file() else -1
            if size != facts["bytes"]:
                raise DataError(
                    f"{path} is missing or damaged ({size:,} bytes, the manifest says "
                    f"{facts['bytes']:,}): {missing}"
                )
            out[split][name] = np.load(path, mmap_mode="c", allow_pickle=False)
    return manifest, out
