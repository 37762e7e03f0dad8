"""HiNet: hierarchical information extraction (scenario extraction, then task extraction)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mssbench.nn import MLP, FeatureEncoder, GroupedMLP, gather_scenario, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput

__all__ = ["HiNet", "ScenarioExtraction", "TaskExtraction"]


def _positive(name: str, value: int) -> int:
    if int(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


class ScenarioExtraction(nn.Module):
    """Scenario extraction layer: scenario-shared, scenario-specific and SAN representations.

    All sub-experts (``n_shared`` for the shared subexpert integration module, then
    ``n_specific`` per scenario) read the encoded input and run as one grouped MLP. Each
    subexpert integration (SEI) module mixes its own sub-experts with ``softmax(W x)``. The
    scenario-aware attentive network (SAN) weights the *other* scenarios' specific
    representations by ``softmax`` over ``j != s`` of ``MLP(e_s)``, ``e_s`` the scenario
    embedding; with one scenario it contributes zeros.

    Args:
        n_scenarios: Number of scenarios ``S``.
        in_dim: Width of the encoded input.
        embed_dim: Width of the scenario embedding.
        n_shared: Sub-experts of the shared SEI module.
        n_specific: Sub-experts of each scenario's SEI module.
        hidden: Widths of every sub-expert MLP.
        san_hidden: Hidden widths of SAN's attention MLP.
        dropout: Dropout after each sub-expert layer.
    """

    def __init__(
        self,
        n_scenarios: int,
        in_dim: int,
        embed_dim: int,
        n_shared: int,
        n_specific: int,
        hidden: Sequence[int],
        san_hidden: Sequence[int],
        dropout: float,
    ):
        super().__init__()
        self.S, self.n_shared, self.n_specific = n_scenarios, n_shared, n_specific
        n_sub = n_shared + n_scenarios * n_specific
        self.subexperts = GroupedMLP(n_sub, in_dim, hidden, dropout, batch_norm=False)
        self.gates = nn.Linear(in_dim, n_sub)
        # One scenario has no other scenario to attend to: no SAN parameters (none would learn).
        self.scenario_embedding: nn.Embedding | None = None
        self.san: nn.Sequential | None = None
        if n_scenarios > 1:
            self.scenario_embedding = nn.Embedding(n_scenarios, embed_dim)
            nn.init.xavier_uniform_(self.scenario_embedding.weight)
            self.san = nn.Sequential(
                MLP(embed_dim, san_hidden, batch_norm=False),
                nn.Linear(san_hidden[-1] if san_hidden else embed_dim, n_scenarios),
            )
        self.out_dim = 3 * self.subexperts.out_dim

    def san_weights(self) -> torch.Tensor:
        """``[S, S]``: row ``s`` weights the other scenarios, 0 on the diagonal, rows sum to 1."""
        if self.san is None or self.scenario_embedding is None:
            return self.gates.weight.new_zeros(1, 1)
        logits = self.san(self.scenario_embedding.weight)  # [S, S]
        own = torch.eye(self.S, dtype=torch.bool, device=logits.device)
        return torch.softmax(logits.masked_fill(own, float("-inf")), dim=-1)

    def forward(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """``[B, 3H]``: ``SAN ⊕ own scenario-specific ⊕ scenario-shared`` representations."""
        subs = self.subexperts(x)  # [B, n_sub, H]
        logits = self.gates(x)  # [B, n_sub]
        k = self.n_shared
        shared_w = torch.softmax(logits[:, :k], dim=-1)
        shared = torch.einsum("bn,bnh->bh", shared_w, subs[:, :k])
        spec_w = torch.softmax(logits[:, k:].view(-1, self.S, self.n_specific), dim=-1)
        spec_subs = subs[:, k:].view(x.shape[0], self.S, self.n_specific, -1)
        specific = torch.einsum("bsn,bsnh->bsh", spec_w, spec_subs)  # [B, S, H]
        own = gather_scenario(specific, scenario)  # [B, H]
        transfer = torch.einsum("bs,bsh->bh", self.san_weights()[scenario], specific)
        return torch.cat([transfer, own, shared], dim=1)


class TaskExtraction(nn.Module):
    """Task extraction layer: one CGC level with a group per (scenario, task).

    Group ``(s, t)`` owns ``n_specific`` experts; ``n_shared`` experts are shared by all groups.
    Its gate, ``softmax(W_{s,t} h)``, mixes its own experts and the shared ones. Only the
    sample's own scenario's ``T`` groups are mixed.

    Args:
        n_scenarios: Number of scenarios ``S``.
        n_tasks: Number of tasks ``T``.
        in_dim: Width of the scenario representation.
        n_specific: Experts per (scenario, task).
        n_shared: Shared experts.
        hidden: Widths of every expert MLP.
    """

    def __init__(
        self,
        n_scenarios: int,
        n_tasks: int,
        in_dim: int,
        n_specific: int,
        n_shared: int,
        hidden: Sequence[int],
    ):
        super().__init__()
        self.S, self.T = n_scenarios, n_tasks
        n_groups = n_scenarios * n_tasks
        self.experts = GroupedMLP(n_groups * n_specific + n_shared, in_dim, hidden, 0.0, False)
        self.n_mix = n_specific + n_shared
        own = [
            [g * n_specific + i for i in range(n_specific)]
            + [n_groups * n_specific + j for j in range(n_shared)]
            for g in range(n_groups)
        ]
        self.register_buffer("own_experts", torch.tensor(own, dtype=torch.long), persistent=False)
        self.gates = nn.Linear(in_dim, n_groups * self.n_mix)
        self.out_dim = self.experts.out_dim

    def gate_weights(self, h: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """Own-scenario gate weights ``[B, T, n_specific + n_shared]``."""
        logits = self.gates(h).view(-1, self.S, self.T, self.n_mix)
        return torch.softmax(gather_scenario(logits, scenario), dim=-1)

    def forward(self, h: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """``[B, T, H]``: each task's mixture for the sample's own scenario."""
        experts = self.experts(h)  # [B, E, H]
        own = self.own_experts.view(self.S, self.T * self.n_mix)[scenario]  # [B, T * n_mix]
        index = own.unsqueeze(-1).expand(-1, -1, experts.shape[-1])
        picked = experts.gather(1, index).view(h.shape[0], self.T, self.n_mix, -1)
        return torch.einsum("btn,btnh->bth", self.gate_weights(h, scenario), picked)


class HiNet(nn.Module):
    """Hierarchical information extraction network for multi-scenario multi-task learning.

    Paper: Zhou et al., "HiNet: Novel Multi-Scenario & Multi-Task Learning with Hierarchical
    Information Extraction", ICDE 2023, https://arxiv.org/abs/2303.06095; official code
    (TensorFlow 1.15): https://github.com/mrchor/HiNet.

    Pipeline: field embeddings -> :class:`ScenarioExtraction` (SEI modules for the shared and
    the scenario-specific representations, SAN for the transfer from the other scenarios) ->
    :class:`TaskExtraction` (CGC with a group per (scenario, task), as the official code's one
    task per scenario and target) -> one tower per (scenario, task); each sample's own
    scenario's towers are picked by gather.

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field embedding and of the scenario embedding.
        n_shared_subexperts: Sub-experts of the scenario-shared SEI module.
        n_specific_subexperts: Sub-experts of each scenario's SEI module.
        subexpert_hidden: Widths of every sub-expert MLP.
        san_hidden: Hidden widths of SAN's attention MLP on the scenario embedding.
        n_specific_experts: CGC experts per (scenario, task).
        n_shared_experts: CGC shared experts.
        expert_hidden: Widths of every CGC expert MLP.
        tower_hidden: Hidden widths of every tower.
        dropout: Dropout after each sub-expert layer (the official code's 0.5).

    Differences from the official code: gates are ``softmax`` of a linear map (the code applies
    a ReLU before the softmax, and its CGC softmax runs over a length-1 axis, so every CGC
    weight is 1); SAN's softmax runs over the other scenarios only (the code masks the own
    scenario after a softmax over all, so the weights do not sum to 1); the input batch
    normalisation is left out (the code never switches it to training mode, so it is a fixed
    rescaling); one CGC level (the code's default).
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        n_shared_subexperts: int,
        n_specific_subexperts: int,
        subexpert_hidden: Sequence[int],
        san_hidden: Sequence[int],
        n_specific_experts: int,
        n_shared_experts: int,
        expert_hidden: Sequence[int],
        tower_hidden: Sequence[int],
        dropout: float,
    ):
        super().__init__()
        _positive("n_shared_subexperts", n_shared_subexperts)
        _positive("n_specific_subexperts", n_specific_subexperts)
        if (
            n_specific_experts < 0
            or n_shared_experts < 0
            or n_specific_experts + n_shared_experts < 1
        ):
            raise ValueError(
                "n_specific_experts and n_shared_experts must be >= 0 with at least one expert, "
                f"got {n_specific_experts}, {n_shared_experts}"
            )
        for name, widths in (
            ("subexpert_hidden", subexpert_hidden),
            ("expert_hidden", expert_hidden),
        ):
            if not widths or any(int(w) < 1 for w in widths):
                raise ValueError(
                    f"{name} must be a non-empty list of widths >= 1, got {list(widths)}"
                )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.S, self.T = schema.n_scenarios, schema.n_tasks
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature=False)
        self.scenario_layer = ScenarioExtraction(
            self.S,
            self.encoder.out_dim,
            embed_dim,
            int(n_shared_subexperts),
            int(n_specific_subexperts),
            [int(w) for w in subexpert_hidden],
            [int(w) for w in san_hidden],
            dropout,
        )
        self.task_layer = TaskExtraction(
            self.S,
            self.T,
            self.scenario_layer.out_dim,
            int(n_specific_experts),
            int(n_shared_experts),
            [int(w) for w in expert_hidden],
        )
        self.towers = GroupedMLP(
            self.S * self.T,
            self.task_layer.out_dim,
            [int(w) for w in tower_hidden],
            batch_norm=False,
            out_dim=1,
        )

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` and a zero auxiliary loss."""
        h = self.scenario_layer(self.encoder(batch), batch.scenario)  # [B, 3H]
        mixed = self.task_layer(h, batch.scenario)  # [B, T, H]
        tower_in = mixed.unsqueeze(1).expand(-1, self.S, -1, -1).flatten(1, 2)  # [B, S*T, H]
        out = self.towers(tower_in).view(-1, self.S, self.T)
        logits = gather_scenario(out, batch.scenario)
        return ModelOutput(logits, zero_aux(logits))
