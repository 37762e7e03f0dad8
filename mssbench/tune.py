"""Budgeted hyper-parameter tuning (``mssbench tune``): Optuna over a model's search space.

A study searches one model on one dataset. Every trial is a run (:func:`mssbench.api.run` with
a :class:`mssbench.api.Trial`) that selects on the validation split alone and never reads a
test row; its record, marked with the study and trial number, goes into ``STUDY/runs``. Optuna
keeps the study in ``STUDY/optuna.db`` (SQLite), so an interrupted study continues where it
stopped when the same command is given again: the trials that were running then are run again
(resuming from their last epoch's checkpoint), the finished ones are kept.

Equal budget: every trial of every model trains on at most ``--budget-samples`` rows (spread
over ``--epochs`` epochs of ``ceil(S / (epochs x batch size))`` steps), and every model gets
``--trials`` trials. Both are in ``STUDY/study.yaml`` and in each trial's record.

Sampling is Optuna's TPE; a trial whose validation score after an epoch is below the median of
earlier trials at that epoch is pruned (Optuna's median pruner). The best configuration is
written to ``STUDY/best.yaml``, a ``mssbench run --config`` file.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from mssbench.config import SELECTIONS, RunConfig
from mssbench.errors import ConfigError, MssbenchError
from mssbench.plugins import Registry, load_registry
from mssbench.space import full_space, split_point, suggest_point

STUDY_FILE = "study.yaml"
BEST_FILE = "best.yaml"
STORAGE_FILE = "optuna.db"
RUNS_DIR = "runs"
DEFAULT_TUNE_OUT = "mssbench-tune"
#: Trials that run to the end before the median pruner may stop any.
PRUNER_STARTUP_TRIALS = 3
INSTALL_HINT = "pip install 'mssbench[tune]'"


def objective(select: str) -> str:
    """What a study maximises: its trials' early-stopping score on the validation split."""
    return f"best validation selection score ({SELECTIONS[select]})"


