"""STEM: shared and task-specific embeddings with all-forward, task-specific-backward gating."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mssbench.nn import FeatureEncoder, GroupedMLP, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput

__all__ = ["STEM", "STEMLayer"]


class STEMLayer(nn.Module):
    """One STEM layer over ``T + 1`` streams (one per task, then the shared one).

    Task ``i``'s specific experts read stream ``i``; the shared experts read the shared stream.
    The gate of task ``i`` reads ``stream_i + shared`` and mixes **every** expert, but the
    other tasks' specific experts enter it detached: all forward, task-specific backward. A
    shared gate (layers before the last) reads the shared stream and mixes every expert
    without detaching.

    Args:
        n_tasks: Number of tasks ``T``.
        in_dim: Width of every input stream.
        n_specific: Specific experts per task.
        n_shared: Shared experts.
        expert_hidden: Expert MLP widths.
        gate_hidden: Hidden widths of every gate MLP.
        dropout: Dropout after each hidden layer of experts and gates.
        shared_gate: Build the shared gate (every layer but the last).
    """

    def __init__(
        self,
        n_tasks: int,
        in_dim: int,
        n_specific: int,
        n_shared: int,
        expert_hidden: Sequence[int],
        gate_hidden: Sequence[int],
        dropout: float,
        shared_gate: bool,
    ):
        super().__init__()
        self.T, self.n_specific, self.n_shared = n_tasks, n_specific, n_shared
        n_all = n_tasks * n_specific + n_shared
        self.specific = GroupedMLP(n_tasks * n_specific, in_dim, expert_hidden, dropout, False)
        self.shared = GroupedMLP(n_shared, in_dim, expert_hidden, dropout, False)
        self.task_gates = GroupedMLP(n_tasks, in_dim, gate_hidden, dropout, False, out_dim=n_all)
        self.shared_gate = (
            GroupedMLP(1, in_dim, gate_hidden, dropout, False, out_dim=n_all)
            if shared_gate
            else None
        )
        self.out_dim = self.specific.out_dim

    def forward(self, streams: torch.Tensor) -> torch.Tensor:
        """``[B, T+1, in]`` streams to ``[B, T+1, H]`` (``[B, T, H]`` without a shared gate)."""
        tasks, shared_in = streams[:, : self.T], streams[:, self.T]
        spec_in = tasks.repeat_interleave(self.n_specific, dim=1)  # [B, T*ns, in]
        specific = self.specific(spec_in)  # [B, T*ns, H]
        shared = self.shared(shared_in)  # [B, n_sh, H]
        gates = torch.softmax(self.task_gates(tasks + shared_in.unsqueeze(1)), dim=-1)
        owner = torch.arange(self.T, device=streams.device).repeat_interleave(self.n_specific)
        frozen = specific.detach()
        outs = []
        for t in range(self.T):
            # Other tasks' specific experts: forward values, no backward.
            mine = (owner == t).view(1, -1, 1)
            experts = torch.cat([torch.where(mine, specific, frozen), shared], dim=1)
            outs.append(torch.einsum("be,beh->bh", gates[:, t], experts))  # [B, H]
        if self.shared_gate is not None:
            g = torch.softmax(self.shared_gate(shared_in)[:, 0], dim=-1)  # [B, n_all]
            outs.append(torch.einsum("be,beh->bh", g, torch.cat([specific, shared], dim=1)))
        return torch.stack(outs, dim=1)


class STEM(nn.Module):
    """Shared and Task-specific EMbeddings (STEM-Net).

    Paper: Su et al., "STEM: Unleashing the Power of Embeddings for Multi-task
    Recommendation", AAAI 2024, https://doi.org/10.1609/aaai.v38i8.28749 (arXiv 2308.13537).
    Official code: ``LiangcaiSu/STEM`` (``models/STEM.py``, ``config/model_config.yaml``).

    Every field has ``T + 1`` embeddings: one per task and one shared (one table of width
    ``(T + 1) * embed_dim``, split). ``n_layers`` :class:`STEMLayer` s follow; the last gives one
    representation per task, read by that task's tower (``Linear -> ReLU`` layers, then one
    logit). Layers are ``Linear -> ReLU [-> Dropout]`` without batch norm, as the official
    configuration.

    Multi-scenario handling (our adaptation; the paper is multi-task only): the scenario id is
    one more input field, with its task-specific and shared embeddings like every field.

    Args:
        schema: Dataset schema.
        embed_dim: Width of each of the ``T + 1`` embeddings of a field.
        n_layers: STEM layers.
        n_specific_experts: Specific experts per task.
        n_shared_experts: Shared experts.
        expert_hidden: Expert MLP widths.
        gate_hidden: Hidden widths of every gate MLP.
        tower_hidden: Hidden widths of every tower.
        dropout: Dropout after hidden layers.
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        n_layers: int,
        n_specific_experts: int,
        n_shared_experts: int,
        expert_hidden: Sequence[int],
        gate_hidden: Sequence[int],
        tower_hidden: Sequence[int],
        dropout: float,
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if n_specific_experts < 1 or n_shared_experts < 0:
            raise ValueError(
                "n_specific_experts must be >= 1 and n_shared_experts >= 0, got "
                f"{n_specific_experts} and {n_shared_experts}"
            )
        if not expert_hidden:
            raise ValueError("expert_hidden must list at least one width")
        self.T, self.embed_dim = schema.n_tasks, embed_dim
        self.encoder = FeatureEncoder(schema, embed_dim * (self.T + 1), scenario_as_feature=True)
        width = self.encoder.n_fields * embed_dim
        self.layers = nn.ModuleList()
        for i in range(n_layers):
            layer = STEMLayer(
                self.T,
                width,
                n_specific_experts,
                n_shared_experts,
                expert_hidden,
                gate_hidden,
                dropout,
                shared_gate=i < n_layers - 1,
            )
            self.layers.append(layer)
            width = layer.out_dim
        self.towers = GroupedMLP(self.T, width, tower_hidden, dropout, False, out_dim=1)

    def streams(self, batch: Batch) -> torch.Tensor:
        """Input streams ``[B, T+1, F*d]``: each task's embeddings, then the shared ones."""
        fields = self.encoder.fields(batch)  # [B, F, (T+1)*d]
        parts = fields.view(fields.shape[0], fields.shape[1], self.T + 1, self.embed_dim)
        return parts.transpose(1, 2).flatten(2)  # [B, T+1, F*d]

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` and a zero auxiliary loss."""
        x = self.streams(batch)
        for layer in self.layers:
            x = layer(x)  # [B, T(+1), H]
        logits = self.towers(x[:, : self.T]).squeeze(-1)  # [B, T]
        return ModelOutput(logits, zero_aux(logits))
