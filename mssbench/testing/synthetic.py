"""Small seeded synthetic multi-scenario multi-task data for tests and plugin authors.

The labels follow a planted logistic model with effects shared by all scenarios,
scenario-specific effects and a shared component between tasks, so a working model learns it.
When the schema declares ``ctcvr`` implies ``ctr``, positives of the child are drawn among the
parent's positives. Every split carries its true probabilities as ``oracle`` logits.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mssbench.nn import esmm_logit
from mssbench.spec import (
    CategoricalField,
    DatasetSchema,
    DatasetSpec,
    Implies,
    LoadedDataset,
    Protocol,
    Split,
    Task,
)


def make_schema(
    n_scenarios: int = 3,
    vocab_sizes: Sequence[int] = (11, 4, 7, 33),
    n_numeric: int = 5,
    tasks: Sequence[str] = ("ctr", "ctcvr"),
    implies: bool = True,
) -> DatasetSchema:
    """A small AliExpress-shaped schema.

    Args:
        n_scenarios: Number of scenarios.
        vocab_sizes: Vocabulary size of each categorical field (OOV id 0 included).
        n_numeric: Number of numeric fields.
        tasks: Task names.
        implies: Declare ``tasks[1]`` implies ``tasks[0]`` (reported conditional task ``cvr``).
    """
    relations = (Implies(tasks[1], tasks[0], "cvr"),) if implies and len(tasks) >= 2 else ()
    return DatasetSchema(
        categorical=tuple(CategoricalField(f"c{i}", v) for i, v in enumerate(vocab_sizes)),
        numeric=tuple(f"n{i}" for i in range(n_numeric)),
        scenario_field="scenario",
        scenarios=tuple(f"s{i}" for i in range(n_scenarios)),
        tasks=tuple(Task(t, t) for t in tasks),
        relations=relations,
    )


def make_split(schema: DatasetSchema, n_rows: int, seed: int = 0, base_rate: float = -0.5) -> Split:
    """Draw ``n_rows`` rows from the planted model of ``schema`` (deterministic in ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    # The planted model's weights come from a fixed stream, so that every split of the same
    # schema follows the same model.
    w = torch.Generator().manual_seed(12345)
    S, T = schema.n_scenarios, schema.n_tasks
    cat = (
        torch.stack(
            [torch.randint(1, max(v, 2), (n_rows,), generator=g) % v for v in schema.vocab_sizes], 1
        )
        if schema.categorical
        else torch.zeros(n_rows, 0, dtype=torch.long)
    )
    num = torch.rand(n_rows, schema.n_numeric, generator=g)
    scenario = torch.randint(0, S, (n_rows,), generator=g)

    shared = torch.zeros(n_rows)
    for j, v in enumerate(schema.vocab_sizes):
        shared += torch.randn(v, generator=w)[cat[:, j]] * 0.8
    num_w = torch.randn(schema.n_numeric, generator=w)
    shared += (num - 0.5) @ num_w
    scen_w = torch.randn(S, schema.n_numeric, generator=w)
    scen_bias = torch.randn(S, generator=w) * 0.5
    specific = ((num - 0.5) * scen_w[scenario]).sum(1) + scen_bias[scenario]
    labels = torch.zeros(n_rows, T)
    oracle = torch.zeros(n_rows, T)
    for t in range(T):
        task_w = torch.randn(schema.n_numeric, generator=w)
        logit = base_rate + shared + specific + 0.5 * ((num - 0.5) @ task_w) - 0.5 * t
        labels[:, t] = (torch.rand(n_rows, generator=g) < torch.sigmoid(logit)).float()
        oracle[:, t] = logit
    for rel in schema.relations:
        child, parent = schema.task_index(rel.child), schema.task_index(rel.parent)
        labels[:, child] *= labels[:, parent]
        # Drawn independently, so P(child) = P(parent) * P(child draw).
        oracle[:, child] = esmm_logit(oracle[:, parent], oracle[:, child])
    return Split(cat.to(torch.int32), num, scenario, labels, oracle)


def make_dataset(
    schema: DatasetSchema | None = None,
    n_train: int = 2000,
    n_valid: int = 500,
    n_test: int = 500,
    seed: int = 0,
) -> LoadedDataset:
    """A loaded synthetic dataset with three splits."""
    schema = schema or make_schema()
    protocol = Protocol(
        dataset="tiny-synth",
        name="planted",
        version=1,
        scenarios=schema.scenarios,
        split_rule="independent draws from the planted model",
        synthetic=True,
    )
    return LoadedDataset(
        schema=schema,
        protocol=protocol,
        train=make_split(schema, n_train, seed),
        valid=make_split(schema, n_valid, seed + 1),
        test=make_split(schema, n_test, seed + 2),
        info={"generator": "mssbench.testing.synthetic", "seed": seed},
    )


def tiny_dataset_spec() -> DatasetSpec:
    """A :class:`DatasetSpec` ``tiny-synth`` for harness tests (options: ``n_train``, ``seed``)."""

    def load(options: dict) -> LoadedDataset:
        return make_dataset(n_train=options["n_train"], seed=options["seed"])

    return DatasetSpec(
        name="tiny-synth",
        summary="Tiny synthetic MS-MT data with planted structure (tests only)",
        load=load,
        options={"n_train": 2000, "seed": 0},
        source="generated",
        tags={"synthetic": True},
    )
