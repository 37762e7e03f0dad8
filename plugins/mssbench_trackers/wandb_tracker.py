"""Weights & Biases, offline: parameters, per-epoch and test metrics, the record as a run file.

Runs are written offline (``WANDB_MODE=offline`` unless the environment sets another mode), one
run directory per mssbench run under ``<uri>/wandb/offline-run-*`` (default ``OUT/.wandb``:
hidden, so the record's copy there is not read as a run); ``wandb sync`` uploads them later.
The project is named after the dataset. Each run is created with ``reinit="create_new"`` and
logged through its own handle, so concurrent runs in one process do not mix.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from mssbench.errors import ConfigError
from mssbench.trackers import TrackerSpec, tracker_uri

from .common import epoch_metrics, flat_params, run_key, run_name, test_summary

SPEC = TrackerSpec(
    name="wandb",
    summary="Weights & Biases (offline): params, per-epoch and test metrics, the record as a file",
    default_uri="{out}/.wandb",
    modules=("wandb",),
    requires="mssbench[wandb]",
)

#: ``run_key -> wandb Run`` of the runs in progress in this process.
_OPEN: dict[tuple[str, str], Any] = {}


def start(run: Mapping[str, Any]) -> None:
    """Create the offline W&B run with the configuration and the run's identity."""
    try:
        import wandb
    except ImportError:
        raise ConfigError(
            f"--tracker wandb needs the wandb package: pip install '{SPEC.requires}'"
        ) from None
    directory = Path(tracker_uri(run, SPEC))
    directory.mkdir(parents=True, exist_ok=True)
    config = {**flat_params(run), "mssbench.run_hash": str(run.get("run_hash", ""))}
    _OPEN[run_key(run)] = wandb.init(
        mode=os.environ.get("WANDB_MODE", "offline"),
        dir=str(directory),
        project=str(run["dataset"]["name"]),
        name=run_name(run),
        config=config,
        tags=[str(run["model"]["name"])],
        reinit="create_new",
        settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
    )


def epoch_end(run: Mapping[str, Any], epoch: int, metrics: Mapping[str, float]) -> None:
    """Log the epoch's figures at step ``epoch``."""
    handle = _OPEN.get(run_key(run))
    if handle is not None:
        handle.log(epoch_metrics(metrics), step=epoch)


def end(run: Mapping[str, Any], path: str) -> None:
    """Put the test summary and a copy of the record in the run, and finish it (exit code 0)."""
    handle = _OPEN.pop(run_key(run), None)
    if handle is None:
        return
    handle.summary.update(test_summary(run))
    copy = Path(handle.dir) / Path(path).name
    shutil.copyfile(path, copy)
    handle.save(str(copy), base_path=handle.dir, policy="now")
    handle.finish(exit_code=0)


def failed(run: Mapping[str, Any], error: BaseException) -> None:
    """Note the error in the summary and finish the run as failed (exit code 1)."""
    handle = _OPEN.pop(run_key(run), None)
    if handle is not None:
        handle.summary["mssbench.error"] = f"{type(error).__name__}: {error}"[:5000]
        handle.finish(exit_code=1)
