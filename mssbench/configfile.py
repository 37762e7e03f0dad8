"""Configuration files for ``mssbench run --config run.yaml`` and ``mssbench suite --config``.

A file is a YAML mapping (read with OmegaConf, so ``${...}`` interpolation works) whose keys are
the :class:`~mssbench.config.RunConfig` field names (``epochs``, ``batch_size``, ``params``,
``data_options`` ...), plus ``scenarios``, ``plugins`` and, for a suite, the suite's options
(``models``, ``datasets``, ``seeds``, ``jobs``, ``executor``, ``ray_address``,
``cpus_per_run``, ``gpus_per_run``). Values are checked against the defaults declared in
:mod:`mssbench.config` (and the suite command's own defaults); an unknown key is an error with a
did-you-mean suggestion.

Options given on the command line win over the file: ``-p``/``-D`` are merged over the file's
``params``/``data_options`` key by key, and any other option given replaces the file's value.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable

import click

from mssbench.config import RunConfig, resolve
from mssbench.errors import ConfigError

#: ``RunConfig`` fields a run file may set (``model`` and ``dataset`` are checked as text).
_RUN_FIELDS = {
    f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
    for f in dataclasses.fields(RunConfig)
    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
}

#: Keys shared by both kinds of file that are not ``RunConfig`` fields.
_EXTRA = {"scenarios": None, "plugins": []}

#: Keys of a suite file besides the run settings, with the command option they set.
SUITE_ONLY = (
    "models",
    "datasets",
    "seeds",
    "jobs",
    "executor",
    "ray_address",
    "cpus_per_run",
    "gpus_per_run",
)

#: Suite options that only ``executor: ray`` uses (an error with the local executor).
RAY_ONLY = ("ray_address", "cpus_per_run", "gpus_per_run")

#: File keys whose command-line counterpart has another name or meaning.
_RENAMED = {"progress": "no_progress"}

#: Where the wrapper leaves the ``params`` keys only the config file gave (``ctx.meta``).
_FILE_ONLY_PARAMS = "mssbench.configfile.file_only_params"

#: File keys given as a mapping, passed on as repeated ``KEY=VALUE`` options (``-p``, ``-D``,
#: ``--tracker-uri``, ``--balancer-param``).
_ASSIGNMENTS = ("params", "data_options", "tracker_uris", "balancer_params")


def allowed_keys(kind: str, command: click.Command) -> dict[str, Any]:
    """The keys a ``kind`` (``run`` or ``suite``) file may hold, with their defaults."""
    keys = {**_RUN_FIELDS, **_EXTRA, "model": "", "dataset": ""}
    if kind == "suite":
        del keys["model"], keys["dataset"], keys["seed"], keys["resume"]
        declared = {p.name: p.default for p in command.params}
        keys.update({k: _plain_default(declared[k]) for k in SUITE_ONLY})
    return keys


def _plain_default(default: Any) -> Any:
    value = default() if callable(default) else default
    # An option without a default (click's sentinel) takes any JSON value from the file.
    return value if isinstance(value, (str, int, float, bool, list, tuple)) else None


def read(path: str | Path, kind: str, command: click.Command) -> dict[str, Any]:
    """Read and check a config file: its keys and values, typed after the defaults.

    Raises:
        ConfigError: One line naming the file (and line or key) for unreadable YAML, a
            top-level that is not a mapping, an unknown key or a value of the wrong type.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    where = str(path)
    if not Path(path).is_file():
        raise ConfigError(f"config file {where!r} does not exist")
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"config file {where}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # noqa: BLE001 - yaml's errors: name the line, never a traceback
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {where}{line}: not valid YAML ({problem})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {where}: expected a mapping of keys, got {loaded!r}")
    defaults = allowed_keys(kind, command)
    values = {}
    for key, value in loaded.items():
        key = str(key)
        if key in _ASSIGNMENTS or key in ("model", "dataset"):
            values[key] = _check_special(where, key, value)
            continue
        textual = isinstance(defaults.get(key), str) or key in ("scenarios", "datasets")
        if textual and isinstance(value, list):
            value = ",".join(str(v) for v in value)  # models: [a, b] means "a,b"
            value += "," if key == "seeds" else ""  # seeds: [2] is seed 2, not a count
        if textual and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # seeds: 5
        values[key] = resolve("key", f"config file {where}", defaults, {key: value})[key]
    return {k: values[k] for k in loaded}


