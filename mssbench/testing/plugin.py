"""A plugin with a trivial ``constant`` model and the ``tiny-synth`` dataset, for harness tests.

Not registered through an entry point: tests (yours too) register it with
``load_registry(extra=[("mssbench-testing", mssbench.testing.plugin)])``.
"""

from __future__ import annotations

import torch
from torch import nn

from mssbench import ModelOutput, ModelSpec, hookimpl
from mssbench.spec import Batch, DatasetSchema
from mssbench.testing.synthetic import tiny_dataset_spec


class Constant(nn.Module):
    """Predicts one learned logit per task, ignoring the input (the base-rate baseline).

    Args:
        schema: Dataset schema.
        init: Initial logit of every task.
    """

    def __init__(self, schema: DatasetSchema, init: float):
        super().__init__()
        self.bias = nn.Parameter(torch.full((schema.n_tasks,), float(init)))

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]``: the bias repeated."""
        logits = self.bias.expand(batch.scenario.shape[0], -1)
        return ModelOutput(logits, self.bias.new_zeros(()))


@hookimpl
def mssbench_register_models():
    """Register ``constant``."""
    return [
        ModelSpec(
            name="constant",
            summary="One learned logit per task, no input (harness tests)",
            build=Constant,
            defaults={"init": 0.0},
            expected_failed_checks={"check_learns": "cannot rank: predicts the base rate only"},
        )
    ]


@hookimpl
def mssbench_register_datasets():
    """Register ``tiny-synth``."""
    return [tiny_dataset_spec()]
