"""AESM²'s loss weight per task (``ModelSpec.task_weights``); no torch import."""

from __future__ import annotations

import math
from typing import Any, Mapping

from mssbench.spec import DatasetSchema

#: Loss weight of the click task of a click -> purchase pair (``lambda_ctr``; CTCVR gets 1).
PUBLISHED_PARENT_WEIGHT = 0.1


def aesm_task_weights(schema: DatasetSchema, params: Mapping[str, Any]) -> list[float]:
    """One loss weight per task: ``params["task_weights"]``, or the published rule if empty.

    The published rule: ``0.1`` on the parent (click) task of each click -> purchase relation
    of the schema (``lambda_ctr``), ``1`` on every other task (AliExpress: CTR 0.1, CTCVR 1).

    Raises:
        ValueError: The given weights are not one finite number >= 0 per task.
    """
    given = params["task_weights"]
    T = schema.n_tasks
    if not given:
        weights = [1.0] * T
        for rel in schema.relations:
            weights[schema.task_index(rel.parent)] = PUBLISHED_PARENT_WEIGHT
        return weights
    if len(given) != T:
        raise ValueError(
            f"task_weights has {len(given)} entries but the dataset has {T} tasks "
            f"({', '.join(schema.task_names)}); pass one weight per task, or [] for the "
            f"published weights"
        )
    try:
        weights = [float(w) for w in given]
    except (TypeError, ValueError):
        raise ValueError(f"task_weights must be numbers, got {list(given)!r}") from None
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"task_weights must be finite and >= 0, got {weights}")
    return weights
