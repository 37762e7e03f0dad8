"""Reading run records back: ``load_records`` and the tidy ``load_results`` DataFrame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from mssbench.errors import DataError
from mssbench.records import RECORD_SCHEMA_VERSION

#: Keys every finished record must hold.
REQUIRED_KEYS = (
    "record_version",
    "status",
    "run_hash",
    "model",
    "dataset",
    "protocol",
    "config",
    "environment",
    "training",
    "test",
)

RESULT_COLUMNS = [
    "run_hash",
    "path",
    "model",
    "dataset",
    "protocol_id",
    "seed",
    "scenario",
    "task",
    "metric",
    "value",
    "n",
    "n_pos",
    "reason",
    "n_params",
    "train_samples_per_s",
    "best_epoch",
    "device",
]


def validate_record(record: Any, source: str = "<record>") -> dict[str, Any]:
    """Check that ``record`` is a finished run record; :class:`DataError` naming what is wrong."""
    if not isinstance(record, dict):
        raise DataError(f"{source}: a run record must be a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise DataError(f"{source}: not a run record, missing key(s) {', '.join(missing)}")
    if record["record_version"] != RECORD_SCHEMA_VERSION:
        raise DataError(
            f"{source}: record_version {record['record_version']!r} is not supported "
            f"(expected {RECORD_SCHEMA_VERSION})"
        )
    if record["status"] != "finished":
        raise DataError(f"{source}: status is {record['status']!r}, not 'finished'")
    metrics = record["test"].get("metrics") if isinstance(record["test"], dict) else None
    if not isinstance(metrics, list) or not metrics:
        raise DataError(f"{source}: test.metrics must be a non-empty list")
    for i, row in enumerate(metrics):
        for key in ("scenario", "task", "metric", "value"):
            if not isinstance(row, dict) or key not in row:
                raise DataError(f"{source}: test.metrics[{i}] lacks {key!r}")
    if not isinstance(record["protocol"], dict) or "id" not in record["protocol"]:
        raise DataError(f"{source}: protocol.id is missing")
    return record


def load_records(
    directory: str | Path, strict: bool = False
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Read every ``*.json`` run record below ``directory``.

    Args:
        directory: A results directory (searched recursively; hidden entries skipped).
        strict: Raise on the first invalid record instead of collecting it.

    Returns:
        ``(records, rejected)``: valid records (each with ``_path`` added) and
        ``(path, reason)`` for each file that is not a valid finished record.
    """
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"results directory {str(root)!r} does not exist")
    records, rejected = [], []
    for path in sorted(root.rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                record = json.load(fh)
            validate_record(record, str(path))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if strict:
                raise DataError(f"{path}: not valid JSON: {exc}") from None
            rejected.append((path, f"not valid JSON: {exc}"))
            continue
        except DataError as exc:
            if strict:
                raise
            rejected.append((path, str(exc).removeprefix(f"{path}: ")))
            continue
        record["_path"] = str(path)
        records.append(record)
    return records, rejected


def records_to_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Tidy DataFrame: one row per (run, scenario, task, metric), columns ``RESULT_COLUMNS``."""
    rows = []
    for rec in records:
        base = {
            "run_hash": rec["run_hash"],
            "path": rec.get("_path", ""),
            "model": rec["model"]["name"],
            "dataset": rec["dataset"]["name"],
            "protocol_id": rec["protocol"]["id"],
            "seed": rec["config"].get("seed"),
            "n_params": rec["model"].get("n_params"),
            "train_samples_per_s": rec["training"].get("train_samples_per_s"),
            "best_epoch": rec["training"].get("best_epoch"),
            "device": rec["environment"].get("hardware", {}).get("device"),
        }
        for m in rec["test"]["metrics"]:
            rows.append(
                {
                    **base,
                    **{
                        k: m.get(k)
                        for k in ("scenario", "task", "metric", "value", "n", "n_pos", "reason")
                    },
                }
            )
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame


def load_results(directory: str | Path) -> pd.DataFrame:
    """Load a directory of run records into one tidy DataFrame (invalid files are skipped).

    Example:
        >>> df = load_results("mssbench-runs")  # doctest: +SKIP
        >>> df[(df.metric == "auc") & (df.scenario == "pooled")].pivot_table(
        ...     index="model", columns="task", values="value")  # doctest: +SKIP
    """
    records, _ = load_records(directory)
    return records_to_frame(records)
