"""Plugin discovery and the registry of models and datasets.

Loading order (as in pytest): blocked plugins (``disable``) first, then the entry-point group
``mssbench`` (first-party plugins in ``plugins/`` included, unless
``MSSBENCH_DISABLE_PLUGIN_AUTOLOAD`` is set), then ``--plugin MODULE_OR_FILE`` in the order given.

A plugin that fails to import, returns an invalid spec or reuses a taken name is recorded as a
:class:`PluginProblem` and left out; the others keep working. ``strict=True`` turns problems
into a :class:`~mssbench.errors.PluginError`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

import pluggy

from mssbench import hookspecs
from mssbench.errors import ConfigError, PluginError
from mssbench.spec import DatasetSpec, MetricSpec, ModelSpec, SpecError

ENTRY_POINT_GROUP = "mssbench"
_TRACE = "MSSBENCH_TRACE_PLUGINS"
_NO_AUTOLOAD = "MSSBENCH_DISABLE_PLUGIN_AUTOLOAD"


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that could not be used, and why."""

    plugin: str
    message: str

    def __str__(self) -> str:
        return f'Error in plugin "{self.plugin}": {self.message}'


@dataclass(frozen=True)
class Registered:
    """A spec together with the plugin that registered it."""

    spec: Any
    plugin: str


@dataclass
class Registry:
    """Models, datasets and metrics offered by the loaded plugins.

    Attributes:
        pm: The pluggy plugin manager (used for lifecycle hooks).
        models: Registered models by name.
        datasets: Registered datasets by name.
        metrics: Registered test metrics by name.
        problems: Plugins (or specs) that were left out, with the reason.
    """

    pm: pluggy.PluginManager
    models: dict[str, Registered] = field(default_factory=dict)
    datasets: dict[str, Registered] = field(default_factory=dict)
    metrics: dict[str, Registered] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)

    def model(self, name: str) -> ModelSpec:
        """The model spec called ``name``; a :class:`ConfigError` with hints otherwise."""
        return self._lookup("model", self.models, name).spec

    def dataset(self, name: str) -> DatasetSpec:
        """The dataset spec called ``name``; a :class:`ConfigError` with hints otherwise."""
        return self._lookup("dataset", self.datasets, name).spec

    def metric(self, name: str) -> MetricSpec:
        """The metric spec called ``name``; a :class:`ConfigError` with hints otherwise."""
        return self._lookup("metric", self.metrics, name).spec

    def plugin_of(self, kind: str, name: str) -> str:
        """Name of the plugin that registered the model, dataset or metric ``name``."""
        return self._table(kind)[name].plugin

    def _table(self, kind: str) -> dict[str, Registered]:
        return {"model": self.models, "dataset": self.datasets, "metric": self.metrics}[kind]

    def _lookup(self, kind: str, table: dict[str, Registered], name: str) -> Registered:
        if name in table:
            return table[name]
        known = ", ".join(sorted(table)) or "(none)"
        msg = f"unknown {kind} {name!r}. Known {kind}s: {known}."
        close = difflib.get_close_matches(name, list(table), n=3)
        if close:
            msg += f" Did you mean {' or '.join(repr(c) for c in close)}?"
        if self.problems:
            msg += " Some plugins failed to load: " + "; ".join(str(p) for p in self.problems)
        raise ConfigError(msg)


def _trace(msg: str) -> None:
    if os.environ.get(_TRACE):
        print(f"[mssbench plugins] {msg}", file=sys.stderr)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def is_plugin_file(target: str) -> bool:
    """Whether a ``--plugin`` value names a ``.py`` file (else it is a module name)."""
    return target.endswith(".py") or os.sep in target or "/" in target


def import_plugin(target: str) -> tuple[str, ModuleType]:
    """Import a plugin given as a module name or a path to a ``.py`` file.

    Args:
        target: ``"my_package.plugin"`` or ``"./my_model.py"``.

    Returns:
        ``(plugin name, module)``.

    Raises:
        PluginError: The module cannot be found or fails to import.
    """
    if is_plugin_file(target):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise PluginError(f'Error importing plugin "{target}": no such file {path}')
        mod_name = f"mssbench_local_{path.stem}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise PluginError(f'Error importing plugin "{target}": not a Python file')
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - reported by name, never a bare traceback
            sys.modules.pop(mod_name, None)
            raise PluginError(f'Error importing plugin "{target}": {_describe(exc)}') from exc
        return str(target), module
    try:
        return target, importlib.import_module(target)
    except Exception as exc:  # noqa: BLE001
        raise PluginError(f'Error importing plugin "{target}": {_describe(exc)}') from exc


