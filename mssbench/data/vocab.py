"""Categorical vocabularies fitted on the train split only; unseen values map to id 0."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["OOV", "Vocabulary"]

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
