"""SAR-Net: scenario-aware attention, scenario-specific transfer and a mixture of experts."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from mssbench.nn import FeatureEncoder, GroupedMLP, gather_scenario, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput

__all__ = ["SARNet"]


class SARNet(nn.Module):
    """Scenario-Aware Ranking Network, adapted to tabular multi-scenario multi-task data.

    Paper: Shen et al., "SAR-Net: A Scenario-Aware Ranking Network for Personalized Fair
    Recommendation in Hundreds of Travel Scenarios", CIKM 2021,
    https://arxiv.org/abs/2110.06475.

    * Scenario-aware attention (our tabular adaptation of the paper's attention over the user's
      behaviour sequence): the field embeddings are the tokens; the query comes from the
      scenario embedding ``e_s``, ``a_f = softmax_f(q(e_s) . k(E_f) / sqrt(d_a))``, and the
      pooled vector is ``sum_f a_f v(E_f)``.
    * Input ``h = E ⊕ pooled ⊕ e_s``; scenario-specific transfer ``h_s = w_s ⊙ h + b_s``
      (``w_s = 1``, ``b_s = 0`` at initialisation).
    * Mixture of experts: ``n_shared_experts`` experts shared by all scenarios and
      ``n_specific_experts`` per scenario, all reading ``h_s``; for each task a gate per
      scenario, ``softmax(G_{s,t} h_s)``, mixes the shared and the own scenario's experts.
    * One tower per task on its mixture, ending in one logit.

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field embedding and of the scenario embedding.
        attention_dim: Width of the attention's queries and keys.
        n_shared_experts: Experts shared by the scenarios.
        n_specific_experts: Experts per scenario.
        expert_hidden: Widths of every expert MLP (ReLU, no normalisation).
        tower_hidden: Hidden widths of every tower.
        dropout: Dropout in experts and towers.

    Differences from the paper: the attention reads fields instead of a behaviour sequence;
    the paper's debias network (position and other bias features) has no counterpart in the
    benchmark data and is left out; the paper is single-task, here gates and towers are per
    task. See README.
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        attention_dim: int,
        n_shared_experts: int,
        n_specific_experts: int,
        expert_hidden: Sequence[int],
        tower_hidden: Sequence[int],
        dropout: float,
    ):
        super().__init__()
        if (
            n_shared_experts < 0
            or n_specific_experts < 0
            or n_shared_experts + n_specific_experts < 1
        ):
            raise ValueError(
                "n_shared_experts and n_specific_experts must be >= 0 with at least one expert, "
                f"got {n_shared_experts}, {n_specific_experts}"
            )
        if attention_dim < 1 or not expert_hidden or any(int(w) < 1 for w in expert_hidden):
            raise ValueError(
                f"attention_dim and expert_hidden widths must be >= 1, got {attention_dim}, "
                f"{list(expert_hidden)}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.S, self.T = schema.n_scenarios, schema.n_tasks
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature=False)
        self.scenario_embedding = nn.Embedding(self.S, embed_dim)
        nn.init.xavier_uniform_(self.scenario_embedding.weight)
        self.query = nn.Linear(embed_dim, attention_dim, bias=False)
        self.key = nn.Linear(embed_dim, attention_dim, bias=False)
        self.value = nn.Linear(embed_dim, embed_dim, bias=False)
        self.scale = 1.0 / math.sqrt(attention_dim)
        in_dim = self.encoder.out_dim + 2 * embed_dim
        self.transfer_weight = nn.Parameter(torch.ones(self.S, in_dim))
        self.transfer_bias = nn.Parameter(torch.zeros(self.S, in_dim))
        n_experts = n_shared_experts + self.S * n_specific_experts
        self.experts = GroupedMLP(
            n_experts, in_dim, [int(w) for w in expert_hidden], dropout, batch_norm=False
        )
        # Scenario s mixes the shared experts, then its own: [S, n_shared + n_specific].
        own = [
            list(range(n_shared_experts))
            + [n_shared_experts + s * n_specific_experts + i for i in range(n_specific_experts)]
            for s in range(self.S)
        ]
        self.register_buffer("own_experts", torch.tensor(own, dtype=torch.long), persistent=False)
        self.n_mix = n_shared_experts + n_specific_experts
        self.gates = nn.Linear(in_dim, self.S * self.T * self.n_mix, bias=False)
        self.towers = GroupedMLP(
            self.T,
            self.experts.out_dim,
            [int(w) for w in tower_hidden],
            dropout,
            batch_norm=False,
            out_dim=1,
        )

    def attention_weights(self, fields: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """Scenario-aware attention over the fields, ``[B, F]`` (rows sum to 1)."""
        q = self.query(self.scenario_embedding(scenario))  # [B, a]
        scores = torch.einsum("ba,bfa->bf", q, self.key(fields)) * self.scale
        return torch.softmax(scores, dim=-1)

    def transferred_input(self, batch: Batch) -> torch.Tensor:
        """``h_s = w_s ⊙ (E ⊕ pooled ⊕ e_s) + b_s``, ``[B, in_dim]``."""
        fields = self.encoder.fields(batch)  # [B, F, d]
        weights = self.attention_weights(fields, batch.scenario)
        pooled = torch.einsum("bf,bfd->bd", weights, self.value(fields))
        e_s = self.scenario_embedding(batch.scenario)
        h = torch.cat([fields.flatten(1), pooled, e_s], dim=1)
        return h * self.transfer_weight[batch.scenario] + self.transfer_bias[batch.scenario]

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` and a zero auxiliary loss."""
        h = self.transferred_input(batch)
        experts = self.experts(h)  # [B, E, H]
        index = self.own_experts[batch.scenario].unsqueeze(-1).expand(-1, -1, experts.shape[-1])
        own = experts.gather(1, index)  # [B, n_mix, H]
        gate_logits = self.gates(h).view(-1, self.S, self.T, self.n_mix)
        gates = torch.softmax(gather_scenario(gate_logits, batch.scenario), dim=-1)  # [B, T, n]
        mixed = torch.einsum("btn,bnh->bth", gates, own)
        logits = self.towers(mixed).squeeze(-1)
        return ModelOutput(logits, zero_aux(logits))
