"""Built-in experiment trackers: MLflow and TensorBoard, on the run lifecycle hooks.

Each acts only on runs that name it (``mssbench run --tracker mlflow``, or ``trackers:`` in a
config file) and imports its package only then, so neither is needed unless used.
"""

from __future__ import annotations

from typing import Any, Mapping

from mssbench import hookimpl
from mssbench.trackers import TrackerSpec, enabled

from . import mlflow_tracker, tensorboard_tracker

_TRACKERS = (mlflow_tracker, tensorboard_tracker)


@hookimpl
def mssbench_register_trackers() -> list[TrackerSpec]:
    """MLflow and TensorBoard."""
    return [t.SPEC for t in _TRACKERS]


@hookimpl
def mssbench_run_start(run: Mapping[str, Any]) -> None:
    """Open a tracker run for every tracker the run names."""
    for tracker in _TRACKERS:
        if enabled(run, tracker.SPEC.name):
            tracker.start(run)


@hookimpl
def mssbench_epoch_end(run: Mapping[str, Any], epoch: int, metrics: Mapping[str, float]) -> None:
    """Log the epoch's training and validation figures."""
    for tracker in _TRACKERS:
        if enabled(run, tracker.SPEC.name):
            tracker.epoch_end(run, epoch, metrics)


@hookimpl
def mssbench_run_end(run: Mapping[str, Any], path: str) -> None:
    """Log the test metrics and the record, and close the tracker run as finished."""
    for tracker in _TRACKERS:
        if enabled(run, tracker.SPEC.name):
            tracker.end(run, path)


@hookimpl
def mssbench_run_failed(run: Mapping[str, Any], error: BaseException) -> None:
    """Close the tracker run as failed, with the error."""
    for tracker in _TRACKERS:
        if enabled(run, tracker.SPEC.name):
            tracker.failed(run, error)
