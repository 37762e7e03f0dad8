"""The Python API: ``mssbench.api.run`` does what ``mssbench run`` does."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pandas as pd
import torch
from filelock import FileLock, Timeout

from mssbench.balancing import Balancer, BalancerSpec, build_balancer, resolve_balancer
from mssbench.base_rate import STALLED_WARNING, stalled
from mssbench.config import SELECTIONS, RunConfig, resolve
from mssbench.data import contract
from mssbench.data.splits import nested_sample
from mssbench.errors import ConfigError, MssbenchError, PluginError, describe_error
from mssbench.identity import record_identity, resolved_options, run_identity
from mssbench.metrics import evaluate
from mssbench.metrics.core import call_metric
from mssbench.metrics.intervals import auc_intervals
from mssbench.nn import ESMMHead
from mssbench.plugins import Registry, RunHooks, load_registry
from mssbench.records import (
    RunFacts,
    ensure_writable,
    finish_record,
    load_records,
    loaded_code_state,
    start_record,
    write_record,
)
from mssbench.runners import distributed
from mssbench.runners.output_bias import OPT_OUT_TAG, init_output_biases
from mssbench.runners.pretrain import PretrainSettings, pretrain_contrastive
from mssbench.runners.trainer import (
    FitSettings,
    converged,
    denormals_flushed,
    fit,
    predict,
    resolve_device,
    seed_everything,
    task_weights,
)
from mssbench.runners.weight_decay import GROUPS_TAG, OPTIMIZERS, Groups, parameter_groups
from mssbench.runners.weight_decay import describe as describe_groups
from mssbench.spec import (
    DatasetSchema,
    LoadedDataset,
    MetricSpec,
    ModelSpec,
    SpecError,
    Split,
    resolve_task_weights,
)

#: Rows per block when block-shuffling memory-mapped training data.
BLOCK_ROWS = 65536


@dataclass
class RunResult:
    """A finished run.

    Attributes:
        record: The run record as written.
        path: Where it was written (``None`` on the ranks other than 0 of a data-parallel
            run, which write nothing).
        test_metrics: Tidy test metrics (one row per scenario, task and metric).
        oracle_metrics: The same for the true probabilities, for generated data that knows them.
    """

    record: dict[str, Any]
    path: Path | None
    test_metrics: pd.DataFrame
    oracle_metrics: pd.DataFrame | None = None
    #: The configuration was already finished in ``--out`` (``skip_finished``): ``record`` and
    #: ``path`` are that earlier run's, nothing was trained.
    skipped: bool = False


@dataclass(frozen=True)
class Trial:
    """A run that is a tuning trial (``mssbench tune``): selection on validation alone.

    The run never reads a test row (the dataset's test split is dropped as soon as the plugin
    returns it) and its record carries ``facts`` as its ``trial`` block instead of test
    results.

    Attributes:
        facts: The record's ``trial`` block (:class:`mssbench.records.TrialBlock`).
        on_epoch: Called with ``(epoch, validation selection score)`` after each epoch; an
            exception it raises (a pruned trial) ends the run and reaches the caller.
    """

    facts: Mapping[str, Any]
    on_epoch: Callable[[int, float], None] | None = None


def without_test(data: LoadedDataset) -> LoadedDataset:
    """``data`` with an empty test split (its test rows are never read)."""
    empty = data.train.subset(torch.zeros(0, dtype=torch.long))
    return dataclasses.replace(data, test=empty)


def _silent(_message: str) -> None:
    """The log of ranks other than 0."""


def load_dataset(registry: Registry, name: str, options: dict[str, Any]) -> LoadedDataset:
    """Load a registered dataset, its options and data checked (:func:`load_checked_dataset`)."""
    return load_checked_dataset(registry, name, options)[0]


def load_checked_dataset(
    registry: Registry,
    name: str,
    options: dict[str, Any],
    warn: Callable[[str], None] | None = None,
    read_test: bool = True,
) -> tuple[LoadedDataset, dict[str, Any]]:
    """Load a registered dataset; check its options and the dataset contract.

    Args:
        registry: Loaded plugins.
        name: Registered dataset name.
        options: Load options (checked against the declared defaults).
        warn: Receives a line per declared scenario without rows in a split (default: stderr).
        read_test: False for a tuning trial: the test split is replaced by an empty one
            before anything reads it (:func:`without_test`).

    Returns:
        The data and :func:`mssbench.data.contract.validate`'s counts (for the run record).

    Raises:
        DataContractError: The plugin returned ids, labels or numerics that break the contract.
    """
    spec = registry.dataset(name)
    resolved = resolve("data option", f"dataset {name!r}", spec.options, options)
    try:
        data = spec.load(resolved)
    except MssbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin bug, reported by name
        plugin = registry.plugin_of("dataset", name)
        raise PluginError(
            f'dataset {name!r} (plugin "{plugin}") failed to load: {type(exc).__name__}: {exc}'
        ) from exc
    if not isinstance(data, LoadedDataset):
        raise PluginError(f"dataset {name!r}: load() must return LoadedDataset")
    warn = warn or contract.warn_stderr
    if not read_test:
        data = without_test(data)
        warn = _not_about_test(warn)
    counts = contract.validate(data, name, warn)
    return data, counts


def _not_about_test(warn: Callable[[str], None]) -> Callable[[str], None]:
    """``warn`` without the lines about the (emptied) test split."""
    return lambda line: None if line.endswith("split test") else warn(line)


def _train_rows(train: Split, rows: int, dataset: str) -> Split:
    """``rows`` rows of ``train`` for ``--train-rows`` (a nested sample: smaller is inside)."""
    if rows > len(train):
        raise ConfigError(
            f"--train-rows {rows} is more than the {len(train):,} training rows of {dataset!r}"
        )
    return train.subset(torch.from_numpy(nested_sample(len(train), rows)))


def build_model(registry: Registry, name: str, schema, params: dict[str, Any]) -> torch.nn.Module:
    """Build a registered model with its hyper-parameters checked against the declared defaults."""
    spec = registry.model(name)
    resolved = resolve("param", f"model {name!r}", spec.defaults, params, spec.constraints)
    try:
        model = spec.build(schema, **resolved)
        weights = resolve_task_weights(spec, schema, resolved)
    except MssbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin bug, reported by name and place
        raise build_error(registry, name, exc) from exc
    if not isinstance(model, torch.nn.Module):
        raise PluginError(f"model {name!r}: build() must return a torch.nn.Module")
    model.mssbench_task_weights = weights  # the spec's weights, read by the trainer's loss
    return model


def build_error(registry: Registry, name: str, exc: Exception) -> MssbenchError:
    """What ``build`` raising ``exc`` means to a user.

    A ``TypeError`` raised by the call itself (a keyword ``build`` does not take) or a
    ``ValueError`` is the model rejecting its hyper-parameters (:class:`ConfigError`); anything
    else raised inside the model's code is a model error (:class:`PluginError`) naming the
    plugin, the file and the line.
    """
    at_call = isinstance(exc, TypeError) and exc.__traceback__.tb_next is None
    if at_call or isinstance(exc, (ValueError, SpecError)):
        return ConfigError(f"model {name!r} rejected its hyper-parameters: {exc}")
    plugin = registry.plugin_of("model", name)
    return PluginError(f'model {name!r} (plugin "{plugin}") failed to build: {describe_error(exc)}')


def resolve_metrics(registry: Registry, names: list[str]) -> list[MetricSpec]:
    """The registered metrics called ``names``, each tried once on a small cell.

    A metric that raises there (or returns something other than a number) is a
    :class:`PluginError` naming its plugin, before any training time is spent.
    """
    specs = [registry.metric(name) for name in names]
    logits = torch.tensor([-1.5, 0.3, 2.0, -0.2, 0.3, 1.1], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0, 0, 1], dtype=torch.int64)
    for spec in specs:
        plugin = registry.plugin_of("metric", spec.name)
        try:
            call_metric(spec, logits, labels)
        except Exception as exc:  # noqa: BLE001 - a plugin bug, reported by name
            raise PluginError(
                f'metric {spec.name!r} (plugin "{plugin}") fails on a 6-row cell: '
                f"{type(exc).__name__}: {exc}"
            ) from exc
    return specs


def checkpoint_path(out_dir: str | Path, config: RunConfig, registry: Registry) -> Path:
    """Where a run keeps its resumable state: ``OUT/.partial/<dataset>_<model>[_vN]_<id>.pt``.

    Named by the run's identity (:func:`mssbench.identity.run_identity`): a checkpoint of
    another model version, or of the data another dataset default gave, is not resumed.
    """
    identity, number = run_identity(config, registry)
    version = f"_v{number}" if number > 1 else ""
    name = f"{config.dataset}_{config.model}{version}_{identity}.pt"
    return Path(out_dir) / ".partial" / name


def finished_record(out_dir: str | Path, config: RunConfig, registry: Registry) -> dict | None:
    """A finished record in ``out_dir`` of the run ``config`` describes (the same identity)."""
    if not Path(out_dir).is_dir():
        return None
    records, _ = load_records(out_dir)
    want = run_identity(config, registry)
    for record in records:
        if record_identity(record, registry) == want:
            return record
    return None


@contextlib.contextmanager
def run_lock(checkpoint: Path, wait: bool) -> Iterator[None]:
    """Hold the lock of one configuration in one output directory while it runs.

    The lock file sits beside the checkpoint. With ``wait`` the call blocks until another
    process running the same configuration into the same directory is done; without it such
    a process is a :class:`ConfigError` ("already running"). On release the lock file is
    removed, and the ``.partial`` folder when nothing else is in it (a finished run removed
    its checkpoint); a process that was waiting then takes a new lock (and, for a suite, finds
    the finished record).
    """
    lock_path = checkpoint.with_suffix(".lock")
    lock = FileLock(str(lock_path), timeout=-1 if wait else 0)
    for _attempt in range(100):
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire()
            break
        except FileNotFoundError:
            continue  # the holder finished and removed .partial while this one waited
        except Timeout:
            raise ConfigError(
                f"this configuration is already running into {checkpoint.parent.parent} "
                f"(lock {lock_path} is held by another process); wait for it to finish, or "
                "use another --out"
            ) from None
    else:
        raise ConfigError(f"cannot take the run lock {lock_path}: its folder keeps vanishing")
    try:
        yield
    finally:
        lock.release()
        # Safe with filelock >= 4: a waiter that locked the removed file notices and retries.
        with contextlib.suppress(OSError):
            lock_path.unlink()
        with contextlib.suppress(OSError):
            lock_path.parent.rmdir()  # only when empty (no checkpoint to resume)


def run(
    config: RunConfig,
    registry: Registry | None = None,
    log: Callable[[str], None] = print,
    *,
    wait: bool = False,
    skip_finished: bool = False,
    trial: Trial | None = None,
) -> RunResult:
    """Train one model on one dataset, evaluate on test and write the run record.

    Under ``torchrun`` (more than one process) the run is data-parallel; see
    :mod:`mssbench.runners.distributed`. One configuration runs at most once at a time in one
    output directory (:func:`run_lock`).

    Args:
        config: The run configuration.
        registry: Loaded plugins (default: :func:`mssbench.plugins.load_registry`).
        log: Where status lines go.
        wait: When another process is running this configuration into ``config.out``, wait
            for it instead of failing with "already running".
        skip_finished: Once the lock is held, return the finished record of this
            configuration and model version if ``config.out`` has one (``skipped=True``)
            instead of training again (what suites do).
        trial: Run as a tuning trial (:class:`Trial`): no test row is read, and the record
            says which trial it is.

    Returns:
        The finished run.
    """
    loaded_code_state()  # the code this process runs, before anything can change on disk
    config.validate()
    registry = registry or load_registry()
    world, device = distributed.setup(resolve_device(config.device))
    try:
        # Lifecycle hooks fire once per run: on rank 0 of a data-parallel run.
        hooks = RunHooks(registry.pm, enabled=world.is_main)
        try:
            if not world.is_main:
                return _run(config, registry, log, world, device, hooks, trial)
            # An unknown model, dataset or data option: an error before anything is written.
            checkpoint = checkpoint_path(ensure_writable(config.out), config, registry)
            with run_lock(checkpoint, wait):
                if skip_finished:
                    done = finished_record(config.out, config, registry)
                    if done is not None:
                        frame = pd.DataFrame(done["test"]["metrics"])
                        path = Path(done.pop("_path"))
                        return RunResult(done, path, frame, skipped=True)
                return _run(config, registry, log, world, device, hooks, trial)
        except BaseException as exc:
            hooks.run_failed(exc)  # only if mssbench_run_start was called
            raise
    finally:
        distributed.teardown(world)


def check_head_supported(
    model_spec: ModelSpec, head: str, schema: DatasetSchema, dataset: str
) -> None:
    """Raise :class:`ConfigError` if the model's ``heads`` tag does not list ``head``.

    A model whose loss only makes sense with one head (AITM's calibrator compares end-to-end
    probabilities; ESCM²'s counterfactual risk needs the CVR tower under the ESMM head) lists
    the heads it supports in the tag ``heads``; without the tag every head is allowed.
    """
    supported = model_spec.tags.get("heads")
    if supported is None or head in supported:
        return
    reason = ""
    if "esmm" in supported and not schema.relations:
        reason = f": dataset {dataset!r} has no click -> purchase relation for the ESMM head"
    raise ConfigError(
        f"model {model_spec.name!r} supports only --head {', '.join(supported)}, "
        f"not {head!r}{reason}"
    )


def _make_balancer(
    spec: BalancerSpec | None, params: dict[str, Any], weights: torch.Tensor
) -> Balancer | None:
    """The run's balancer over the run's ``[T]`` task weights (``None``: the trainer's sum)."""
    if spec is None:
        return None
    return build_balancer(spec, len(weights), weights, params)


def _balancer_report(
    balancer: Balancer | None, spec: BalancerSpec | None, params: dict[str, Any], plugin: str
) -> dict[str, Any]:
    """The record's ``training.balancer``: name, plugin, version, parameters, final weights."""
    if balancer is None or spec is None:
        return {}
    return {
        "balancer": {
            "name": spec.name,
            "plugin": plugin,
            "version": spec.version,
            "params": params,
            # The weights it ended with (learned ones included).
            "task_weights": balancer.task_weights().detach().cpu().tolist(),
        }
    }


def _init_output_biases(
    model: torch.nn.Module,
    model_spec: ModelSpec,
    config: RunConfig,
    train: Split,
    schema: DatasetSchema,
    head: str,
) -> str | None:
    """Apply ``--bias-init`` to the freshly built backbone; why it was not applied, if so."""
    if config.bias_init == "none":
        return None
    opt_out = model_spec.tags.get(OPT_OUT_TAG)
    if opt_out:
        return f"model {config.model!r} keeps its own output biases: {opt_out}"
    init_output_biases(model, train, schema, model_name=config.model, esmm=head == "esmm")
    return None


def _optimizer_facts(
    config: RunConfig, device: torch.device, model: torch.nn.Module, groups: Groups | None
) -> dict[str, Any]:
    """The optimizer and its weight decay groups, as the record states them."""
    optimizer = OPTIMIZERS[config.weight_decay_mode].__name__
    if device.type == "cuda":
        optimizer += " (fused, capturable)" if config.step == "graph" else " (fused)"
    param_groups = parameter_groups(model, config.weight_decay, groups, config.model)
    return {"optimizer": optimizer, "weight_decay_groups": describe_groups(model, param_groups)}


@dataclass
class _Context:
    """What every step of a run shares: its configuration, plugins, processes and callbacks."""

    config: RunConfig
    registry: Registry
    world: distributed.World
    device: torch.device
    hooks: RunHooks
    trial: Trial | None
    log: Callable[[str], None]
    #: ``time.perf_counter()`` when the run began (its wall time counts from here).
    started: float


@dataclass
class _Plan:
    """The run's plugins and settings, resolved before any data is read."""

    model_spec: ModelSpec
    params: dict[str, Any]
    data_options: dict[str, Any]
    metric_specs: list[MetricSpec]
    balancer_spec: BalancerSpec | None
    balancer_params: dict[str, Any]
    batching: str
    out_dir: Path

    @property
    def decay_groups(self) -> Any:
        """The model's declared weight-decay groups (its spec's tag), if any."""
        return self.model_spec.tags.get(GROUPS_TAG)


@dataclass
class _Built:
    """The loaded data and the model built on it, ready to train."""

    data: LoadedDataset
    counts: Mapping[str, Any]
    load_seconds: float
    head: str
    model: torch.nn.Module
    train: Split
    valid: Split
    test: Split
    bias_note: str | None
    task_weights: torch.Tensor
    balancer: Balancer | None


def _run(
    config: RunConfig,
    registry: Registry,
    log: Callable[[str], None],
    world: distributed.World,
    device: torch.device,
    hooks: RunHooks,
    trial: Trial | None = None,
) -> RunResult:
    started = time.perf_counter()
    ctx = _Context(
        config, registry, world, device, hooks, trial, log if world.is_main else _silent, started
    )
    plan = _plan(ctx)
    built = _build(ctx, plan, *_load(ctx, plan))
    stamp = datetime.now(timezone.utc)
    record = _start(ctx, plan, built, stamp)
    checkpoint = checkpoint_path(plan.out_dir, config, registry)
    settings = _fit_settings(ctx, plan, built, record, checkpoint)
    with denormals_flushed(config.flush_denormal):  # all training, pretraining included
        _pretrain(ctx, built, record)
        result = fit(built.model, built.data.schema, built.train, built.valid, settings)
        test_df, oracle_df = _test_metrics(
            built.model, built.test, device, config, world, built.data.schema,
            plan.metric_specs, trial,
        )
    record = finish_record(
        record,
        finished_at=datetime.now(timezone.utc).isoformat(),
        # Every process of a resumed run: earlier ones up to their last checkpoint.
        wall_seconds=result.earlier_wall_seconds + time.perf_counter() - started,
        training=_training_block(ctx, plan, built, result.state),
        test_cells=None if trial is not None else test_df.to_dict(orient="records"),
        oracle_cells=None if oracle_df is None else oracle_df.to_dict("records"),
    )
    if record["training"]["stalled"]:
        ctx.log(STALLED_WARNING)
    if not world.is_main:
        return RunResult(record=record, path=None, test_metrics=test_df, oracle_metrics=oracle_df)
    stem = f"{stamp:%Y%m%dT%H%M%SZ}_{config.dataset}_{config.model}_s{config.seed}"
    path = write_record(plan.out_dir, stem, record)
    if checkpoint.exists():
        checkpoint.unlink()
    hooks.run_end(record, str(path))
    return RunResult(record=record, path=path, test_metrics=test_df, oracle_metrics=oracle_df)


def _plan(ctx: _Context) -> _Plan:
    """Resolve the model's hyper-parameters, the data options, metrics, balancer and batching."""
    config, registry = ctx.config, ctx.registry
    model_spec = registry.model(config.model)
    params = resolve(
        "param",
        f"model {config.model!r}",
        model_spec.defaults,
        config.params,
        model_spec.constraints,
    )
    data_options = resolved_options(registry.dataset(config.dataset), config.data_options)
    metric_specs = resolve_metrics(registry, config.metrics)
    balancer_spec, balancer_params = resolve_balancer(
        registry,
        config.balancer,
        config.balancer_params,
        distributed=ctx.world.enabled,
        step=config.step,
    )
    out_dir = ensure_writable(config.out)
    batching = config.batching
    if batching == "auto":
        batching = str(model_spec.tags.get("batching", "mixed"))
    return _Plan(
        model_spec,
        params,
        data_options,
        metric_specs,
        balancer_spec,
        balancer_params,
        batching,
        out_dir,
    )


def _load(ctx: _Context, plan: _Plan) -> tuple[LoadedDataset, Mapping[str, Any], float]:
    """The checked dataset (no test rows for a trial), its counts and the seconds it took."""
    t_load = time.perf_counter()
    data, counts = load_checked_dataset(
        ctx.registry,
        ctx.config.dataset,
        plan.data_options,
        lambda line: ctx.log(f"Warning: {line}"),
        read_test=ctx.trial is None,
    )
    return data, counts, time.perf_counter() - t_load


def _choose_head(config: RunConfig, model_spec: ModelSpec, schema: DatasetSchema) -> str:
    """The output head: ``--head``, or the model's preferred one where the tasks allow it."""
    head = config.head
    if head == "auto":
        # A model's preferred head applies where the tasks allow it (click -> purchase).
        head = str(model_spec.tags.get("head", "direct")) if schema.relations else "direct"
    check_head_supported(model_spec, head, schema, config.dataset)
    if head == "esmm" and not schema.relations:
        raise ConfigError(
            f"--head esmm needs tasks where one implies another (click -> purchase); "
            f"dataset {config.dataset!r} has none"
        )
    return head


def _build(  # noqa: PLR0913 - the loaded pieces, as _load returns them
    ctx: _Context,
    plan: _Plan,
    data: LoadedDataset,
    counts: Mapping[str, Any],
    load_seconds: float,
) -> _Built:
    """Seed, build the model (output biases, head) and put it and the splits on the device.

    The order of the steps that draw random numbers is part of every model's numbers: seed,
    build, training subsample, output biases, then the per-rank seed of data-parallel runs.
    """
    config, world, device = ctx.config, ctx.world, ctx.device
    schema = data.schema
    head = _choose_head(config, plan.model_spec, schema)
    seed_everything(config.seed)
    model = build_model(ctx.registry, config.model, schema, plan.params)
    train = data.train
    if config.train_rows:
        train = _train_rows(train, config.train_rows, config.dataset)
    bias_note = _init_output_biases(model, plan.model_spec, config, train, schema, head)
    if head == "esmm":
        model = ESMMHead(model, schema)
    if world.enabled and not world.is_main:
        # Same initial weights on every rank, different dropout streams.
        torch.manual_seed(config.seed + 7919 * world.rank)
    model = model.to(device)
    valid, test = data.valid, data.test
    if device.type != "cpu" and not data.memory_mapped:
        train, valid, test = (s.to(device) for s in (train, valid, test))
    # The task weights, resolved once: the balancer and the trainer's loss both use them.
    weights = task_weights(model, schema.n_tasks, device)
    balancer = _make_balancer(plan.balancer_spec, plan.balancer_params, weights)
    return _Built(
        data, counts, load_seconds, head, model, train, valid, test, bias_note, weights, balancer
    )


def _config_dict(ctx: _Context, plan: _Plan, built: _Built) -> dict[str, Any]:
    """The record's resolved configuration: hyper-parameters, options and training facts."""
    config = ctx.config
    config_dict = {**config.to_dict(), "params": plan.params, "data_options": plan.data_options}
    config_dict["batching"] = plan.batching
    config_dict["head"] = built.head
    config_dict.update({"bias_init_note": built.bias_note} if built.bias_note else {})
    memory_mapped = built.data.memory_mapped
    config_dict["shuffle"] = f"blocks of {BLOCK_ROWS} rows" if memory_mapped else "rows"
    config_dict.update(_optimizer_facts(config, ctx.device, built.model, plan.decay_groups))
    config_dict["distributed"] = ctx.world.describe()
    return config_dict


def _start(ctx: _Context, plan: _Plan, built: _Built, stamp: datetime) -> dict[str, Any]:
    """The started record (``status: running``), announced to the hooks and the log."""
    config, world = ctx.config, ctx.world
    n_params = sum(p.numel() for p in built.model.parameters())
    train, valid, test = built.train, built.valid, built.test
    facts = RunFacts(
        rows={"train": len(train), "valid": len(valid), "test": len(test)},
        counts=built.counts,
        n_params=n_params,
        load_seconds=built.load_seconds,
        metric_specs=plan.metric_specs,
        device=ctx.device,
        started_at=stamp.isoformat(),
    )
    config_dict = _config_dict(ctx, plan, built)
    record = start_record(config, config_dict, ctx.registry, built.data, facts)
    if ctx.trial is not None:
        record["trial"] = dict(ctx.trial.facts)
    ctx.hooks.run_start(record)
    ctx.log(
        f"{config.model} on {config.dataset} [{built.data.protocol.id}]: {n_params:,} parameters, "
        f"{len(train):,} train / {len(valid):,} valid / {len(test):,} test rows, "
        f"device {ctx.device}"
        + (f", {world.size} processes ({world.backend})" if world.enabled else "")
    )
    return record


def _pretrain(ctx: _Context, built: _Built, record: dict[str, Any]) -> None:
    """``--pretrain contrastive``: pretrain the model in place, its report in the record."""
    config = ctx.config
    if config.pretrain != "contrastive":
        return
    if ctx.world.enabled:
        raise ConfigError("--pretrain contrastive runs in one process, not under torchrun")
    settings = PretrainSettings(config.pretrain_epochs, config.batch_size, config.lr, config.seed)
    record["pretraining"] = pretrain_contrastive(
        built.model, built.train, settings, model_name=config.model, device=ctx.device, log=ctx.log
    )


def _fit_settings(
    ctx: _Context, plan: _Plan, built: _Built, record: dict[str, Any], checkpoint: Path
) -> FitSettings:
    """The trainer's settings for this run (each epoch's end goes to the hooks and the trial)."""
    config, world = ctx.config, ctx.world
    return FitSettings(
        model_name=config.model,
        device=ctx.device,
        seed=config.seed,
        epochs=config.epochs,
        batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        weight_decay_mode=config.weight_decay_mode,
        decay_groups=plan.decay_groups,
        patience=config.patience,
        select=config.select,
        scenario_pure=plan.batching == "scenario_pure",
        max_steps_per_epoch=config.max_steps_per_epoch,
        block_rows=BLOCK_ROWS if built.data.memory_mapped else 0,
        checkpoint=checkpoint,
        resume=config.resume,
        progress=config.progress and world.is_main,
        on_epoch_end=lambda e, m: _epoch_end(ctx.hooks, record, ctx.trial, e, m),
        log=ctx.log,
        world=world,
        precision=config.precision,
        compile_model=config.compile,
        step_mode=config.step,
        started=ctx.started,
        balancer=built.balancer,
        task_weights=built.task_weights,
        process=_process(record),
    )


#: The environment fields a record keeps of each process of a resumed run.
PROCESS_FIELDS = ("hardware", "versions", "git", "code_sha256")


def _process(record: dict[str, Any]) -> dict[str, Any]:
    """This process as a resumed run's record names it: its start and its environment."""
    env = record.get("environment") or {}
    return {"started_at": record["started_at"], **{k: env.get(k) for k in PROCESS_FIELDS}}


def _training_block(ctx: _Context, plan: _Plan, built: _Built, state: Any) -> dict[str, Any]:
    """The record's ``training`` block: epochs, selection, convergence, speed, curve, balancer."""
    config = ctx.config
    training = {
        "epochs_run": state.epoch,
        "best_epoch": state.best_epoch,
        "stopped_early": state.stopped_early,
        "selection_metric": SELECTIONS[config.select],
        "converged": converged(state.history, state.best_epoch, state.stopped_early),
        "stalled": stalled(state.history, state.best_epoch, built.counts),
        "best_selection_score": state.best_score,
        "train_seconds": state.train_seconds,
        "train_samples": state.train_samples,
        "train_samples_per_s": (
            state.train_samples / state.train_seconds if state.train_seconds else None
        ),
        "history": state.history,
    }
    processes = [p for p in state.processes if p["last_epoch"] >= p["first_epoch"]]
    if len(processes) > 1:  # a resumed run: which process trained which epochs, and where
        training["processes"] = processes
    plugin = ctx.registry.plugin_of("balancer", config.balancer) if plan.balancer_spec else ""
    training.update(
        _balancer_report(built.balancer, plan.balancer_spec, plan.balancer_params, plugin)
    )
    return training


def _epoch_end(
    hooks: RunHooks,
    record: dict[str, Any],
    trial: Trial | None,
    epoch: int,
    metrics: Mapping[str, float],
) -> None:
    hooks.epoch_end(record, epoch, metrics)
    if trial is not None and trial.on_epoch is not None:
        trial.on_epoch(epoch, float(metrics["selection_score"]))


def _test_metrics(  # noqa: PLR0913 - the run's pieces, passed on as they are
    model: torch.nn.Module,
    test: Split,
    device: torch.device,
    config: RunConfig,
    world: distributed.World,
    schema: DatasetSchema,
    metric_specs: list[MetricSpec],
    trial: Trial | None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Tidy test metrics and oracle metrics; empty (nothing read) for a tuning trial."""
    if trial is not None:
        return pd.DataFrame(), None
    logits = predict(model, test, device, config.eval_batch_size, world, config.precision)
    test_df = evaluate(logits, test.labels, test.scenario, schema, metric_specs, groups=test.groups)
    intervals = auc_intervals(
        logits, test.labels, test.scenario, schema, test.groups, seed=config.seed
    )
    test_df = pd.concat([test_df, intervals], ignore_index=True)
    oracle_df = None
    if test.oracle is not None:
        oracle_df = evaluate(
            test.oracle, test.labels, test.scenario, schema, metric_specs, groups=test.groups
        )
    return test_df, oracle_df
