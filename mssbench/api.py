"""The Python API: ``mssbench.api.run`` does what ``mssbench run`` does."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from mssbench.config import RunConfig, resolve
from mssbench.errors import ConfigError, MssbenchError, PluginError
from mssbench.metrics import evaluate, summary
from mssbench.nn import ESMMHead
from mssbench.plugins import Registry, load_registry
from mssbench.records import (
    RECORD_SCHEMA_VERSION,
    command_line,
    ensure_writable,
    git_commit,
    hardware,
    package_versions,
    write_record,
)
from mssbench.runners import distributed
from mssbench.runners.trainer import (
    SELECTION_METRIC,
    fit,
    predict,
    resolve_device,
    seed_everything,
)
from mssbench.spec import DatasetSchema, LoadedDataset, MetricSpec, ModelSpec

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


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def _silent(_message: str) -> None:
    """The log of ranks other than 0."""


class _NoHooks:
    """Stands in for ``pm.hook`` on ranks other than 0: run hooks fire once per run."""

    def __getattr__(self, _name: str) -> Callable[..., list]:
        return lambda **_kwargs: []


def load_dataset(registry: Registry, name: str, options: dict[str, Any]) -> LoadedDataset:
    """Load a registered dataset with its options checked against the declared defaults."""
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
    return data


def build_model(registry: Registry, name: str, schema, params: dict[str, Any]) -> torch.nn.Module:
    """Build a registered model with its hyper-parameters checked against the declared defaults."""
    spec = registry.model(name)
    resolved = resolve("param", f"model {name!r}", spec.defaults, params)
    try:
        model = spec.build(schema, **resolved)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {name!r} rejected its hyper-parameters: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise PluginError(f"model {name!r}: build() must return a torch.nn.Module")
    return model


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
            float(spec.compute(logits.clone(), labels.clone()))
        except Exception as exc:  # noqa: BLE001 - a plugin bug, reported by name
            raise PluginError(
                f'metric {spec.name!r} (plugin "{plugin}") fails on a 6-row cell: '
                f"{type(exc).__name__}: {exc}"
            ) from exc
    return specs


def run(
    config: RunConfig,
    registry: Registry | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train one model on one dataset, evaluate on test and write the run record.

    Under ``torchrun`` (more than one process) the run is data-parallel; see
    :mod:`mssbench.runners.distributed`.

    Args:
        config: The run configuration.
        registry: Loaded plugins (default: :func:`mssbench.plugins.load_registry`).
        log: Where status lines go.

    Returns:
        The finished run.
    """
    config.validate()
    world, device = distributed.setup(resolve_device(config.device))
    try:
        return _run(config, registry or load_registry(), log, world, device)
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


