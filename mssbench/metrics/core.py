"""Grouped, exact metrics for multi-scenario / multi-task evaluation.

All functions are vectorised: there is no Python loop over rows or over groups, and every
tensor stays on the device of the inputs (results of :func:`evaluate` are moved to the CPU
once per task, at the end).

Conventions used throughout:

* ``N`` rows, ``G`` groups (``n_groups``), ``S`` scenarios, ``T`` schema tasks.
* A metric that is undefined (a group without rows, an AUC over a single class, scores that
  are NaN) is ``NaN`` -- never a made-up value such as 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from mssbench.nn import log1mexp
from mssbench.spec import DatasetSchema, MetricSpec

__all__ = [
    "COLUMNS",
    "MACRO",
    "POOLED",
    "conditional_logit",
    "evaluate",
    "grouped_auc",
    "grouped_logloss",
]

#: Name of the row that pools every scenario together.
POOLED = "pooled"
#: Name of the row that averages the per-scenario values.
MACRO = "macro"
#: Columns of the tidy frame returned by :func:`evaluate`, in order.
COLUMNS = ("scenario", "task", "metric", "value", "n", "n_pos", "reason")

_METRICS = ("auc", "logloss")
# Conditional probabilities are capped at 1 - 1e-7 (logloss clipping).
_LOG_MAX_P = math.log1p(-1e-7)
# Order-preserving maps from IEEE-754 bit patterns to signed integers: negative floats have
# the sign bit set and their magnitude bits must be reversed.
_FLIP32 = 0x7FFFFFFF
_FLIP64 = 0x7FFFFFFFFFFFFFFF


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_vector(name: str, t: object, n: int | None = None) -> torch.Tensor:
    """Return ``t`` if it is a 1-D tensor (of length ``n`` when given), else raise."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D tensor [N], got shape {list(t.shape)}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name}: expected {n} rows (like scores/logits), got {t.shape[0]}")
    return t


def _check_binary(name: str, labels: torch.Tensor) -> torch.Tensor:
    """Labels as an int64 tensor of 0/1; raise if any value is not exactly 0 or 1."""
    if labels.dtype == torch.bool:
        return labels.long()
    if labels.is_complex():
        raise ValueError(f"{name}: complex labels are not supported")
    if labels.numel() and not bool(((labels == 0) | (labels == 1)).all()):
        bad = labels[(labels != 0) & (labels != 1)][:5].tolist()
        raise ValueError(f"{name}: labels must be 0 or 1, found e.g. {bad}")
    return labels.long()


