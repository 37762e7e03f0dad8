"""The dataset contract: what every dataset plugin's :class:`~mssbench.spec.LoadedDataset` holds.

:func:`mssbench.api.load_dataset` calls :func:`validate` on whatever a plugin returns, so a
model never sees an id outside its embedding table (an id equal to ``vocab_size`` would be
looked up in the next field's rows of a shared table), a scenario id outside ``[0, S)``, a
label outside {0, 1}, a row that breaks a declared relation (``ctcvr`` without ``ctr``), or a
NaN/inf numeric. Each violation is one line naming the dataset, split, column and first bad row.

The checks are vectorised and cheap on millions of rows: the common (valid) case is decided
from aggregates (each field's minimum and maximum id, one sum of all numerics, which is finite
unless a value is not, one 0/1 test over all labels), and only a column that fails is scanned
again to find its first bad row. :func:`validate` also returns the per-split, per-scenario
row and positive counts (:func:`split_counts`) for the run record.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import torch

from mssbench.errors import DataError
from mssbench.spec import DatasetSchema, LoadedDataset, Split

__all__ = [
    "SPLITS",
    "DataContractError",
    "missing_scenarios",
    "split_counts",
    "validate",
    "violations",
    "warn_stderr",
]

#: The splits of a :class:`LoadedDataset`, in the order they are checked and reported.
SPLITS = ("train", "valid", "test")
#: Rows scanned at a time when locating the first bad row of a failed column.
_SCAN_ROWS = 1 << 20
#: Violations listed in one error before the rest are counted.
_MAX_LISTED = 20


class DataContractError(DataError):
    """A loaded dataset breaks the contract; ``violations`` holds one line per violation.

    ``str()`` joins them with a newline and ``Error:``, so the CLI prints one ``Error:`` line
    each.
    """

    def __init__(self, violations: list[str]) -> None:
        self.violations = list(violations)
        shown = self.violations[:_MAX_LISTED]
        if len(self.violations) > _MAX_LISTED:
            shown.append(f"... and {len(self.violations) - _MAX_LISTED} more violations")
        super().__init__("\nError: ".join(shown))


def _first_row(tensor: torch.Tensor, bad: Callable[[torch.Tensor], torch.Tensor]) -> int:
    """Index of the first element of ``tensor`` (``[N]``) where ``bad`` holds, else -1."""
    for start in range(0, tensor.shape[0], _SCAN_ROWS):
        mask = bad(tensor[start : start + _SCAN_ROWS])
        hit = torch.nonzero(mask)
        if len(hit):
            return start + int(hit[0, 0])
    return -1


def _where(dataset: str, split: str, column: str) -> str:
    return f"dataset {dataset!r}, split {split}, column {column!r}"


def _categorical(dataset: str, split_name: str, split: Split, schema: DatasetSchema) -> list[str]:
    cat = split.categorical
    if cat.is_floating_point() or cat.is_complex() or cat.dtype == torch.bool:
        return [
            f"{_where(dataset, split_name, 'categorical')}: ids must be integers, "
            f"got dtype {cat.dtype}"
        ]
    if not len(split) or not schema.categorical:
        return []
    lo, hi = (t.tolist() for t in torch.aminmax(cat, dim=0))
    out = []
    for j, field in enumerate(schema.categorical):
        if lo[j] >= 0 and hi[j] < field.vocab_size:
            continue
        col = cat[:, j]
        row = _first_row(col, lambda c, v=field.vocab_size: (c < 0) | (c >= v))
        out.append(
            f"{_where(dataset, split_name, field.name)}: id {int(col[row])} at row {row} is "
            f"outside [0, {field.vocab_size}) (vocab_size {field.vocab_size}, OOV id 0 included)"
        )
    return out


def _labels(dataset: str, split_name: str, split: Split, schema: DatasetSchema) -> list[str]:
    lab = split.labels
    if not len(split) or bool(((lab == 0) | (lab == 1)).all()):
        return []
    out = []
    for t, task in enumerate(schema.tasks):
        col = lab[:, t]
        row = _first_row(col, lambda c: (c != 0) & (c != 1))
        if row < 0:
            continue
        out.append(
            f"{_where(dataset, split_name, task.label)} (task {task.name}): label "
            f"{float(col[row])!r} at row {row}, expected 0 or 1"
        )
    return out


def _relations(dataset: str, split_name: str, split: Split, schema: DatasetSchema) -> list[str]:
    out = []
    for rel in schema.relations:
        child = split.labels[:, schema.task_index(rel.child)]
        parent = split.labels[:, schema.task_index(rel.parent)]
        bad = (child == 1) & (parent != 1)
        if not bool(bad.any()):
            continue
        row = int(torch.nonzero(bad)[0, 0])
        label = schema.tasks[schema.task_index(rel.child)].label
        out.append(
            f"{_where(dataset, split_name, label)} (task {rel.child}): row {row} has "
            f"{rel.child} = 1 but {rel.parent} = 0, and the schema declares that {rel.child} "
            f"implies {rel.parent}"
        )
    return out


def _numeric(dataset: str, split_name: str, split: Split, schema: DatasetSchema) -> list[str]:
    num = split.numeric
    if not len(split) or not schema.numeric:
        return []
    if not num.is_floating_point():
        return [
            f"{_where(dataset, split_name, 'numeric')}: values must be floating point, "
            f"got dtype {num.dtype}"
        ]
    # NaN and inf propagate through a sum: a finite total clears every value in one fast pass
    # (a total that overflows only sends the check down the per-column scan).
    if bool(torch.isfinite(num.sum())):
        return []
    out = []
    for j, name in enumerate(schema.numeric):
        col = num[:, j]
        row = _first_row(col, lambda c: ~torch.isfinite(c))
        if row < 0:
            continue
        out.append(
            f"{_where(dataset, split_name, name)}: value {float(col[row])} at row {row}, "
            "expected a finite number"
        )
    return out


def _scenario(dataset: str, split_name: str, split: Split, schema: DatasetSchema) -> list[str]:
    """Scenario ids: an integer ``[N]`` tensor with values in ``[0, S)``.

    A scenario id indexes per-scenario towers, gates and counts, so one outside the range is
    the dataset's error, reported here rather than as an indexing failure inside a model.
    """
    s = split.scenario
    if s.is_floating_point() or s.is_complex() or s.dtype == torch.bool or s.dim() != 1:
        return [
            f"{_where(dataset, split_name, 'scenario')}: expected a [N] integer tensor, "
            f"got {s.dtype} of shape {list(s.shape)}"
        ]
    n = schema.n_scenarios
    if not len(split) or (int(s.min()) >= 0 and int(s.max()) < n):
        return []
    row = _first_row(s, lambda c: (c < 0) | (c >= n))
    return [
        f"{_where(dataset, split_name, 'scenario')}: id {int(s[row])} at row {row} is outside "
        f"[0, {n}) (scenarios {', '.join(schema.scenarios)})"
    ]


def violations(data: LoadedDataset, dataset: str) -> list[str]:
    """Every contract violation of ``data``, one line each (empty when it conforms).

    Args:
        data: What the dataset plugin returned.
        dataset: The dataset's registered name (for the messages).
    """
    out: list[str] = []
    for name in SPLITS:
        split: Split = getattr(data, name)
        out += _scenario(dataset, name, split, data.schema)
        out += _categorical(dataset, name, split, data.schema)
        labels = _labels(dataset, name, split, data.schema)
        out += labels
        if not labels:  # relations are only meaningful between 0/1 labels
            out += _relations(dataset, name, split, data.schema)
        out += _numeric(dataset, name, split, data.schema)
    return out


def split_counts(data: LoadedDataset) -> dict[str, Any]:
    """Rows and positives per split and scenario, as written into the run record.

    Returns:
        ``{split: {"rows": n, "positives": {task: n}, "scenarios": {scenario: {"rows": n,
        "positives": {task: n}}}}}`` for the splits train, valid and test.
    """
    schema = data.schema
    out: dict[str, Any] = {}
    for name in SPLITS:
        split: Split = getattr(data, name)
        scen = split.scenario
        rows = torch.bincount(scen, minlength=schema.n_scenarios).tolist()
        pos = [
            torch.bincount(scen, weights=(split.labels[:, t] == 1).double(),
                           minlength=schema.n_scenarios).long().tolist()
            for t in range(schema.n_tasks)
        ]  # fmt: skip
        out[name] = {
            "rows": len(split),
            "positives": {task: sum(pos[t]) for t, task in enumerate(schema.task_names)},
            "scenarios": {
                s: {
                    "rows": rows[i],
                    "positives": {task: pos[t][i] for t, task in enumerate(schema.task_names)},
                }
                for i, s in enumerate(schema.scenarios)
            },
        }
    return out


def missing_scenarios(counts: dict[str, Any], dataset: str) -> list[str]:
    """A warning line for each declared scenario without rows in a split."""
    return [
        f"dataset {dataset!r}: scenario {scenario!r} has no rows in split {split}"
        for split in SPLITS
        for scenario, c in counts[split]["scenarios"].items()
        if c["rows"] == 0
    ]


def warn_stderr(message: str) -> None:
    """Print ``Warning: <message>`` to stderr."""
    print(f"Warning: {message}", file=sys.stderr, flush=True)


def validate(
    data: LoadedDataset, dataset: str, warn: Callable[[str], None] = warn_stderr
) -> dict[str, Any]:
    """Check ``data`` against the contract and count its rows and positives.

    Args:
        data: What the dataset plugin returned.
        dataset: The dataset's registered name (for the messages).
        warn: Receives one line per declared scenario without rows in a split.

    Returns:
        ``{"splits": split_counts(data), "warnings": [...]}``, the warnings being the lines
        passed to ``warn``; this is what the run record holds under ``dataset.counts``.

    Raises:
        DataContractError: One line per violation (ids, labels, relations, non-finite numerics).
    """
    found = violations(data, dataset)
    if found:
        raise DataContractError(found)
    counts = split_counts(data)
    warnings = missing_scenarios(counts, dataset)
    for line in warnings:
        warn(line)
    return {"splits": counts, "warnings": warnings}
