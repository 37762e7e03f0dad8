"""The Ray executor of ``mssbench tune``: one Ray task per trial, the study on the driver.

The driver keeps the Optuna study (its SQLite file in the study directory), asks it for each
trial's point and tells it each result. A trial runs as a Ray task, like a suite's run
(:mod:`mssbench.suite_ray`): its records directory is a temporary directory of the worker, and
its finished record comes back to the driver, which writes it into ``STUDY/runs``. After each
epoch a task reports its validation score to a small actor on the driver's node, which records
it in the study and answers whether the median pruner stops the trial.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from mssbench.config import RunConfig
from mssbench.suite_ray import (
    _argv,
    _get,
    _init,
    _plugin_sources,
    _store,
    _task_env,
    _worker_registry,
    check_resources,
    require_ray,
)
from mssbench.tune import (
    RUNS_DIR,
    Study,
    counted,
    open_study,
    point_config,
    requeue_interrupted,
    require_optuna,
    trial_facts,
    write_best,
)


class Pruner:
    """Records a trial's per-epoch score in the study and says whether to prune it."""

    def __init__(self, study: Study) -> None:
        self._study = open_study(study)

    def report(self, trial_id: int, epoch: int, score: float) -> bool:
        """Record ``score`` at ``epoch``; True when the trial should stop."""
        optuna = require_optuna()
        trial = optuna.trial.Trial(self._study, trial_id)
        trial.report(score, epoch)
        return bool(trial.should_prune())


def _run_trial_remote(  # noqa: PLR0913 - what a Ray task receives, passed on as it is
    config: RunConfig,
    facts: dict[str, Any],
    trial_id: int,
    pruner: Any,
    plugins: tuple[str, ...],
    sources: dict[str, str],
    disabled: tuple[str, ...],
    argv: list[str],
) -> dict[str, Any]:
    """One trial as a Ray task: ``finished`` with its record, ``pruned`` or ``error``."""
    import ray

    from mssbench import api
    from mssbench.suite import _guarded, _quiet, _worker_init

    class Pruned(Exception):
        pass

    def on_epoch(epoch: int, score: float) -> None:
        if ray.get(pruner.report.remote(trial_id, epoch, score)):
            raise Pruned

    _worker_init(1)
    with tempfile.TemporaryDirectory(prefix="mssbench-tune-") as tmp, _argv(argv):
        where = Path(tmp)

        def attempt() -> dict[str, Any]:
            registry = _worker_registry(plugins, sources, disabled, where)
            local = replace(config, out=str(where / "runs"))
            try:
                result = api.run(local, registry, log=_quiet, trial=api.Trial(facts, on_epoch))
            except Pruned:
                return {"status": "pruned"}
            return {"status": "finished", "path": str(result.path), "record": result.record,
                    "stem": result.path.stem}

        return _guarded(attempt)


def run_study_ray(
    study: Study,
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the study's remaining trials as Ray tasks, ``study.jobs`` at a time (0: no limit).

    Returns:
        :func:`mssbench.tune.best` of the finished study.
    """
    ray = require_ray()
    check_resources(cpus_per_run, gpus_per_run, [study.base.device])
    ostudy = open_study(study)
    again = requeue_interrupted(ostudy)
    if again:
        log(f"{again} interrupted trial(s) queued again")
    started = _init(ray, address)
    try:
        _drive(ray, study, ostudy, _task(ray, cpus_per_run, gpus_per_run), log)
    finally:
        if started:
            ray.shutdown()
    return write_best(study)


def _task(ray: Any, cpus_per_run: float, gpus_per_run: float) -> Any:
    return ray.remote(
        num_cpus=cpus_per_run,
        num_gpus=gpus_per_run,
        runtime_env={"env_vars": _task_env(gpus_per_run)},
    )(_run_trial_remote)


def _pruner(ray: Any, study: Study) -> Any:
    """The pruning actor, pinned to this (the driver's) node, where the study's file is."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor = ray.remote(num_cpus=0)(Pruner)
    return actor.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)
    ).remote(study)


def _drive(ray: Any, study: Study, ostudy: Any, task: Any, log: Callable[[str], None]) -> None:
    """Ask, submit, tell: keep up to ``study.jobs`` trials in flight until the budget is used."""
    from mssbench.space import suggest_point

    pruner = _pruner(ray, study)
    sources = _plugin_sources(study.plugins)
    left = study.budget.trials - counted(ostudy)  # failed trials use the budget too, as locally
    limit = study.jobs or max(left, 1)
    in_flight: dict[Any, tuple[Any, dict[str, Any]]] = {}

    def submit() -> None:
        otrial = ostudy.ask()
        point = suggest_point(study.space, otrial)
        config = point_config(study.trial_base(), point)
        ref = task.remote(config, trial_facts(study, otrial.number, point), otrial._trial_id,
                          pruner, study.plugins, sources, study.disabled, sys.argv)
        in_flight[ref] = (otrial, point)

    try:
        while left > 0 or in_flight:
            while left > 0 and len(in_flight) < limit:
                submit()
                left -= 1
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            otrial, point = in_flight.pop(ref)
            _tell(ostudy, otrial, point, _get(ray, ref), study, log)
    except BaseException:
        for ref in in_flight:
            ray.cancel(ref)
        raise


def _tell(
    ostudy: Any,
    otrial: Any,
    point: dict[str, Any],
    result: dict[str, Any],
    study: Study,
    log: Callable[[str], None],
) -> None:
    """Write a finished trial's record on the driver and tell the study its outcome."""
    optuna = require_optuna()
    state = optuna.trial.TrialState
    if result["status"] == "pruned":
        ostudy.tell(otrial, state=state.PRUNED)
        log(f"trial {otrial.number}: pruned {point}")
        return
    result = _store(result, str(study.directory / RUNS_DIR))
    if result["status"] != "finished":
        ostudy.tell(otrial, state=state.FAIL)
        log(f"trial {otrial.number}: ERROR {result.get('error')}")
        return
    otrial.set_user_attr("record", result["path"])
    value = float(_best_score(result["path"]))
    ostudy.tell(otrial, value)
    log(f"trial {otrial.number}: {value:.5f} {point}")


def _best_score(path: str) -> float:
    from mssbench.records import read_record_file

    return read_record_file(path)["training"]["best_selection_score"]
