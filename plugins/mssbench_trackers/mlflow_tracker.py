"""MLflow: parameters, per-epoch metrics, test metrics and the run record as an artifact.

The default store is a SQLite file beside the run records (``OUT/.mlflow/mlflow.db``, artifacts
in ``OUT/.mlflow/artifacts``: hidden, so the copy of each record there is not read as a run);
``--tracker-uri mlflow=URI`` names another (a server, ``sqlite:///...``, or a ``file://`` store
with ``MLFLOW_ALLOW_FILE_STORE=true``). Talks to the store through ``MlflowClient`` (no global
active run, so concurrent runs in one process do not mix). The experiment is named after the
dataset.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

from mssbench.errors import ConfigError
from mssbench.trackers import TrackerSpec, tracker_uri

from .common import epoch_metrics, flat_params, run_key, run_name, test_summary

SPEC = TrackerSpec(
    name="mlflow",
    summary="MLflow tracking: params, per-epoch and test metrics, the record as an artifact",
    default_uri="sqlite:///{out}/.mlflow/mlflow.db",
    modules=("mlflow.tracking",),
    requires="mssbench[mlflow]",
)

#: ``run_key -> (client, MLflow run id)`` of the runs in progress in this process.
_OPEN: dict[tuple[str, str], tuple[Any, str]] = {}


def _client(uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError(
            f"--tracker mlflow needs the mlflow package: pip install '{SPEC.requires}'"
        ) from None
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def _artifacts(client: Any) -> str | None:
    """Beside a SQLite store: its artifacts (MLflow's default is the working directory)."""
    uri = str(client.tracking_uri)
    if not uri.startswith("sqlite:///"):
        return None  # a file store keeps them inside; a server has its own artifact root
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()


def start(run: Mapping[str, Any]) -> None:
    """Create the MLflow run and log the configuration as parameters."""
    client = _client(tracker_uri(run, SPEC))
    from mlflow.entities import Param

    name = str(run["dataset"]["name"])
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        exp_id = experiment.experiment_id
    else:
        exp_id = client.create_experiment(name, artifact_location=_artifacts(client))
    tags = {
        "mssbench.model": str(run["model"]["name"]),
        "mssbench.run_hash": str(run.get("run_hash", "")),
        "mssbench.protocol": str(run["protocol"]["id"]),
    }
    created = client.create_run(exp_id, run_name=run_name(run), tags=tags)
    run_id = created.info.run_id
    params = [Param(k, v[:6000]) for k, v in sorted(flat_params(run).items())]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=params[i : i + 100])
    _OPEN[run_key(run)] = (client, run_id)


def _log(client: Any, run_id: str, values: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for k, v in sorted(values.items())]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])


def epoch_end(run: Mapping[str, Any], epoch: int, metrics: Mapping[str, float]) -> None:
    """Log the epoch's figures at step ``epoch``."""
    opened = _OPEN.get(run_key(run))
    if opened is not None:
        _log(*opened, epoch_metrics(metrics), epoch)


def end(run: Mapping[str, Any], path: str) -> None:
    """Log the test summary and the record file, and mark the MLflow run FINISHED."""
    opened = _OPEN.pop(run_key(run), None)
    if opened is None:
        return
    client, run_id = opened
    _log(client, run_id, test_summary(run), int(run["training"].get("epochs_run") or 0))
    client.log_artifact(run_id, path)
    client.set_terminated(run_id, "FINISHED")


def failed(run: Mapping[str, Any], error: BaseException) -> None:
    """Mark the MLflow run FAILED, with the error as a tag."""
    opened = _OPEN.pop(run_key(run), None)
    if opened is None:
        return
    client, run_id = opened
    client.set_tag(run_id, "mssbench.error", f"{type(error).__name__}: {error}"[:5000])
    client.set_terminated(run_id, "FAILED")
