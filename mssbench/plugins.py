"""Plugin discovery and the registry of models and datasets.

Loading order (as in pytest): blocked plugins (``disable``) first, then the entry-point group
``mssbench`` (first-party plugins in ``plugins/`` included, unless
``MSSBENCH_DISABLE_PLUGIN_AUTOLOAD`` is set), then ``--plugin MODULE_OR_FILE`` in the order given.

A plugin that fails to import (``sys.exit`` at import included), implements a hook that does not
exist (``mssbench_epochs_end``), returns an invalid spec or reuses a taken name is recorded as a
:class:`PluginProblem` and left out; the others keep working. ``strict=True`` turns problems
into a :class:`~mssbench.errors.PluginError`. A ``--plugin`` that offers a name another plugin
already registered is always an error naming both.

Lifecycle hooks are called through :class:`RunHooks`: each implementation gets read-only copies
of the run record and metrics, and one that raises is reported once by plugin name while the run
goes on.
"""

from __future__ import annotations

import copy
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
from typing import Any, Callable, Iterable, Mapping

import pluggy

from mssbench import hookspecs
from mssbench.balancing import BalancerSpec
from mssbench.codehash import file_sha256
from mssbench.errors import ConfigError, PluginError
from mssbench.spec import DatasetSpec, MetricSpec, ModelSpec, SpecError

ENTRY_POINT_GROUP = "mssbench"
_TRACE = "MSSBENCH_TRACE_PLUGINS"
_NO_AUTOLOAD = "MSSBENCH_DISABLE_PLUGIN_AUTOLOAD"
#: Longest exception text quoted in a problem or warning line.
_MAX_MESSAGE = 500


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
        balancers: Registered loss-balancing methods by name.
        problems: Plugins (or specs) that were left out, with the reason.
        installed: Entry-point plugins by name: ``"<distribution> <version>"`` that provides it.
    """

    pm: pluggy.PluginManager
    models: dict[str, Registered] = field(default_factory=dict)
    datasets: dict[str, Registered] = field(default_factory=dict)
    metrics: dict[str, Registered] = field(default_factory=dict)
    balancers: dict[str, Registered] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)
    installed: dict[str, str] = field(default_factory=dict)

    def model(self, name: str) -> ModelSpec:
        """The model spec called ``name``; a :class:`ConfigError` with hints otherwise."""
        return self._lookup("model", self.models, name).spec

    def dataset(self, name: str) -> DatasetSpec:
        """The dataset spec called ``name``; a :class:`ConfigError` with hints otherwise."""
        return self._lookup("dataset", self.datasets, name).spec

    def metric(self, name: str) -> MetricSpec:
        """The metric spec called ``name``; a :class:`ConfigError` with hints otherwise."""
        return self._lookup("metric", self.metrics, name).spec

    def balancer(self, name: str) -> BalancerSpec:
        """The balancer spec called ``name``; a :class:`ConfigError` with hints otherwise."""
        return self._lookup("balancer", self.balancers, name).spec

    def plugin_of(self, kind: str, name: str) -> str:
        """Name of the plugin that registered the model, dataset or metric ``name``."""
        return self._table(kind)[name].plugin

    def hook_only_plugins(self) -> dict[str, list[str]]:
        """Loaded plugins that register no model, dataset, metric or tracker, with their hooks."""
        tables = (self.models, self.datasets, self.metrics, self.balancers)
        providers = {r.plugin for table in tables for r in table.values()}
        out: dict[str, list[str]] = {}
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None or name in providers:
                continue
            hooks = {caller.name for caller in self.pm.get_hookcallers(plugin) or []}
            if "mssbench_register_trackers" in hooks:
                continue  # listed as trackers
            out[name] = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
        return dict(sorted(out.items()))

    def _table(self, kind: str) -> dict[str, Registered]:
        return {
            "model": self.models,
            "dataset": self.datasets,
            "metric": self.metrics,
            "balancer": self.balancers,
        }[kind]

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
    text = " ".join(str(exc).split())
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + f"... ({len(text):,} characters)"
    if isinstance(exc, SystemExit):
        text = f"exit status {exc.code!r} (sys.exit)"
    return f"{type(exc).__name__}: {text}{where}"


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
        file_sha256(str(path))  # the bytes about to run, kept for the process's records
        try:
            spec.loader.exec_module(module)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - sys.exit included: reported by name
            sys.modules.pop(mod_name, None)
            raise PluginError(f'Error importing plugin "{target}": {_describe(exc)}') from exc
        return str(target), module
    try:
        return target, importlib.import_module(target)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - sys.exit included
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
            here that fails to import, or that offers a name another plugin already has, is
            always an error: the user asked for it.
        disable: Entry-point names to skip (``--disable-plugin``).
        strict: Raise :class:`PluginError` on any problem instead of leaving the plugin out.
        autoload: Load the entry-point group; default True unless
            ``MSSBENCH_DISABLE_PLUGIN_AUTOLOAD`` is set.
        extra: ``(name, plugin object)`` pairs registered directly (tests, embedding).

    Returns:
        The registry.

    Raises:
        PluginError: A ``--plugin`` cannot be imported or clashes with another plugin, or
            ``strict`` and some plugin is broken.
    """
    pm = get_plugin_manager()
    registry = Registry(pm=pm)
    blocked = set(disable)
    for name in blocked:
        pm.set_blocked(name)
    if autoload is None:
        autoload = not os.environ.get(_NO_AUTOLOAD)

    if autoload:
        _load_entry_points(pm, registry, blocked)
    explicit: set[str] = set()
    for target in dict.fromkeys(plugins):  # a --plugin given twice is loaded once
        name, module = import_plugin(target)
        if pm.has_plugin(name) and not pm.is_registered(module):
            raise PluginError(
                f'plugin name "{name}" given by --plugin {target} is already taken by '
                f"{_owner(registry, name)}; rename the module or file"
            )
        explicit.add(name)
        _register(pm, registry, name, module)
    for name, obj in extra:
        _register(pm, registry, name, obj)

    pm.check_pending()
    for kind in ("model", "dataset", "metric", "balancer"):
        _collect(pm, registry, kind, explicit)
    if strict and registry.problems:
        raise PluginError("; ".join(str(p) for p in registry.problems))
    return registry


