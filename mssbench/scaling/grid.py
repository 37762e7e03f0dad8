"""The points of a scaling study: which runs, with which hyper-parameters and data."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from mssbench.config import RunConfig
from mssbench.errors import ConfigError
from mssbench.spec import ModelSpec

#: What a study varies. ``params``: model width (every width hyper-parameter times a factor);
#: ``data``: training rows; ``compute``: both (a grid), measured in training FLOPs; ``batch``:
#: the training batch size.
AXES = ("params", "data", "compute", "batch")
#: A hyper-parameter whose name holds one of these words, and whose default is a positive
#: integer or a list of them, is a width (when the model declares no ``scaling_params`` tag).
WIDTH_WORDS = ("hidden", "dim", "d_model", "width", "units")


@dataclass(frozen=True)
class Point:
    """One run of a study (before seeds)."""

    model: str
    factor: float
    train_rows: int
    batch_size: int
    params: Mapping[str, Any]

    def config(self, base: RunConfig, seed: int, budget_samples: int, n_train: int) -> RunConfig:
        """The run configuration of this point for ``seed``.

        The whole training split is ``train_rows=0``, so such a point is the same run (same
        hash) as a plain ``mssbench run``. With ``budget_samples``, the point trains on about
        that many samples: enough epochs, each capped at the point's rows.
        """
        cfg = replace(
            base,
            model=self.model,
            seed=seed,
            params=dict(self.params),
            train_rows=0 if self.train_rows == n_train else self.train_rows,
            batch_size=self.batch_size,
        )
        if budget_samples:
            cfg = replace(
                cfg,
                epochs=max(1, math.ceil(budget_samples / self.train_rows)),
                max_steps_per_epoch=math.ceil(
                    min(budget_samples, self.train_rows) / self.batch_size
                ),
            )
        return cfg


def width_params(spec: ModelSpec) -> tuple[str, ...]:
    """The hyper-parameters a width factor scales: the ``scaling_params`` tag, else by name."""
    declared = spec.tags.get("scaling_params")
    if declared is not None:
        return tuple(declared)
    return tuple(k for k, v in spec.defaults.items() if _is_width(k, v))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_width(key: str, value: Any) -> bool:
    ints = isinstance(value, list) and bool(value) and all(_positive_int(v) for v in value)
    return (ints or _positive_int(value)) and any(w in key for w in WIDTH_WORDS)


def scale_width(value: int, factor: float) -> int:
    """``value * factor``: a multiple of 8 from 8 up, a power of two below (heads divide it).

    Factor 1 keeps ``value`` as given.
    """
    if factor == 1:
        return value
    scaled = value * factor
    if scaled >= 8:
        return max(8, int(round(scaled / 8)) * 8)
    return 2 ** max(0, int(round(math.log2(max(scaled, 1.0)))))


def scaled_params(
    spec: ModelSpec, given: Mapping[str, Any], factor: float, keys: Sequence[str] | None = None
) -> dict[str, Any]:
    """``given`` (over the spec's defaults) with every width in ``keys`` times ``factor``."""
    params = {**spec.defaults, **given}
    for key in keys if keys is not None else width_params(spec):
        if key not in params:
            raise ConfigError(f"model {spec.name!r} has no hyper-parameter {key!r} to scale")
        value = params[key]
        if isinstance(value, list):
            params[key] = [scale_width(int(v), factor) for v in value]
        elif _positive_int(value):
            params[key] = scale_width(value, factor)
        else:
            raise ConfigError(
                f"model {spec.name!r}: {key}={value!r} is not a width (a positive integer or "
                "a list of them)"
            )
    return {k: v for k, v in params.items() if k in given or params[k] != spec.defaults[k]}


def halvings(top: float, points: int) -> list[float]:
    """``points`` values from ``top / 2**(points-1)`` up to ``top``, each twice the last."""
    if points < 1:
        raise ConfigError(f"--points must be >= 1, got {points}")
    return [top / 2 ** (points - 1 - i) for i in range(points)]


def plan_points(
    spec: ModelSpec,
    axis: str,
    given: Mapping[str, Any],
    *,
    factors: Sequence[float],
    rows: Sequence[int],
    batch_sizes: Sequence[int],
    keys: Sequence[str] | None = None,
) -> list[Point]:
    """Every point of ``axis`` for one model."""
    if axis not in AXES:
        raise ConfigError(f"--axis must be one of {', '.join(AXES)}, got {axis!r}")
    if axis == "params":
        grid = [(f, rows[-1], batch_sizes[-1]) for f in factors]
    elif axis == "data":
        grid = [(factors[-1], r, batch_sizes[-1]) for r in rows]
    elif axis == "compute":
        grid = [(f, r, batch_sizes[-1]) for f in factors for r in rows]
    else:
        grid = [(factors[-1], rows[-1], b) for b in batch_sizes]
    return [
        Point(spec.name, f, int(r), int(b), scaled_params(spec, given, f, keys)) for f, r, b in grid
    ]
