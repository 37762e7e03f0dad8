"""PLE (Progressive Layered Extraction) for multi-scenario multi-task data."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from mssbench.nn import FeatureEncoder, GroupedMLP, gather_scenario, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput


class CGCLevel(nn.Module):
    """One Customized Gate Control (CGC) level of an extraction network.

    The level holds ``T * n_specific`` task-specific experts (task ``k`` owns experts
    ``k * n_specific ... (k + 1) * n_specific - 1``) followed by ``n_shared`` shared experts, all
    in one :class:`~mssbench.nn.GroupedMLP` of ``G = T * n_specific + n_shared`` groups, each one
    ``Linear -> BN -> ReLU -> Dropout`` layer. Streams are ``T`` task streams plus one shared
    stream:

    * task-``k`` experts read task stream ``k``; shared experts read the shared stream;
    * task gate ``k`` reads task stream ``k`` and mixes task ``k``'s own experts and the shared
      ones (``n_specific + n_shared`` weights) into the next task stream ``k``;
    * the shared gate reads the shared stream and mixes **all** ``G`` experts into the next
      shared stream. The last level has no shared gate (nothing would read its output).

    Gates are bias-free linear maps followed by a softmax, ``g_k(x_k) = softmax(W_k x_k)``.

    Args:
        n_tasks: Number of tasks ``T``.
        in_dim: Width of the incoming streams.
        width: Width of every expert of this level.
        n_specific: Task-specific experts per task.
        n_shared: Shared experts.
        dropout: Dropout after each expert layer.
        last: Whether this is the last level (no shared gate).
    """

    def __init__(
        self,
        n_tasks: int,
        in_dim: int,
        width: int,
        n_specific: int,
        n_shared: int,
        dropout: float,
        last: bool,
    ):
        super().__init__()
        self.T, self.n_specific, self.n_shared = n_tasks, n_specific, n_shared
        n_experts = n_tasks * n_specific + n_shared
        self.experts = GroupedMLP(n_experts, in_dim, [width], dropout)
        self.out_dim = width
        # Task k's gate picks its own specific experts, then the shared ones: [T, n_sp + n_sh].
        own = [
            [k * n_specific + i for i in range(n_specific)]
            + [n_tasks * n_specific + j for j in range(n_shared)]
            for k in range(n_tasks)
        ]
        self.register_buffer("own_experts", torch.tensor(own, dtype=torch.long), persistent=False)
        # The stream each expert reads: task k's experts read stream k, shared ones stream T.
        stream = [k for k in range(n_tasks) for _ in range(n_specific)] + [n_tasks] * n_shared
        self.register_buffer(
            "expert_stream", torch.tensor(stream, dtype=torch.long), persistent=False
        )
        self.task_gates = nn.Parameter(torch.empty(n_tasks, in_dim, n_specific + n_shared))
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.task_gates, -bound, bound)  # as nn.Linear, independently per task
        self.shared_gate = None if last else nn.Linear(in_dim, n_experts, bias=False)

    def forward(self, streams: torch.Tensor) -> torch.Tensor:
        """Run the level.

        Args:
            streams: ``[B, T + 1, in]`` (task streams, then the shared stream) or, at the first
                level, ``[B, in]``: the encoded input feeds every stream.

        Returns:
            ``[B, T + 1, width]``, or ``[B, T, width]`` (task streams only) at the last level.
        """
        if streams.dim() == 2:
            experts = self.experts(streams)  # [B, G, w], one GEMM for all experts
            gate_logits = torch.einsum("bd,tdm->btm", streams, self.task_gates)
            shared_in = streams
        else:
            experts = self.experts(streams[:, self.expert_stream])  # [B, G, in] -> [B, G, w]
            gate_logits = torch.einsum("btd,tdm->btm", streams[:, : self.T], self.task_gates)
            shared_in = streams[:, self.T]  # [B, in]
        task_gates = torch.softmax(gate_logits, dim=-1)  # [B, T, n_sp + n_sh]
        own = experts[:, self.own_experts]  # [B, T, n_sp + n_sh, w]
        task_out = torch.einsum("btm,btmw->btw", task_gates, own)  # [B, T, w]
        if self.shared_gate is None:
            return task_out
        shared_gates = torch.softmax(self.shared_gate(shared_in), dim=-1)  # [B, G]
        shared_out = torch.einsum("bg,bgw->bw", shared_gates, experts)  # [B, w]
        return torch.cat([task_out, shared_out.unsqueeze(1)], dim=1)  # [B, T + 1, w]


class PLE(nn.Module):
    """Progressive Layered Extraction.

    Paper: Tang, Liu, Zhao, Gong, "Progressive Layered Extraction (PLE): A Novel Multi-Task
    Learning (MTL) Model for Personalized Recommendations", RecSys 2020,
    https://doi.org/10.1145/3383313.3412236.

    ``len(level_widths)`` stacked CGC levels (:class:`CGCLevel`), then one tower per task on the
    final task streams. Routing follows torch-rechub's description (datawhalechina/torch-rechub):
    shared experts read the shared stream at every level, and the last level has no shared gate.
    Configuration follows MTReclib: each expert is one MLP layer whose width is its level's entry
    of ``level_widths``; layers are ``Linear -> BN -> ReLU -> Dropout``.

    Differences from the paper: gates are single bias-free linear maps of the stream (the paper
    does not fix the gate network); batch normalisation inside experts and towers (MTReclib
    convention); the loss is the plain sum of the task losses (the paper's optional loss-weight
    schedule is not used: both AliExpress tasks live on all impressions).

    Multi-scenario handling (our adaptation; the paper is multi-task only): the scenario id is
    one more embedded input field. With ``scenario_towers`` there is one tower per
    (scenario, task), picked by gather.

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field embedding.
        level_widths: One entry per CGC level: the width of every expert of that level.
        n_specific_experts: Task-specific experts per task and level.
        n_shared_experts: Shared experts per level.
        tower_hidden: Hidden widths of each tower (then a linear map to one logit).
        dropout: Dropout in experts and towers.
        scenario_towers: One tower per (scenario, task) instead of one per task.
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        level_widths: Sequence[int],
        n_specific_experts: int,
        n_shared_experts: int,
        tower_hidden: Sequence[int],
        dropout: float,
        scenario_towers: bool,
    ):
        super().__init__()
        if not level_widths:
            raise ValueError("level_widths must name at least one CGC level")
        if n_specific_experts < 0 or n_shared_experts < 1:
            raise ValueError(
                "need n_specific_experts >= 0 and n_shared_experts >= 1, got "
                f"{n_specific_experts} and {n_shared_experts}"
            )
        self.S, self.T = schema.n_scenarios, schema.n_tasks
        self.scenario_towers = scenario_towers
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature=True)
        self.levels = nn.ModuleList()
        width = self.encoder.out_dim
        for j, w in enumerate(level_widths):
            last = j == len(level_widths) - 1
            level = CGCLevel(self.T, width, w, n_specific_experts, n_shared_experts, dropout, last)
            self.levels.append(level)
            width = level.out_dim
        n_towers = self.S * self.T if scenario_towers else self.T
        self.towers = GroupedMLP(n_towers, width, tower_hidden, dropout, out_dim=1)

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` and a zero auxiliary loss."""
        streams = self.encoder(batch)  # [B, D]: level 1 feeds it to every stream
        for level in self.levels:
            streams = level(streams)  # [B, T + 1, w]; the last level returns [B, T, w]
        if self.scenario_towers:
            # Every scenario's towers see the sample; keep the sample's own: [B, S*T, w].
            tower_in = streams.unsqueeze(1).expand(-1, self.S, -1, -1).flatten(1, 2)
            out = self.towers(tower_in).view(-1, self.S, self.T)  # [B, S, T]
            logits = gather_scenario(out, batch.scenario)  # [B, T]
        else:
            logits = self.towers(streams).squeeze(-1)  # [B, T]
        return ModelOutput(logits, zero_aux(logits))