def _entry_points() -> Iterable[importlib.metadata.EntryPoint]:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def get_plugin_manager() -> pluggy.PluginManager:
    """A new, empty plugin manager with the mssbench hookspecs. Nothing is loaded."""
    pm = pluggy.PluginManager("mssbench")
    pm.add_hookspecs(hookspecs)
    return pm


def load_registry(
    plugins: Iterable[str] = (),
    disable: Iterable[str] = (),
    strict: bool = False,
    autoload: bool | None = None,
    extra: Iterable[tuple[str, object]] = (),
) -> Registry:
    """Load plugins and collect their models and datasets.

    Args:
        plugins: Extra plugins, as module names or ``.py`` paths (``--plugin``). A plugin named
            here that fails to import is always an error: the user asked for it.
        disable: Entry-point names to skip (``--disable-plugin``).
        strict: Raise :class:`PluginError` on any problem instead of leaving the plugin out.
        autoload: Load the entry-point group; default True unless
            ``MSSBENCH_DISABLE_PLUGIN_AUTOLOAD`` is set.
        extra: ``(name, plugin object)`` pairs registered directly (tests, embedding).

    Returns:
        The registry.
    """
    pm = get_plugin_manager()
    registry = Registry(pm=pm)
    blocked = set(disable)
    for name in blocked:
        pm.set_blocked(name)
    if autoload is None:
        autoload = not os.environ.get(_NO_AUTOLOAD)

    if autoload:
        seen: set[str] = set()
        for ep in _entry_points():
            if ep.name in blocked or ep.name in seen:
                continue
            seen.add(ep.name)
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001
                registry.problems.append(PluginProblem(ep.name, f"import failed: {_describe(exc)}"))
                continue
            _register(pm, registry, ep.name, module)
    for target in plugins:
        name, module = import_plugin(target)
        _register(pm, registry, name, module)
    for name, obj in extra:
        _register(pm, registry, name, obj)

    pm.check_pending()
    _collect(pm, registry, "model")
    _collect(pm, registry, "dataset")
    _collect(pm, registry, "metric")
    if strict and registry.problems:
        raise PluginError("; ".join(str(p) for p in registry.problems))
    return registry


def _register(pm: pluggy.PluginManager, registry: Registry, name: str, module: object) -> None:
    if pm.is_registered(module) or pm.has_plugin(name):
        return
    try:
        pm.register(module, name=name)
        _trace(f"registered {name} from {getattr(module, '__file__', module)}")
    except Exception as exc:  # noqa: BLE001 - e.g. a hookimpl with an unknown argument
        registry.problems.append(PluginProblem(name, f"cannot register: {exc}"))


def _collect(pm: pluggy.PluginManager, registry: Registry, kind: str) -> None:
    caller = getattr(pm.hook, f"mssbench_register_{kind}s")
    table = registry._table(kind)
    expected = {"model": ModelSpec, "dataset": DatasetSpec, "metric": MetricSpec}[kind]
    # Called per implementation (not through the hook caller) so that one broken plugin cannot
    # take the others down. get_hookimpls() lists them in registration order, so the plugin
    # loaded first (entry points before --plugin) keeps a contested name.
    for impl in caller.get_hookimpls():
        plugin = impl.plugin_name
        try:
            specs = impl.function()
        except Exception as exc:  # noqa: BLE001
            registry.problems.append(
                PluginProblem(plugin, f"mssbench_register_{kind}s raised {_describe(exc)}")
            )
            continue
        if not isinstance(specs, (list, tuple)):
            registry.problems.append(
                PluginProblem(
                    plugin,
                    f"mssbench_register_{kind}s must return a list of {expected.__name__}, "
                    f"got {type(specs).__name__}",
                )
            )
            continue
        for spec in specs:
            if not isinstance(spec, expected):
                registry.problems.append(
                    PluginProblem(
                        plugin, f"expected {expected.__name__}, got {type(spec).__name__}"
                    )
                )
                continue
            try:
                spec.validate()
            except SpecError as exc:
                registry.problems.append(PluginProblem(plugin, str(exc)))
                continue
            if spec.name in table:
                owner = table[spec.name].plugin
                registry.problems.append(
                    PluginProblem(
                        plugin,
                        f"{kind} name {spec.name!r} is already registered by plugin "
                        f'"{owner}"; this one is left out',
                    )
                )
                continue
            table[spec.name] = Registered(spec, plugin)
            _trace(f"{kind} {spec.name!r} from {plugin}")
