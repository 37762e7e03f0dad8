"""Deterministic split rules shared by dataset plugins."""

from __future__ import annotations

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a fixed, well-mixed 64-bit hash of 64-bit integers."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hash_buckets(ids: np.ndarray, n_buckets: int = 100, salt: int = 0) -> np.ndarray:
    """Stable bucket in ``[0, n_buckets)`` for each integer id (vectorised).

    The bucket depends only on the id, the salt and ``n_buckets``: not on row order, file
    layout, platform or library version. Rows sharing an id (for example the items of one
    search page) always land in the same bucket, so a group is never split.

    Args:
        ids: Integer ids, any shape.
        n_buckets: Number of buckets.
        salt: Changes the assignment; part of a protocol's definition.

    Returns:
        ``int64`` buckets, the shape of ``ids``.
    """
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"hash_buckets needs integer ids, got {ids.dtype}")
    keyed = ids.astype(np.int64).view(np.uint64) ^ _splitmix64(np.array([salt], dtype=np.uint64))
    return (_splitmix64(keyed) % np.uint64(n_buckets)).astype(np.int64)


def holdout_mask(ids: np.ndarray, fraction: float, salt: int = 0) -> np.ndarray:
    """Boolean mask of the rows whose group id falls in the held-out ``fraction`` (per mille)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return hash_buckets(ids, 1000, salt) < round(fraction * 1000)


def nested_sample(n_rows: int, k: int, salt: int = 0) -> np.ndarray:
    """``k`` of ``n_rows`` row positions, sorted; samples of one ``n_rows`` are nested.

    Rows are ranked by a fixed hash of their position, so the rows of a smaller ``k`` are
    always among those of a larger one: a learning curve adds data, it never swaps it.

    Args:
        n_rows: Rows to draw from.
        k: Rows to keep, ``1 <= k <= n_rows``.
        salt: Changes the draw.

    Returns:
        ``int64`` positions in increasing order.
    """
    if not 1 <= k <= n_rows:
        raise ValueError(f"cannot keep {k} of {n_rows} rows")
    rank = _splitmix64(np.arange(n_rows, dtype=np.uint64) ^ np.uint64(salt))
    return np.sort(np.argsort(rank, kind="stable")[:k]).astype(np.int64)