def _load_entry_points(pm: pluggy.PluginManager, registry: Registry, blocked: set[str]) -> None:
    for ep in _entry_points():
        if ep.name in blocked or ep.name in registry.installed:
            continue
        dist = getattr(ep, "dist", None)
        registry.installed[ep.name] = f"{dist.name} {dist.version}" if dist else ep.value
        try:
            module = ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - sys.exit at import included
            registry.problems.append(PluginProblem(ep.name, f"import failed: {_describe(exc)}"))
            continue
        _register(pm, registry, ep.name, module)


def _owner(registry: Registry, plugin: str) -> str:
    """``'installed plugin "mmoe" (mssbench 0.1.0)'`` or ``'plugin "./x.py"'``."""
    if plugin in registry.installed:
        return f'installed plugin "{plugin}" ({registry.installed[plugin]})'
    return f'plugin "{plugin}"'


def _register(pm: pluggy.PluginManager, registry: Registry, name: str, module: object) -> None:
    if pm.is_registered(module) or pm.has_plugin(name):
        return
    try:
        pm.register(module, name=name)
        _trace(f"registered {name} from {getattr(module, '__file__', module)}")
    except Exception as exc:  # noqa: BLE001 - e.g. a hookimpl with an unknown argument
        if pm.has_plugin(name):  # pluggy keeps the hooks it added before the bad one
            pm.unregister(name=name)
        registry.problems.append(PluginProblem(name, f"cannot register: {exc}"))
        return
    unknown = _unknown_hooks(pm, module)
    if unknown:
        pm.unregister(name=name)
        registry.problems.append(PluginProblem(name, "; ".join(unknown)))
        return
    # The digest of the code just imported, taken now and kept for the process: a record
    # written hours later (a long suite's worker) names this code even if the files changed.
    from mssbench.codehash import module_code_sha256

    module_code_sha256(module)


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """One message per hook that ``plugin`` implements but no hookspec declares."""
    known = sorted(caller.name for caller in vars(pm.hook).values() if caller.has_spec())
    messages = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.has_spec():
            continue
        impls = [i for i in caller.get_hookimpls() if i.plugin is plugin]
        if all(i.optionalhook for i in impls):
            continue
        msg = f"implements {caller.name}, which is not a mssbench hook"
        close = difflib.get_close_matches(caller.name, known, n=1)
        msg += f" (did you mean {close[0]}?)" if close else f" (hooks: {', '.join(known)})"
        messages.append(msg)
    return messages


def _collect(pm: pluggy.PluginManager, registry: Registry, kind: str, explicit: set[str]) -> None:
    caller = getattr(pm.hook, f"mssbench_register_{kind}s")
    table = registry._table(kind)
    expected = {
        "model": ModelSpec,
        "dataset": DatasetSpec,
        "metric": MetricSpec,
        "balancer": BalancerSpec,
    }[kind]
    # Called per implementation (not through the hook caller) so that one broken plugin cannot
    # take the others down. get_hookimpls() lists them in registration order, so the plugin
    # loaded first (entry points before --plugin) keeps a contested name.
    for impl in caller.get_hookimpls():
        plugin = impl.plugin_name
        try:
            specs = impl.function()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - sys.exit included
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
            problem = _check_spec(registry, kind, expected, spec, plugin, explicit)
            if problem is not None:
                registry.problems.append(PluginProblem(plugin, problem))
                continue
            table[spec.name] = Registered(spec, plugin)
            _trace(f"{kind} {spec.name!r} from {plugin}")


