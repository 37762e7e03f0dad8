"""What the pages call a record: its page, model variant, dataset release, hardware, contributor."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Sequence

from mssbench.balancing import balancer_label
from mssbench.records import CONTRIBUTOR_KEY, model_version, source_label

#: The distribution of the built-in plugins: its version is mssbench's own.
FIRST_PARTY = "mssbench"


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


def record_tuned(rec: Mapping[str, Any]) -> bool:
    """Whether the run's hyperparameters came from a tuning search (the record says so)."""
    config = rec.get("config") or {}
    return bool(config.get("tuned_from"))


def page_key(record: dict[str, Any]) -> tuple[str, str, str, bool]:
    """``(dataset, protocol id, dataset version, tuned)``: the page a record belongs to.

    Runs of tuned configurations (``mssbench suite --tuned``) form the tuned track: pages of
    their own, never mixed with runs at the declared defaults.
    """
    name, protocol_id = record["dataset"]["name"], record["protocol"]["id"]
    return (name, protocol_id, dataset_version(record), record_tuned(record))


def contributor_name(record: dict[str, Any]) -> str:
    """Who contributed the record (``""`` when it carries no ``contributor``)."""
    value = record.get(CONTRIBUTOR_KEY)
    if isinstance(value, dict):
        extra = [value[k] for k in ("affiliation", "url") if value.get(k)]
        return f"{value['name']} ({', '.join(extra)})" if extra else str(value["name"])
    return str(value or "")


def hardware_label(record: dict[str, Any]) -> str:
    """One line for the hardware a record ran on, e.g. ``cuda:0, NVIDIA H100 (CUDA 12.4)``.

    A run resumed on other hardware names each machine in the order they trained it
    (``... (epochs 1-8), then ... (epochs 9-12)``).
    """
    own = _hardware_line(record["environment"].get("hardware") or {})
    processes = (record.get("training") or {}).get("processes") or []
    lines = [
        _hardware_line(p["hardware"]) if p.get("hardware") else "unknown hardware"
        for p in processes
    ]
    if len(set(lines)) < 2:
        return own
    return ", then ".join(
        f"{line} (epochs {p['first_epoch']}-{p['last_epoch']})" for line, p in zip(lines, processes)
    )


def _hardware_line(hw: Any) -> str:
    """One machine: device, GPU, CPU with its identity and cores."""
    if not isinstance(hw, dict):
        return str(hw)
    parts = [str(hw.get("device", "?"))]
    if hw.get("gpu"):
        parts.append(f"{hw['gpu']}" + (f" (CUDA {hw['cuda']})" if hw.get("cuda") else ""))
    if hw.get("cpu"):
        cores = f", {hw['cpu_count']} cores" if hw.get("cpu_count") else ""
        parts.append(f"{hw['cpu']}{_cpu_identity(hw)}{cores}")
    return ", ".join(parts)


def _cpu_identity(hw: Mapping[str, Any]) -> str:
    """`` (family 25, model 1, AVX2)``: the CPU's identity, where the record names it.

    Two CPUs of one name (two "AMD EPYC" machines) can compute other bits, so a page keeps
    their runs apart.
    """
    ident = hw.get("cpu_id") if isinstance(hw.get("cpu_id"), dict) else {}
    known = [f"{k} {ident[k]}" for k in ("family", "model") if ident.get(k) not in (None, "")]
    if hw.get("cpu_capability"):
        known.append(str(hw["cpu_capability"]))
    return f" ({', '.join(known)})" if known else ""


def versions_label(record: dict[str, Any]) -> str:
    """Package versions of a record as ``name version`` pairs in a stable order."""
    versions = record["environment"].get("versions") or {}
    if not isinstance(versions, dict):
        return str(versions)
    return ", ".join(f"{k} {versions[k]}" for k in sorted(versions))


def default_head_batching(
    record: dict[str, Any], model_tags: Mapping[str, Mapping[str, Any]] | None
) -> tuple[str, str]:
    """The head and batching a record's model uses when none is given (its spec tags).

    Without the model's tags the harness defaults apply (direct heads, mixed batches); a model's
    preferred head applies only on a dataset whose tasks are related.
    """
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
    (:func:`mssbench.records.model_version`) are on the page, so they are never averaged
    together. Runs differing only in seed, device or output path share a label.

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
    pages: dict[tuple[str, str, str, bool], list[int]] = {}
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
            default_head, default_batching = default_head_batching(rec, model_tags)
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
