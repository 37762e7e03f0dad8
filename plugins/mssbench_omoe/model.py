"""OMoE: one-gate mixture of experts, the MMoE paper's baseline."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mssbench.nn import FeatureEncoder, GroupedMLP, gather_scenario, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput


class OMoE(nn.Module):
    """One-gate Mixture-of-Experts (OMoE).

    Paper: the one-gate baseline of Ma et al., "Modeling Task Relationships in Multi-task
    Learning with Multi-gate Mixture-of-Experts", KDD 2018,
    https://doi.org/10.1145/3219819.3220007 (after Jacobs et al., "Adaptive Mixtures of Local
    Experts", Neural Computation 1991). Configuration as MTReclib's ``OMoEModel``.

    ``n_experts`` expert MLPs share the encoded input; **one** gate (a bias-free linear map and
    a softmax over experts) mixes them, and every task's tower reads that same mixture. It is
    MMoE with the per-task gates tied, so ``omoe`` against ``mmoe`` at equal settings measures
    what per-task gating buys. Layers are ``Linear -> BN -> ReLU -> Dropout`` (MTReclib).

    Multi-scenario handling (our adaptation, the same two modes as ``mmoe``):

    * ``scenario_towers=True`` (default): one gate per scenario, shared by all tasks, and one
      tower per (scenario, task); each sample uses its own scenario's gate and towers (gather).
    * ``scenario_towers=False``: one gate for everything and one tower per task; the scenario
      id is an input feature.

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field embedding.
        n_experts: Number of experts.
        expert_hidden: Hidden widths of each expert MLP.
        tower_hidden: Hidden widths of each tower.
        dropout: Dropout in experts and towers.
        scenario_towers: A gate per scenario and a tower per (scenario, task), see above.
        scenario_as_feature: Also feed the scenario id as a feature with ``scenario_towers``
            (always on without).
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        n_experts: int,
        expert_hidden: Sequence[int],
        tower_hidden: Sequence[int],
        dropout: float,
        scenario_towers: bool,
        scenario_as_feature: bool,
    ):
        super().__init__()
        if n_experts < 1:
            raise ValueError(f"n_experts must be >= 1, got {n_experts}")
        self.scenario_towers = bool(scenario_towers)
        self.S, self.T, self.E = schema.n_scenarios, schema.n_tasks, n_experts
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature or not scenario_towers)
        d_in = self.encoder.out_dim
        self.experts = GroupedMLP(n_experts, d_in, expert_hidden, dropout)
        self.n_gates = self.S if scenario_towers else 1
        self.gates = nn.Linear(d_in, self.n_gates * n_experts, bias=False)
        n_towers = self.S * self.T if scenario_towers else self.T
        self.towers = GroupedMLP(n_towers, self.experts.out_dim, tower_hidden, dropout, out_dim=1)

    def gate_weights(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """Softmax gate weights ``[B, E]`` of each sample's own scenario, shared by all tasks."""
        logits = self.gates(x).view(-1, self.n_gates, self.E)  # [B, S or 1, E]
        if self.scenario_towers:
            return torch.softmax(gather_scenario(logits, scenario), dim=-1)
        return torch.softmax(logits[:, 0], dim=-1)

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` and a zero auxiliary loss."""
        x = self.encoder(batch)  # [B, D]
        experts = self.experts(x)  # [B, E, H]
        gates = self.gate_weights(x, batch.scenario)  # [B, E]
        mixed = torch.einsum("be,beh->bh", gates, experts)  # [B, H], one mixture for all tasks
        out = self.towers(mixed).squeeze(-1)  # [B, S*T] or [B, T]
        if self.scenario_towers:
            out = gather_scenario(out.view(-1, self.S, self.T), batch.scenario)  # [B, T]
        return ModelOutput(out, zero_aux(out))