def _check_spec(
    registry: Registry, kind: str, expected: type, spec: Any, plugin: str, explicit: set[str]
) -> str | None:
    """Why ``spec`` cannot be registered (``None`` if it can); a clash of a ``--plugin`` raises."""
    if not isinstance(spec, expected):
        return f"expected {expected.__name__}, got {type(spec).__name__}"
    try:
        spec.validate()
    except SpecError as exc:
        return str(exc)
    table = registry._table(kind)
    if spec.name not in table:
        return None
    owner = _owner(registry, table[spec.name].plugin)
    if plugin in explicit:
        raise PluginError(
            f"--plugin {plugin} registers {kind} {spec.name!r}, which {owner} already "
            f"registers; rename the {kind}, or leave the other plugin out"
            + (
                f" with --disable-plugin {table[spec.name].plugin}"
                if table[spec.name].plugin in registry.installed
                else ""
            )
        )
    return f"{kind} name {spec.name!r} is already registered by {owner}; this one is left out"


class ReadOnlyDict(dict):
    """A ``dict`` that refuses changes: what lifecycle hooks receive instead of the record.

    It is a ``dict`` so that ``json.dumps`` and ``dict(...)`` work on it as on the record;
    ``copy.deepcopy`` and pickling give a plain (mutable) ``dict``.
    """

    def _refuse(self, *_args: Any, **_kwargs: Any) -> None:
        raise TypeError("the run record is read-only in hooks; change a copy.deepcopy(run)")

    __setitem__ = __delitem__ = __ior__ = _refuse  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[type, tuple[dict]]:
        return (dict, (dict(self),))


def freeze(value: Any) -> Any:
    """A deep read-only copy: mappings become :class:`ReadOnlyDict`, lists tuples."""
    if isinstance(value, Mapping):
        return ReadOnlyDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(freeze(v) for v in value)
    if value is None or isinstance(value, (str, bytes, int, float, complex)):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - an object that cannot be copied is passed as is
        return value


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


class RunHooks:
    """Calls the lifecycle hooks of one run, each plugin's implementation on its own.

    Every implementation receives read-only copies (:func:`freeze`) of the record and metrics,
    so no hook can change what the record claims. An implementation that raises (``sys.exit``
    included) is reported once per plugin and hook as a ``Warning:`` line, and the run goes on,
    with one exception: a tracker plugin (one implementing ``mssbench_register_trackers``) that
    raises :class:`~mssbench.errors.ConfigError` in ``mssbench_run_start`` stops the run before
    it trains: the user asked for that tracker, and it cannot record the run.

    Args:
        pm: The plugin manager of the registry.
        enabled: False on the ranks other than 0 of a data-parallel run: hooks fire once per run.
        warn: Where warning lines go (default: stderr).
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        enabled: bool = True,
        warn: Callable[[str], None] = _warn,
    ) -> None:
        self._pm = pm
        self._enabled = enabled
        self._warn = warn
        self._reported: set[tuple[str, str]] = set()
        self._run: Mapping[str, Any] | None = None

    def run_start(self, run: Mapping[str, Any]) -> None:
        """``mssbench_run_start``; from now until the end, a failure calls ``run_failed``."""
        self._run = run
        self._call("mssbench_run_start", run=freeze(run))

    def epoch_end(self, run: Mapping[str, Any], epoch: int, metrics: Mapping[str, float]) -> None:
        """``mssbench_epoch_end``."""
        self._run = run
        self._call("mssbench_epoch_end", run=freeze(run), epoch=epoch, metrics=freeze(metrics))

    def run_end(self, run: Mapping[str, Any], path: str) -> None:
        """``mssbench_run_end``; the run is closed (a later failure calls nothing)."""
        self._run = None
        self._call("mssbench_run_end", run=freeze(run), path=str(path))

    def run_failed(self, error: BaseException) -> None:
        """``mssbench_run_failed`` with the record as it stood, if the run was started."""
        run, self._run = self._run, None
        if run is not None:
            self._call("mssbench_run_failed", run=freeze(run), error=error)

    def _call(self, hook: str, **kwargs: Any) -> None:
        if not self._enabled:
            return
        caller = getattr(self._pm.hook, hook)
        for impl in reversed(caller.get_hookimpls()):  # pluggy's order: last registered first
            if impl.hookwrapper or getattr(impl, "wrapper", False):
                self._report(impl.plugin_name, hook, "hook wrappers are not supported here")
                continue
            try:
                impl.function(*(kwargs[name] for name in impl.argnames))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - a hook never stops a run
                if self._tracker_cannot_start(impl.plugin_name, hook, exc):
                    raise
                self._report(impl.plugin_name, hook, _describe(exc))

    def _tracker_cannot_start(self, plugin: str, hook: str, exc: BaseException) -> bool:
        """Whether ``exc`` is a requested tracker failing to start (which stops the run)."""
        if hook != "mssbench_run_start" or not isinstance(exc, ConfigError):
            return False
        trackers = getattr(self._pm.hook, "mssbench_register_trackers", None)
        return trackers is not None and any(
            impl.plugin_name == plugin for impl in trackers.get_hookimpls()
        )

    def _report(self, plugin: str, hook: str, reason: str) -> None:
        if (plugin, hook) in self._reported:
            return
        self._reported.add((plugin, hook))
        self._warn(f'Warning: plugin "{plugin}" failed in {hook}: {reason}; the run goes on')
