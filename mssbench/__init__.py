"""mssbench: a benchmark harness for multi-scenario / multi-task recommendation models."""

import pluggy

from mssbench.space import Choice, FloatRange, IntRange, Widths
from mssbench.spec import (
    Batch,
    CategoricalField,
    Constraint,
    DatasetSchema,
    DatasetSpec,
    Implies,
    LoadedDataset,
    MetricSpec,
    ModelOutput,
    ModelSpec,
    Protocol,
    SpecError,
    Split,
    Task,
)

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mssbench")

__all__ = [
    "Batch",
    "CategoricalField",
    "Choice",
    "Constraint",
    "DatasetSchema",
    "DatasetSpec",
    "FloatRange",
    "Implies",
    "IntRange",
    "LoadedDataset",
    "MetricSpec",
    "ModelOutput",
    "ModelSpec",
    "Protocol",
    "SpecError",
    "Split",
    "Task",
    "Widths",
    "__version__",
    "hookimpl",
]
