"""Run a scaling study: plan its points, run them as a resumable suite, measure each point."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch

from mssbench.api import build_model, load_dataset
from mssbench.config import RunConfig, resolve
from mssbench.errors import ConfigError
from mssbench.flops import count_matmul_flops, dense_parameters
from mssbench.plugins import Registry
from mssbench.records import load_records
from mssbench.runners.trainer import seed_everything
from mssbench.scaling.grid import AXES, Point, halvings, plan_points
from mssbench.spec import LoadedDataset
from mssbench.suite import SuiteJob, mark_finished, run_suite

#: Rows of the probe batch on which a point's FLOPs per sample are counted.
PROBE_ROWS = 256
#: The column that is a study's x, per axis.
X_COLUMN = {
    "params": "dense_params",
    "data": "train_rows",
    "compute": "compute",
    "batch": "batch_size",
}


@dataclass
class Study:
    """What a study varies and over which seeds.

    Attributes:
        models: Model names (several share one plot).
        axis: One of :data:`mssbench.scaling.grid.AXES`.
        points: Grid points on the axis (widths for ``compute``).
        data_points: Data sizes of a ``compute`` grid.
        seeds: Seeds of every point.
        factors, rows, batch_sizes: Explicit grids (default: halvings from the base).
        scale_keys: Hyper-parameters the width factor scales (default: the model's widths).
        budget_samples: Training samples per point (0: the base epochs over the point's rows).
    """

    models: list[str]
    axis: str
    points: int = 4
    data_points: int = 3
    seeds: list[int] = field(default_factory=lambda: [0])
    factors: list[float] | None = None
    rows: list[int] | None = None
    batch_sizes: list[int] | None = None
    scale_keys: list[str] | None = None
    budget_samples: int = 0

    def grids(self, n_train: int, base_batch: int) -> tuple[list[float], list[int], list[int]]:
        """Width factors, training rows and batch sizes of this study's axis."""
        if self.axis not in AXES:
            raise ConfigError(f"--axis must be one of {', '.join(AXES)}, got {self.axis!r}")
        n_data = self.data_points if self.axis == "compute" else self.points
        factors = self.factors or (
            halvings(1.0, self.points) if self.axis in ("params", "compute") else [1.0]
        )
        rows = self.rows or (
            [int(r) for r in halvings(n_train, n_data)]
            if self.axis in ("data", "compute")
            else [n_train]
        )
        batches = self.batch_sizes or (
            [max(2, int(b)) for b in halvings(base_batch, self.points)]
            if self.axis == "batch"
            else [base_batch]
        )
        for r in rows:
            if not 1 <= r <= n_train:
                raise ConfigError(f"--rows {r} is not within the {n_train:,} training rows")
        return factors, rows, batches


def plan(
    registry: Registry,
    study: Study,
    base: RunConfig,
    params: dict[str, dict[str, Any]],
    n_train: int,
) -> tuple[list[SuiteJob], list[Point]]:
    """The study's jobs (finished ones marked ``skipped``) and the point of each job."""
    factors, rows, batches = study.grids(n_train, base.batch_size)
    jobs, points = [], []
    for name in study.models:
        spec = registry.model(name)
        given = resolve("param", f"model {name!r}", spec.defaults, params.get(name, {}))
        given = {k: v for k, v in given.items() if k in params.get(name, {})}
        for point in plan_points(
            spec,
            study.axis,
            given,
            factors=factors,
            rows=rows,
            batch_sizes=batches,
            keys=study.scale_keys,
        ):
            for seed in study.seeds:
                jobs.append(SuiteJob(point.config(base, seed, study.budget_samples, n_train)))
                points.append(point)
    return mark_finished(jobs, registry, base.out), points


def measure(
    registry: Registry, data: LoadedDataset, points: Sequence[Point], precision: str
) -> dict[str, dict[str, float]]:
    """Parameters, dense parameters and training FLOPs per sample of each distinct model."""
    probe = data.train.batch(torch.arange(min(PROBE_ROWS, len(data.train))))
    out: dict[str, dict[str, float]] = {}
    for point in points:
        key = _model_key(point)
        if key in out:
            continue
        seed_everything(0)
        model = build_model(registry, point.model, data.schema, dict(point.params))
        flops, _ = count_matmul_flops(model, probe, data.schema, precision)
        out[key] = {
            "n_params": float(sum(p.numel() for p in model.parameters())),
            "dense_params": float(dense_parameters(model)),
            "flops_per_sample": flops / len(probe),
        }
    return out


def _model_key(point: Point) -> str:
    return json.dumps([point.model, dict(point.params)], sort_keys=True, default=str)


def execute(
    registry: Registry,
    study: Study,
    base: RunConfig,
    params: dict[str, dict[str, Any]],
    run_jobs: Callable[[list[SuiteJob]], Any] | None = None,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Plan, run (skipping finished points) and measure a study: one row per finished run."""
    options = registry.dataset(base.dataset).options
    data = load_dataset(
        registry, base.dataset, resolve("data option", base.dataset, options, base.data_options)
    )
    jobs, points = plan(registry, study, base, params, len(data.train))
    pending = sum(j.status == "pending" for j in jobs)
    log(
        f"Scaling study: {len(jobs)} runs ({study.axis} axis), {len(jobs) - pending} finished, "
        f"{pending} to run; records in {base.out}"
    )
    (run_jobs or (lambda js: run_suite(js, 1, log=log)))(jobs)
    failed = [j for j in jobs if j.status == "error"]
    for job in failed:
        log(f"error: {job.config.model} seed {job.config.seed}: {job.error}")
    return frame(jobs, points, measure(registry, data, points, base.precision), base.out)


def frame(
    jobs: Sequence[SuiteJob], points: Sequence[Point], sizes: dict[str, dict], out: str
) -> pd.DataFrame:
    """One row per finished job: the point, its sizes, compute and losses."""
    if not Path(out).is_dir():
        return pd.DataFrame()
    records = {r["_path"]: r for r in load_records(out)[0]}
    rows = []
    for job, point in zip(jobs, points):
        record = records.get(job.path or "")
        if record is None:
            continue
        row = {
            "model": _label(record),
            "protocol": record["protocol"]["id"],
            "seed": job.config.seed,
            "factor": point.factor,
            "train_rows": point.train_rows,
            "batch_size": point.batch_size,
            **sizes[_model_key(point)],
            "train_samples": record["training"]["train_samples"],
            "path": job.path,
            **_losses(record),
        }
        row["compute"] = row["flops_per_sample"] * row["train_samples"]
        rows.append(row)
    return pd.DataFrame(rows)


def _label(record: dict[str, Any]) -> str:
    pretrain = record["config"].get("pretrain", "none")
    name = record["model"]["name"]
    return name if pretrain == "none" else f"{name} + {pretrain} pre-training"


def _losses(record: dict[str, Any]) -> dict[str, float]:
    """Test and best-epoch validation log loss per task, and the oracle's where known."""
    out = {}
    best = record["training"]["best_epoch"]
    valid = next((h["valid"] for h in record["training"]["history"] if h["epoch"] == best), {})
    oracle = record["test"].get("oracle_summary") or {}
    for key, value in record["test"]["summary"].items():
        if not key.startswith("logloss/"):
            continue
        task = key.split("/", 1)[1]
        out[f"test/{task}"] = value
        out[f"valid/{task}"] = valid.get(key)
        if key in oracle:
            out[f"bayes/{task}"] = oracle[key]
    return out
