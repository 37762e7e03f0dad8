"""Formatting of :func:`mssbench.metrics.evaluate` results: a terminal table and a flat dict."""

from __future__ import annotations

import math
from typing import Any, Iterable

import pandas as pd
from tabulate import tabulate

from mssbench.metrics.core import COLUMNS, MACRO, POOLED
from mssbench.metrics.intervals import CI_HIGH, CI_LOW

__all__ = ["metrics_table", "summary", "summary_of_cells"]

_HEADERS = {"auc": "AUC", "logloss": "logloss"}
_METRIC_ORDER = ("auc", "logloss")
#: The test-set interval ends: one method for every cell, said once below the table.
INTERVAL_METRICS = (CI_LOW, CI_HIGH)


def _reason_lines(df: pd.DataFrame) -> list[str]:
    """One line per cell with a reason; the interval cells' shared method is said once."""
    lines: list[str] = []
    interval_notes: dict[str, int] = {}  # the method of the intervals -> cells it applies to
    for r in df.itertuples(index=False):
        if not r.reason:
            continue
        undefined = math.isnan(float(r.value))
        if r.metric in INTERVAL_METRICS and not undefined:
            interval_notes[r.reason] = interval_notes.get(r.reason, 0) + 1
            continue
        kind = "n/a" if undefined else "note"
        lines.append(f"{kind}: scenario '{r.scenario}', task '{r.task}' {r.metric}: {r.reason}")
    names = ", ".join(INTERVAL_METRICS)
    lines += [f"note: {names} ({n} cells): {why}" for why, n in interval_notes.items()]
    return lines


def _check_frame(df: pd.DataFrame) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame from evaluate(), got {type(df).__name__}")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"metrics frame lacks columns {missing} (expected {list(COLUMNS)})")


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"


def metrics_table(df: pd.DataFrame, tablefmt: str = "github") -> str:
    """Render an :func:`~mssbench.metrics.evaluate` frame as a table for a terminal.

    One row per scenario (in the frame's order: scenarios, ``pooled``, ``macro``). Columns:
    ``<task> AUC`` and ``<task> logloss`` for each task, ``rows`` (rows of the scenario) and
    ``<task> pos`` (positives of each task). A task evaluated on fewer rows than the scenario
    has (a conditional task, on parent-positive rows only) shows ``positives/rows``. The macro
    row leaves the count columns empty. Values have 4 decimals; undefined ones read ``n/a``.

    Below the table comes one line per undefined cell with its reason, e.g.
    ``n/a: scenario 'nl', task 'cvr' auc: only negatives (n_pos=0 of 12)``, and ``note:`` lines
    for defined cells that carry a remark (a macro cell averaged over only some scenarios, the
    method of an interval), one line per remark shared by several cells.

    Args:
        df: The frame returned by :func:`~mssbench.metrics.evaluate`.
        tablefmt: Any ``tabulate`` table format (``"github"``, ``"plain"``, ``"latex"`` ...).

    Returns:
        The table and the reason lines, joined by newlines.

    Raises:
        ValueError: If ``df`` lacks the columns of an evaluate() frame.
    """
    _check_frame(df)
    scenarios = list(pd.unique(df["scenario"]))
    tasks = list(pd.unique(df["task"]))
    present = set(df["metric"])
    metrics = [m for m in _METRIC_ORDER if m in present]
    metrics += [m for m in pd.unique(df["metric"]) if m not in metrics]  # plugin metrics
    cells = {
        (r.scenario, r.task, r.metric): r for r in df.itertuples(index=False)
    }  # (scenario, task, metric) -> row

    headers = ["scenario"]
    for task in tasks:
        headers += [f"{task} {_HEADERS.get(m, m)}" for m in metrics]
    headers += ["rows"] + [f"{task} pos" for task in tasks]

    table = []
    fraction_shown = False
    for scen in scenarios:
        line = [str(scen)]
        counts: dict[str, tuple[int, int]] = {}  # task -> (n, n_pos)
        for task in tasks:
            for m in metrics:
                row = cells.get((scen, task, m))
                line.append("" if row is None else _fmt(float(row.value)))
                if row is not None and task not in counts:
                    counts[task] = (int(row.n), int(row.n_pos))
        if scen == MACRO or not counts:
            line += [""] * (1 + len(tasks))
        else:
            rows = next(iter(counts.values()))[0]  # schema tasks come first: all rows
            line.append(str(rows))
            for task in tasks:
                if task not in counts:
                    line.append("")
                    continue
                n, n_pos = counts[task]
                fraction_shown |= n != rows
                line.append(str(n_pos) if n == rows else f"{n_pos}/{n}")
        table.append(line)

    text = tabulate(
        table,
        headers=headers,
        tablefmt=tablefmt,
        disable_numparse=True,
        colalign=("left",) + ("right",) * (len(headers) - 1),
    )
    notes = _reason_lines(df)
    if fraction_shown:
        notes.append(
            "k/m in a 'pos' column: k positives among the m rows evaluated "
            "(a conditional task uses only the rows where its parent label is 1)"
        )
    return "\n".join([text, *notes])


def summary(df: pd.DataFrame) -> dict[str, float]:
    """The headline numbers of an :func:`~mssbench.metrics.evaluate` frame as a flat dict.

    Keys, for every task in the frame (conditional tasks included): ``auc/<task>`` and
    ``logloss/<task>`` (pooled over all scenarios), then ``macro_auc/<task>`` (mean of the
    per-scenario AUCs where defined), then for each plugin metric ``m`` in the frame
    ``m/<task>`` (pooled) and ``macro_m/<task>``. Values are Python floats, NaN where
    undefined.

    Args:
        df: The frame returned by :func:`~mssbench.metrics.evaluate`.

    Returns:
        ``{"auc/ctr": ..., ..., "logloss/ctr": ..., ..., "macro_auc/ctr": ..., ...}``.

    Raises:
        ValueError: If ``df`` lacks the columns of an evaluate() frame.
    """
    _check_frame(df)
    return summary_of_cells(
        (r.scenario, r.task, r.metric, r.value) for r in df.itertuples(index=False)
    )


def summary_of_cells(cells: Iterable[tuple[str, str, str, Any]]) -> dict[str, float]:
    """:func:`summary` of ``(scenario, task, metric, value)`` cells (None or NaN: undefined).

    The one definition of the summary: a run record's ``test.summary`` is checked against it.
    The test-set interval ends (:mod:`mssbench.metrics.intervals`) stay in the cells only.
    """
    values: dict[tuple[str, str, str], float] = {}
    tasks: dict[str, None] = {}
    metrics: dict[str, None] = {}
    for scenario, task, metric, value in cells:
        values[(scenario, task, metric)] = math.nan if value is None else float(value)
        tasks.setdefault(task)
        metrics.setdefault(metric)
    out: dict[str, float] = {}
    keys = [("auc", POOLED, "auc"), ("logloss", POOLED, "logloss"), ("macro_auc", MACRO, "auc")]
    for metric in metrics:
        if metric in (CI_LOW, CI_HIGH):  # interval ends: in the cells, not the headline
            continue
        if metric not in _METRIC_ORDER:
            keys += [(metric, POOLED, metric), (f"macro_{metric}", MACRO, metric)]
    for prefix, scen, metric in keys:
        for task in tasks:
            out[f"{prefix}/{task}"] = values.get((scen, task, metric), math.nan)
    return out
