"""Reading run records back: records, tidy frames and their aggregation over seeds.

``load_records`` and ``load_results`` read a results directory; ``leaderboard_frame`` adds model
variants and provenance, and ``aggregate`` gives mean, std and seed counts per result cell.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from mssbench.balancing import balancer_label
from mssbench.errors import DataError
from mssbench.records import (
    CONTRIBUTOR_KEY,
    clip,
    content_digest,
    read_record_file,
    run_identity,
    source_label,
    verify_record,
)

#: The distribution of the built-in plugins: its version is mssbench's own.
FIRST_PARTY = "mssbench"

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


def _record_files(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every ``*.json`` entry below ``root`` (hidden ones skipped; symlinks not followed).

    Directories named ``*.json`` are listed too, so that they are refused with a reason.

    Returns:
        ``(entries, problems)``: the entries, and ``(directory, reason)`` for each directory
        that could not be listed.
    """
    found: list[Path] = []
    problems: list[tuple[Path, str]] = []

    def unreadable(exc: OSError) -> None:
        problems.append((Path(exc.filename), f"cannot be listed: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in [*filenames, *dirnames]:
            if name.endswith(".json") and not name.startswith("."):
                found.append(Path(dirpath) / name)
    return sorted(found), problems


def _same_run_refusals(records: list[dict[str, Any]]) -> dict[str, str]:
    """``{path: reason}`` for records that claim to be the same run (:func:`run_identity`).

    Byte-for-byte the same content: the first path is kept, the others are duplicates. Any
    difference: every one of them is refused, as none can be told to be the original.
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rec in records:
        identity = run_identity(rec)
        if identity is not None:
            groups.setdefault(identity, []).append(rec)
    out = {}
    for identity, group in groups.items():
        if len(group) < 2:
            continue
        paths = [r["_path"] for r in group]
        if len({content_digest(r) for r in group}) == 1:
            for path in paths[1:]:
                out[path] = f"a copy of {paths[0]} (the same run, counted once)"
            continue
        for path in paths:
            others = ", ".join(p for p in paths if p != path)
            out[path] = clip(
                f"claims to be the same run as {others} (model {identity[0]}, dataset "
                f"{identity[1]}, started {identity[2]}) with different content"
            )
    return out


def load_records(
    directory: str | Path, strict: bool = False, trials: bool = False
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Read every ``*.json`` run record below ``directory``.

    Args:
        directory: A results directory (searched recursively; hidden entries skipped).
        strict: Raise on the first invalid record instead of collecting it.
        trials: Return only tuning trials' records (which have no test results) instead of
            only the others.

    Returns:
        ``(records, rejected)``: valid records (each with ``_path`` added) and
        ``(path, reason)`` for each file that is not a valid finished record.
    """
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"results directory {str(root)!r} does not exist")
    records = []
    files, rejected = _record_files(root)
    if rejected and strict:
        path, reason = rejected[0]
        raise DataError(f"{path}: {reason}")
    for path in files:
        try:
            record = validate_record(read_record_file(path), str(path))
        except DataError as exc:
            if strict:
                raise
            rejected.append((path, str(exc).removeprefix(f"{path}: ")))
            continue
        if ("trial" in record) != trials:
            continue
        record["_path"] = str(path)
        records.append(record)
    refused = _same_run_refusals(records)
    if refused and strict:
        path, reason = next(iter(refused.items()))
        raise DataError(f"{path}: {reason}")
    rejected += [(Path(r["_path"]), refused[r["_path"]]) for r in records if r["_path"] in refused]
    records = [r for r in records if r["_path"] not in refused]
    return records, sorted(rejected)


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


# --- Leaderboard frames ------------------------------------------------------------------------

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

#: What identifies one leaderboard page: records differing in any of these are never ranked
#: together.
PAGE_KEYS = ("dataset", "protocol_id", "dataset_version")

#: Config keys that make two runs of one model different variants (seed, device, paths and
#: evaluation batch size do not change what is trained).
VARIANT_CONFIG_KEYS = (
    "params",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "patience",
    "max_steps_per_epoch",
    "shuffle",
)

_HEAD_WORDS = {"direct": "direct heads", "esmm": "ESMM head"}
_BATCHING_WORDS = {"mixed": "mixed batches", "scenario_pure": "scenario-pure batches"}


def dataset_version(record: dict[str, Any]) -> str:
    """The dataset plugin and the release that provided it, e.g. ``aitm (mssbench-aitm 0.1.0)``.

    Uses ``dataset.version`` when the record states one, else the plugin's recorded
    ``dataset.source`` (its distribution and version, or a ``--plugin`` file's sha256), else
    (records of version 1) the plugin's own entry in ``environment.versions`` (a third-party
    distribution ``mssbench-<plugin>``), else the ``mssbench`` version (first-party plugins ship
    with mssbench). Records with different values are never ranked together.
    """
    ds = record["dataset"]
    plugin = str(ds.get("plugin") or "?")
    versions = record["environment"].get("versions") or {}
    if not isinstance(versions, dict):
        versions = {}
    if ds.get("version") is not None:
        return f"{plugin} {ds['version']}"
    provided = source_label(ds.get("source"))
    if provided is not None:
        return f"{plugin} ({provided})"
    for name in (plugin, f"mssbench-{plugin}", f"mssbench_{plugin}"):
        if versions.get(name) is not None:
            return f"{plugin} {versions[name]}"
    return f"{plugin} ({FIRST_PARTY} {versions.get(FIRST_PARTY, '?')})"


def model_source(record: dict[str, Any]) -> str:
    """The release of a third-party model plugin (``mssbench-aitm 0.1.0``; ``""`` if built in).

    From the record's ``model.source``; built-in models (of the ``mssbench`` distribution) and
    records without a source give ``""``.
    """
    source = record["model"].get("source")
    if isinstance(source, dict) and source.get("distribution") == FIRST_PARTY:
        return ""
    return source_label(source) or ""


def model_version(record: dict[str, Any]) -> int:
    """The model version a record states (:attr:`mssbench.spec.ModelSpec.version`); 1 if none."""
    version = record["model"].get("version", 1)
    return version if isinstance(version, int) and not isinstance(version, bool) else 1


def page_key(record: dict[str, Any]) -> tuple[str, str, str]:
    """``(dataset, protocol id, dataset version)``: the leaderboard page a record belongs to."""
    return (record["dataset"]["name"], record["protocol"]["id"], dataset_version(record))


def contributor_name(record: dict[str, Any]) -> str:
    """Who contributed the record (``""`` when it carries no ``contributor``)."""
    value = record.get(CONTRIBUTOR_KEY)
    if isinstance(value, dict):
        extra = [value[k] for k in ("affiliation", "url") if value.get(k)]
        return f"{value['name']} ({', '.join(extra)})" if extra else str(value["name"])
    return str(value or "")


def hardware_label(record: dict[str, Any]) -> str:
    """One line for the hardware a record ran on, e.g. ``cuda:0, NVIDIA H100 (CUDA 12.4)``."""
    hw = record["environment"].get("hardware") or {}
    if not isinstance(hw, dict):
        return str(hw)
    parts = [str(hw.get("device", "?"))]
    if hw.get("gpu"):
        parts.append(f"{hw['gpu']}" + (f" (CUDA {hw['cuda']})" if hw.get("cuda") else ""))
    if hw.get("cpu"):
        cores = f", {hw['cpu_count']} cores" if hw.get("cpu_count") else ""
        parts.append(f"{hw['cpu']}{cores}")
    return ", ".join(parts)


def versions_label(record: dict[str, Any]) -> str:
    """Package versions of a record as ``name version`` pairs in a stable order."""
    versions = record["environment"].get("versions") or {}
    if not isinstance(versions, dict):
        return str(versions)
    return ", ".join(f"{k} {versions[k]}" for k in sorted(versions))


def _default_head_batching(
    record: dict[str, Any], model_tags: Mapping[str, Mapping[str, Any]] | None
) -> tuple[str, str]:
    tags = (model_tags or {}).get(record["model"]["name"]) or {}
    schema = record["dataset"].get("schema")
    relations = schema.get("relations") if isinstance(schema, dict) else None
    head = str(tags.get("head", "direct"))
    if relations is not None and not relations:
        head = "direct"  # the model's preferred head applies only where tasks are related
    return head, str(tags.get("batching", "mixed"))


def _flat_config(record: dict[str, Any]) -> dict[str, str]:
    config = record["config"]
    out = {}
    for key in VARIANT_CONFIG_KEYS:
        if key == "params":
            params = config.get("params") or {}
            if isinstance(params, dict):
                for name in sorted(params):
                    out[str(name)] = json.dumps(params[name], sort_keys=True, default=str)
            continue
        if key in config:
            out[key] = json.dumps(config[key], sort_keys=True, default=str)
    return out


def _plugin_name(record: dict[str, Any]) -> str:
    return str(record["model"].get("plugin") or "")


def _variant_identity(record: dict[str, Any]) -> tuple[str, str, str, str, str]:
    config = record["config"]
    source = model_source(record)
    return (
        record["model"]["name"],
        _plugin_name(record) + (f" ({source})" if source else ""),
        str(config.get("head") or ""),
        str(config.get("batching") or ""),
        json.dumps(_flat_config(record), sort_keys=True) + balancer_label(config),
    )


def variant_labels(
    records: Sequence[dict[str, Any]],
    model_tags: Mapping[str, Mapping[str, Any]] | None = None,
    model_params: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """A label per record naming its model variant, unique within each leaderboard page.

    The label is the model name, followed in parentheses by the head and batching where they are
    not the model's default (``"aesm (direct heads)"``, ``"star (mixed batches)"``), by the loss
    balancer where it is not ``fixed`` (``"mmoe (balancer=gradnorm(alpha=1.0))"``), and by the
    hyper-parameters or training settings that tell apart several configurations of one model on
    the same page (``"mmoe (embed_dim=16)"``), and by ``[plugin]`` where two plugins register
    the same model name, and by ``v<version>`` where records of several versions of one model
    (:func:`model_version`) are on the page, so they are never averaged together. Runs differing
    only in seed, device or output path share a label.

    Args:
        records: Valid run records.
        model_tags: ``{model name: spec tags}`` of the installed models, for their default head
            (``head`` tag) and batching (``batching`` tag); without it, a model's default is
            the harness default (direct heads, mixed batches).
        model_params: ``{model name: declared defaults}`` of the installed models: a
            hyper-parameter that tells variants apart is named only on the variants where it
            differs from its default (the variant at the defaults keeps the bare name).

    Returns:
        One label per record, in the order given.
    """
    labels: list[str] = [""] * len(records)
    pages: dict[tuple[str, str, str], list[int]] = {}
    for i, rec in enumerate(records):
        pages.setdefault(page_key(rec), []).append(i)
    for indices in pages.values():
        identities = {i: _variant_identity(records[i]) for i in indices}
        plugins_of: dict[str, set[str]] = {}
        versions_of: dict[str, set[int]] = {}
        configs_of: dict[tuple[str, str, str, str], dict[str, dict[str, str]]] = {}
        for i in indices:
            model, plugin, head, batching, cfg = identities[i]
            plugins_of.setdefault(model, set()).add(_plugin_name(records[i]))
            versions_of.setdefault(model, set()).add(model_version(records[i]))
            configs_of.setdefault((model, plugin, head, batching), {})[cfg] = _flat_config(
                records[i]
            )
        by_label: dict[str, set[tuple[str, ...]]] = {}
        for i in indices:
            rec = records[i]
            model, plugin, head, batching, cfg = identities[i]
            default_head, default_batching = _default_head_batching(rec, model_tags)
            source = model_source(rec)
            parts = [source] if source else []
            if head and head != default_head:
                parts.append(_HEAD_WORDS.get(head, f"head={head}"))
            if batching and batching != default_batching:
                parts.append(_BATCHING_WORDS.get(batching, f"batching={batching}"))
            if balancer_label(rec["config"]):
                parts.append(balancer_label(rec["config"]))
            siblings = configs_of[(model, plugin, head, batching)]
            if len(siblings) > 1:
                mine = siblings[cfg]
                keys = sorted(
                    {k for c in siblings.values() for k in c}
                    - {
                        k
                        for k in {k for c in siblings.values() for k in c}
                        if len({c.get(k) for c in siblings.values()}) == 1
                    }
                )
                declared = (model_params or {}).get(model) or {}
                parts += [
                    f"{k}={mine.get(k, 'unset')}"
                    for k in keys
                    if k not in declared
                    or mine.get(k) != json.dumps(declared[k], sort_keys=True, default=str)
                ]
            label = model + (f" ({', '.join(parts)})" if parts else "")
            if len(plugins_of[model]) > 1:
                label += f" [{_plugin_name(rec) or '?'}]"
            if len(versions_of[model]) > 1:
                label += f" v{model_version(rec)}"
            labels[i] = label
            by_label.setdefault(label, set()).add(identities[i])
        for i in indices:
            if len(by_label[labels[i]]) > 1:  # still ambiguous: say which configuration
                digest = hashlib.sha256(repr(identities[i]).encode()).hexdigest()[:6]
                labels[i] = f"{labels[i]} #{digest}"
    return labels


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
        records: Valid run records (as from :func:`load_records`).
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
        dataset, protocol_id, version = page_key(rec)
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
            :func:`load_results` (grouped by model name: variants of one model are then mixed,
            so prefer :func:`load_aggregated`).

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


def load_aggregated(directory: str | Path, defaults: Any = None) -> pd.DataFrame:
    """:func:`aggregate` over the valid records of a results directory, as the pages show it.

    Records are grouped into leaderboard pages, each model keeps its newest version only
    (superseded runs are dropped), and variants carry the pages' labels.

    Args:
        directory: A results directory.
        defaults: A :class:`mssbench.leaderboard.Defaults` (default: the installed plugins').
    """
    from mssbench.leaderboard import plan_pages

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
    from mssbench.leaderboard import Defaults

    if defaults is not None:
        return defaults
    from mssbench.plugins import load_registry

    return Defaults.from_registry(load_registry())


def _run_labels(
    records: Sequence[dict[str, Any]], defaults: Any, root: str | Path | None
) -> list[dict[str, Any]]:
    """Per record (by ``_path``): page, model version, the page's variant label, superseded."""
    from mssbench.leaderboard import plan_pages

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
