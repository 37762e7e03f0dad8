"""``mssbench plugins NAME``: everything a user may want to know about one model, dataset or metric.

Reads the specs only (no model is built and no data is loaded), so it answers at once.
"""

from __future__ import annotations

import difflib
import json
from typing import Any, Mapping

from tabulate import tabulate

from mssbench import __version__
from mssbench.errors import ConfigError
from mssbench.plugins import Registry

__all__ = ["describe"]

#: What ``-p`` / ``-D`` take, by kind.
_FLAG = {"model": "-p KEY=VALUE", "dataset": "-D KEY=VALUE"}


def _type_name(value: Any) -> str:
    if isinstance(value, list):
        inner = {type(v).__name__ for v in value}
        return f"list[{inner.pop()}]" if len(inner) == 1 else "list"
    return "any (JSON)" if value is None else type(value).__name__


def _json(value: Any) -> str:
    """``value`` as JSON; what JSON cannot hold (a function in a tag) by its name."""
    return json.dumps(value, default=lambda obj: getattr(obj, "__name__", type(obj).__name__))


def _settings(values: Mapping[str, Any], flag: str) -> str:
    if not values:
        return "  (none)"
    rows = [[key, _json(value), _type_name(value)] for key, value in values.items()]
    table = tabulate(rows, headers=["name", "default", "type"], tablefmt="simple")
    return f"  set with {flag}\n" + "\n".join("  " + line for line in table.splitlines())


def _mapping(values: Mapping[str, Any]) -> str:
    if not values:
        return "(none)"
    return ", ".join(f"{k}={_json(v)}" for k, v in values.items())


def _model(registry: Registry, name: str) -> str:
    spec = registry.model(name)
    return "\n".join(
        [
            f"{name} (model, plugin {registry.plugin_of('model', name)}, version {spec.version})",
            f"  {spec.summary}",
            f"paper: {spec.paper or '(none given)'}",
            f"tags: {_mapping(spec.tags)}",
            "hyper-parameters:",
            _settings(spec.defaults, _FLAG["model"]),
        ]
    )


def _dataset(registry: Registry, name: str) -> str:
    spec = registry.dataset(name)
    return "\n".join(
        [
            f"{name} (dataset, plugin {registry.plugin_of('dataset', name)})",
            f"  {spec.summary}",
            f"source: {spec.source or '(none given)'}",
            f"tags: {_mapping(spec.tags)}",
            f"prepare step: {'yes (mssbench data prepare)' if spec.prepare else 'none needed'}",
            "options:",
            _settings(spec.options, _FLAG["dataset"]),
        ]
    )


def _metric(registry: Registry, name: str) -> str:
    spec = registry.metric(name)
    better = "higher" if spec.higher_is_better else "lower"
    return "\n".join(
        [
            f"{name} (metric, plugin {registry.plugin_of('metric', name)}, version {spec.version})",
            f"  {spec.summary}",
            f"reference: {spec.reference or '(none given)'}",
            f"{better} is better; needs both classes in a cell: {spec.needs_both_classes}",
        ]
    )


def _balancer(registry: Registry, name: str) -> str:
    spec = registry.balancer(name)
    plugin = registry.plugin_of("balancer", name)
    ddp = "yes" if spec.ddp_ok else f"no ({spec.ddp_reason})"
    return "\n".join(
        [
            f"{name} (balancer, plugin {plugin}, version {spec.version})",
            f"  {spec.summary}",
            f"paper: {spec.paper or '(none given)'}",
            "params:\n" + _settings(spec.params, "--balancer-param"),
            f"under torchrun: {ddp}",
        ]
    )


def describe(registry: Registry, name: str) -> str:
    """Every registered model, dataset and metric called ``name``, described in full.

    Raises:
        ConfigError: Nothing is registered under ``name`` (with close matches).
    """
    parts = []
    if name in registry.models:
        parts.append(_model(registry, name))
    if name in registry.datasets:
        parts.append(_dataset(registry, name))
    if name in registry.metrics:
        parts.append(_metric(registry, name))
    if name in registry.balancers:
        parts.append(_balancer(registry, name))
    if not parts:
        known = [*registry.models, *registry.datasets, *registry.metrics, *registry.balancers]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"no model, dataset, metric or balancer is registered as {name!r} "
            f"(`mssbench plugins` lists them).{hint}"
        )
    parts.append(f"mssbench {__version__}")
    return "\n\n".join(parts)
