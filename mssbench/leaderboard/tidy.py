"""The tidy frame of a page's test metrics, and its aggregation over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from mssbench.leaderboard.labels import (
    contributor_name,
    hardware_label,
    page_key,
    variant_labels,
    versions_label,
)

#: Columns of :func:`leaderboard_frame` and of every leaderboard page's ``results.csv``: one row
#: per (run, scenario, task, metric), with the model variant and where the run came from.
LEADERBOARD_COLUMNS = [
    "dataset",
    "protocol_id",
    "dataset_version",
    "model",
    "variant",
    "plugin",
    "head",
    "batching",
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
    "hardware",
    "versions",
    "contributor",
    "run_hash",
    "record",
]

#: Columns of :func:`aggregate`.
AGGREGATE_COLUMNS = [
    "dataset",
    "protocol_id",
    "dataset_version",
    "model",
    "variant",
    "scenario",
    "task",
    "metric",
    "mean",
    "std",
    "n_seeds",
    "n_undefined",
]


def leaderboard_frame(
    records: Sequence[dict[str, Any]],
    model_tags: Mapping[str, Mapping[str, Any]] | None = None,
    root: str | Path | None = None,
    model_params: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """Tidy DataFrame of test metrics with model variants and provenance.

    One row per (run, scenario, task, metric); columns :data:`LEADERBOARD_COLUMNS`. ``variant``
    comes from :func:`variant_labels`; ``record`` is the record's path (relative to ``root``
    when given).

    Args:
        records: Valid run records (as from :func:`mssbench.records.load_records`).
        model_tags: See :func:`variant_labels`.
        root: The results directory, to shorten record paths.
        model_params: See :func:`variant_labels`.
    """
    labels = variant_labels(records, model_tags, model_params)
    rows = []
    for rec, label in zip(records, labels):
        path = rec.get("_path", "")
        if root is not None and path:
            try:
                path = Path(path).relative_to(Path(root)).as_posix()
            except ValueError:
                pass
        dataset, protocol_id, version, _ = page_key(rec)
        base = {
            "dataset": dataset,
            "protocol_id": protocol_id,
            "dataset_version": version,
            "model": rec["model"]["name"],
            "variant": label,
            "plugin": str(rec["model"].get("plugin") or ""),
            "head": str(rec["config"].get("head") or ""),
            "batching": str(rec["config"].get("batching") or ""),
            "seed": rec["config"]["seed"],
            "n_params": rec["model"].get("n_params"),
            "train_samples_per_s": rec["training"].get("train_samples_per_s"),
            "hardware": hardware_label(rec),
            "versions": versions_label(rec),
            "contributor": contributor_name(rec),
            "run_hash": str(rec.get("run_hash", "")),
            "record": str(path),
        }
        for m in rec["test"]["metrics"]:
            rows.append(
                {
                    **base,
                    **{k: m.get(k) for k in ("scenario", "task", "metric", "value", "n", "n_pos")},
                    "reason": m.get("reason") or "",
                }
            )
    frame = pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)
    for col in ("value", "train_samples_per_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    for col in ("n", "n_pos", "n_params"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").round().astype("Int64")
    return frame


def _group_keys(frame: pd.DataFrame) -> list[str]:
    keys = [k for k in AGGREGATE_COLUMNS[:8] if k in frame.columns]
    if "variant" not in frame.columns:
        keys = [k for k in keys if k != "variant"]
    return keys


def per_seed(frame: pd.DataFrame) -> pd.DataFrame:
    """One value per (page, variant, scenario, task, metric, seed).

    Several runs of one variant with the same seed (a re-run on other hardware, say) are
    averaged first, so that a seed counts once in the mean, the standard deviation and the
    paired test. NaN values (undefined cells) stay NaN.
    """
    keys = _group_keys(frame) + ["seed"]
    ordered = frame.sort_values(keys + ["value"], kind="mergesort", na_position="last")
    out = ordered.groupby(keys, sort=True, dropna=False)["value"].mean().reset_index()
    return out


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and number of seeds of each result cell.

    Args:
        frame: A tidy frame from :func:`leaderboard_frame` (grouped by model variant) or from
            :func:`mssbench.results.load_results` (grouped by model name: variants of one model are
            then mixed, so prefer :func:`mssbench.results.load_aggregated`).

    Returns:
        One row per (dataset, protocol_id, dataset_version, model, variant, scenario, task,
        metric) with ``mean``, ``std`` (``ddof=1``; NaN with one seed), ``n_seeds`` (seeds
        with a defined value) and ``n_undefined`` (seeds where the cell is undefined, e.g. a
        scenario without positives). Runs sharing a seed are averaged first (:func:`per_seed`).
        The result does not depend on the order of the rows or of the seeds.

    Example:
        >>> agg = aggregate(leaderboard_frame(load_records("runs")[0]))  # doctest: +SKIP
        >>> agg[(agg.metric == "auc") & (agg.scenario == "pooled")]  # doctest: +SKIP
    """
    keys = _group_keys(frame)
    seeds = per_seed(frame)
    grouped = seeds.groupby(keys, sort=True, dropna=False)["value"]
    out = grouped.agg(["mean", "std", "count", "size"]).reset_index()
    out["std"] = out["std"].where(out["count"] > 1)
    out["n_seeds"] = out["count"].astype(int)
    out["n_undefined"] = (out["size"] - out["count"]).astype(int)
    columns = [c for c in AGGREGATE_COLUMNS if c in out.columns]
    return out[columns].reset_index(drop=True)
