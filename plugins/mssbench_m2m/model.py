"""M2M: multi-scenario multi-task meta learning (meta attention and meta towers)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mssbench.nn import (
    FeatureEncoder,
    GroupedLinear,
    GroupedMLP,
    TransformerLayer,
    gather_scenario,
    zero_aux,
)
from mssbench.spec import Batch, DatasetSchema, ModelOutput

__all__ = ["M2M", "MetaLinear"]

#: Negative slope of the leaky ReLU in the meta units.
LEAKY_SLOPE = 0.01


class MetaLinear(nn.Module):
    """Linear maps whose weights a meta network generates from a condition vector.

    For condition ``c`` (a scenario's knowledge representation), ``W(c) = reshape(A c + a)``
    ``[G, in, out]`` and ``b(c) = B c + b`` ``[G, out]``: ``G`` generated maps (one per task, or
    one) per condition. The conditions take ``S`` values, so the maps are generated once per
    scenario and each sample reads its own scenario's output (gather, no reordering).

    Args:
        cond_dim: Width of the condition.
        n_groups: Maps generated per condition ``G``.
        in_dim: Input width of each map.
        out_dim: Output width of each map.
    """

    def __init__(self, cond_dim: int, n_groups: int, in_dim: int, out_dim: int):
        super().__init__()
        self.G, self.in_dim, self.out_dim = n_groups, in_dim, out_dim
        self.weight_gen = nn.Linear(cond_dim, n_groups * in_dim * out_dim)
        self.bias_gen = nn.Linear(cond_dim, n_groups * out_dim)
        # Generated weights start at the scale of an nn.Linear of the same shape.
        with torch.no_grad():
            self.weight_gen.weight.mul_(1.0 / max(in_dim, 1) ** 0.5)
            self.weight_gen.bias.mul_(1.0 / max(in_dim, 1) ** 0.5)

    def generate(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights ``[S, G, in, out]`` and biases ``[S, G, out]`` for conditions ``[S, c]``."""
        w = self.weight_gen(cond).view(-1, self.G, self.in_dim, self.out_dim)
        return w, self.bias_gen(cond).view(-1, self.G, self.out_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """Apply each sample's own scenario's maps.

        Args:
            x: ``[B, ..., G, in]``.
            cond: ``[S, c]`` one condition per scenario.
            scenario: ``[B]`` scenario ids.

        Returns:
            ``[B, ..., G, out]``, without activation.
        """
        w, b = self.generate(cond)
        every = torch.einsum("b...gi,sgio->bs...go", x, w)  # [B, S, ..., G, out]
        bias = b.view(1, b.shape[0], *([1] * (x.dim() - 3)), self.G, self.out_dim)
        return gather_scenario(every + bias, scenario)


class M2M(nn.Module):
    """Multi-scenario multi-task meta learning (M2M).

    Paper: Zhang et al., "Leaving No One Behind: A Multi-Scenario Multi-Task Meta Learning
    Approach for Advertiser Modeling", WSDM 2022, https://arxiv.org/abs/2201.06814.

    * Expert view: field embeddings (optionally through a transformer encoder over the fields)
      feed ``n_experts`` expert MLPs, outputs ``E_i``.
    * Scenario knowledge ``k_s = LeakyReLU(W e_s + b)`` from a scenario embedding; task
      representations ``r_t = LeakyReLU(W' e_t + b')`` from task embeddings.
    * Meta attention: ``a_{t,i} = v^T LeakyReLU(M_s(E_i ⊕ r_t))`` with ``M_s`` a
      :class:`MetaLinear` generated from ``k_s``; ``alpha_t = softmax_i(a_t)``,
      ``R_t = sum_i alpha_{t,i} E_i``.
    * Meta tower per task: ``L^j = LeakyReLU(M^j_{s,t}(L^{j-1}) + L^{j-1})`` for
      ``meta_tower_layers`` layers from ``L^0 = R_t`` (generated maps with a residual), then a
      linear map to the task's logit.

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field, scenario and task embedding.
        field_transformer_layers: Transformer encoder layers over the field tokens (0: none).
        n_heads: Attention heads of that encoder (must divide ``embed_dim``).
        n_experts: Number of experts.
        expert_hidden: Widths of every expert MLP; the last one is ``H``.
        meta_dim: Width of the scenario knowledge, the task representations and the meta
            attention's hidden layer.
        meta_tower_layers: Residual meta layers per task tower.
        dropout: Dropout in the experts and the transformer.

    Differences from the paper: the paper's transformer reads an advertiser's behaviour
    sequence; the benchmark rows have no sequence, so it reads the field embeddings as tokens
    (``field_transformer_layers=0`` turns it off). The paper's scenario knowledge comes from
    scenario-describing features; here from a learned scenario embedding. Experts are ReLU MLPs
    without batch normalisation; widths are ours (the paper publishes none).
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        field_transformer_layers: int,
        n_heads: int,
        n_experts: int,
        expert_hidden: Sequence[int],
        meta_dim: int,
        meta_tower_layers: int,
        dropout: float,
    ):
        super().__init__()
        if n_experts < 1 or meta_dim < 1 or meta_tower_layers < 0 or field_transformer_layers < 0:
            raise ValueError(
                "n_experts and meta_dim must be >= 1, meta_tower_layers and "
                f"field_transformer_layers >= 0; got {n_experts}, {meta_dim}, "
                f"{meta_tower_layers}, {field_transformer_layers}"
            )
        if not expert_hidden or any(int(w) < 1 for w in expert_hidden):
            raise ValueError(f"expert_hidden must be non-empty widths >= 1, got {expert_hidden}")
        if field_transformer_layers and (n_heads < 1 or embed_dim % n_heads):
            raise ValueError(f"n_heads must divide embed_dim ({embed_dim}), got {n_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.S, self.T = schema.n_scenarios, schema.n_tasks
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature=False)
        self.transformer = (
            nn.Sequential(
                *(
                    TransformerLayer(embed_dim, n_heads, 4 * embed_dim, dropout)
                    for _ in range(field_transformer_layers)
                )
            )
            if field_transformer_layers
            else None
        )
        self.experts = GroupedMLP(
            n_experts, self.encoder.out_dim, [int(w) for w in expert_hidden], dropout, False
        )
        H = self.experts.out_dim
        self.scenario_embedding = nn.Embedding(self.S, embed_dim)
        self.task_embedding = nn.Embedding(self.T, embed_dim)
        nn.init.xavier_uniform_(self.scenario_embedding.weight)
        nn.init.xavier_uniform_(self.task_embedding.weight)
        self.scenario_knowledge = nn.Linear(embed_dim, meta_dim)
        self.task_knowledge = nn.Linear(embed_dim, meta_dim)
        self.attention = MetaLinear(meta_dim, 1, H + meta_dim, meta_dim)
        self.attention_v = nn.Parameter(torch.empty(meta_dim))
        nn.init.uniform_(self.attention_v, -(meta_dim**-0.5), meta_dim**-0.5)
        self.tower_layers = nn.ModuleList(
            MetaLinear(meta_dim, self.T, H, H) for _ in range(meta_tower_layers)
        )
        self.heads = GroupedLinear(self.T, H, 1)

    def knowledge(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scenario knowledge ``[S, meta_dim]`` and task representations ``[T, meta_dim]``."""
        k = F.leaky_relu(self.scenario_knowledge(self.scenario_embedding.weight), LEAKY_SLOPE)
        r = F.leaky_relu(self.task_knowledge(self.task_embedding.weight), LEAKY_SLOPE)
        return k, r

    def expert_outputs(self, batch: Batch) -> torch.Tensor:
        """``E`` ``[B, n_experts, H]``."""
        fields = self.encoder.fields(batch)  # [B, F, d]
        if self.transformer is not None:
            fields = self.transformer(fields)
        return self.experts(fields.flatten(1))

    def attention_weights(
        self, experts: torch.Tensor, k: torch.Tensor, r: torch.Tensor, scenario: torch.Tensor
    ) -> torch.Tensor:
        """Meta attention ``alpha`` ``[B, T, n_experts]`` (softmax over experts)."""
        b, e, _ = experts.shape
        pairs = torch.cat(
            [
                experts.unsqueeze(1).expand(-1, self.T, -1, -1),
                r.view(1, self.T, 1, -1).expand(b, -1, e, -1),
            ],
            dim=-1,
        )  # [B, T, E, H + m]
        hidden = self.attention(pairs.flatten(1, 2).unsqueeze(2), k, scenario)  # [B, T*E, 1, m]
        hidden = F.leaky_relu(hidden.squeeze(2), LEAKY_SLOPE)
        return torch.softmax((hidden @ self.attention_v).view(b, self.T, e), dim=-1)

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` and a zero auxiliary loss."""
        experts = self.expert_outputs(batch)  # [B, E, H]
        k, r = self.knowledge()
        alpha = self.attention_weights(experts, k, r, batch.scenario)
        h = torch.einsum("bte,beh->bth", alpha, experts)  # R_t: [B, T, H]
        for layer in self.tower_layers:
            h = F.leaky_relu(layer(h, k, batch.scenario) + h, LEAKY_SLOPE)
        logits = self.heads(h).squeeze(-1)
        return ModelOutput(logits, zero_aux(logits))
