"""Shared-bottom (hard parameter sharing) for multi-scenario multi-task data."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mssbench.nn import MLP, FeatureEncoder, GroupedMLP, gather_scenario, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput


class SharedBottom(nn.Module):
    """Shared-bottom multi-task network (hard parameter sharing).

    Paper: Caruana, "Multitask Learning", Machine Learning 28, 1997,
    https://doi.org/10.1023/A:1007379606734. Configuration follows MTReclib: a shared MLP
    ``bottom_hidden`` over the encoded input, then one tower per task.

    Multi-scenario handling (our adaptation): the scenario id is an input feature. With
    ``scenario_towers`` set, there is one tower per (scenario, task), picked by gather.

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field embedding.
        bottom_hidden: Hidden widths of the shared bottom MLP.
        tower_hidden: Hidden widths of each tower.
        dropout: Dropout in the bottom and towers.
        scenario_towers: One tower per (scenario, task) instead of one per task.
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        bottom_hidden: Sequence[int],
        tower_hidden: Sequence[int],
        dropout: float,
        scenario_towers: bool,
    ):
        super().__init__()
        self.S, self.T = schema.n_scenarios, schema.n_tasks
        self.scenario_towers = scenario_towers
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature=True)
        self.bottom = MLP(self.encoder.out_dim, bottom_hidden, dropout)
        n_towers = self.S * self.T if scenario_towers else self.T
        self.towers = GroupedMLP(n_towers, self.bottom.out_dim, tower_hidden, dropout, out_dim=1)

    def representation(self, batch: Batch) -> torch.Tensor:
        """The shared bottom's output ``[B, H]`` (what contrastive pre-training shapes)."""
        return self.bottom(self.encoder(batch))

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` and a zero auxiliary loss."""
        shared = self.representation(batch)  # [B, H]
        out = self.towers(shared).squeeze(-1)  # [B, T] or [B, S*T]
        if self.scenario_towers:
            out = gather_scenario(out.view(-1, self.S, self.T), batch.scenario)
        return ModelOutput(out, zero_aux(out))
