"""Deterministic split rules shared by dataset plugins.

A split assignment is an ``int8`` array of split codes, :data:`TRAIN`, :data:`VALID` and
:data:`TEST` (the index into :data:`SPLITS`); :func:`split_indices` turns it into row indices.
Three rules:

* :func:`hash_split`: by a stable hash of a group id (a user, a search page), independent of row
  order, so a group is never split;
* :func:`time_split`: by timestamp, with boundaries at given times, or at the time quantiles of
  :func:`time_boundaries`, so that validation and test are later than train;
* :func:`ordered_split`: by position in the file (what some peers do; documented per protocol).
"""

from __future__ import annotations

import numpy as np

#: Split names in canonical order; a split code is the index into this tuple.
SPLITS = ("train", "valid", "test")
TRAIN, VALID, TEST = 0, 1, 2

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


def _check_fractions(valid_fraction: float, test_fraction: float) -> None:
    if not (0 <= valid_fraction <= 1 and 0 <= test_fraction <= 1) or (
        valid_fraction + test_fraction > 1
    ):
        raise ValueError(
            "valid_fraction and test_fraction must be in [0, 1] and sum to at most 1, got "
            f"{valid_fraction} and {test_fraction}"
        )


def hash_split(
    ids: np.ndarray, valid_fraction: float, test_fraction: float, salt: int = 0
) -> np.ndarray:
    """Split codes by a stable hash of each row's group id (per-mille buckets).

    Buckets ``[0, 1000 * test)`` are test, the next ``1000 * valid`` valid, the rest train.
    Each group lands wholly in one split whatever the row order or file layout.

    Args:
        ids: ``[N]`` integer group ids.
        valid_fraction: Expected share of groups in valid.
        test_fraction: Expected share of groups in test.
        salt: Part of the protocol; another salt gives another assignment.

    Returns:
        ``[N]`` ``int8`` split codes.
    """
    _check_fractions(valid_fraction, test_fraction)
    bucket = hash_buckets(ids, 1000, salt)
    n_test = round(test_fraction * 1000)
    n_valid = round(valid_fraction * 1000)
    codes = np.full(bucket.shape, TRAIN, np.int8)
    codes[bucket < n_test + n_valid] = VALID
    codes[bucket < n_test] = TEST
    return codes


def time_split(times: np.ndarray, valid_start: float, test_start: float) -> np.ndarray:
    """Split codes by time: before ``valid_start`` train, before ``test_start`` valid, then test.

    Args:
        times: ``[N]`` timestamps (any numeric unit, e.g. seconds or ``YYYYMMDD`` dates).
        valid_start: First time of the validation period.
        test_start: First time of the test period (``>= valid_start``).

    Returns:
        ``[N]`` ``int8`` split codes.
    """
    if test_start < valid_start:
        raise ValueError(f"test_start {test_start} is before valid_start {valid_start}")
    times = np.asarray(times)
    codes = np.full(times.shape, TRAIN, np.int8)
    codes[times >= valid_start] = VALID
    codes[times >= test_start] = TEST
    return codes


def time_boundaries(
    times: np.ndarray, valid_fraction: float, test_fraction: float
) -> tuple[float, float]:
    """``(valid_start, test_start)`` for :func:`time_split` at the time quantiles.

    The test period starts at the earliest time from which at most about ``test_fraction`` of
    the rows remain; the validation period likewise before it. Rows sharing a timestamp always
    share a split, so the shares are approximate when timestamps repeat.

    Args:
        times: ``[N]`` timestamps, ``N >= 1``.
        valid_fraction: Share of the rows (approximately) in valid.
        test_fraction: Share of the rows (approximately) in test.
    """
    _check_fractions(valid_fraction, test_fraction)
    ordered = np.sort(np.asarray(times))
    n = len(ordered)
    if n == 0:
        raise ValueError("time_boundaries needs at least one timestamp")

    def start(share: float) -> float:
        k = n - round(share * n)  # first row of the later period
        return float(ordered[k]) if k < n else float(np.inf)

    return start(valid_fraction + test_fraction), start(test_fraction)


def ordered_split(n: int, train_end: float, valid_end: float) -> np.ndarray:
    """Split codes by position: rows before ``int(n * train_end)`` train, then valid, then test.

    The cut points are ``int(n * train_end)`` and ``int(n * valid_end)``: the rule of
    ``x[:int(len(x) * 0.8)]``, ``x[int(len(x) * 0.8):int(len(x) * 0.9)]`` and
    ``x[int(len(x) * 0.9):]`` for 0.8 and 0.9.

    Args:
        n: Number of rows.
        train_end: End of train as a share of the rows.
        valid_end: End of valid as a share of the rows (``>= train_end``).
    """
    if not 0 <= train_end <= valid_end <= 1:
        raise ValueError(f"need 0 <= train_end <= valid_end <= 1, got {train_end}, {valid_end}")
    codes = np.full(n, TEST, np.int8)
    codes[: int(n * valid_end)] = VALID
    codes[: int(n * train_end)] = TRAIN
    return codes


def split_indices(codes: np.ndarray) -> dict[str, np.ndarray]:
    """Split name -> ``int64`` row indices (ascending) of the rows with that code."""
    codes = np.asarray(codes)
    return {name: np.flatnonzero(codes == k) for k, name in enumerate(SPLITS)}