def _run(
    config: RunConfig,
    registry: Registry,
    log: Callable[[str], None],
    world: distributed.World,
    device: torch.device,
) -> RunResult:
    started = time.perf_counter()
    if not world.is_main:
        log = _silent
    model_spec = registry.model(config.model)
    dataset_spec = registry.dataset(config.dataset)
    params = resolve("param", f"model {config.model!r}", model_spec.defaults, config.params)
    data_options = resolve(
        "data option", f"dataset {config.dataset!r}", dataset_spec.options, config.data_options
    )
    metric_specs = resolve_metrics(registry, config.metrics)
    out_dir = ensure_writable(config.out)
    batching = config.batching
    if batching == "auto":
        batching = str(model_spec.tags.get("batching", "mixed"))

    t_load = time.perf_counter()
    data = load_dataset(registry, config.dataset, data_options)
    load_seconds = time.perf_counter() - t_load
    schema = data.schema

    head = config.head
    if head == "auto":
        # A model's preferred head applies where the tasks allow it (click -> purchase).
        head = str(model_spec.tags.get("head", "direct")) if schema.relations else "direct"

    check_head_supported(model_spec, head, schema, config.dataset)

    seed_everything(config.seed)
    model = build_model(registry, config.model, schema, params)
    if head == "esmm":
        if not schema.relations:
            raise ConfigError(
                f"--head esmm needs tasks where one implies another (click -> purchase); "
                f"dataset {config.dataset!r} has none"
            )
        model = ESMMHead(model, schema)
    if world.enabled and not world.is_main:
        # Same initial weights on every rank, different dropout streams.
        torch.manual_seed(config.seed + 7919 * world.rank)
    model = model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    train, valid, test = data.train, data.valid, data.test
    if device.type != "cpu" and not data.memory_mapped:
        train, valid, test = (s.to(device) for s in (train, valid, test))

    stamp = datetime.now(timezone.utc)
    config_dict = {**config.to_dict(), "params": params, "data_options": data_options}
    config_dict["batching"] = batching
    config_dict["head"] = head
    config_dict["shuffle"] = f"blocks of {BLOCK_ROWS} rows" if data.memory_mapped else "rows"
    config_dict["optimizer"] = "Adam (fused)" if device.type == "cuda" else "Adam"
    config_dict["distributed"] = world.describe()
    record: dict[str, Any] = {
        "record_version": RECORD_SCHEMA_VERSION,
        "status": "running",
        "run_hash": config.result_hash(),
        "started_at": stamp.isoformat(),
        "command": command_line(),
        "model": {
            "name": config.model,
            "summary": model_spec.summary,
            "paper": model_spec.paper,
            "plugin": registry.plugin_of("model", config.model),
            "version": model_spec.version,
            "n_params": n_params,
        },
        "dataset": {
            "name": config.dataset,
            "plugin": registry.plugin_of("dataset", config.dataset),
            "schema": schema.to_dict(),
            "rows": {"train": len(train), "valid": len(valid), "test": len(test)},
            "info": dict(data.info),
            "load_seconds": load_seconds,
        },
        "protocol": data.protocol.to_dict(),
        "config": config_dict,
        "metrics": [
            {
                "name": m.name,
                "plugin": registry.plugin_of("metric", m.name),
                "version": m.version,
                "higher_is_better": m.higher_is_better,
                "summary": m.summary,
                "reference": m.reference,
            }
            for m in metric_specs
        ],
        "environment": {
            "versions": package_versions(),
            "git": git_commit(),
            "hardware": hardware(device),
        },
    }
    pm = registry.pm
    hook = pm.hook if world.is_main else _NoHooks()
    hook.mssbench_run_start(run=record)
    log(
        f"{config.model} on {config.dataset} [{data.protocol.id}]: {n_params:,} parameters, "
        f"{len(train):,} train / {len(valid):,} valid / {len(test):,} test rows, device {device}"
        + (f", {world.size} processes ({world.backend})" if world.enabled else "")
    )

    # A checkpoint of another model version is not resumed (its state means something else).
    version = f"_v{model_spec.version}" if model_spec.version > 1 else ""
    name = f"{config.dataset}_{config.model}{version}_{record['run_hash']}.pt"
    checkpoint = out_dir / ".partial" / name
    result = fit(
        model,
        schema,
        train,
        valid,
        model_name=config.model,
        device=device,
        seed=config.seed,
        epochs=config.epochs,
        batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        patience=config.patience,
        scenario_pure=batching == "scenario_pure",
        max_steps_per_epoch=config.max_steps_per_epoch,
        block_rows=BLOCK_ROWS if data.memory_mapped else 0,
        checkpoint=checkpoint,
        resume=config.resume,
        progress=config.progress and world.is_main,
        on_epoch_end=lambda e, m: hook.mssbench_epoch_end(run=record, epoch=e, metrics=m),
        log=log,
        world=world,
        precision=config.precision,
        compile_model=config.compile,
    )

    test_logits = predict(model, test, device, config.eval_batch_size, world, config.precision)
    test_df = evaluate(test_logits, test.labels, test.scenario, schema, metric_specs)
    oracle_df = None
    if test.oracle is not None:
        oracle_df = evaluate(test.oracle, test.labels, test.scenario, schema, metric_specs)
    state = result.state
    record.update(
        {
            "status": "finished",
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "wall_seconds": time.perf_counter() - started,
            "training": {
                "epochs_run": state.epoch,
                "best_epoch": state.best_epoch,
                "stopped_early": state.stopped_early,
                "selection_metric": SELECTION_METRIC,
                "best_selection_score": state.best_score,
                "train_seconds": state.train_seconds,
                "train_samples": state.train_samples,
                "train_samples_per_s": (
                    state.train_samples / state.train_seconds if state.train_seconds else None
                ),
                "history": state.history,
            },
            "test": {
                "summary": summary(test_df),
                "metrics": test_df.to_dict(orient="records"),
                "oracle_summary": None if oracle_df is None else summary(oracle_df),
                "oracle_metrics": None if oracle_df is None else oracle_df.to_dict("records"),
            },
        }
    )
    record = _nan_to_none(record)
    if not world.is_main:
        return RunResult(record=record, path=None, test_metrics=test_df, oracle_metrics=oracle_df)
    stem = f"{stamp:%Y%m%dT%H%M%SZ}_{config.dataset}_{config.model}_s{config.seed}"
    path = write_record(out_dir, stem, record)
    if checkpoint.exists():
        checkpoint.unlink()
    hook.mssbench_run_end(run=record, path=str(path))
    return RunResult(record=record, path=path, test_metrics=test_df, oracle_metrics=oracle_df)
