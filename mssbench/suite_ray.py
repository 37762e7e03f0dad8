"""The Ray executor of suites: every run is a Ray task, every record comes back to the driver.

A task asks Ray for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs, runs
:func:`mssbench.api.run` with its records directory in a temporary directory of the worker,
and returns the finished record; the driver writes it into its own ``--out`` with the same
atomic, never-overwriting writer as a local run. Workers therefore need no storage shared with
the driver, only mssbench, the plugins' packages and the data. Plugins given as module names
and entry-point plugins are imported by the workers; a plugin given as a ``.py`` file travels
as its source text.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from itertools import islice
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator

from mssbench.config import RunConfig
from mssbench.errors import ConfigError
from mssbench.plugins import Registry, import_plugin, is_plugin_file, load_registry
from mssbench.records import ensure_writable, relocated, write_record
from mssbench.suite import SuiteJob, _finish, _finished, _guarded, _quiet, _worker_init

INSTALL_HINT = "pip install 'mssbench[ray]'"

#: Variables that decide which plugins a process loads: workers get the driver's values.
FORWARDED_ENV = ("MSSBENCH_DISABLE_PLUGIN_AUTOLOAD", "MSSBENCH_TRACE_PLUGINS")


def require_ray() -> ModuleType:
    """The ``ray`` module; a :class:`ConfigError` saying how to install it otherwise."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray ({exc}): {INSTALL_HINT}") from None
    return ray


def check_resources(cpus_per_run: float, gpus_per_run: float, devices: Iterable[str]) -> None:
    """Raise :class:`ConfigError` on resources Ray cannot grant or a device a run cannot get.

    Args:
        cpus_per_run: CPUs per run: above 0, a whole number above 1 (as Ray requires).
        gpus_per_run: GPUs per run: 0 or more, a whole number above 1.
        devices: The ``--device`` of the runs; ``cuda`` needs ``gpus_per_run > 0``.
    """
    if cpus_per_run <= 0 or gpus_per_run < 0:
        raise ConfigError(
            f"--cpus-per-run must be > 0 and --gpus-per-run >= 0, "
            f"got {cpus_per_run:g} and {gpus_per_run:g}"
        )
    for flag, value in (("--cpus-per-run", cpus_per_run), ("--gpus-per-run", gpus_per_run)):
        if value > 1 and not float(value).is_integer():
            raise ConfigError(f"{flag} above 1 must be a whole number (as in Ray), got {value:g}")
    if gpus_per_run == 0 and any(d.startswith("cuda") for d in devices):
        raise ConfigError(
            "--device cuda needs --gpus-per-run > 0 with --executor ray "
            "(a Ray task gets only the GPUs it asks for)"
        )


def _amount(value: float, unit: str) -> str:
    return f"{value:g} {unit}" + ("s" if value > 1 else "")


def describe_resources(cpus_per_run: float, gpus_per_run: float) -> str:
    """``"1 CPU"``, ``"4 CPUs + 1 GPU"``: what every run asks Ray for."""
    text = _amount(cpus_per_run, "CPU")
    return text + f" + {_amount(gpus_per_run, 'GPU')}" if gpus_per_run else text


def _task_env(gpus_per_run: float) -> dict[str, str]:
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    if not gpus_per_run:
        # Ray leaves every GPU visible to a task that asks for none; --device auto must not
        # take a GPU that Ray may give to another task.
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _plugin_sources(plugins: Iterable[str]) -> dict[str, str]:
    """The text of the plugins given as ``.py`` files, keyed as given on the command line."""
    return {
        t: Path(t).expanduser().read_text(encoding="utf-8") for t in plugins if is_plugin_file(t)
    }


def _shipped(where: Path, i: int, target: str) -> Path:
    """Where a worker writes the text of the ``i``-th plugin, a file plugin."""
    return where / "plugins" / str(i) / Path(target).name


def _worker_registry(
    plugins: tuple[str, ...], sources: dict[str, str], disabled: tuple[str, ...], where: Path
) -> Registry:
    """Load the plugins in a worker, file plugins from their shipped text, names as given."""
    loaded = []
    for i, target in enumerate(plugins):
        if target in sources:
            copy = _shipped(where, i, target)
            copy.parent.mkdir(parents=True)
            copy.write_text(sources[target], encoding="utf-8")
            loaded.append((target, import_plugin(str(copy))[1]))
        else:
            loaded.append(import_plugin(target))
    return load_registry(disable=disabled, extra=loaded)


@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    """The driver's command line, which the record keeps (a worker's own is Ray's)."""
    saved = sys.argv
    sys.argv = list(argv)
    try:
        yield
    finally:
        sys.argv = saved


def _run_remote(
    config: RunConfig,
    plugins: tuple[str, ...],
    sources: dict[str, str],
    disabled: tuple[str, ...],
    argv: list[str],
    threads: int,
) -> dict[str, Any]:
    """One run as a Ray task; never raises (errors become a result).

    Returns:
        The local executor's result, plus ``record`` and its file name ``stem`` when finished.
    """
    from mssbench import api

    _worker_init(threads)
    with tempfile.TemporaryDirectory(prefix="mssbench-ray-") as tmp, _argv(argv):
        where = Path(tmp)

        def attempt() -> dict[str, Any]:
            registry = _worker_registry(plugins, sources, disabled, where)
            out = str(where / "runs")
            result = api.run(replace(config, out=out), registry=registry, log=_quiet)
            return {**_finished(result), "record": result.record, "stem": result.path.stem}

        result = _guarded(attempt)
    if result["status"] == "error":  # name a file plugin as given, not by its copy
        for i, target in enumerate(plugins):
            if target in sources:
                result["error"] = result["error"].replace(str(_shipped(where, i, target)), target)
    return result


