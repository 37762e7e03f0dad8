"""Significance tests of the leaderboards: paired t-tests by seed and Holm's step-down correction.

One place for the level, the test and the correction, so that the ranking, the
negative-transfer table and the text that describes them agree.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

__all__ = ["ALPHA", "holm", "paired_p_value"]

#: Family-wise significance level of the comparisons on a page.
ALPHA = 0.05


def paired_p_value(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided ``scipy.stats.ttest_rel`` p-value; 1.0 when the pairs are identical."""
    from scipy import stats

    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if np.all(diff == 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_rel(a, b).pvalue)
    return 0.0 if math.isnan(p) else p  # constant non-zero differences: t is infinite


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family of tests (NaN entries: no test made).

    The ``k``-th smallest of the ``m`` defined p-values becomes
    ``max_{j <= k} min(1, (m - j + 1) p_(j))``; rejecting where the adjusted value is below
    ``alpha`` keeps the family-wise error rate at ``alpha`` (Holm 1979, Scand. J. Statist. 6).
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    defined = np.flatnonzero(~np.isnan(p))
    m = len(defined)
    if m == 0:
        return out
    order = defined[np.argsort(p[defined], kind="mergesort")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out
