"""Metrics: exact grouped AUC and log loss, per scenario, pooled and macro-averaged.

Typical use::

    from mssbench.metrics import evaluate, metrics_table, summary

    df = evaluate(logits, labels, scenario, schema)  # tidy pandas frame
    print(metrics_table(df))
    log(summary(df))  # {"auc/ctr": ..., "logloss/ctr": ..., "macro_auc/ctr": ...}
"""

from mssbench.metrics.core import (
    COLUMNS,
    MACRO,
    POOLED,
    conditional_logit,
    evaluate,
    grouped_auc,
    grouped_logloss,
)
from mssbench.metrics.report import metrics_table, summary

__all__ = [
    "COLUMNS",
    "MACRO",
    "POOLED",
    "conditional_logit",
    "evaluate",
    "grouped_auc",
    "grouped_logloss",
    "metrics_table",
    "summary",
]
