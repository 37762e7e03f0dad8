"""TensorBoard: per-epoch and test scalars and the configuration as text, in event files.

Writes with ``torch.utils.tensorboard.SummaryWriter`` (needs the ``tensorboard`` package), one
log directory per run: ``<uri>/<dataset>/<model>_s<seed>_<run hash>``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from mssbench.errors import ConfigError
from mssbench.trackers import TrackerSpec, tracker_uri

from .common import epoch_metrics, flat_params, run_key, test_summary

SPEC = TrackerSpec(
    name="tensorboard",
    summary="TensorBoard event files: per-epoch and test scalars, the configuration as text",
    default_uri="{out}/tensorboard",
    modules=("torch.utils.tensorboard",),
    requires="mssbench[tensorboard]",
)

#: ``run_key -> SummaryWriter`` of the runs in progress in this process.
_OPEN: dict[tuple[str, str], Any] = {}


def log_dir(run: Mapping[str, Any]) -> Path:
    """The run's event-file directory."""
    name = f"{run['model']['name']}_s{run['config'].get('seed')}_{run.get('run_hash', '')}"
    return Path(tracker_uri(run, SPEC)) / str(run["dataset"]["name"]) / name


def start(run: Mapping[str, Any]) -> None:
    """Open the run's writer and record its configuration."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            f"--tracker tensorboard needs the tensorboard package: pip install '{SPEC.requires}'"
        ) from None
    writer = SummaryWriter(log_dir=str(log_dir(run)))
    writer.add_text("config", "```\n" + json.dumps(flat_params(run), indent=1) + "\n```")
    _OPEN[run_key(run)] = writer


def epoch_end(run: Mapping[str, Any], epoch: int, metrics: Mapping[str, float]) -> None:
    """One scalar per figure at step ``epoch``."""
    writer = _OPEN.get(run_key(run))
    if writer is not None:
        for key, value in sorted(epoch_metrics(metrics).items()):
            writer.add_scalar(key, value, epoch)
        writer.flush()


def end(run: Mapping[str, Any], path: str) -> None:
    """Write the test summary and the record's path, and close the writer."""
    writer = _OPEN.pop(run_key(run), None)
    if writer is None:
        return
    step = int(run["training"].get("epochs_run") or 0)
    for key, value in sorted(test_summary(run).items()):
        writer.add_scalar(key, value, step)
    writer.add_text("record", str(path))
    writer.close()


def failed(run: Mapping[str, Any], error: BaseException) -> None:
    """Note the error and close the writer."""
    writer = _OPEN.pop(run_key(run), None)
    if writer is not None:
        writer.add_text("error", f"{type(error).__name__}: {error}")
        writer.close()
