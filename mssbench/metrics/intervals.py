"""Bootstrap intervals of the test AUC, over the dataset's groups (search pages, users) or rows.

Rows of one search page are not independent, so where the test split declares groups
(:attr:`~mssbench.spec.Split.groups`) whole groups are resampled; otherwise rows are. One
multinomial weight matrix ``[R, G]`` holds every resample; the AUC of all ``R`` resamples is
one weighted Mann-Whitney sum over the tie blocks of the sorted scores (a sparse product), in
chunks of resamples that bound the memory -- no Python loop over resamples.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from mssbench.spec import DatasetSchema

__all__ = [
    "CI_HIGH",
    "CI_LOW",
    "LEVEL",
    "N_RESAMPLES",
    "auc_intervals",
    "bootstrap_weights",
    "percentile_interval",
    "weighted_auc",
]

#: Resamples per interval.
N_RESAMPLES = 200
#: Coverage of the interval.
LEVEL = 0.95
#: Metric names of the interval's ends in test metrics and records.
CI_LOW, CI_HIGH = "auc_ci_low", "auc_ci_high"
#: Largest ``resamples x tie blocks`` matrix built at once (float64 entries).
_CHUNK_CELLS = 2**24


def bootstrap_weights(n_units: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``[R, G]`` bootstrap counts: resample ``r`` draws unit ``g`` ``w[r, g]`` times (sum G).

    Each resample draws ``G`` units uniformly with replacement (multinomial counts), drawn as
    integers and counted with one ``bincount``.
    """
    if n_units == 0:
        return np.zeros((n_resamples, 0))
    draws = rng.integers(0, n_units, size=(n_resamples, n_units))
    draws += np.arange(n_resamples)[:, None] * n_units
    counts = np.bincount(draws.ravel(), minlength=n_resamples * n_units)
    return counts.reshape(n_resamples, n_units).astype(np.float64)