def _check_groups(name: str, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Groups as int64; raise unless the dtype is integral and every id is in range."""
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 0:
        raise ValueError(f"n_groups: expected a non-negative int, got {n_groups!r}")
    if groups.dtype == torch.bool or groups.is_floating_point() or groups.is_complex():
        raise ValueError(f"{name}: expected an integer tensor, got dtype {groups.dtype}")
    if groups.numel():
        lo, hi = int(groups.min()), int(groups.max())
        if lo < 0 or hi >= n_groups:
            raise ValueError(
                f"{name}: ids must lie in [0, {n_groups}), found values in [{lo}, {hi}]"
            )
    return groups.long()


def _as_float(name: str, t: torch.Tensor) -> torch.Tensor:
    """Scores as float32 or float64 without losing information."""
    if t.is_complex():
        raise ValueError(f"{name}: complex tensors are not supported")
    if t.dtype in (torch.float32, torch.float64):
        return t
    if t.dtype in (torch.float16, torch.bfloat16, torch.bool, torch.uint8, torch.int8):
        return t.float()  # exact
    return t.double()  # wider integers / other float types: exact up to 2**53


# --------------------------------------------------------------------------------------------
# Grouped AUC
# --------------------------------------------------------------------------------------------


def _score_rank32(scores: torch.Tensor) -> torch.Tensor:
    """An int64 key in ``[0, 2**32)`` per row that orders and ties exactly like ``scores``.

    float32 scores (and float64 scores that are exactly float32, such as upcast logits) map
    their bit pattern to an order-preserving integer: no sort needed. Other float64 scores get
    their dense rank from one sort of an order-preserving 64-bit key.

    Args:
        scores: ``[N]`` float32 or float64.

    Returns:
        ``[N]`` int64 key (a fresh tensor the caller may modify in place):
        ``key[i] < key[j]`` iff ``scores[i] < scores[j]``. NaN rows get some key; callers mask
        their groups.
    """
    if scores.dtype == torch.float64:
        as32 = scores.float()
        if bool((as32.double() == scores).all()):  # False as soon as there is a NaN
            scores = as32
    if scores.dtype == torch.float32:
        bits = (scores + 0.0).view(torch.int32)  # "+ 0.0" maps -0.0 to +0.0: they must tie
        # Negative floats (sign bit set) order backwards: flip their 31 magnitude bits. The
        # arithmetic shift gives -1 (all ones) for them and 0 otherwise. [N] int32.
        bits ^= (bits >> 31) & _FLIP32
        return bits.long().add_(2**31)
    bits = (scores + 0.0).view(torch.int64)
    bits ^= (bits >> 63) & _FLIP64  # signed int64, ordered like the floats
    sorted_key, perm = torch.sort(bits)
    dense = torch.zeros_like(sorted_key)  # dense rank in sorted order, [N]
    torch.cumsum(sorted_key[1:] != sorted_key[:-1], 0, out=dense[1:])
    return torch.empty_like(dense).index_put_((perm,), dense)  # back to row order


def grouped_auc(
    scores: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    n_groups: int,
    *,
    pooled: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact, tie-aware ROC AUC of each group (Mann-Whitney U with average ranks).

    Each row is packed into one int64 key ``group << 33 | score_rank << 1 | label`` and the
    keys are sorted once (float64 scores that are not exactly float32 need one more sort to
    rank them). Runs of equal (group, score) -- "tie blocks" -- share their average rank, so a
    tied positive/negative pair counts 1/2, exactly as in the pairwise definition. Doubled
    rank sums are integers and are accumulated exactly in int64 (so the result does not depend
    on the summation order and is deterministic on CUDA too), then U and the AUC are computed
    in float64. Cost: one or two O(N log N) sorts plus O(N) passes, all on the input's device.

    Args:
        scores: ``[N]`` real scores (logits or probabilities; any real dtype). Only their
            order matters.
        labels: ``[N]`` labels in {0, 1} (bool, integer or float).
        groups: ``[N]`` integer group ids in ``[0, n_groups)``.
        n_groups: Number of groups ``G`` (less than ``2**30``).
        pooled: Also the AUC of all rows together, as one more group ``G`` (cheaper than a
            second call with a single group).

    Returns:
        ``(auc, n, n_pos)``: float64 ``[G]`` AUC, int64 ``[G]`` row counts and int64 ``[G]``
        positive counts, on the device of ``scores`` (``[G + 1]`` each with ``pooled``).
        ``auc`` is NaN for a group with no rows, with only one class, or with a NaN score.

    Raises:
        ValueError: On shape, dtype or value mismatches (labels not 0/1, ids out of range).
    """
    scores = _as_float("scores", _check_vector("scores", scores).detach())
    n_rows = scores.shape[0]
    y = _check_binary("labels", _check_vector("labels", labels, n_rows))
    g = _check_groups("groups", _check_vector("groups", groups, n_rows), n_groups)
    if y.device != scores.device or g.device != scores.device:
        raise ValueError(
            "scores, labels and groups must be on one device, got "
            f"{scores.device}, {y.device}, {g.device}"
        )
    return _grouped_auc(scores, y, g, n_groups, pooled=pooled)


def _grouped_auc(
    scores: torch.Tensor, y: torch.Tensor, g: torch.Tensor, n_groups: int, pooled: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`grouped_auc` on validated inputs (float scores, int64 0/1 labels and ids).

    With ``pooled=True`` every row also belongs to an extra group ``n_groups`` (all rows),
    and the results have ``n_groups + 1`` entries. The rows are not copied for it: with few
    groups and a rare class the pooled U is counted by binary searches into the per-group
    sorted runs (:func:`_twice_pooled_u`); otherwise the sort key array holds each row twice.
    """
    n_rows = scores.shape[0]
    n_out = n_groups + int(pooled)  # G' groups in the result
    if n_out >= 2**30 or n_rows >= 2**31:
        raise ValueError(
            f"grouped_auc supports < 2**30 groups and < 2**31 rows, got "
            f"{n_groups} groups and {n_rows} rows"
        )
    dev = scores.device
    n = torch.bincount(g, minlength=n_out)  # [G']
    n_pos = torch.zeros(n_out, dtype=torch.int64, device=dev).index_add_(0, g, y)  # [G']
    if pooled:
        n[n_groups] = n_rows
        n_pos[n_groups] = n_pos[:n_groups].sum()
    auc = torch.full((n_out,), math.nan, dtype=torch.float64, device=dev)
    if n_rows == 0:
        return auc, n, n_pos

    # [N] int64 sort key: bits 62..33 group, 32..1 score rank, bit 0 label. Sorted, it orders
    # rows by group, then score, then label (negatives first within a tie).
    rank_y = _score_rank32(scores).mul_(2).add_(y)  # [N]
    twice_pooled_u = None
    if pooled and _pooled_by_search(n_rows, int(n_pos[n_groups]), n_groups):
        key = torch.sort(rank_y.add_(g, alpha=2**33)).values
        twice_pooled_u = _twice_pooled_u(key, n_pos[:n_groups], n[:n_groups] - n_pos[:n_groups])
        twice_rank_sum = _twice_rank_sums(key, n[:n_groups], n_pos[:n_groups])
    else:
        if pooled:
            # Every row also under group ``n_groups``: the key array holds each row twice.
            key = torch.empty(2 * n_rows, dtype=torch.int64, device=dev)
            torch.add(rank_y, g, alpha=2**33, out=key[:n_rows])
            torch.add(rank_y, n_groups * 2**33, out=key[n_rows:])
        else:
            key = rank_y.add_(g, alpha=2**33)
        del rank_y
        twice_rank_sum = _twice_rank_sums(torch.sort(key).values, n, n_pos)
    del key

    # Mann-Whitney U = rank sum - P (P + 1) / 2, doubled and exact in int64, then float64.
    ranked = n_pos[: len(twice_rank_sum)]
    twice_u = twice_rank_sum - ranked * (ranked + 1)
    if twice_pooled_u is not None:
        twice_u = torch.cat([twice_u, twice_pooled_u.view(1)])
    u_stat = 0.5 * twice_u.double()
    pos, neg = n_pos.double(), (n - n_pos).double()
    defined = (n_pos > 0) & (n_pos < n)
    auc = torch.where(defined, u_stat / (pos * neg).clamp_min(1.0), auc)

    nan_rows = torch.isnan(scores)
    if bool(nan_rows.any()):
        has_nan = torch.zeros(n_out, dtype=torch.int64, device=dev).index_add_(
            0, g, nan_rows.long()
        )
        if pooled:
            has_nan[n_groups] = 1
        auc = torch.where(has_nan > 0, math.nan, auc)
    return auc, n, n_pos


def _twice_rank_sums(key: torch.Tensor, n: torch.Tensor, n_pos: torch.Tensor) -> torch.Tensor:
    """Twice the sum of the in-group average ranks of each group's positives, exactly.

    Args:
        key: ``[K]`` sorted keys ``group << 33 | score_rank << 1 | label``.
        n: ``[G]`` rows per group (every group id in ``key`` is below ``G``).
        n_pos: ``[G]`` positives per group.

    Returns:
        ``[G]`` int64.
    """
    # Runs of equal keys, i.e. equal (group, score, label), [R] each. A tie block is a single
    # run, or a run of negatives directly followed by a run of positives of equal
    # (group, score). Intermediate [R] buffers are reused in place: at 1e7 rows allocating a
    # fresh one costs more than the arithmetic.
    run_key, run_len = torch.unique_consecutive(key, return_counts=True)
    run_group = torch.bitwise_right_shift(run_key, 33)
    # Negatives tied with a run of positives: the previous run if its key is one less (same
    # (group, score), label 0). Junk for runs of negatives, which are multiplied by 0 below.
    tied_neg = torch.zeros_like(run_len)
    torch.sub(run_key[1:], run_key[:-1], out=tied_neg[1:])
    tied_neg[1:].eq_(1).mul_(run_len[:-1])
    run_pos = run_key.bitwise_and_(1)  # 1 for a run of positives (reuses run_key)

    # Twice the average 1-based rank of the tie block of a run, counted from the first sorted
    # row (not from the group's first row: fixed per group below). The block covers positions
    # [start - tied_neg, start + run_len) with start = the run's first position, so
    # r_first + r_last = 2 * (start - tied_neg) + tied_neg + run_len + 1, an integer. Summed
    # over the run's positives: times run_len * run_pos.
    contrib = torch.cumsum(run_len, 0).sub_(run_len).mul_(2)  # 2 * start
    contrib.sub_(tied_neg).add_(run_len).add_(1).mul_(run_len).mul_(run_pos)
    del tied_neg, run_pos
    # Rank sums are accumulated exactly in int64 (doubled ranks are integers; the sum stays
    # below 8 * N**2, so no overflow below ~1e9 rows), then shifted to in-group ranks.
    twice = torch.zeros(len(n), dtype=torch.int64, device=key.device).index_add_(
        0, run_group, contrib
    )  # [G]
    group_start = torch.cumsum(n, 0) - n  # [G] sorted position of each group's first row
    return twice - 2 * group_start * n_pos


#: The pooled AUC is counted by binary searches (instead of sorting every row a second time)
#: while (rows of the rarer class) x (groups) stays below this fraction of the rows, and the
#: groups are at most ``_SEARCH_MAX_GROUPS`` (one search pass per group).
_SEARCH_FRACTION = 0.5
_SEARCH_MAX_GROUPS = 64


def _pooled_by_search(n_rows: int, n_pos: int, n_groups: int) -> bool:
    """Whether :func:`_twice_pooled_u` is cheaper than a second sort of every row."""
    rarer = min(n_pos, n_rows - n_pos)
    return n_groups <= _SEARCH_MAX_GROUPS and rarer * n_groups <= _SEARCH_FRACTION * n_rows


def _twice_pooled_u(key: torch.Tensor, n_pos: torch.Tensor, n_neg: torch.Tensor) -> torch.Tensor:
    """Twice the Mann-Whitney U of all rows together, from the per-group sorted keys.

    Within each group the sorted keys list the scores in order, so each group's negatives
    (and positives) form a sorted run. Each row of the rarer class counts the rows of the
    other class below it (and half of those tied with it) by two binary searches into every
    group's run: ``O(min(P, N - P) * G * log N)`` instead of a second sort of all ``N`` rows.

    Args:
        key: ``[N]`` sorted keys ``group << 33 | score_rank << 1 | label``.
        n_pos: ``[G]`` positives per group.
        n_neg: ``[G]`` negatives per group.

    Returns:
        int64 scalar: ``2 * U`` (pairs with the positive above count 2, ties 1).
    """
    is_pos = (key & 1).bool()  # [N]
    score = torch.bitwise_right_shift(key, 1).bitwise_and_(0xFFFFFFFF)  # [N] score rank
    pos, neg = score[is_pos], score[~is_pos]  # each sorted within its groups' runs
    n_pos_total, n_neg_total = len(pos), len(neg)
    # Query with the rarer class; count the other class in each group's run.
    query_pos = n_pos_total <= n_neg_total
    queries, runs = (pos, neg) if query_pos else (neg, pos)
    counts = (n_neg if query_pos else n_pos).tolist()
    twice = torch.zeros((), dtype=torch.int64, device=key.device)
    start = 0
    for count in counts:  # one pass per group (G is small here, see _pooled_by_search)
        run = runs[start : start + count]
        start += count
        if count:
            below = torch.searchsorted(run, queries)
            at_or_below = torch.searchsorted(run, queries, right=True)
            twice += below.sum() + at_or_below.sum()
    if query_pos:
        return twice
    # Pairs counted from the negatives' side: 2 * U = 2 * P * N' - (their doubled count).
    return 2 * n_pos_total * n_neg_total - twice


# --------------------------------------------------------------------------------------------
# Log loss and conditional logits
# --------------------------------------------------------------------------------------------


def _bce_with_logits64(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row binary cross-entropy in float64 ([N], [N] int64 0/1 -> [N]).

    ``softplus(-z)`` for positives and ``softplus(z)`` for negatives, with
    ``softplus(x) = max(x, 0) + log1p(exp(-|x|))``: exact, stable for any magnitude, and
    correct for infinite logits (no ``0 * inf``).
    """
    x = logits.to(torch.float64, copy=True)
    x.mul_(torch.sub(1, y, alpha=2))  # -z for positives, z for negatives
    loss = x.abs().neg_().exp_().log1p_()
    return loss.add_(x.clamp_min_(0.0))


def grouped_logloss(
    logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, n_groups: int
) -> torch.Tensor:
    """Mean binary cross-entropy with logits of each group, in float64.

    Args:
        logits: ``[N]`` logits (any real dtype; computed in float64).
        labels: ``[N]`` labels in {0, 1}.
        groups: ``[N]`` integer group ids in ``[0, n_groups)``.
        n_groups: Number of groups ``G``.

    Returns:
        float64 ``[G]`` mean log loss, on the device of ``logits``; NaN for an empty group or a
        group containing a NaN logit, ``inf`` if an infinite logit has the wrong sign.

    Raises:
        ValueError: On shape, dtype or value mismatches.
    """
    logits = _as_float("logits", _check_vector("logits", logits).detach())
    n_rows = logits.shape[0]
    y = _check_binary("labels", _check_vector("labels", labels, n_rows))
    g = _check_groups("groups", _check_vector("groups", groups, n_rows), n_groups)
    if y.device != logits.device or g.device != logits.device:
        raise ValueError("logits, labels and groups must be on one device")
    return _grouped_logloss(logits, y, g, n_groups)


def _grouped_logloss(
    logits: torch.Tensor, y: torch.Tensor, g: torch.Tensor, n_groups: int, pooled: bool = False
) -> torch.Tensor:
    """:func:`grouped_logloss` on validated inputs (``pooled``: as in :func:`_grouped_auc`)."""
    n_out = n_groups + int(pooled)
    loss = _bce_with_logits64(logits, y)  # [N]
    total = torch.zeros(n_out, dtype=torch.float64, device=logits.device).index_add_(0, g, loss)
    n = torch.bincount(g, minlength=n_out)  # [G']
    if pooled:
        total[n_groups] = total[:n_groups].sum()
        n[n_groups] = logits.shape[0]
    return torch.where(n > 0, total / n.clamp_min(1).double(), math.nan)


def _log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``logsigmoid(x) = min(x, 0) - log1p(exp(-|x|))``, exact and stable for any ``x``.

    Same values as ``torch.nn.functional.logsigmoid``, whose CPU kernel has a fixed cost of
    several milliseconds per call in this build (it dominated evaluate() on small inputs).
    """
    return x.clamp_max(0.0) - torch.log1p(torch.exp(-x.abs()))  # out of place: differentiable


def conditional_logit(child_logit: torch.Tensor, parent_logit: torch.Tensor) -> torch.Tensor:
    """Logit of ``P(child) / P(parent)``, computed in log space.

    ``log p = logsigmoid(child) - logsigmoid(parent)`` is capped at ``log(1 - 1e-7)``, the
    usual probability clipping of logloss, so the logit stays within about +-16 and one
    row cannot dominate the logloss. A child logit above the parent logit breaks
    ``P(child) <= P(parent)`` and is capped the same way. The result is
    ``log p - log(1 - p)`` with ``log(1 - p)`` from :func:`mssbench.nn.log1mexp`.

    For an ESMM head, whose child (CTCVR) probability is ``sigmoid(a) * sigmoid(b)`` with parent
    (CTR) logit ``a``, this returns ``b`` (up to rounding).

    Args:
        child_logit: Logits of the child task (``ctcvr``), any shape.
        parent_logit: Logits of the parent task (``ctr``), broadcastable to ``child_logit``.

    Returns:
        Conditional logits in the promoted floating dtype of the inputs (at least float32);
        within about +-16.
    """
    dtype = torch.promote_types(child_logit.dtype, parent_logit.dtype)
    if dtype != torch.float64:
        dtype = torch.float32  # half precision would cap the logit at ~10; ints are promoted
    child = child_logit.to(dtype)
    parent = parent_logit.to(dtype)
    log_p = (_log_sigmoid(child) - _log_sigmoid(parent)).clamp_max(_LOG_MAX_P)
    return log_p - log1mexp(log_p)


# --------------------------------------------------------------------------------------------
# evaluate()
# --------------------------------------------------------------------------------------------


def _check_eval_inputs(
    logits: torch.Tensor, labels: torch.Tensor, scenario: torch.Tensor, schema: DatasetSchema
) -> None:
    """Raise ``ValueError`` unless the inputs of :func:`evaluate` match the schema."""
    if not isinstance(schema, DatasetSchema):
        raise ValueError(f"schema: expected a DatasetSchema, got {type(schema).__name__}")
    t = schema.n_tasks
    for name, x in (("logits", logits), ("labels", labels), ("scenario", scenario)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if logits.dim() != 2 or logits.shape[1] != t:
        raise ValueError(
            f"logits: expected shape [N, {t}] (tasks {list(schema.task_names)}), "
            f"got {list(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise ValueError(f"logits: expected a floating-point tensor, got dtype {logits.dtype}")
    n = logits.shape[0]
    if labels.dim() != 2 or tuple(labels.shape) != (n, t):
        raise ValueError(f"labels: expected shape [{n}, {t}] like logits, got {list(labels.shape)}")
    if scenario.dim() != 1 or scenario.shape[0] != n:
        raise ValueError(f"scenario: expected shape [{n}], got {list(scenario.shape)}")
    if labels.device != logits.device or scenario.device != logits.device:
        raise ValueError(
            "logits, labels and scenario must be on one device, got "
            f"{logits.device}, {labels.device}, {scenario.device}"
        )
    names = list(schema.task_names) + [r.conditional for r in schema.relations]
    if len(set(names)) != len(names):
        raise ValueError(f"schema: conditional task names clash with task names: {names}")
    clash = {POOLED, MACRO} & set(schema.scenarios)
    if clash:
        raise ValueError(f"schema: scenario names {sorted(clash)} are reserved for summary rows")


def _check_row_groups(groups: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
    """The group ids of :func:`evaluate` as int64 ``[N]`` on the logits' device, or None."""
    if groups is None:
        return None
    if not isinstance(groups, torch.Tensor):
        raise ValueError(f"groups: expected a torch.Tensor, got {type(groups).__name__}")
    n = logits.shape[0]
    if groups.dim() != 1 or groups.shape[0] != n:
        raise ValueError(f"groups: expected shape [{n}], got {list(groups.shape)}")
    if groups.dtype == torch.bool or groups.is_floating_point() or groups.is_complex():
        raise ValueError(f"groups: expected an integer tensor, got dtype {groups.dtype}")
    return groups.to(logits.device, torch.int64)


def _cell_reason(metric: str, n: int, n_pos: int, n_nan: int, both_classes: bool) -> str:
    """Why a per-scenario (or pooled) cell is undefined; ``""`` if it is defined."""
    if n == 0:
        return "no rows"
    if n_nan:
        what = "logits" if metric == "logloss" else "scores"
        return f"NaN {what} in {n_nan} of {n} rows"
    if both_classes:
        if n_pos == 0:
            return f"only negatives (n_pos=0 of {n})"
        if n_pos == n:
            return f"only positives ({n} rows)"
    return ""


def call_metric(
    spec: MetricSpec,
    logits: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor | None = None,
) -> tuple[float, str]:
    """``(value, note)`` of ``spec`` on one cell, given copies of float64 logits and labels.

    A grouped metric also gets the cell's ``groups`` (row index // 5 where none are given: the
    checks' small cells). ``compute`` returns a number, or ``(number, note)`` where a defined
    value needs a word (``"3 of 40 groups left out: one class only"``); the note is ``""``
    otherwise.

    Raises:
        ValueError: If ``compute`` returned something other than a number or such a pair.
    """
    args = [logits.to(torch.float64, copy=True), labels.clone()]
    if spec.grouped:
        if groups is None:
            groups = torch.arange(len(labels), device=labels.device) // 5
        args.append(groups.clone())
    raw = spec.compute(*args)
    note = ""
    if isinstance(raw, tuple) and len(raw) == 2 and isinstance(raw[1], str):
        raw, note = raw
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"metric {spec.name!r} returned {raw!r}, expected a number") from None
    return value, note


def _plugin_metric_cells(
    spec: MetricSpec,
    score: torch.Tensor,
    y: torch.Tensor,
    groups: torch.Tensor,
    counts: torch.Tensor,
    row_groups: torch.Tensor | None = None,
) -> list[tuple[float, str]]:
    """``(value, reason)`` of a plugin metric for each scenario, then for all rows pooled.

    ``counts`` is ``[3, S + 1]``: rows, positives and NaN scores of each cell, as the built-in
    metrics counted them. The metric sees each cell's rows as float64 logits and int64 labels
    (copies, so that it cannot alter the evaluation). An undefined cell is NaN with the
    reason; so is a cell where the metric raised or returned something other than a number,
    with what happened. A grouped metric also gets the cell's ``row_groups`` (search page,
    user); without them its cells are NaN.
    """
    n_scen = counts.shape[1] - 1
    if spec.grouped and row_groups is None:
        reason = f"metric {spec.name!r} needs a group column; the dataset declares none"
        return [(math.nan, reason)] * (n_scen + 1)
    order = torch.argsort(groups, stable=True)
    sizes = [int(c) for c in counts[0, :n_scen]]
    cells = list(torch.split(order, sizes)) + [None]  # None: every row (pooled)
    out: list[tuple[float, str]] = []
    for gi, rows in enumerate(cells):
        n, n_pos, n_nan = (int(c) for c in counts[:, gi])
        reason = _cell_reason(spec.name, n, n_pos, n_nan, spec.needs_both_classes)
        if reason:
            out.append((math.nan, reason))
            continue
        s = score if rows is None else score[rows]
        t = y if rows is None else y[rows]
        g = None if row_groups is None or rows is None else row_groups[rows]
        try:
            value, note = call_metric(spec, s, t, row_groups if rows is None else g)
        except Exception as exc:  # noqa: BLE001 - a plugin bug: reported in the cell
            out.append((math.nan, f"metric {spec.name!r} raised {type(exc).__name__}: {exc}"))
            continue
        if math.isnan(value):
            note = note or "undefined (the metric returned NaN)"
        out.append((value, note))
    return out


def evaluate(
    logits: torch.Tensor,
    labels: torch.Tensor,
    scenario: torch.Tensor,
    schema: DatasetSchema,
    metrics: Sequence[MetricSpec] = (),
    groups: torch.Tensor | None = None,
) -> pd.DataFrame:
    """AUC and log loss of every task in every scenario, pooled, and macro-averaged.

    Tasks are the schema tasks followed by one conditional task per
    :class:`~mssbench.spec.Implies` relation: it is evaluated on the rows whose parent label is
    1, labelled by the child label and scored by
    ``conditional_logit(child_logit, parent_logit)``. (Rows where the relation is broken --
    child 1, parent 0 -- are therefore not part of it.)

    The ``pooled`` row treats all rows as one scenario. The ``macro`` row is the unweighted
    mean over the scenarios where the cell is defined; its ``n`` is the number of scenarios
    averaged and its ``n_pos`` is ``-1`` (not applicable).

    Args:
        logits: ``[N, T]`` floating logits in schema task order.
        labels: ``[N, T]`` labels in {0, 1}.
        scenario: ``[N]`` integer scenario ids into ``schema.scenarios``.
        schema: The dataset schema.
        metrics: Plugin metrics (:class:`~mssbench.spec.MetricSpec`) computed for every cell
            too, after the built-in ones. A cell where one raises is NaN and its reason says
            what was raised.
        groups: Optional ``[N]`` integer group ids (search page, user) that grouped plugin
            metrics rank within (:attr:`~mssbench.spec.Split.groups`).

    Returns:
        A tidy frame with columns ``scenario, task, metric, value, n, n_pos, reason``: one row
        per (scenario, task, metric), ordered by scenario (schema order, then ``pooled``,
        ``macro``), task (schema order, then conditional tasks) and metric (``auc``,
        ``logloss``, then ``metrics`` in the order given). ``value`` is NaN where undefined
        and ``reason`` then says why (``"no rows"``, ``"only negatives (n_pos=0 of 12)"``,
        ...); ``reason`` is ``""`` for a defined cell, except for a macro cell that left out
        some scenarios.

    Raises:
        ValueError: If shapes, dtypes, devices or values do not match the schema.
    """
    _check_eval_inputs(logits, labels, scenario, schema)
    metrics = _checked_metrics(metrics)
    metric_names = _METRICS + tuple(m.name for m in metrics)
    logits = _as_float("logits", logits.detach())
    n_scen = schema.n_scenarios
    y_all = _check_binary("labels", labels)  # [N, T] int64
    scen = _check_groups("scenario", scenario, n_scen)  # [N] int64
    row_groups = _check_row_groups(groups, logits)
    columns = _eval_columns(logits, y_all, scen, schema, row_groups)
    stats, plugin_cells = _column_stats(columns, metrics, n_scen)
    names = list(schema.scenarios) + [POOLED]
    records, per_scen = _scenario_rows(names, columns, stats, plugin_cells, metric_names)
    records += _macro_rows([c.task for c in columns], metric_names, per_scen)
    return _tidy(records)


_Row = tuple[str, str, str, float, int, int, str]


@dataclass(frozen=True)
class _Column:
    """One evaluated task: its scores, labels, scenario ids and row groups (rows in order)."""

    task: str
    score: torch.Tensor
    y: torch.Tensor
    scen: torch.Tensor
    row_groups: torch.Tensor | None


def _checked_metrics(metrics: Sequence[MetricSpec]) -> tuple[MetricSpec, ...]:
    """The plugin metrics, each validated, no name twice."""
    metrics = tuple(metrics)
    for spec in metrics:
        if not isinstance(spec, MetricSpec):
            raise ValueError(f"metrics: expected MetricSpec objects, got {type(spec).__name__}")
        spec.validate()
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise ValueError(f"metrics: a metric is named twice in {names}")
    return metrics


def _eval_columns(
    logits: torch.Tensor,
    y_all: torch.Tensor,
    scen: torch.Tensor,
    schema: DatasetSchema,
    row_groups: torch.Tensor | None,
) -> list[_Column]:
    """The schema's tasks, then one conditional task per relation (on parent-positive rows)."""
    columns = [
        _Column(t, logits[:, j], y_all[:, j], scen, row_groups)
        for j, t in enumerate(schema.task_names)
    ]
    for rel in schema.relations:
        c, p = schema.task_index(rel.child), schema.task_index(rel.parent)
        rows = y_all[:, p] == 1  # [N] parent positives
        score = conditional_logit(logits[rows, c].double(), logits[rows, p].double())  # [M]
        groups = None if row_groups is None else row_groups[rows]
        columns.append(_Column(rel.conditional, score, y_all[rows, c], scen[rows], groups))
    return columns


def _column_stats(
    columns: Sequence[_Column], metrics: Sequence[MetricSpec], n_scen: int
) -> tuple[list[torch.Tensor], list[dict[str, list[tuple[float, str]]]]]:
    """Per task, the built-in statistics and the plugin metrics' cells.

    The statistics are ``[5, S + 1]`` float64: auc, logloss, n, n_pos and the count of NaN
    scores; the last column is "pooled", computed as one more group.
    """
    stats: list[torch.Tensor] = []
    plugin_cells: list[dict[str, list[tuple[float, str]]]] = []  # per task: name -> per group
    for col in columns:
        score, y, groups = col.score.contiguous(), col.y.contiguous(), col.scen  # [M] each
        auc, n, n_pos = _grouped_auc(score, y, groups, n_scen, pooled=True)
        ll = _grouped_logloss(score, y, groups, n_scen, pooled=True)
        nan = torch.zeros(n_scen + 1, dtype=torch.int64, device=score.device).index_add_(
            0, groups, torch.isnan(score).long()
        )
        nan[n_scen] = nan[:n_scen].sum()
        stats.append(torch.stack([auc, ll, n.double(), n_pos.double(), nan.double()]).cpu())
        plugin_cells.append(
            {
                m.name: _plugin_metric_cells(m, score, y, groups, stats[-1][2:], col.row_groups)
                for m in metrics
            }
        )
    return stats, plugin_cells


def _scenario_rows(
    names: Sequence[str],
    columns: Sequence[_Column],
    stats: Sequence[torch.Tensor],
    plugin_cells: Sequence[Mapping[str, list[tuple[float, str]]]],
    metric_names: Sequence[str],
) -> tuple[list[_Row], dict[tuple[str, str], list[tuple[float, str]]]]:
    """The rows of every scenario and ``pooled``; and per (task, metric) the scenarios' values."""
    n_scen = len(names) - 1
    records: list[_Row] = []
    per_scen: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for gi, scen_name in enumerate(names):
        for col, st, extra in zip(columns, stats, plugin_cells, strict=True):
            n, n_pos, n_nan = int(st[2, gi]), int(st[3, gi]), int(st[4, gi])
            for mi, metric in enumerate(metric_names):
                if mi < len(_METRICS):
                    value = float(st[mi, gi])
                    reason = ""
                    if math.isnan(value):  # "undefined" is a guard: the rules cover every case
                        both = metric == "auc"
                        reason = _cell_reason(metric, n, n_pos, n_nan, both) or "undefined"
                else:
                    value, reason = extra[metric][gi]
                records.append((scen_name, col.task, metric, value, n, n_pos, reason))
                if gi < n_scen:
                    per_scen.setdefault((col.task, metric), []).append((value, scen_name))
    return records, per_scen


def _macro_rows(
    tasks: Sequence[str],
    metric_names: Sequence[str],
    per_scen: Mapping[tuple[str, str], list[tuple[float, str]]],
) -> list[_Row]:
    """The ``macro`` rows: each cell's unweighted mean over the scenarios where it is defined."""
    records: list[_Row] = []
    for task in tasks:
        for metric in metric_names:
            cells = per_scen[(task, metric)]
            defined = [v for v, _ in cells if not math.isnan(v)]
            missing = [s for v, s in cells if math.isnan(v)]
            if not defined:
                value, reason = math.nan, "undefined in every scenario"
            else:
                value = math.fsum(defined) / len(defined)
                reason = ""
                if missing:
                    reason = (
                        f"mean over {len(defined)} of {len(cells)} scenarios "
                        f"(undefined: {', '.join(missing)})"
                    )
            records.append((MACRO, task, metric, value, len(defined), -1, reason))
    return records


def _tidy(records: Sequence[_Row]) -> pd.DataFrame:
    """The evaluation's rows as the tidy frame of :data:`COLUMNS`."""
    cols = list(zip(*records, strict=True))  # one tuple per column
    return pd.DataFrame(
        {
            "scenario": list(cols[0]),
            "task": list(cols[1]),
            "metric": list(cols[2]),
            "value": np.asarray(cols[3], dtype=np.float64),
            "n": np.asarray(cols[4], dtype=np.int64),
            "n_pos": np.asarray(cols[5], dtype=np.int64),
            "reason": list(cols[6]),
        },
        columns=list(COLUMNS),
    )
