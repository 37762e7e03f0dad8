"""Reading run records back for analysis: tidy frames labelled as the leaderboard pages label them.

``load_runs`` (one row per run), ``load_results`` (one row per run and result cell) and
``load_aggregated`` (mean, std and seed counts per page, variant and cell) read a results
directory. The records are read by :func:`mssbench.records.load_records`, and the page keys,
variant labels and aggregation are the leaderboard's own (:mod:`mssbench.leaderboard.labels`,
:mod:`mssbench.leaderboard.tidy`), re-exported here; this module depends on the leaderboard
package, never the reverse.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from mssbench.leaderboard.frame import Defaults, plan_pages
from mssbench.leaderboard.labels import dataset_version, variant_labels
from mssbench.leaderboard.tidy import (
    AGGREGATE_COLUMNS,
    LEADERBOARD_COLUMNS,
    aggregate,
    leaderboard_frame,
)
from mssbench.records import load_records, model_version, verify_record

__all__ = [
    "AGGREGATE_COLUMNS",
    "LEADERBOARD_COLUMNS",
    "RESULT_COLUMNS",
    "RUN_COLUMNS",
    "RUN_LABEL_COLUMNS",
    "aggregate",
    "dataset_version",
    "flatten",
    "leaderboard_frame",
    "load_aggregated",
    "load_records",
    "load_results",
    "load_runs",
    "model_version",
    "records_to_frame",
    "runs_frame",
    "validate_record",
    "variant_labels",
]

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
    """Check that ``record`` is a genuine finished run record (:func:`records.verify_record`).

    Raises:
        DataError: ``"<source>: <field>: <what is wrong>"``.
    """
    return verify_record(record, source)


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


def load_results(directory: str | Path, defaults: Any = None) -> pd.DataFrame:
    """Load a directory of run records into one tidy DataFrame (invalid files are skipped).

    One row per (run, scenario, task, metric): :data:`RESULT_COLUMNS`, then the run's
    :data:`RUN_LABEL_COLUMNS` (its leaderboard page, model version, variant label as the pages
    show it, head, batching, and whether a newer version of its model supersedes it).

    Args:
        directory: A results directory.
        defaults: A :class:`mssbench.leaderboard.Defaults` for the variant labels (default: the
            installed plugins', as ``mssbench leaderboard build`` uses).

    Example:
        Mean pooled test AUC per variant and task, over seeds only (never across protocols,
        dataset versions, heads or model versions):

        >>> df = load_results("mssbench-runs")  # doctest: +SKIP
        >>> auc = df[(df.metric == "auc") & (df.scenario == "pooled") & ~df.superseded]
        >>> auc.pivot_table(  # doctest: +SKIP
        ...     index=["dataset", "protocol_id", "dataset_version", "variant"],
        ...     columns="task", values="value")
    """
    records, _ = load_records(directory)
    frame = records_to_frame(records)
    runs = _run_labels(records, defaults, directory)
    labels = pd.DataFrame(runs, columns=["path", *RUN_LABEL_COLUMNS])
    return frame.merge(labels, on="path", how="left", validate="many_to_one")


def load_aggregated(directory: str | Path, defaults: Any = None) -> pd.DataFrame:
    """:func:`aggregate` over the valid records of a results directory, as the pages show it.

    Records are grouped into leaderboard pages, each model keeps its newest version only
    (superseded runs are dropped), and variants carry the pages' labels.

    Args:
        directory: A results directory.
        defaults: A :class:`mssbench.leaderboard.Defaults` (default: the installed plugins').
    """
    records, _ = load_records(directory)
    pages = plan_pages(records, _defaults(defaults), root=directory)
    frames = [page.frame for page in pages]
    frame = pd.concat(frames, ignore_index=True) if frames else leaderboard_frame([])
    return aggregate(frame)


# --- One row per run ---------------------------------------------------------------------------

#: What :func:`load_results` adds to each row, from the run's record and its leaderboard page.
RUN_LABEL_COLUMNS = [
    "dataset_version",
    "model_version",
    "variant",
    "head",
    "batching",
    "superseded",
]

#: The first columns of :func:`load_runs`; then ``config.*`` (``config.params.embed_dim``, ...)
#: and ``test.*`` (the test summary: ``test.auc/income``, ...).
RUN_COLUMNS = [
    "path",
    "run_hash",
    "dataset",
    "protocol_id",
    "dataset_version",
    "model",
    "model_version",
    "plugin",
    "variant",
    "superseded",
    "head",
    "batching",
    "seed",
    "started_at",
    "wall_seconds",
    "n_params",
    "best_epoch",
    "epochs_run",
    "train_samples_per_s",
    "device",
]


def _defaults(defaults: Any) -> Any:
    if defaults is not None:
        return defaults
    from mssbench.plugins import load_registry

    return Defaults.from_registry(load_registry())


def _run_labels(
    records: Sequence[dict[str, Any]], defaults: Any, root: str | Path | None
) -> list[dict[str, Any]]:
    """Per record (by ``_path``): page, model version, the page's variant label, superseded."""
    labels: dict[str, str] = {}
    for page in plan_pages(records, _defaults(defaults), root=root):
        for rec, label in zip(page.records, page.labels):
            labels[str(rec.get("_path", ""))] = label
    rows = []
    for rec in records:
        path = str(rec.get("_path", ""))
        rows.append(
            {
                "path": path,
                "dataset_version": dataset_version(rec),
                "model_version": model_version(rec),
                "variant": labels.get(path),
                "head": str(rec["config"].get("head") or ""),
                "batching": str(rec["config"].get("batching") or ""),
                "superseded": path not in labels,
            }
        )
    return rows


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"params": {"embed_dim": 8}}`` -> ``{"params.embed_dim": 8}``; lists become JSON text.

    Lists and other non-scalar leaves are JSON text so that the columns can be grouped on.
    """
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple, Mapping)):
            out[name] = json.dumps(value, sort_keys=True, default=str)
        else:
            out[name] = value
    return out


def runs_frame(records: Sequence[dict[str, Any]], defaults: Any = None) -> pd.DataFrame:
    """One row per run record: :data:`RUN_COLUMNS`, then ``config.*`` and ``test.*``.

    Args:
        records: Valid run records (as from :func:`load_records`).
        defaults: See :func:`load_runs`.
    """
    labels = {row["path"]: row for row in _run_labels(records, defaults, None)}
    rows = []
    for rec in records:
        path = str(rec.get("_path", ""))
        training = rec["training"]
        row = {
            **labels[path],
            "run_hash": str(rec.get("run_hash", "")),
            "dataset": rec["dataset"]["name"],
            "protocol_id": rec["protocol"]["id"],
            "model": rec["model"]["name"],
            "plugin": str(rec["model"].get("plugin") or ""),
            "seed": rec["config"]["seed"],
            "started_at": rec.get("started_at"),
            "wall_seconds": rec.get("wall_seconds"),
            "n_params": rec["model"].get("n_params"),
            "best_epoch": training.get("best_epoch"),
            "epochs_run": training.get("epochs_run"),
            "train_samples_per_s": training.get("train_samples_per_s"),
            "device": (rec["environment"].get("hardware") or {}).get("device"),
        }
        row.update(flatten(rec["config"], "config."))
        summary = rec["test"].get("summary") or {}
        row.update({f"test.{k}": v for k, v in summary.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    extra = sorted(c for c in frame.columns if c not in RUN_COLUMNS)
    return frame[RUN_COLUMNS + extra]


def load_runs(directory: str | Path, defaults: Any = None) -> pd.DataFrame:
    """One row per valid run record below ``directory`` (for notebooks).

    Columns :data:`RUN_COLUMNS` (the run's leaderboard page ``dataset``, ``protocol_id``,
    ``dataset_version``; ``model_version``; ``variant`` as its page labels it, or None where a
    newer version of the model supersedes the run, ``superseded`` True), then the flattened
    configuration (``config.seed``, ``config.params.embed_dim``, ...) and the test summary
    (``test.auc/income``, ...).

    Args:
        directory: A results directory.
        defaults: A :class:`mssbench.leaderboard.Defaults` for the variant labels (default: the
            installed plugins', as ``mssbench leaderboard build`` uses).

    Example:
        >>> runs = load_runs("leaderboards/runs")  # doctest: +SKIP
        >>> runs[~runs.superseded].groupby(["protocol_id", "variant"])["test.auc/income"].mean()
    """
    records, _ = load_records(directory)
    return runs_frame(records, defaults)