def weighted_auc(
    scores: np.ndarray, labels: np.ndarray, units: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """The tie-aware AUC under each row of ``weights``: ``[R]``, NaN where a class has weight 0.

    Row ``i`` counts ``weights[r, units[i]]`` times in resample ``r``; a tied positive/negative
    pair counts 1/2, as in the pairwise definition.

    Args:
        scores: ``[N]`` real scores.
        labels: ``[N]`` 0/1 labels.
        units: ``[N]`` integer unit ids in ``[0, G)`` (the row's group, or the row itself).
        weights: ``[R, G]`` non-negative weights.
    """
    from scipy import sparse

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n_res, n_units = weights.shape
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    u, y = np.asarray(units)[order], labels[order]
    block, n_blocks = _segments(s, y)

    def incidence(mask: np.ndarray) -> sparse.csr_matrix:  # [G, B]: rows of unit g in block b
        ones = np.ones(int(mask.sum()))
        return sparse.csr_matrix((ones, (u[mask], block[mask])), shape=(n_units, n_blocks))

    pos_m, neg_m = incidence(y), incidence(~y)
    out = np.full(n_res, math.nan)
    step = max(1, _CHUNK_CELLS // max(n_blocks, 1))
    for lo in range(0, n_res, step):  # chunks of resamples, each one matrix product
        w = weights[lo : lo + step]
        pos = np.asarray((pos_m.T @ w.T).T)  # [r, B] positive weight per tie block
        neg = np.asarray((neg_m.T @ w.T).T)
        below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each block
        u_stat = (pos * (below + 0.5 * neg)).sum(axis=1)
        denom = pos.sum(axis=1) * neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[lo : lo + step] = np.where(denom > 0, u_stat / denom, math.nan)
    return out


def _segments(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
    """Segment id of each row of sorted scores ``s``, and the number of segments.

    A tie block holding a positive is its own segment; the negative-only tie blocks between two
    such blocks form one segment (only their total weight below the next positive matters),
    so there are at most about twice as many segments as positives.
    """
    if not len(s):
        return np.zeros(0, dtype=np.int64), 0
    tie = np.concatenate([[0], np.cumsum(s[1:] != s[:-1])])  # [N] tie block of each row
    has_pos = np.zeros(int(tie[-1]) + 1, dtype=bool)
    has_pos[tie[y]] = True
    # A new segment starts at a block with a positive, and at the first block after one.
    starts = has_pos.copy()
    starts[1:] |= has_pos[:-1]
    starts[0] = True
    seg_of_block = np.cumsum(starts) - 1
    return seg_of_block[tie], int(seg_of_block[-1]) + 1


def percentile_interval(values: np.ndarray, point: float, level: float) -> tuple[float, float]:
    """The percentile interval of the defined ``values``, widened to hold ``point``.

    Where the resampled values all lie on one side of the point estimate (a tiny cell), the
    interval is stretched to it, so that it always contains the reported value.
    """
    defined = values[~np.isnan(values)]
    if not len(defined) or math.isnan(point):
        return math.nan, math.nan
    lo, hi = np.quantile(defined, [(1 - level) / 2, (1 + level) / 2])
    return float(min(lo, point)), float(max(hi, point))


def _cell_interval(
    score: np.ndarray, y: np.ndarray, groups: np.ndarray | None, n_resamples: int, seed: int
) -> tuple[float, np.ndarray]:
    """``(point AUC, [R] resampled AUCs)`` of one cell; weights drawn a chunk at a time."""
    if groups is None:
        units = np.arange(len(score))
    else:
        units = np.unique(groups, return_inverse=True)[1].reshape(-1)
    n_units = int(units.max()) + 1 if len(units) else 0
    point = weighted_auc(score, y, units, np.ones((1, n_units)))[0]
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK_CELLS // max(n_units, len(score), 1))
    parts = [
        weighted_auc(score, y, units, bootstrap_weights(n_units, min(step, n_resamples - lo), rng))
        for lo in range(0, n_resamples, step)
    ]
    return float(point), np.concatenate(parts) if parts else np.zeros(0)


def auc_intervals(
    logits: torch.Tensor,
    labels: torch.Tensor,
    scenario: torch.Tensor,
    schema: DatasetSchema,
    groups: torch.Tensor | None = None,
    *,
    n_resamples: int = N_RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> pd.DataFrame:
    """Bootstrap intervals of each schema task's AUC in every scenario and pooled.

    Returns:
        Rows like :func:`~mssbench.metrics.evaluate`'s (``scenario, task, metric, value, n,
        n_pos, reason``), metrics :data:`CI_LOW` and :data:`CI_HIGH`; ``reason`` states the
        level, the number of resamples and what was resampled (it also says why a cell is NaN).
    """
    from mssbench.metrics.core import COLUMNS, POOLED

    x = logits.detach().double().cpu().numpy()
    y_all = labels.detach().cpu().numpy().astype(bool)
    scen = scenario.detach().cpu().numpy()
    g_all = None if groups is None else groups.detach().cpu().numpy()
    unit = "rows" if g_all is None else "groups"
    what = f"{level:.0%} percentile bootstrap interval, {n_resamples} resamples of {unit}"
    rows = []
    cells = [(name, scen == i) for i, name in enumerate(schema.scenarios)]
    cells.append((POOLED, np.ones(len(scen), bool)))
    for j, task in enumerate(schema.task_names):
        for ci, (name, mask) in enumerate(cells):
            y = y_all[mask, j]
            point, res = _cell_interval(
                x[mask, j], y, None if g_all is None else g_all[mask], n_resamples, seed + ci
            )
            low, high = percentile_interval(res, point, level)
            reason = what if not math.isnan(low) else "undefined: the cell's AUC is undefined"
            for metric, value in ((CI_LOW, low), (CI_HIGH, high)):
                rows.append((name, task, metric, value, int(mask.sum()), int(y.sum()), reason))
    return pd.DataFrame(rows, columns=list(COLUMNS))
