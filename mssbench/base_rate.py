"""The base-rate predictor, and whether a run learned more than it.

A model whose output biases start at the train split's base rates (``--bias-init base_rate``)
predicts that constant until its layers learn something. A run whose layers never do (dead
ReLUs, a collapsed gate) still stops early and can look converged: its validation curve is
flat. :func:`stalled` tells such a run from one that learned, from its validation curve and
the rows and positives its record keeps, so that pages can say so for any record.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from mssbench.config import STALL_MARGIN

__all__ = ["STALLED_WARNING", "STALL_RULE", "base_rate_logloss", "stalled"]

#: :func:`stalled`'s rule in words, for the run's warning and the pages.
STALL_RULE = (
    f"at the epoch kept no task's validation logloss is {STALL_MARGIN:.0%} below predicting "
    "the train base rate"
)
#: What ``mssbench run`` prints after a run that :func:`stalled`.
STALLED_WARNING = (
    f"Warning: this run predicts no better than the base rate: {STALL_RULE} (more steps or a "
    "lower --lr may help)"
)


def base_rate_logloss(counts: Mapping[str, Any], task: str) -> float | None:
    """Validation logloss of predicting ``task``'s train base rate for every row.

    Args:
        counts: Rows and positives per split (``record["dataset"]["counts"]``).
        task: A task with positives counted in both splits.

    Returns:
        ``-(q log p + (1 - q) log(1 - p))`` with ``p`` the train and ``q`` the validation
        positive rate; None where a split lacks the task or ``p`` is 0 or 1.
    """
    splits = counts.get("splits") or {}
    rates = []
    for split in ("train", "valid"):
        block = splits.get(split) or {}
        rows, positives = block.get("rows"), (block.get("positives") or {}).get(task)
        if not rows or positives is None:
            return None
        rates.append(positives / rows)
    p, q = rates
    if not 0.0 < p < 1.0:
        return None
    return -(q * math.log(p) + (1.0 - q) * math.log1p(-p))


def stalled(
    history: Sequence[Mapping[str, Any]], best_epoch: int | None, counts: Mapping[str, Any]
) -> bool | None:
    """Whether the kept epoch predicts no better than the base rates.

    True when, at ``best_epoch``, every counted task's validation logloss is at least
    ``1 - STALL_MARGIN`` times :func:`base_rate_logloss`; None where the history, the epoch
    or the counts do not say.
    """
    best = next((e for e in history if e.get("epoch") == best_epoch), None)
    if best is None:
        return None
    valid = best.get("valid") or {}
    tasks = list(((counts.get("splits") or {}).get("train") or {}).get("positives") or {})
    ratios = []
    for task in tasks:
        base = base_rate_logloss(counts, task)
        value = valid.get(f"logloss/{task}")
        if base is not None and value is not None and not math.isnan(value):
            ratios.append(value / base)
    if not ratios:
        return None
    return all(r >= 1.0 - STALL_MARGIN for r in ratios)
