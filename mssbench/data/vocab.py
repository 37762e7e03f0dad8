"""Categorical vocabularies fitted on the train split only; unseen values map to id 0.

:class:`Vocabulary` is fitted on the train values at once (:meth:`Vocabulary.fit`) or, for
data read block by block, from counts: :class:`CodeCounts` accumulates the counts of integer
codes block by block in memory bounded by the largest code, and
:meth:`Vocabulary.from_counts` fits on the counts of the train split (kept in a manifest, they
also give :meth:`Vocabulary.unseen`, the out-of-vocabulary cells of the other splits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

__all__ = ["OOV", "CodeCounts", "Vocabulary"]

#: The id of every value not in the vocabulary (out-of-vocabulary, missing or rare).
OOV = 0


@dataclass(frozen=True)
class Vocabulary:
    """The known values of one categorical column, sorted; value ``values[i]`` has id ``i + 1``.

    Ids are a function of the set of train values alone (not of row order), so the same train
    data always gives the same ids. ``size`` counts the out-of-vocabulary id 0, which is what a
    :class:`~mssbench.spec.CategoricalField` wants as ``vocab_size``.

    Attributes:
        values: Sorted unique values kept from the train split.
    """

    values: np.ndarray

    @classmethod
    def fit(cls, train_values: np.ndarray, min_count: int = 1) -> "Vocabulary":
        """The vocabulary of the values seen at least ``min_count`` times in ``train_values``.

        Args:
            train_values: ``[N]`` values of the column in the train split only (integers or
                strings).
            min_count: Values rarer than this map to the out-of-vocabulary id.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        values, counts = np.unique(np.asarray(train_values), return_counts=True)
        return cls(values[counts >= min_count])

    @classmethod
    def from_counts(cls, counts: Mapping[Any, int], min_count: int = 1) -> "Vocabulary":
        """The vocabulary of the values counted at least ``min_count`` times.

        ``Vocabulary.from_counts(c)`` equals ``Vocabulary.fit(v)`` when ``c`` counts the
        values ``v`` (:meth:`CodeCounts.as_dict` of the train blocks, or any value -> count
        mapping); values with a zero count are not seen.

        Args:
            counts: Value -> number of train rows holding it.
            min_count: Values rarer than this map to the out-of-vocabulary id.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        kept = [v for v, k in counts.items() if k >= min_count]
        return cls(np.unique(np.asarray(kept)) if kept else np.asarray(kept, np.int64))

    def unseen(self, counts: Mapping[Any, int]) -> int:
        """How many of the counted cells (value -> count) encode to the out-of-vocabulary id."""
        if not counts:
            return 0
        values = np.asarray(list(counts))
        n = np.asarray(list(counts.values()), np.int64)
        return int(n[self.encode(values) == OOV].sum())

    @property
    def size(self) -> int:
        """Number of ids including the out-of-vocabulary id 0."""
        return len(self.values) + 1

    def encode(self, values: np.ndarray) -> np.ndarray:
        """``int64`` ids of ``values``: ``1..size-1`` for known values, 0 for the others."""
        values = np.asarray(values)
        if len(self.values) == 0:
            return np.zeros(values.shape, np.int64)
        pos = np.searchsorted(self.values, values)
        clipped = np.minimum(pos, len(self.values) - 1)
        known = self.values[clipped] == values
        return np.where(known, clipped + 1, OOV).astype(np.int64)


@dataclass
class CodeCounts:
    """How often each non-negative integer code occurs, counted block by block.

    The streaming counterpart of :meth:`Vocabulary.fit` for data read in blocks
    (:func:`mssbench.data.iter_csv`, a prepare step): :meth:`update` with each train block, then
    :meth:`vocabulary`. Memory is one ``int64`` per code up to the largest seen.

    Attributes:
        counts: ``counts[c]`` is the number of times code ``c`` was seen.
    """

    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def update(self, codes: np.ndarray) -> None:
        """Count ``codes`` (any shape of non-negative integers)."""
        codes = np.asarray(codes).ravel()
        if codes.size == 0:
            return
        if not np.issubdtype(codes.dtype, np.integer) or codes.min() < 0:
            raise ValueError("CodeCounts counts non-negative integer codes")
        more = np.bincount(codes)
        if len(more) > len(self.counts):
            grown = np.zeros(len(more), np.int64)
            grown[: len(self.counts)] = self.counts
            self.counts = grown
        self.counts[: len(more)] += more

    def as_dict(self) -> dict[str, int]:
        """``{"code": count}`` of the codes seen, in code order (JSON keys are strings)."""
        return {str(c): int(k) for c, k in enumerate(self.counts) if k}

    def vocabulary(self, min_count: int = 1) -> Vocabulary:
        """The vocabulary of the codes counted at least ``min_count`` times."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        return Vocabulary(np.flatnonzero(self.counts >= min_count).astype(np.int64))
