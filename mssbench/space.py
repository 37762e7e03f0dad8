"""Hyper-parameter search spaces: what ``mssbench tune`` searches, declared in a ``ModelSpec``.

A space maps a name to a dimension. A name is a key of the model's ``defaults`` or one of the
training options in :data:`TRAINING_KEYS` (learning rate, weight decay). Every model is searched
over :data:`COMMON_SPACE` plus what its spec declares (a declared dimension replaces the common
one of the same name), so a plugin without a space still gets the optimiser's.

Dimensions draw values through a ``suggest(trial, name)`` call (an Optuna trial, or anything
with ``suggest_float``, ``suggest_int`` and ``suggest_categorical``), give their ``corners``
(the extreme values, which the conformance suite builds) and ``sample`` without Optuna.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Mapping, Union

#: Search-space names that are training options (:class:`mssbench.config.RunConfig` fields),
#: not model hyper-parameters.
TRAINING_KEYS = ("lr", "weight_decay")


class SpaceError(ValueError):
    """A search-space dimension is malformed."""


@dataclass(frozen=True)
class FloatRange:
    """A float in ``[low, high]``, drawn uniformly or (``log=True``) log-uniformly."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise SpaceError(f"FloatRange: low {self.low!r} must be below high {self.high!r}")
        if self.log and self.low <= 0:
            raise SpaceError(f"FloatRange: a log range needs low > 0, got {self.low!r}")

    def suggest(self, trial: Any, name: str) -> float:
        """A value from ``trial``."""
        return float(trial.suggest_float(name, self.low, self.high, log=self.log))

    def corners(self) -> tuple[float, float]:
        """The two ends."""
        return (float(self.low), float(self.high))

    def sample(self, rng: random.Random) -> float:
        """A value drawn with ``rng``."""
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class IntRange:
    """A whole number in ``[low, high]`` (both included)."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise SpaceError(f"IntRange: low {self.low!r} must be below high {self.high!r}")
        if self.log and self.low <= 0:
            raise SpaceError(f"IntRange: a log range needs low > 0, got {self.low!r}")

    def suggest(self, trial: Any, name: str) -> int:
        """A value from ``trial``."""
        return int(trial.suggest_int(name, self.low, self.high, log=self.log))

    def corners(self) -> tuple[int, int]:
        """The two ends."""
        return (self.low, self.high)

    def sample(self, rng: random.Random) -> int:
        """A value drawn with ``rng``."""
        return rng.randint(self.low, self.high)


@dataclass(frozen=True)
class Choice:
    """One of a few values (strings, numbers, booleans)."""

    options: tuple[Any, ...]

    def __post_init__(self) -> None:
        if len(self.options) < 2:
            raise SpaceError(f"Choice: needs two or more options, got {self.options!r}")
        if len(set(map(repr, self.options))) != len(self.options):
            raise SpaceError(f"Choice: options repeat: {self.options!r}")

    def suggest(self, trial: Any, name: str) -> Any:
        """A value from ``trial``."""
        return trial.suggest_categorical(name, list(self.options))

    def corners(self) -> tuple[Any, ...]:
        """Every option."""
        return tuple(self.options)

    def sample(self, rng: random.Random) -> Any:
        """A value drawn with ``rng``."""
        return rng.choice(self.options)


@dataclass(frozen=True)
class Widths:
    """A list of layer widths: ``layers`` layers, the first ``width`` wide, each next one half.

    Two numbers are searched (``<name>.layers`` and ``<name>.width``), so a space over a
    tower stays small: ``Widths(layers=(1, 3), widths=(64, 128, 256))`` gives ``[64]`` up to
    ``[256, 128, 64]``.
    """

    layers: tuple[int, int]
    widths: tuple[int, ...]

    def __post_init__(self) -> None:
        low, high = self.layers
        if not 1 <= low <= high:
            raise SpaceError(f"Widths: layers must be (low, high) with 1 <= low <= high, "
                             f"got {self.layers!r}")
        if not self.widths or any(w < 2 ** (high - 1) for w in self.widths):
            raise SpaceError(f"Widths: every width must be >= {2 ** (high - 1)} so that "
                             f"{high} halvings stay positive, got {self.widths!r}")

    @staticmethod
    def make(layers: int, width: int) -> list[int]:
        """``[width, width // 2, ...]``, ``layers`` long."""
        return [width // 2**i for i in range(layers)]

    def suggest(self, trial: Any, name: str) -> list[int]:
        """A value from ``trial``."""
        low, high = self.layers
        layers = low if low == high else int(trial.suggest_int(f"{name}.layers", low, high))
        width = int(trial.suggest_categorical(f"{name}.width", list(self.widths)))
        return self.make(layers, width)

    def corners(self) -> tuple[list[int], ...]:
        """Fewest layers at the smallest width, most layers at the largest."""
        return (
            self.make(self.layers[0], min(self.widths)),
            self.make(self.layers[1], max(self.widths)),
        )

    def sample(self, rng: random.Random) -> list[int]:
        """A value drawn with ``rng``."""
        return self.make(rng.randint(*self.layers), rng.choice(self.widths))


Dimension = Union[FloatRange, IntRange, Choice, Widths]
DIMENSIONS = (FloatRange, IntRange, Choice, Widths)

#: The optimiser's space, searched for every model.
COMMON_SPACE: dict[str, Dimension] = {
    "lr": FloatRange(1e-4, 1e-2, log=True),
    "weight_decay": FloatRange(1e-8, 1e-3, log=True),
}


def full_space(declared: Mapping[str, Dimension]) -> dict[str, Dimension]:
    """The space a model is searched over: :data:`COMMON_SPACE` with ``declared`` over it."""
    return {**COMMON_SPACE, **declared}


def validate_space(space: Mapping[str, Any], defaults: Mapping[str, Any], owner: str) -> None:
    """Raise :class:`SpaceError` for a name that is not a hyper-parameter or a bad dimension."""
    for name, dim in space.items():
        if name not in defaults and name not in TRAINING_KEYS:
            raise SpaceError(
                f"{owner}: search_space key {name!r} is neither a key of defaults nor one of "
                f"{', '.join(TRAINING_KEYS)}"
            )
        if not isinstance(dim, DIMENSIONS):
            raise SpaceError(
                f"{owner}: search_space[{name!r}] must be a FloatRange, IntRange, Choice or "
                f"Widths, got {type(dim).__name__}"
            )
        default = defaults.get(name)
        if isinstance(dim, Widths) != isinstance(default, list) and name in defaults:
            raise SpaceError(
                f"{owner}: search_space[{name!r}] is a {type(dim).__name__} but its default "
                f"is {default!r} (a list default takes Widths, a scalar one the others)"
            )


def split_point(point: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(training options, model hyper-parameters)`` of one point of a space."""
    training = {k: v for k, v in point.items() if k in TRAINING_KEYS}
    params = {k: v for k, v in point.items() if k not in TRAINING_KEYS}
    return training, params


def probe_points(space: Mapping[str, Dimension], n_samples: int = 3, seed: int = 0) -> list[dict]:
    """Points the conformance suite builds: each dimension's corners, then seeded samples.

    Corner ``i`` takes every dimension's ``i``-th corner (the last one where it has fewer), so
    the all-low and all-high points are among them.
    """
    width = max((len(d.corners()) for d in space.values()), default=0)
    points = [
        {k: d.corners()[min(i, len(d.corners()) - 1)] for k, d in space.items()}
        for i in range(width)
    ]
    rng = random.Random(seed)
    points += [{k: d.sample(rng) for k, d in space.items()} for _ in range(n_samples)]
    return points


def suggest_point(space: Mapping[str, Dimension], trial: Any) -> dict[str, Any]:
    """One point of ``space`` drawn through ``trial``."""
    return {name: dim.suggest(trial, name) for name, dim in space.items()}