def _check_special(where: str, key: str, value: Any) -> Any:
    if key in _ASSIGNMENTS:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(
                f"config file {where}: {key!r} expects a mapping of KEY: VALUE, got {value!r}"
            )
        return {str(k): v for k, v in value.items()}
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config file {where}: {key!r} expects a name, got {value!r}")
    return value


def _as_option(value: Any) -> str:
    """A typed file value as the text ``-p KEY=VALUE`` takes, as a user would type it.

    ``[128, 64]`` -> ``128,64``, ``true`` -> ``true``: a run's hash covers the given text, so
    the file and the equivalent command line find the same finished runs.
    """
    from mssbench.leaderboard import _cli_value

    return _cli_value(value)


def merge(
    kwargs: dict[str, Any], values: dict[str, Any], from_command_line: Callable[[str], bool]
) -> dict[str, Any]:
    """The command's keyword arguments with the file's values under the command line's.

    Args:
        kwargs: What click parsed.
        values: What :func:`read` returned.
        from_command_line: Whether an option (by its parameter name) was given explicitly.
    """
    out = dict(kwargs)
    for key, value in values.items():
        if key in _ASSIGNMENTS:
            given = tuple(f"{k}={_as_option(v)}" for k, v in value.items())
            out[key] = given + tuple(kwargs.get(key) or ())  # later assignments win
            continue
        name = _RENAMED.get(key, key)
        if name not in out or from_command_line(name):
            continue
        if key == "progress":
            value = not value
        elif isinstance(value, list):
            value = tuple(value)
        out[name] = value
    return out


def config_file_option(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--config FILE`` to the ``kind`` command (``run`` or ``suite``)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            path = kwargs.pop("config_file", None)
            if path is not None:
                ctx = click.get_current_context()
                values = read(path, kind, ctx.command)

                def given(name: str) -> bool:
                    source = ctx.get_parameter_source(name)
                    return source not in (None, click.core.ParameterSource.DEFAULT)

                typed = {a.partition("=")[0] for a in kwargs.get("params") or ()}
                ctx.meta[_FILE_ONLY_PARAMS] = frozenset(values.get("params", {})) - typed
                kwargs = merge(kwargs, values, given)
                _check_ray_only(path, values, kwargs)
            _require(kwargs, kind)
            return func(**kwargs)

        return click.option(
            "--config",
            "config_file",
            default=None,
            metavar="FILE",
            type=click.Path(dir_okay=False),
            help=f"A YAML file of {kind} options (examples/{kind}.yaml); options given on the "
            "command line win over it.",
        )(wrapper)

    return decorate


def file_only_params() -> frozenset[str]:
    """The ``params`` keys of this command's ``--config`` file that no typed ``-p`` repeats.

    A suite leaves such a key out (with a note) where it applies to none of its models, so one
    file serves any ``--models`` subset; a typed ``-p`` that applies to nothing is an error.
    """
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(_FILE_ONLY_PARAMS, frozenset()) if ctx is not None else frozenset()


def _check_ray_only(path: str, values: dict[str, Any], kwargs: dict[str, Any]) -> None:
    if kwargs.get("executor", "ray") == "ray":
        return
    for key in RAY_ONLY:
        if key in values:
            raise ConfigError(
                f"config file {path}: {key!r} is for executor: ray (this suite uses "
                f"{kwargs['executor']})"
            )


def _require(kwargs: dict[str, Any], kind: str) -> None:
    required = ("model", "dataset") if kind == "run" else ("datasets",)
    if kind == "suite" and kwargs.get("tuned"):
        required = ()  # the studies name their model and dataset
    for name in required:
        if not kwargs.get(name):
            raise ConfigError(
                f"missing --{name} (give it on the command line or as {name}: in --config)"
            )
