"""The columnar cache a dataset's prepare step writes and its loader reads.

Layout of a cache folder ``dest``: one folder per split holding one ``.npy`` file per array
(``train/categorical.npy``, ...) and ``manifest.json``, written last. :func:`write_cache`
builds everything in a hidden folder ``.{dest.name}.partial-{pid}`` next to ``dest`` and
renames it into place only once complete (:func:`mssbench.io.replace_dir`, which
:func:`mssbench.io.recover_dir` undoes when a process is killed between its two renames), so a
prepare that fails or is interrupted leaves nothing :func:`read_cache` accepts;
:func:`remove_stale_partials` removes the folders of prepares that were killed.

The manifest records the cache format and version, when and by which mssbench it was written,
each array's file, dtype, shape and size (checked on every read), and whatever the dataset adds
(its input files with checksums, row and label counts).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np

import mssbench
from mssbench.data.manifest import read_json, write_json_atomic
from mssbench.errors import DataError
from mssbench.io import replace_dir

__all__ = [
    "MANIFEST",
    "NPY_HEADER",
    "CacheWriter",
    "manifest_meta",
    "npy_header",
    "read_cache",
    "remove_stale_partials",
    "write_cache",
]

MANIFEST = "manifest.json"
_RESERVED = ("format", "cache_version", "created", "mssbench", "arrays")


def _partial(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.partial-{os.getpid()}"


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_stale_partials(dest: str | Path, log: Callable[[str], None] | None = None) -> None:
    """Remove the work folders ``.{dest.name}.partial-{pid}`` that killed prepares left.

    A folder is removed when its process is gone (or is this one); a prepare still running
    elsewhere keeps its folder.
    """
    dest = Path(dest)
    pattern = re.compile(rf"^\.{re.escape(dest.name)}\.partial-(\d+)$")
    for p in dest.parent.glob(f".{dest.name}.partial-*"):
        m = pattern.match(p.name)
        if not m or not p.is_dir():
            continue
        pid = int(m[1])
        if pid == os.getpid() or _pid_gone(pid):
            if log is not None:
                log(f"removing {p} (left by an interrupted prepare)")
            shutil.rmtree(p, ignore_errors=True)


def _write_all(f: BinaryIO, data: memoryview | bytes) -> None:
    """Write every byte of ``data``: the one place cache arrays are written (tests patch it)."""
    view = memoryview(data).cast("B")
    while view.nbytes:
        n = f.write(view)
        if n is None:  # pragma: no cover - non-blocking files only
            continue
        view = view[n:]


#: Size of the ``.npy`` header the writer reserves, so that it can be written last.
NPY_HEADER = 128


def npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """A ``.npy`` (format 1.0) header of exactly :data:`NPY_HEADER` bytes."""
    d = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": tuple(shape)}
    text = repr(d).encode("latin1")
    body = NPY_HEADER - 10
    if len(text) + 1 > body:  # pragma: no cover - shapes of a few integers only
        raise ValueError(f"npy header too long for {shape}")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", body) + text.ljust(body - 1) + b"\n"


class _Array:
    """One ``.npy`` file written by appending row blocks; the header is written on close."""

    def __init__(self, path: Path, dtype: Any, row_shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.row_shape, self.rows = path, np.dtype(dtype), row_shape, 0
        if self.dtype == object:
            raise ValueError(f"{path.name}: object arrays cannot be cached")
        self.f = open(path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        _write_all(self.f, b"\0" * NPY_HEADER)

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(
                f"{self.path.name}: rows of shape {block.shape[1:]}, not {self.row_shape}"
            )
        if len(block):
            _write_all(self.f, block.data)
            self.rows += len(block)

    def close(self) -> dict[str, Any]:
        if not self.f.closed:
            self.f.seek(0)
            _write_all(self.f, npy_header(self.dtype.str, (self.rows, *self.row_shape)))
            os.fsync(self.f.fileno())
            self.f.close()
        size = NPY_HEADER + self.rows * self.dtype.itemsize * int(np.prod(self.row_shape))
        return {"dtype": self.dtype.str, "shape": [self.rows, *self.row_shape], "bytes": size}


class CacheWriter:
    """A cache written block by block, for inputs larger than memory.

    ``layout`` declares every split's arrays up front (dtype and the shape of one row), so a
    split that gets no rows is still complete. Use it as a context manager: blocks go to a
    hidden folder next to ``dest``; :meth:`finish` writes the headers and the manifest and
    renames the folder into place; leaving the block by an exception removes everything::

        with CacheWriter(dest, layout, cache_format="mssbench-x", version=1) as cache:
            for block in blocks:
                cache.append("train", {"ids": ids, "labels": labels})
            cache.finish({"inputs": [...]})

    A writer whose dataset reports write errors in its own words, or writes a manifest of its
    own shape, calls the steps itself: :meth:`open`, :meth:`append`, :meth:`close_arrays`,
    :meth:`commit` (or :meth:`abort` on any error); :meth:`finish` is the last two.
    """

    def __init__(
        self,
        dest: str | Path,
        layout: Mapping[str, Mapping[str, tuple[Any, tuple[int, ...]]]],
        *,
        cache_format: str,
        version: int,
    ) -> None:
        self.dest, self.format, self.version = Path(dest), cache_format, version
        self.work = _partial(self.dest)
        self.layout = layout
        self.arrays: dict[str, dict[str, _Array]] = {}
        self.manifest: dict[str, Any] | None = None

    def open(self) -> "CacheWriter":
        """Create the work folder and the empty array files (removed again on failure)."""
        shutil.rmtree(self.work, ignore_errors=True)
        try:
            for split, named in self.layout.items():
                (self.work / split).mkdir(parents=True)
                self.arrays[split] = {
                    name: _Array(self.work / split / f"{name}.npy", dtype, tuple(shape))
                    for name, (dtype, shape) in named.items()
                }
        except BaseException:
            self.abort()
            raise
        return self

    def __enter__(self) -> "CacheWriter":
        return self.open()

    def append(self, split: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Append one block of rows to every array of ``split`` (all of them, same length)."""
        if set(arrays) != set(self.arrays[split]):
            raise ValueError(f"{split}: expected arrays {sorted(self.arrays[split])}")
        for name, block in arrays.items():
            self.arrays[split][name].append(block)

    def rows(self, split: str) -> int:
        """Rows appended to ``split`` so far."""
        return next(iter(self.arrays[split].values())).rows if self.arrays[split] else 0

    def close_arrays(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Write the array headers; split -> array -> ``file``, ``dtype``, ``shape``, ``bytes``."""
        return {
            split: {name: {"file": f"{split}/{name}.npy", **a.close()} for name, a in named.items()}
            for split, named in self.arrays.items()
        }

    def commit(self, manifest: Mapping[str, Any]) -> None:
        """Write ``manifest`` last and put the finished folder at ``dest`` (replacing a cache)."""
        write_json_atomic(self.work / MANIFEST, manifest)
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        replace_dir(self.work, self.dest)
        self.manifest = dict(manifest)

    def finish(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        """Close the arrays, write the manifest (``meta`` added) and put the cache in place."""
        clash = sorted(set(meta) & set(_RESERVED))
        if clash:
            raise ValueError(f"meta must not set {', '.join(clash)}")
        arrays = self.close_arrays()
        manifest = {
            "format": self.format,
            "cache_version": self.version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "mssbench": mssbench.__version__,
            **meta,
            "arrays": arrays,
        }
        self.commit(manifest)
        return manifest

    def abort(self) -> None:
        """Close every file and remove the work folder (``dest`` is left as it was)."""
        for named in self.arrays.values():
            for a in named.values():
                a.f.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if self.manifest is None:
            self.abort()
        if isinstance(exc, OSError):
            raise DataError(f"cannot write the cache {self.dest} ({exc.strerror or exc})") from None


def write_cache(
    dest: str | Path,
    splits: Mapping[str, Mapping[str, np.ndarray]],
    meta: Mapping[str, Any],
    *,
    cache_format: str,
    version: int,
) -> dict[str, Any]:
    """Write ``splits`` as ``.npy`` arrays and a manifest to ``dest``, atomically.

    The arrays of a split must have the same number of rows; :class:`CacheWriter` writes the
    same cache block by block.

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
    layout = {
        split: {name: (a.dtype, a.shape[1:]) for name, a in named.items()}
        for split, named in splits.items()
    }
    with CacheWriter(dest, layout, cache_format=cache_format, version=version) as cache:
        for split, named in splits.items():
            cache.append(split, named)
        return cache.finish(meta)


def manifest_meta(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The ``meta`` a cache's manifest was written with (the keys the writer adds left out).

    ``write_cache(dest, splits, manifest_meta(manifest), ...)`` writes a copy of a cache read
    with :func:`read_cache` (the OOV probes of the dataset plugins plant a value in such a copy).
    """
    return {k: v for k, v in manifest.items() if k not in _RESERVED}


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
