"""What both trackers log: flat parameters, numeric metrics, and a key per open run."""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

#: Config entries that say where things go, not how the run was trained.
_NOT_PARAMS = ("out", "resume", "progress", "trackers", "tracker_uris")


def run_key(run: Mapping[str, Any]) -> tuple[str, str]:
    """Identifies one run across its hooks (the record object may be copied between them)."""
    return (str(run.get("run_hash", "")), str(run.get("started_at", "")))


def run_name(run: Mapping[str, Any]) -> str:
    """``mmoe census-income s0``."""
    return f"{run['model']['name']} {run['dataset']['name']} s{run['config'].get('seed')}"


def flat_params(run: Mapping[str, Any]) -> dict[str, str]:
    """The run's configuration as flat ``name: text`` pairs (``params.embed_dim``, ``lr``)."""
    out: dict[str, str] = {}
    for key, value in run["config"].items():
        if key in _NOT_PARAMS:
            continue
        if isinstance(value, Mapping):
            for sub, v in value.items():
                out[f"{key}.{sub}"] = _text(v)
        else:
            out[key] = _text(value)
    out["model.version"] = str(run["model"].get("version", 1))
    out["protocol.id"] = str(run["protocol"]["id"])
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a flat metrics mapping (undefined cells are left out)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(float(value)):
                out[str(key)] = float(value)
    return out


def epoch_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """An epoch's figures, validation ones under ``valid/`` (``valid/auc/income``).

    The trainer reports ``train_loss`` and ``selection_score`` beside the validation summary
    (``auc/income``, ...); the prefix keeps the latter apart from the test's ``test/...``.
    """
    out = {}
    for key, value in numeric(metrics).items():
        plain = key.startswith(("train", "valid", "selection")) or key == "epoch"
        out[key if plain else f"valid/{key}"] = value
    return out


def test_summary(run: Mapping[str, Any]) -> dict[str, float]:
    """The finished run's test summary (``test/auc/purchase`` ...)."""
    summary = (run.get("test") or {}).get("summary") or {}
    return {f"test/{k}": v for k, v in numeric(summary).items()}
