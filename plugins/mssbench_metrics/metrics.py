"""The metric functions: one cell's float64 logits and int64 0/1 labels in, a float out."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["average_precision", "normalized_entropy"]


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
