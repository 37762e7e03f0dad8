"""The pages: records grouped by (dataset, protocol id, dataset version), with their tidy frame."""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from mssbench.leaderboard.labels import page_key, variant_labels
from mssbench.leaderboard.text import slugify
from mssbench.leaderboard.tidy import aggregate, leaderboard_frame
from mssbench.records import model_version

_RESERVED_DIRS = {"reported", "runs", "site"}  # published numbers; run records; the HTML site


@dataclass
class Defaults:
    """Declared defaults used to label variants and to shorten reconstructed commands.

    Attributes:
        model_params: ``{model: defaults}`` of installed models.
        model_tags: ``{model: tags}`` (``head`` and ``batching`` defaults).
        dataset_options: ``{dataset: options}`` of installed datasets.
        dataset_earlier: ``{dataset: earlier_options}`` of installed datasets (the values
            of options a record made before them lacks).
        entry_points: Plugin names loaded automatically (no ``--plugin`` needed).
    """

    model_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_tags: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset_earlier: dict[str, dict[str, Any]] = field(default_factory=dict)
    entry_points: frozenset[str] = frozenset()

    @classmethod
    def from_registry(cls, registry: Any) -> Defaults:
        """Read the defaults from a loaded :class:`mssbench.plugins.Registry`."""
        try:
            names = frozenset(e.name for e in importlib.metadata.entry_points(group="mssbench"))
        except Exception:  # noqa: BLE001 - broken metadata only loses a shortcut
            names = frozenset()
        return cls(
            model_params={n: dict(r.spec.defaults) for n, r in registry.models.items()},
            model_tags={n: dict(r.spec.tags) for n, r in registry.models.items()},
            dataset_options={n: dict(r.spec.options) for n, r in registry.datasets.items()},
            dataset_earlier={
                n: dict(r.spec.earlier_options) for n, r in registry.datasets.items()
            },
            entry_points=names,
        )


@dataclass
class Page:
    """One leaderboard page: the records of one (dataset, protocol id, dataset version, track).

    Attributes:
        dataset: Dataset name.
        protocol_id: Protocol id.
        dataset_version: See :func:`mssbench.leaderboard.labels.dataset_version`.
        records: The page's records, sorted by variant, seed and path.
        frame: Their tidy frame (:func:`mssbench.leaderboard.tidy.leaderboard_frame`).
        labels: The variant label of each record.
        directory: Page directory relative to the output directory (POSIX form).
        tuned: The page of the tuned track (runs of ``mssbench tune`` configurations).
        siblings: Directories of pages with the same dataset and protocol but another version
            or the other track (tuned or defaults).
        superseded: ``{model: {older model version: runs}}`` of the records left out because
            the page has runs of a newer version of that model.
    """

    dataset: str
    protocol_id: str
    dataset_version: str
    records: list[dict[str, Any]]
    frame: pd.DataFrame
    labels: list[str]
    directory: str = ""
    tuned: bool = False
    siblings: list[str] = field(default_factory=list)
    superseded: dict[str, dict[int, int]] = field(default_factory=dict)

    @property
    def protocol(self) -> dict[str, Any]:
        """The protocol description of the first record."""
        return self.records[0]["protocol"]

    @property
    def synthetic(self) -> bool:
        """Generated data (the protocol says so)."""
        return bool(self.protocol.get("synthetic")) or self.protocol_id.startswith("synthetic/")

    @property
    def variants(self) -> list[str]:
        """Variant labels, sorted."""
        return sorted(set(self.frame["variant"]))

    @cached_property
    def table(self) -> pd.DataFrame:
        """The ranking (:func:`~mssbench.leaderboard.statistics.ranking`), computed once."""
        from mssbench.leaderboard.statistics import ranking, seed_scores

        return ranking(seed_scores(self.frame, self.ranking_tasks))

    @cached_property
    def cell_stats(self) -> dict[tuple[str, str, str, str], tuple[float, float, int]]:
        """``(variant, scenario, task, metric) -> (mean, std, n_seeds)``, computed once."""
        return _cell_stats(self.frame)

    @cached_property
    def oracle_stats(self) -> dict[tuple[str, str, str, str], tuple[float, float, int]]:
        """The oracle's cell statistics (empty for real data), computed once."""
        oracle = self.oracle
        return _cell_stats(_as_page_frame(oracle, self)) if not oracle.empty else {}

    @cached_property
    def oracle(self) -> pd.DataFrame:
        """:func:`oracle_frame` of the page's records (empty for real data), computed once."""
        return oracle_frame(self.records if self.synthetic else [])

    @property
    def seeds(self) -> list[int]:
        """Seeds present, sorted."""
        return sorted({int(s) for s in self.frame["seed"]})

    @property
    def scenarios(self) -> list[str]:
        """Scenarios in protocol order, then any others, then ``pooled`` and ``macro``."""
        declared = [str(s) for s in self.protocol.get("scenarios") or []]
        present = list(dict.fromkeys(self.frame["scenario"]))
        rest = [s for s in present if s not in declared and s not in ("pooled", "macro")]
        tail = [s for s in ("pooled", "macro") if s in present]
        return [s for s in declared if s in present] + rest + tail

    @property
    def tasks(self) -> list[str]:
        """Tasks in the order the records list them."""
        return list(dict.fromkeys(self.frame["task"]))

    @property
    def ranking_tasks(self) -> list[str]:
        """The trained tasks (the schema's, not the derived conditional ones)."""
        declared: list[str] = []
        for rec in self.records:
            schema = rec["dataset"].get("schema")
            if isinstance(schema, dict) and isinstance(schema.get("tasks"), dict):
                declared += [t for t in schema["tasks"] if t not in declared]
        chosen = [t for t in self.tasks if t in declared]
        return chosen or self.tasks


