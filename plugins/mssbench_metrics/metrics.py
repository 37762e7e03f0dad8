"""The metric functions: one cell's float64 logits and int64 0/1 labels in, a float out."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "average_precision",
    "gauc",
    "ndcg_10",
    "ndcg_at",
    "normalized_entropy",
]


def average_precision(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Average precision, ``sum_n (R_n - R_{n-1}) P_n`` over the distinct scores, decreasing.

    Rows with equal scores form one threshold, so ties count as one step of the curve and the
    value does not depend on the order of the rows. NaN when there are no positives.
    """
    n_pos = int(labels.sum())
    if n_pos == 0:
        return math.nan
    order = torch.argsort(logits, descending=True, stable=True)
    scores, hits = logits[order], labels[order]
    tp = torch.cumsum(hits, 0)  # [M] true positives among the first k rows
    last = torch.ones_like(scores, dtype=torch.bool)  # last row of each run of equal scores
    last[:-1] = scores[1:] != scores[:-1]
    ends = torch.nonzero(last).squeeze(1)
    tp_at = tp[ends].double()
    precision = tp_at / (ends + 1).double()
    recall_step = torch.diff(tp_at, prepend=tp_at.new_zeros(1)) / n_pos
    return float((recall_step * precision).sum())


def normalized_entropy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean log loss over the entropy of the positive rate ``p``: ``-p ln p - (1-p) ln(1-p)``.

    Lower is better; 1 means no better than predicting ``p`` for every row. NaN when the cell
    holds one class only (the entropy is 0).
    """
    y = labels.to(torch.float64)
    p = float(y.mean())
    if p <= 0.0 or p >= 1.0:
        return math.nan
    loss = float(F.binary_cross_entropy_with_logits(logits.to(torch.float64), y))
    entropy = -(p * math.log(p) + (1.0 - p) * math.log1p(-p))
    return loss / entropy


def _dense_groups(groups: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Group ids renumbered ``0..G-1`` and ``G``."""
    uniq, inverse = torch.unique(groups, return_inverse=True)
    return inverse, int(uniq.numel())


def _gauc_parts(
    logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor
) -> tuple[float, int]:
    """``(GAUC, groups skipped)``: the row-weighted mean of the per-group AUCs."""
    from mssbench.metrics import grouped_auc

    g, n_groups = _dense_groups(groups)
    auc, n, n_pos = grouped_auc(logits, labels, g, n_groups)
    both = (n_pos > 0) & (n_pos < n)
    skipped = int((~both).sum())
    if not bool(both.any()):
        return math.nan, skipped
    weight = n[both].double()
    return float((auc[both] * weight).sum() / weight.sum()), skipped


def gauc(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> tuple[float, str]:
    """Group AUC: the mean of the per-group AUCs weighted by the groups' rows (impressions).

    Groups holding one class only have no AUC and are left out; the note beside the value
    (the record's ``reason``) counts them. NaN when no group holds both classes.
    """
    value, skipped = _gauc_parts(logits, labels, groups)
    n_groups = int(torch.unique(groups).numel())
    note = f"{skipped} of {n_groups} groups left out (one class only)" if skipped else ""
    return value, note


def _within_group_gains(
    key: torch.Tensor, labels: torch.Tensor, g: torch.Tensor, k: int
) -> torch.Tensor:
    """Per group, the discounted gain of the first ``k`` rows ordered by ``key``, decreasing.

    Rows with equal (group, key) share the mean of their labels (the expected gain under a
    random order of the tie), so the result does not depend on the order of the rows.
    """
    n_groups = int(g.max()) + 1 if g.numel() else 0
    order = torch.argsort(key, descending=True, stable=True)
    order = order[torch.argsort(g[order], stable=True)]  # by group, then key decreasing
    gs, ks, ys = g[order], key[order], labels[order].double()
    new_run = torch.ones_like(gs, dtype=torch.bool)
    new_run[1:] = (gs[1:] != gs[:-1]) | (ks[1:] != ks[:-1])
    run = torch.cumsum(new_run.long(), 0) - 1
    n_runs = int(run[-1]) + 1 if run.numel() else 0
    run_sum = torch.zeros(n_runs, dtype=torch.float64).index_add_(0, run, ys)
    run_len = torch.bincount(run, minlength=n_runs).double()
    gain = (run_sum / run_len)[run]
    sizes = torch.bincount(gs, minlength=n_groups)
    starts = torch.cumsum(sizes, 0) - sizes
    pos = torch.arange(gs.numel()) - starts[gs]  # 0-based position within the group
    discount = torch.where(pos < k, 1.0 / torch.log2(pos.double() + 2.0), 0.0)
    return torch.zeros(n_groups, dtype=torch.float64).index_add_(0, gs, gain * discount)


def ndcg_at(k: int):  # noqa: ANN201 - a metric function
    """The NDCG@``k`` metric: per group, DCG of the first ``k`` rows by score over the ideal DCG.

    Gains are the 0/1 labels, discounts ``1 / log2(position + 1)``; groups without a positive
    have no NDCG and are left out; the value is the unweighted mean over the other groups.
    NaN when no group holds a positive.
    """

    def ndcg(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> float:
        logits, labels = logits.cpu(), labels.cpu()
        g, _ = _dense_groups(groups.cpu())
        dcg = _within_group_gains(logits.double(), labels, g, k)
        ideal = _within_group_gains(labels.double(), labels, g, k)
        has_pos = ideal > 0
        if not bool(has_pos.any()):
            return math.nan
        return float((dcg[has_pos] / ideal[has_pos]).mean())

    ndcg.__name__ = f"ndcg_{k}"
    return ndcg


#: NDCG at the first 10 rows of each group.
ndcg_10 = ndcg_at(10)