def require_optuna() -> Any:
    """The ``optuna`` module; a :class:`ConfigError` saying how to install it otherwise."""
    try:
        import optuna
    except ImportError as exc:
        raise ConfigError(f"mssbench tune needs Optuna ({exc}): {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass(frozen=True)
class Budget:
    """What every model of a comparison gets: ``trials`` trials of ``samples_per_trial`` rows."""

    trials: int
    samples_per_trial: int

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {self.trials}")
        if self.samples_per_trial < 1:
            raise ConfigError(f"--budget-samples must be >= 1, got {self.samples_per_trial}")

    def steps_per_epoch(self, epochs: int, batch_size: int) -> int:
        """Training steps per epoch so that ``epochs`` epochs see at most the budget's rows."""
        return max(1, math.floor(self.samples_per_trial / (epochs * batch_size)))

    def to_dict(self) -> dict[str, int]:
        """As stored in the study file and each trial's record."""
        return {"trials": self.trials, "samples_per_trial": self.samples_per_trial}


@dataclass
class Study:
    """One study: a model and dataset, the trials' shared options, the budget and the seed.

    Attributes:
        base: The options every trial shares (the search-space point goes over them).
        budget: Trials and training rows per trial.
        seed: Seed of the sampler and of every trial's run.
        directory: The study's directory.
        jobs: Trials running at once.
        plugins: ``--plugin`` values, loaded by every worker.
        disabled: ``--disable-plugin`` names.
        fixed: Hyper-parameters the user fixed (``-p``): left out of the search.
        space: The space searched (set by :func:`prepare`).
    """

    base: RunConfig
    budget: Budget
    seed: int
    directory: Path
    jobs: int = 1
    plugins: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    space: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The study's name: its directory's name."""
        return self.directory.resolve().name

    @property
    def storage_url(self) -> str:
        """Optuna's SQLite storage in the study directory."""
        return f"sqlite:///{(self.directory / STORAGE_FILE).resolve()}"

    def trial_base(self) -> RunConfig:
        """The options of every trial before its point: the budget's step cap, the runs dir."""
        steps = self.budget.steps_per_epoch(self.base.epochs, self.base.batch_size)
        return replace(
            self.base,
            seed=self.seed,
            max_steps_per_epoch=steps,
            out=str(self.directory / RUNS_DIR),
            resume=True,
            progress=False,
        )

    def description(self) -> dict[str, Any]:
        """What ``study.yaml`` holds: a rerun with other settings is refused."""
        base = self.trial_base()
        return {
            "study": self.name,
            "model": base.model,
            "dataset": base.dataset,
            "budget": self.budget.to_dict(),
            "seed": self.seed,
            "objective": objective(base.select),
            "sampler": "TPE",
            "pruner": f"median (after {PRUNER_STARTUP_TRIALS} trials)",
            "trial_options": _options(base),
            "search_space": {k: _describe(v) for k, v in self.space.items()},
        }


def _describe(dim: Any) -> str:
    return repr(dim)


def _options(config: RunConfig) -> dict[str, Any]:
    """The run-file keys of ``config`` that a rerun needs (no output or progress settings)."""
    out = config.to_dict()
    for key in (*RunConfig.NON_RESULT_FIELDS, "seed"):
        out.pop(key, None)
    return out


def point_config(base: RunConfig, point: Mapping[str, Any]) -> RunConfig:
    """``base`` with a search-space point: training options set, hyper-parameters as text.

    Hyper-parameters are written as ``-p`` takes them (``[64, 32]`` -> ``64,32``), so a trial,
    ``mssbench run --config best.yaml`` and ``mssbench suite --tuned`` give the same run hash.
    """
    from mssbench.leaderboard import _cli_value

    training, params = split_point(point)
    merged = {k: _cli_value(v) for k, v in {**base.params, **params}.items()}
    return replace(base, params=merged, **training)


def prepare(study: Study, registry: Registry) -> Study:
    """Check the model and dataset, fix the space, write or check ``study.yaml``."""
    from omegaconf import OmegaConf

    spec = registry.model(study.base.model)
    registry.dataset(study.base.dataset)
    unknown = sorted(set(study.fixed) - set(spec.defaults))
    if unknown:
        raise ConfigError(f"-p {unknown[0]}: model {spec.name!r} has no such hyper-parameter")
    space = {k: v for k, v in full_space(spec.search_space).items() if k not in study.fixed}
    study = replace(study, space=space)
    study.trial_base().validate()
    path = study.directory / STUDY_FILE
    wanted = study.description()
    if path.is_file():
        stored = OmegaConf.to_container(OmegaConf.load(path))
        stored.pop("best", None)
        if stored != wanted:
            changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
            raise ConfigError(
                f"{path}: this directory holds a study with other settings ({', '.join(changed)}"
                "); give another --out, or the same options to continue it"
            )
    else:
        study.directory.mkdir(parents=True, exist_ok=True)
        _write_yaml(path, wanted)
    return study


def _write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as YAML through a temporary file (never a half-written file)."""
    from omegaconf import OmegaConf

    tmp = path.with_suffix(".tmp")
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(dict(data))), encoding="utf-8")
    tmp.replace(path)


#: A study continued with ``n`` trials in it seeds its samplers ``n * RESUME_SEED_STRIDE`` on.
RESUME_SEED_STRIDE = 1009


def sampler_seed(seed: int, worker: int, existing: int) -> int:
    """The TPE seed of ``worker`` when the study already holds ``existing`` trials.

    A new study: ``seed + worker``, so parallel workers do not propose the same points. A
    continued one is offset by the trials it holds: a seeded sampler started over would propose
    its first random points again, which the study has already run.
    """
    return seed + worker + RESUME_SEED_STRIDE * existing


def open_study(study: Study, worker: int = 0) -> Any:
    """The Optuna study in ``study``'s storage (created on first use), TPE and median pruning.

    The sampler's seed is :func:`sampler_seed` of the trials in the storage when it opens.
    """
    optuna = require_optuna()
    storage = optuna.storages.RDBStorage(
        study.storage_url, engine_kwargs={"connect_args": {"timeout": 60}}
    )
    ostudy = optuna.create_study(
        study_name=study.name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=study.seed + worker),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS),
        load_if_exists=True,
    )
    existing = len(ostudy.get_trials(deepcopy=False))
    if existing:
        seed = sampler_seed(study.seed, worker, existing)
        ostudy.sampler = optuna.samplers.TPESampler(seed=seed)
    return ostudy


def requeue_interrupted(ostudy: Any) -> int:
    """Queue again the points of trials an interrupted process left unfinished.

    Those are trials still marked running (a killed process) and failed trials marked
    ``interrupted`` (Ctrl-C). The new trial has the same configuration, so its run resumes from
    the checkpoint the interrupted one left. Returns how many were queued.
    """
    optuna = require_optuna()
    state = optuna.trial.TrialState
    done = set(ostudy.user_attrs.get("requeued", []))
    stale = [
        t
        for t in ostudy.get_trials(deepcopy=False, states=(state.RUNNING, state.FAIL))
        if t.number not in done and (t.state == state.RUNNING or t.user_attrs.get("interrupted"))
    ]
    for trial in stale:
        ostudy.enqueue_trial(trial.params, skip_if_exists=False)
        if trial.state == state.RUNNING:
            ostudy.tell(trial.number, state=state.FAIL)
    if stale:
        ostudy.set_user_attr("requeued", sorted(done | {t.number for t in stale}))
    return len(stale)


def counted(ostudy: Any) -> int:
    """Trials that count against the budget: finished or pruned."""
    optuna = require_optuna()
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(ostudy.get_trials(deepcopy=False, states=states))


def trial_facts(study: Study, number: int, point: Mapping[str, Any]) -> dict[str, Any]:
    """The ``trial`` block of a trial's record."""
    from mssbench.records import jsonable

    return {
        "study": study.name,
        "number": number,
        "budget": study.budget.to_dict(),
        "point": jsonable(dict(point)),
        "selection": objective(study.base.select),
    }


def run_trial(
    study: Study,
    registry: Registry,
    otrial: Any,
    log: Callable[[str], None],
) -> float:
    """Run one Optuna trial; its value is the run's best validation selection score."""
    from mssbench import api

    optuna = require_optuna()
    point = suggest_point(study.space, otrial)
    config = point_config(study.trial_base(), point)

    def on_epoch(epoch: int, score: float) -> None:
        otrial.report(score, epoch)
        if otrial.should_prune():
            raise optuna.TrialPruned(f"validation score {score:.4f} at epoch {epoch}")

    trial = api.Trial(trial_facts(study, otrial.number, point), on_epoch)
    try:
        result = api.run(config, registry, log=_quiet, wait=True, trial=trial)
    except optuna.TrialPruned:
        _drop_checkpoint(config, registry)
        log(f"trial {otrial.number}: pruned {point}")
        raise
    except KeyboardInterrupt:
        otrial.set_user_attr("interrupted", True)  # run again, resumed, by the next start
        raise
    otrial.set_user_attr("record", str(result.path))
    otrial.set_user_attr("run_hash", result.record["run_hash"])
    value = result.record["training"]["best_selection_score"]
    log(f"trial {otrial.number}: {value:.5f} {point}")
    return float(value)


def _quiet(_message: str) -> None:
    """Trials are reported by one line each."""


def _drop_checkpoint(config: RunConfig, registry: Registry) -> None:
    """A pruned trial does not resume: its checkpoint goes."""
    from mssbench.api import checkpoint_path

    path = checkpoint_path(config.out, config, registry)
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only when empty, as a finished run leaves it


def optimize(study: Study, worker: int, log: Callable[[str], None], trials: int) -> None:
    """Run ``trials`` trials in this process (its share of what the study has left)."""
    registry = load_registry(plugins=study.plugins, disable=study.disabled)
    ostudy = open_study(study, worker)
    if trials <= 0:
        return
    ostudy.optimize(
        lambda t: run_trial(study, registry, t, log),
        n_trials=trials,
        catch=(MssbenchError,),
    )


def _worker(study: Study, worker: int, trials: int) -> None:
    from mssbench.suite import _worker_init

    _worker_init(1)
    optimize(study, worker, _print, trials)


def _print(message: str) -> None:
    print(message, flush=True)


def run_study(study: Study, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the study's remaining trials (``study.jobs`` processes at once); write ``best.yaml``.

    Returns:
        :func:`best` of the finished study.
    """
    ostudy = open_study(study)
    again = requeue_interrupted(ostudy)
    if again:
        log(f"{again} interrupted trial(s) queued again (they resume from their checkpoints)")
    left = study.budget.trials - counted(ostudy)  # failed trials use the budget too
    log(f"Study {study.name}: {counted(ostudy)} of {study.budget.trials} trials done")
    if study.jobs <= 1:
        optimize(study, 0, log, left)
    else:
        _parallel(study, left)
    return write_best(study)


def _parallel(study: Study, left: int) -> None:
    """``study.jobs`` processes, each running its share of the ``left`` trials."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    shares = [left // study.jobs + (i < left % study.jobs) for i in range(study.jobs)]
    from mssbench.records import loaded_code_state

    with ProcessPoolExecutor(
        study.jobs, mp_context=get_context("spawn"), initializer=loaded_code_state
    ) as pool:
        futures = [pool.submit(_worker, study, i, n) for i, n in enumerate(shares) if n]
        for future in futures:
            future.result()


def best(study: Study) -> dict[str, Any]:
    """The best finished trial: its number, value, point and run-file options."""
    optuna = require_optuna()
    ostudy = open_study(study)
    done = ostudy.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        raise ConfigError(f"study {study.directory}: no trial finished (see the lines above)")
    top = max(done, key=lambda t: (t.value, -t.number))
    point = _point_of(study, top.params)
    config = point_config(study.trial_base(), point)
    return {
        "trial": top.number,
        "value": top.value,
        "point": point,
        "record": top.user_attrs.get("record"),
        "config": {
            "model": config.model,
            "dataset": config.dataset,
            **_options(config),
            "seed": study.seed,
        },
    }


def _point_of(study: Study, params: Mapping[str, Any]) -> dict[str, Any]:
    """A search-space point from the flat parameters Optuna stored."""
    from optuna.trial import FixedTrial

    return suggest_point(study.space, FixedTrial(dict(params)))


def write_best(study: Study) -> dict[str, Any]:
    """Write ``best.yaml`` (a run file) and the best trial into ``study.yaml``."""
    from mssbench.records import jsonable

    found = best(study)
    _write_yaml(study.directory / BEST_FILE, jsonable(found["config"]))
    described = {
        **study.description(),
        "best": jsonable({k: found[k] for k in ("trial", "value", "point", "record")}),
    }
    _write_yaml(study.directory / STUDY_FILE, described)
    return found


def commands(study_dir: Path, seeds: str = "5") -> tuple[str, str]:
    """The ``mssbench run`` and ``mssbench suite`` commands that rerun a study's best."""
    run = f"mssbench run --config {study_dir / BEST_FILE}"
    suite = f"mssbench suite --tuned {study_dir} --seeds {seeds}"
    return run, suite


def study_dirs(directory: Path) -> list[Path]:
    """The studies in ``directory``: itself if it is one, else its subdirectories that are."""
    directory = Path(directory)
    if (directory / STUDY_FILE).is_file():
        return [directory]
    found = sorted(p.parent for p in directory.glob(f"*/{STUDY_FILE}"))
    if not found:
        raise ConfigError(
            f"--tuned {directory}: no study there (a study directory holds {STUDY_FILE}; "
            "make one with mssbench tune)"
        )
    return found


def best_config(study_dir: Path) -> RunConfig:
    """The run configuration in ``study_dir/best.yaml`` (seed as tuned), naming its study.

    ``tuned_from`` and ``tuning_budget`` say where it came from: the study and its budget
    (``study.yaml``), which the tuned track's pages state.
    """
    from omegaconf import OmegaConf

    path = study_dir / BEST_FILE
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: the study has no finished trial yet")
    values = OmegaConf.to_container(OmegaConf.load(path))
    try:
        config = RunConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    config.validate()
    budget = (OmegaConf.to_container(OmegaConf.load(study_dir / STUDY_FILE)) or {}).get("budget")
    return replace(
        config,
        tuned_from=config.tuned_from or study_dir.name,
        tuning_budget=config.tuning_budget or dict(budget or {}),
    )


def tuned_jobs(directory: Path, seeds: list[int], base: RunConfig) -> list[Any]:
    """A suite's jobs: every study's best configuration in ``directory`` at every seed.

    ``base`` gives what does not change the numbers chosen by the study: ``out``, ``device``,
    ``progress`` and ``resume``.
    """
    from mssbench.suite import SuiteJob

    jobs = []
    for study_dir in study_dirs(directory):
        config = best_config(study_dir)
        for seed in seeds:
            jobs.append(
                SuiteJob(
                    replace(
                        config,
                        seed=seed,
                        out=base.out,
                        device=base.device,
                        progress=base.progress,
                        resume=base.resume,
                    )
                )
            )
    return jobs