#: Directory suffix of a tuned-track page (beside the defaults' page of the same protocol).
TUNED_SUFFIX = "--tuned"


def plan_pages(
    records: Sequence[dict[str, Any]],
    defaults: Defaults | None = None,
    root: str | Path | None = None,
) -> list[Page]:
    """Group records into pages and give each a unique directory.

    Args:
        records: Valid run records.
        defaults: Declared defaults (for variant labels).
        root: The results directory (record paths in the CSV are made relative to it).

    Returns:
        Pages sorted by dataset, protocol id and dataset version.
    """
    defaults = defaults or Defaults()
    groups: dict[tuple[str, str, str, bool], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault(page_key(rec), []).append(rec)
    pages = []
    for key in sorted(groups):
        recs, superseded = newest_model_versions(groups[key])
        labels = variant_labels(recs, defaults.model_tags, defaults.model_params)
        order = sorted(
            range(len(recs)),
            key=lambda i: (
                labels[i],
                int(recs[i]["config"]["seed"]),
                str(recs[i].get("_path", "")),
                str(recs[i].get("run_hash", "")),
            ),
        )
        recs = [recs[i] for i in order]
        frame = leaderboard_frame(
            recs, defaults.model_tags, root=root, model_params=defaults.model_params
        )
        labels = [labels[i] for i in order]
        page = Page(*key[:3], recs, frame, labels, tuned=key[3], superseded=superseded)
        pages.append(page)
    _assign_directories(pages)
    return pages


def newest_model_versions(
    records: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, dict[int, int]]]:
    """Keep each model's records of its newest version (:func:`mssbench.records.model_version`).

    Returns:
        ``(kept, superseded)``: the kept records in their order, and ``{model: {version: runs}}``
        of the records left out.
    """
    newest: dict[str, int] = {}
    for rec in records:
        name = rec["model"]["name"]
        newest[name] = max(newest.get(name, 1), model_version(rec))
    kept, superseded = [], {}
    for rec in records:
        name, version = rec["model"]["name"], model_version(rec)
        if version == newest[name]:
            kept.append(rec)
        else:
            counts = superseded.setdefault(name, {})
            counts[version] = counts.get(version, 0) + 1
    return kept, superseded


def _assign_directories(pages: list[Page]) -> None:
    by_protocol: dict[tuple[str, str], list[Page]] = {}
    for page in pages:
        by_protocol.setdefault((page.dataset, page.protocol_id), []).append(page)
    taken: dict[str, tuple[str, str, str, bool]] = {}
    for (dataset, protocol_id), group in by_protocol.items():
        ds_slug = slugify(dataset)
        if ds_slug in _RESERVED_DIRS:
            ds_slug += "_"
        versions = {p.dataset_version for p in group}
        for page in group:
            slug = slugify(protocol_id)
            if len(versions) > 1:  # another dataset version of the same protocol: its own page
                slug += "--" + slugify(page.dataset_version)
            if page.tuned:  # the tuned track beside the defaults' page
                slug += TUNED_SUFFIX
            directory = f"{ds_slug}/{slug}"
            identity = (page.dataset, page.protocol_id, page.dataset_version, page.tuned)
            if directory in taken and taken[directory] != identity:
                digest = hashlib.sha256(repr(identity).encode()).hexdigest()[:6]
                directory = f"{directory}-{digest}"
            taken[directory] = identity
            page.directory = directory
        for page in group:
            page.siblings = [p.directory for p in group if p is not page]


def _cell_stats(frame: pd.DataFrame) -> dict[tuple[str, str, str, str], tuple[float, float, int]]:
    """``(variant, scenario, task, metric) -> (mean, std, n_seeds)`` over seeds."""
    agg = aggregate(frame)
    return {
        (r.variant, r.scenario, r.task, r.metric): (r.mean, r.std, int(r.n_seeds))
        for r in agg.itertuples(index=False)
    }


def oracle_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The true-probability (oracle) metrics of generated data, one row per record and cell.

    Columns ``variant`` (always ``"oracle"``), ``seed`` (the record index: the oracle does not
    depend on the model seed), ``scenario, task, metric, value``. Empty for real data.
    """
    rows = []
    for i, rec in enumerate(records):
        test = rec.get("test") or {}
        metrics = test.get("oracle_metrics")
        if isinstance(metrics, list) and metrics:
            for m in metrics:
                if isinstance(m, dict) and {"scenario", "task", "metric"} <= set(m):
                    rows.append(
                        {
                            "variant": "oracle",
                            "seed": i,
                            "scenario": str(m["scenario"]),
                            "task": str(m["task"]),
                            "metric": str(m["metric"]),
                            "value": m.get("value"),
                        }
                    )
            continue
        summary = test.get("oracle_summary")
        if isinstance(summary, dict):
            prefixes = {"auc/": ("pooled", "auc"), "macro_auc/": ("macro", "auc")}
            prefixes["logloss/"] = ("pooled", "logloss")
            for key, value in summary.items():
                for prefix, (scenario, metric) in prefixes.items():
                    if key.startswith(prefix):
                        rows.append(
                            {
                                "variant": "oracle",
                                "seed": i,
                                "scenario": scenario,
                                "task": key[len(prefix) :],
                                "metric": metric,
                                "value": value,
                            }
                        )
    frame = pd.DataFrame(rows, columns=["variant", "seed", "scenario", "task", "metric", "value"])
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype(float)
    return frame


def _as_page_frame(oracle: pd.DataFrame, page: Page) -> pd.DataFrame:
    out = oracle.copy()
    out["dataset"], out["protocol_id"] = page.dataset, page.protocol_id
    out["dataset_version"], out["model"] = page.dataset_version, "oracle"
    return out
