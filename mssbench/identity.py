"""When two runs are the same run: the configuration with the dataset's options resolved.

A record's ``run_hash`` is the hash of the configuration as it was given (``-D n_rows=150000``);
which data that means depends on the dataset's defaults when it ran. A suite finding finished
runs, ``skip_finished``, a resumed checkpoint and a page's reproduce command therefore go by the
run's *identity*: the hash of its configuration with every dataset option at its resolved
value, and the model version. A dataset default that changes then changes the identity of every
run that relied on it, and a record keeps meaning the data it ran on.

A record made before a dataset option existed lacks that option: it is read at the value the
dataset declares for such records (:attr:`mssbench.spec.DatasetSpec.earlier_options`), else
at the option's default.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from mssbench.config import RunConfig, resolve
from mssbench.errors import MssbenchError
from mssbench.plugins import Registry
from mssbench.records import given_config, model_version
from mssbench.spec import DatasetSpec

#: A run's identity: (hash of the configuration with resolved data options, model version).
Identity = tuple[str, int]


def resolved_options(spec: DatasetSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset options a run with ``given`` uses: the given values over the defaults."""
    return resolve("data option", f"dataset {spec.name!r}", spec.options, dict(given))


def recorded_options(
    options: Mapping[str, Any], earlier: Mapping[str, Any], recorded: Mapping[str, Any]
) -> dict[str, Any] | None:
    """A record's resolved data options in today's terms, or ``None`` if no options give its data.

    Args:
        options: The dataset's options and their defaults today.
        earlier: Its :attr:`~mssbench.spec.DatasetSpec.earlier_options`.
        recorded: The record's ``config.data_options`` (resolved when it ran).
    """
    if set(recorded) - set(options):
        return None  # an option the dataset no longer has
    out: dict[str, Any] = {}
    for key, default in options.items():
        value = recorded[key] if key in recorded else earlier.get(key, default)
        if value is None and default is not None:
            return None
        out[key] = value
    return out


def identity_hash(config: RunConfig, data_options: Mapping[str, Any]) -> str:
    """The hash of ``config`` with ``data_options`` (resolved) in place of the given ones."""
    return replace(config, data_options=dict(data_options)).result_hash()


def run_identity(config: RunConfig, registry: Registry) -> Identity:
    """The identity of the run ``config`` describes, with the installed plugins."""
    spec = registry.dataset(config.dataset)
    data = resolved_options(spec, config.data_options)
    return identity_hash(config, data), registry.model(config.model).version


def record_identity(record: Mapping[str, Any], registry: Registry) -> Identity | None:
    """The identity of a record's run; ``None`` when no installed dataset gives its data."""
    try:
        spec = registry.dataset(str(record["dataset"]["name"]))
    except MssbenchError:
        return None
    config = given_config(record)
    data = recorded_options(
        spec.options, spec.earlier_options, record["config"].get("data_options") or {}
    )
    if config is None or data is None:
        return None
    return identity_hash(config, data), model_version(dict(record))
