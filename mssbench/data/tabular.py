"""From per-split columns to a :class:`~mssbench.spec.LoadedDataset`, fitted on train only.

A loader that has its rows as NumPy columns per split (read with
:func:`mssbench.data.read_csv`, split with :mod:`mssbench.data.splits`, or read back from the
cache) describes them once with a :class:`TabularLayout` and calls :func:`tabular_dataset`:
categorical columns get :class:`~mssbench.data.Vocabulary` ids fitted on the train split
(unseen values -> 0), numeric columns are min-max scaled with the train minimum and maximum
(or kept as they are), the scenario column is mapped to scenario ids, and ``info`` gets the
counts a run record needs (rows, positives per task, rows per scenario, out-of-vocabulary
cells per split: in all, rows with any, per field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from mssbench.data.splits import SPLITS
from mssbench.data.vocab import OOV, Vocabulary
from mssbench.errors import DataError
from mssbench.spec import (
    CategoricalField,
    DatasetSchema,
    Implies,
    LoadedDataset,
    Protocol,
    Split,
    Task,
)

__all__ = ["TabularLayout", "encode_splits", "split_columns", "tabular_dataset", "take"]


@dataclass(frozen=True)
class TabularLayout:
    """What the columns of a tabular dataset are.

    Attributes:
        categorical: Categorical columns (integer codes or strings), in schema order.
        numeric: Numeric columns, in schema order.
        scenario: The column holding each row's scenario value.
        scenarios: Scenario value -> scenario name; the order gives the scenario ids. Several
            values may share a name (age groups): the scenarios are the distinct names in
            order of first appearance.
        tasks: Tasks; ``Task.label`` names the 0/1 label column.
        relations: Task relations (``Implies``), e.g. CTCVR implies CTR.
        min_count: A categorical value seen fewer times than this in train maps to id 0.
        scale_numeric: Min-max scale numerics with the train range (False: kept as read).
        scenario_field: Name of the scenario field in the schema (default: ``scenario``).
        group: The column whose integer values group the rows (the user) for grouped metrics
            and test intervals (:attr:`~mssbench.spec.Split.groups`); empty: none.
    """

    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    scenario: str
    scenarios: Mapping[Any, str]
    tasks: tuple[Task, ...]
    relations: tuple[Implies, ...] = ()
    min_count: int = 1
    scale_numeric: bool = True
    scenario_field: str = ""
    group: str = ""

    @property
    def scenario_names(self) -> tuple[str, ...]:
        """Distinct scenario names in id order."""
        return tuple(dict.fromkeys(self.scenarios.values()))

    def scenario_ids(self, values: np.ndarray, split: str) -> np.ndarray:
        """``int64`` scenario ids of raw scenario values (DataError naming an unknown one)."""
        names = self.scenario_names
        keys = np.array(list(self.scenarios))
        ids = np.array([names.index(self.scenarios[k]) for k in self.scenarios], np.int64)
        order = np.argsort(keys, kind="stable")
        pos = np.clip(np.searchsorted(keys[order], values), 0, len(keys) - 1)
        known = keys[order][pos] == values
        if not known.all():
            bad = np.asarray(values)[~known][0]
            bad = bad.item() if isinstance(bad, np.generic) else bad
            allowed = ", ".join(str(k) for k in self.scenarios)
            raise DataError(
                f"{split} split: scenario column {self.scenario!r} holds {bad!r}, expected "
                f"one of {allowed}"
            )
        return ids[order][pos]


def _scaler(train: Mapping[str, np.ndarray], layout: TabularLayout) -> dict[str, list[float]]:
    out = {}
    for c in layout.numeric:
        v = np.asarray(train[c], np.float64)
        out[c] = [float(v.min()), float(v.max())] if len(v) else [0.0, 1.0]
    return out


def _numeric(part: Mapping[str, np.ndarray], layout: TabularLayout, scale: Mapping) -> np.ndarray:
    n = len(part[layout.scenario])
    num = np.empty((n, len(layout.numeric)), np.float32)
    for j, c in enumerate(layout.numeric):
        v = np.asarray(part[c], np.float64)
        if layout.scale_numeric:
            lo, hi = scale[c]
            v = (v - lo) / (hi - lo if hi > lo else 1.0)
        num[:, j] = v
    return num


def encode_splits(
    parts: Mapping[str, Mapping[str, np.ndarray]], layout: TabularLayout
) -> tuple[dict[str, Split], DatasetSchema, dict[str, Any]]:
    """Encode the ``train``, ``valid`` and ``test`` columns with train-only statistics.

    Args:
        parts: Split name -> column name -> ``[N]`` array; every split has every column of
            ``layout`` (categorical, numeric, scenario and each task's label, 0/1).
        layout: What the columns are.

    Returns:
        ``(splits, schema, info)``: tensors per split, the schema (vocabulary sizes include
        the out-of-vocabulary id 0) and the facts for the run record.

    Raises:
        DataError: An empty train split or a scenario value not in ``layout.scenarios``.
    """
    train = parts["train"]
    if len(train[layout.scenario]) == 0:
        raise DataError("the train split is empty")
    vocabs = {c: Vocabulary.fit(train[c], layout.min_count) for c in layout.categorical}
    scale = _scaler(train, layout)
    dtype = np.int32 if max((v.size for v in vocabs.values()), default=0) < 2**31 else np.int64
    splits: dict[str, Split] = {}
    info: dict[str, Any] = {"rows": {}, "positives": {}, "scenario_rows": {}, "oov": {}}
    names = layout.scenario_names
    for split in SPLITS:
        part = parts[split]
        n = len(part[layout.scenario])
        cat = np.empty((n, len(layout.categorical)), dtype)
        for j, c in enumerate(layout.categorical):
            cat[:, j] = vocabs[c].encode(part[c])
        labels = np.stack([np.asarray(part[t.label]) for t in layout.tasks], axis=1)
        scen = layout.scenario_ids(np.asarray(part[layout.scenario]), split)
        splits[split] = Split(
            torch.from_numpy(cat),
            torch.from_numpy(_numeric(part, layout, scale)),
            torch.from_numpy(scen),
            torch.from_numpy(labels.astype(np.float32)),
            groups=torch.from_numpy(np.asarray(part[layout.group], np.int64))
            if layout.group
            else None,
        )
        is_oov = cat == OOV
        per_field = is_oov.sum(axis=0)
        info["rows"][split] = n
        info["positives"][split] = {
            t.name: int(labels[:, i].sum()) for i, t in enumerate(layout.tasks)
        }
        counts = np.bincount(scen, minlength=len(names))
        info["scenario_rows"][split] = dict(zip(names, counts.tolist()))
        info["oov"][split] = {
            "cells": int(per_field.sum()),
            "rows": int(is_oov.any(axis=1).sum()),
            "fields": {c: int(k) for c, k in zip(layout.categorical, per_field.tolist()) if k},
        }
    schema = DatasetSchema(
        categorical=tuple(CategoricalField(c, vocabs[c].size) for c in layout.categorical),
        numeric=tuple(layout.numeric),
        scenario_field=layout.scenario_field or layout.scenario,
        scenarios=names,
        tasks=tuple(layout.tasks),
        relations=tuple(layout.relations),
    )
    if layout.numeric and layout.scale_numeric:
        info["numeric_min_max"] = scale
    return splits, schema, info


def tabular_dataset(
    parts: Mapping[str, Mapping[str, np.ndarray]],
    layout: TabularLayout,
    protocol: Protocol,
    info: Mapping[str, Any] | None = None,
) -> LoadedDataset:
    """The :class:`LoadedDataset` of ``parts`` (see :func:`encode_splits`).

    Args:
        parts: Split name -> column name -> array.
        layout: What the columns are.
        protocol: The protocol the splits follow (its id goes into ``info``).
        info: More facts for the record (input files with checksums, cache folder).
    """
    splits, schema, facts = encode_splits(parts, layout)
    return LoadedDataset(
        schema=schema,
        protocol=protocol,
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        info={"dataset": protocol.dataset, "protocol": protocol.id, **(info or {}), **facts},
    )


def take(columns: Mapping[str, np.ndarray], rows: np.ndarray | slice) -> dict[str, np.ndarray]:
    """The rows ``rows`` of every column (a split's part of a table)."""
    return {c: np.asarray(v)[rows] for c, v in columns.items()}


def split_columns(
    columns: Mapping[str, np.ndarray], codes: np.ndarray, names: Sequence[str] = SPLITS
) -> dict[str, dict[str, np.ndarray]]:
    """Split name -> that split's rows of every column, from ``[N]`` split codes."""
    return {name: take(columns, np.flatnonzero(codes == k)) for k, name in enumerate(names)}