def _store(result: dict[str, Any], out: str) -> dict[str, Any]:
    """Write a finished run's record into the driver's ``out``; the result then points there."""
    if result["status"] != "finished":
        return result
    record, stem = result.pop("record"), result.pop("stem")
    # Where the record lives, not the worker's temporary directory (out is not in the hash).
    record = relocated(record, out)
    try:
        path = write_record(Path(out).expanduser(), stem, record)
    except OSError as exc:
        return {"status": "error", "error": f"cannot write its record into {out}: {exc}"}
    return {**result, "path": str(path)}


def _get(ray: ModuleType, ref: Any) -> dict[str, Any]:
    try:
        return ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - a lost worker or node (after Ray's retries)
        cause = getattr(exc, "cause", None) or exc  # a RayTaskError wraps the task's exception
        lines = str(cause).strip().splitlines()
        return {
            "status": "error",
            "error": f"Ray task failed: {type(cause).__name__}: {lines[0] if lines else ''}",
        }


def _init(ray: ModuleType, address: str | None) -> bool:
    """Connect to Ray unless this process already is; whether this call connected."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "a new local instance"
        raise ConfigError(f"cannot connect to Ray ({where}): {exc}") from None
    return True


def run_suite_ray(
    jobs: list[SuiteJob],
    plugins: tuple[str, ...] = (),
    disabled: tuple[str, ...] = (),
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    max_in_flight: int | None = None,
    log: Callable[[str], None] = print,
) -> list[SuiteJob]:
    """Run the pending jobs as Ray tasks and fill in their status, as :func:`run_suite` does.

    Args:
        jobs: The suite's jobs (:func:`mssbench.suite.plan`); only ``pending`` ones run.
        plugins: ``--plugin`` values, loaded in every worker.
        disabled: ``--disable-plugin`` names.
        address: Ray address, unless this process is connected to Ray already: ``None``:
            ``$RAY_ADDRESS``, else a new local instance; ``"auto"``: the running cluster.
        cpus_per_run: CPUs Ray reserves for a run (its torch threads, at least 1).
        gpus_per_run: GPUs Ray reserves for a run; with 0 a run sees no GPU.
        max_in_flight: Most runs submitted at once; ``None``: all, and Ray schedules them as
            resources free up.
        log: Where the progress lines go.

    Returns:
        ``jobs``.
    """
    pending = [j for j in jobs if j.status == "pending"]
    if not pending:
        return jobs
    ray = require_ray()
    check_resources(cpus_per_run, gpus_per_run, (j.config.device for j in pending))
    for out in {j.config.out for j in pending}:
        ensure_writable(out)
    sources = _plugin_sources(plugins)
    task = ray.remote(
        num_cpus=cpus_per_run,
        num_gpus=gpus_per_run,
        runtime_env={"env_vars": _task_env(gpus_per_run)},
    )(_run_remote)
    threads = max(1, math.floor(cpus_per_run))

    def submit(job: SuiteJob) -> Any:
        d, m, s = job.key
        config = replace(job.config, progress=False)
        return task.options(name=f"mssbench {d} {m} seed {s}").remote(
            config, plugins, sources, disabled, sys.argv, threads
        )

    started = _init(ray, address)
    try:
        _warn_if_too_big(ray, cpus_per_run, gpus_per_run, log)
        _drain(ray, pending, submit, max_in_flight or len(pending), log)
    finally:
        if started:
            ray.shutdown()
    return jobs


def _warn_if_too_big(
    ray: ModuleType, cpus_per_run: float, gpus_per_run: float, log: Callable[[str], None]
) -> None:
    """Say so when the cluster has fewer CPUs or GPUs than one run asks for: Ray would wait."""
    have = ray.cluster_resources()
    for name, wanted in (("CPU", cpus_per_run), ("GPU", gpus_per_run)):
        if wanted > have.get(name, 0):
            log(
                f"Warning: each run asks Ray for {_amount(wanted, name)} and the cluster has "
                f"{have.get(name, 0):g}: the runs wait until bigger nodes join (Ctrl-C stops)."
            )


def _drain(
    ray: ModuleType,
    pending: list[SuiteJob],
    submit: Callable[[SuiteJob], Any],
    limit: int,
    log: Callable[[str], None],
) -> None:
    """Keep up to ``limit`` runs in flight; finish each as it returns, in completion order."""
    queue = iter(pending)
    in_flight = {submit(job): job for job in islice(queue, limit)}
    done, started = 0, time.monotonic()
    try:
        while in_flight:
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            job = in_flight.pop(ref)
            done += 1
            result = _store(_get(ray, ref), job.config.out)
            _finish(job, result, done, len(pending), log, started)
            for following in islice(queue, 1):
                in_flight[submit(following)] = following
    except BaseException:
        for ref in in_flight:
            ray.cancel(ref)
        raise
