"""Experiment trackers: what a tracker plugin declares, and the check of ``--tracker`` names.

A tracker (MLflow, TensorBoard, ...) is a plugin implementing the lifecycle hooks
(``mssbench_run_start``, ``mssbench_epoch_end``, ``mssbench_run_end``, ``mssbench_run_failed``)
that acts only on runs whose ``config.trackers`` names it, and declares itself through
``mssbench_register_trackers``. The built-in ones are in ``plugins/mssbench_trackers/``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from mssbench.errors import ConfigError


@dataclass(frozen=True)
class TrackerSpec:
    """An experiment tracker.

    Attributes:
        name: What ``--tracker`` takes.
        summary: One line for ``mssbench plugins``.
        default_uri: Where it writes unless ``--tracker-uri NAME=URI`` says otherwise (may
            name ``{out}``, the run's records directory).
        requires: The pip extra or package it needs (for the error when it is missing).
        modules: Modules it imports: a run that enables it stops before training, with one
            line naming ``requires``, when one does not import.
    """

    name: str
    summary: str
    default_uri: str = ""
    requires: str = ""
    modules: tuple[str, ...] = ()


def registered(pm: Any) -> dict[str, tuple[TrackerSpec, str]]:
    """``{name: (spec, plugin name)}`` of the trackers the plugins declare."""
    out: dict[str, tuple[TrackerSpec, str]] = {}
    for impl in pm.hook.mssbench_register_trackers.get_hookimpls():
        for spec in impl.function() or []:
            out.setdefault(spec.name, (spec, impl.plugin_name))
    return out


def check_trackers(pm: Any, names: Iterable[str], uris: dict[str, str]) -> None:
    """Raise :class:`ConfigError` for a tracker name (or a ``--tracker-uri`` name) not known."""
    known = registered(pm)
    listed = ", ".join(sorted(known)) or "(none installed)"
    names = list(names)
    for name in [*names, *uris]:
        if name not in known:
            raise ConfigError(f"unknown tracker {name!r}; registered trackers: {listed}")
    for name in uris:
        if name not in names:
            raise ConfigError(f"--tracker-uri {name}=... names a tracker not enabled (--tracker)")
    for name in names:
        _check_importable(known[name][0])


def _check_importable(spec: TrackerSpec) -> None:
    """Raise :class:`ConfigError` naming ``spec.requires`` when one of its modules is missing."""
    for module in spec.modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(
                f"--tracker {spec.name} needs the {spec.name} package: pip install "
                f"'{spec.requires}'"
            ) from None


def parse_uris(items: Iterable[str]) -> dict[str, str]:
    """``("mlflow=file:///tmp/mlruns",)`` -> ``{"mlflow": "file:///tmp/mlruns"}``."""
    out = {}
    for item in items:
        name, sep, uri = item.partition("=")
        if not sep or not name.strip() or not uri.strip():
            raise ConfigError(f"--tracker-uri expects NAME=URI, got {item!r}")
        out[name.strip()] = uri.strip()
    return out


def configure(pm: Any, options: dict[str, Any]) -> None:
    """Parse and check the command line's ``trackers`` and ``tracker_uris`` in place."""
    options["tracker_uris"] = parse_uris(options.get("tracker_uris") or ())
    check_trackers(pm, options.get("trackers") or (), options["tracker_uris"])


def tracker_uri(run: Any, spec: TrackerSpec) -> str:
    """Where ``spec`` writes for this run: ``config.tracker_uris``, else its default."""
    config = run["config"]
    uris = config.get("tracker_uris") or {}
    if spec.name in uris:
        return str(uris[spec.name])
    return spec.default_uri.format(out=Path(str(config.get("out", "."))).resolve())


def enabled(run: Any, name: str) -> bool:
    """Whether the run asked for tracker ``name``."""
    return name in (run["config"].get("trackers") or ())
