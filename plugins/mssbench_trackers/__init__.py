"""Built-in experiment trackers: MLflow, TensorBoard and W&B, on the run lifecycle hooks.

Each acts only on runs that name it (``mssbench run --tracker mlflow``, or ``trackers:`` in a
config file) and imports its package only then, so none is needed unless used.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping

from mssbench import hookimpl
from mssbench.errors import ConfigError, MssbenchError
from mssbench.trackers import TrackerSpec, enabled

from . import mlflow_tracker, tensorboard_tracker, wandb_tracker

_TRACKERS = (mlflow_tracker, tensorboard_tracker, wandb_tracker)


def _each(run: Mapping[str, Any], step: str, call: Callable[[Any], None]) -> None:
    """Call ``call(tracker)`` for every tracker the run names.

    A tracker that cannot start stops the run before training, with one line naming it; one
    that fails later is a warning (the run and its record go on).
    """
    for tracker in _TRACKERS:
        if not enabled(run, tracker.SPEC.name):
            continue
        try:
            call(tracker)
        except Exception as exc:  # noqa: BLE001 - a tracker's own errors, reported in one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            message = f"tracker {tracker.SPEC.name} ({step}): {first}"
            if step == "start":
                if isinstance(exc, MssbenchError):
                    raise
                raise ConfigError(message) from exc
            warnings.warn(message + " (the run goes on)", RuntimeWarning, stacklevel=2)


@hookimpl
def mssbench_register_trackers() -> list[TrackerSpec]:
    """MLflow, TensorBoard and Weights & Biases."""
    return [t.SPEC for t in _TRACKERS]


@hookimpl
def mssbench_run_start(run: Mapping[str, Any]) -> None:
    """Open a tracker run for every tracker the run names."""
    _each(run, "start", lambda t: t.start(run))


@hookimpl
def mssbench_epoch_end(run: Mapping[str, Any], epoch: int, metrics: Mapping[str, float]) -> None:
    """Log the epoch's training and validation figures."""
    _each(run, "epoch end", lambda t: t.epoch_end(run, epoch, metrics))


@hookimpl
def mssbench_run_end(run: Mapping[str, Any], path: str) -> None:
    """Log the test metrics and the record, and close the tracker run as finished."""
    _each(run, "run end", lambda t: t.end(run, path))


@hookimpl
def mssbench_run_failed(run: Mapping[str, Any], error: BaseException) -> None:
    """Close the tracker run as failed, with the error."""
    _each(run, "run failed", lambda t: t.failed(run, error))
