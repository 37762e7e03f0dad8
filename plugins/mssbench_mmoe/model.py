"""MMoE for multi-scenario multi-task data."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mssbench.nn import FeatureEncoder, GroupedMLP, gather_scenario, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput


class MMoE(nn.Module):
    """Multi-gate Mixture-of-Experts.

    Paper: Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
    Mixture-of-Experts", KDD 2018, https://doi.org/10.1145/3219819.3220007.

    ``n_experts`` expert MLPs share the encoded input; each gate is a bias-free linear map of the
    input followed by a softmax over experts; each task's tower reads its gate's mixture of expert
    outputs. Layer conventions follow MTReclib (``Linear -> BN -> ReLU -> Dropout``).

    Multi-scenario handling (our adaptation; the paper is multi-task only):

    * ``scenario_towers=True`` (default, "MMoE-ST"): one gate and one tower per (scenario, task);
      each sample uses its own scenario's gate and tower (picked by gather, never by reordering).
      The scenario is not an input feature unless ``scenario_as_feature`` is set.
    * ``scenario_towers=False`` ("MMoE-T"): one gate and tower per task; the scenario id is an
      input feature.

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field embedding.
        n_experts: Number of experts.
        expert_hidden: Hidden widths of each expert MLP.
        tower_hidden: Hidden widths of each tower.
        dropout: Dropout in experts and towers.
        scenario_towers: A gate and a tower per (scenario, task), see above.
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
        n_gates = self.S * self.T if scenario_towers else self.T
        self.gates = nn.Linear(d_in, n_gates * n_experts, bias=False)
        self.towers = GroupedMLP(n_gates, self.experts.out_dim, tower_hidden, dropout, out_dim=1)

    def gate_weights(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """Softmax gate weights ``[B, T, E]`` for each sample's own scenario."""
        logits = self.gates(x)
        if self.scenario_towers:
            logits = gather_scenario(logits.view(-1, self.S, self.T, self.E), scenario)
        return torch.softmax(logits.view(-1, self.T, self.E), dim=-1)

    def representation(self, batch: Batch) -> torch.Tensor:
        """The experts' outputs, concatenated ``[B, E * H]``: the part every task shares."""
        return self.experts(self.encoder(batch)).flatten(1)

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` and a zero auxiliary loss."""
        x = self.encoder(batch)  # [B, D]
        experts = self.experts(x)  # [B, E, H]
        gates = self.gate_weights(x, batch.scenario)  # [B, T, E]
        mixed = torch.einsum("bte,beh->bth", gates, experts)  # [B, T, H]
        if self.scenario_towers:
            # Every scenario's towers see the sample; keep the sample's own: [B, S*T, H].
            tower_in = mixed.unsqueeze(1).expand(-1, self.S, -1, -1).flatten(1, 2)
            out = self.towers(tower_in).view(-1, self.S, self.T)  # [B, S, T]
            logits = gather_scenario(out, batch.scenario)  # [B, T]
        else:
            logits = self.towers(mixed).squeeze(-1)  # [B, T]
        return ModelOutput(logits, zero_aux(logits))
