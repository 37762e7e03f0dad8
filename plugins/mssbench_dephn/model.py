"""DEPHN-style heterogeneous-expert multi-task model for multi-scenario data.

Only the abstract of DEPHN is known (IJCNN 2023, arXiv:2307.12519); every component below is our
design for the tabular multi-scenario multi-task benchmark (§4.3), not the paper's.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from mssbench.nn import MLP, FeatureEncoder, GroupedMLP, gather_scenario, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput

__all__ = [
    "BiInteractionExpert",
    "CrossExpert",
    "DEPHN",
    "DNNExpert",
    "EXPERT_TYPES",
    "SelfAttentionExpert",
    "label_correlation",
    "virtual_gradient",
]


class _VirtualGradient(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``coef``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(coef)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (coef,) = ctx.saved_tensors
        return grad * coef, None


def virtual_gradient(x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """Return ``x`` unchanged; in the backward pass scale its gradient by ``coef``.

    Args:
        x: Any tensor (here the gate logits ``[B, T, E]``).
        coef: Coefficients broadcastable to ``x`` (here ``[T, 1]``); treated as a constant
            (detached, no gradient).

    Returns:
        A tensor equal to ``x`` whose gradient reaches ``x`` multiplied by ``coef``.
    """
    return _VirtualGradient.apply(x, coef.detach().to(x.dtype))


def label_correlation(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean Pearson correlation of each task's labels with the other tasks' labels.

    Args:
        labels: ``[B, T]`` labels, ``T >= 2``.

    Returns:
        ``rho`` ``[T]``: for task ``t`` the mean over ``u != t`` of ``corr(y_t, y_u)`` on the
        batch; and ``valid``, a boolean scalar that is false when some label column is constant
        (or not finite) on the batch, in which case ``rho`` is meaningless. No host sync.
    """
    y = labels.float()
    n_tasks = y.shape[1]
    centred = y - y.mean(0, keepdim=True)  # [B, T]
    cov = centred.T @ centred  # [T, T], unnormalised: the 1/B cancels
    var = cov.diagonal()  # [T]
    valid = (var > 0).all() & torch.isfinite(cov).all()
    std = var.clamp_min(torch.finfo(y.dtype).tiny).sqrt()
    corr = cov / (std.unsqueeze(0) * std.unsqueeze(1))  # [T, T]
    off_diag = corr.sum(1) - corr.diagonal()  # [T]
    return off_diag / max(n_tasks - 1, 1), valid


class DNNExpert(nn.Module):
    """Deep expert: an MLP (``Linear -> BN -> ReLU -> Dropout``) on the flattened fields.

    Args:
        n_fields: Number of fields ``F``.
        embed_dim: Field width ``d_e``.
        hidden: Hidden widths.
        dropout: Dropout after each layer.
    """

    def __init__(self, n_fields: int, embed_dim: int, hidden: Sequence[int], dropout: float):
        super().__init__()
        self.mlp = MLP(n_fields * embed_dim, hidden, dropout)
        self.out_dim = self.mlp.out_dim

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """``[B, F, d_e] -> [B, hidden[-1]]``."""
        return self.mlp(v.flatten(1))


class BiInteractionExpert(nn.Module):
    """FM / bi-interaction expert: ``0.5 * ((sum_f v_f)^2 - sum_f v_f^2)``, i.e. sum_{i<j} v_i*v_j.

    Args:
        n_fields: Number of fields ``F`` (unused; uniform constructor).
        embed_dim: Field width ``d_e``.
    """

    def __init__(self, n_fields: int, embed_dim: int):
        super().__init__()
        self.out_dim = embed_dim

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """``[B, F, d_e] -> [B, d_e]``: every pairwise element-wise product, summed."""
        square_of_sum = v.sum(1).pow(2)  # [B, d_e]
        sum_of_squares = v.pow(2).sum(1)  # [B, d_e]
        return 0.5 * (square_of_sum - sum_of_squares)


class CrossExpert(nn.Module):
    """DCN-v2-style cross network: ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l`` (full-rank ``W_l``).

    Args:
        n_fields: Number of fields ``F``.
        embed_dim: Field width ``d_e``.
        n_layers: Number of cross layers.
    """

    def __init__(self, n_fields: int, embed_dim: int, n_layers: int):
        super().__init__()
        width = n_fields * embed_dim
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(n_layers))
        self.out_dim = width

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """``[B, F, d_e] -> [B, F*d_e]``."""
        x0 = x = v.flatten(1)  # [B, F*d_e]
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class _SelfAttentionLayer(nn.Module):
    """One AutoInt-style layer: multi-head attention over fields, projected residual, ReLU."""

    def __init__(self, embed_dim: int, n_heads: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, embed_dim // n_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.residual = nn.Linear(embed_dim, embed_dim, bias=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        b, f, d = v.shape
        q, k, val = self.qkv(v).view(b, f, 3, self.n_heads, self.head_dim).unbind(2)
        q, k, val = (t.transpose(1, 2) for t in (q, k, val))  # [B, H, F, d_h]
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # [B, H, F, F]
        attended = torch.softmax(scores, dim=-1) @ val  # [B, H, F, d_h]
        attended = attended.transpose(1, 2).reshape(b, f, d)  # heads concatenated: [B, F, d_e]
        return torch.relu(attended + self.residual(v))


class SelfAttentionExpert(nn.Module):
    """AutoInt-style expert: stacked multi-head self-attention over the fields, flattened.

    Args:
        n_fields: Number of fields ``F``.
        embed_dim: Field width ``d_e`` (kept by every layer; ``d_e / n_heads`` per head).
        n_layers: Number of attention layers.
        n_heads: Attention heads; must divide ``embed_dim``.
    """

    def __init__(self, n_fields: int, embed_dim: int, n_layers: int, n_heads: int):
        super().__init__()
        if n_heads < 1 or embed_dim % n_heads:
            raise ValueError(f"n_heads ({n_heads}) must divide embed_dim ({embed_dim})")
        self.layers = nn.ModuleList(
            _SelfAttentionLayer(embed_dim, n_heads) for _ in range(n_layers)
        )
        self.out_dim = n_fields * embed_dim

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """``[B, F, d_e] -> [B, F*d_e]``."""
        for layer in self.layers:
            v = layer(v)
        return v.flatten(1)


EXPERT_TYPES = ("dnn", "fm", "cross", "attention")


class DEPHN(nn.Module):
    """DEPHN-style model: heterogeneous experts, explicit mapping, virtual-gradient gates.

    After: Kong, Su, Zhao, Hou, "Different Expression Parallel Heterogeneous Network using virtual
    gradient optimization for Multi-task Learning", IJCNN 2023, https://arxiv.org/abs/2307.12519.
    Only the paper's abstract is known; **every component here is our adaptation**
    (README.md of this plugin), hence the name "DEPHN-style":

    * Experts with different feature-interaction methods over the field embeddings ``V``
      ``[B, F, d_e]`` (``F`` includes the scenario field): DNN, FM bi-interaction, DCN-v2-style
      cross network, AutoInt-style self-attention; ``n_expert_copies`` instances of each type.
    * "Feature explicit mapping": each expert's output goes through its own
      ``Linear -> LayerNorm`` into a common ``expert_dim``-wide space. This linear map is also
      the "Linear -> d" projection of §4.3 (two linear maps in a row would be one).
    * Gates: one bias-free ``softmax(W x)`` per (scenario, task) over the flattened embedding
      ``x``; each sample uses its own scenario's gates (gathered, never reordered).
    * Virtual gradient coefficient: in training, the gate logits of task ``t`` pass through an
      identity whose backward multiplies the gradient by
      ``c_t = 1 + vg_beta * (1 - rho_t) * spread_t``, where ``spread_t`` is the batch mean of
      ``max_k g_{t,k} - min_k g_{t,k}`` and ``rho_t`` a running (EMA) estimate of the Pearson
      correlation of task ``t``'s labels with the other tasks'. Only the gates' learning speed
      changes, never the forward output; expert gradients are untouched.
    * One tower per task on its gate's mixture; no auxiliary loss.

    Reading labels: in training mode only, ``batch.labels`` updates the detached buffer ``rho``
    (skipped when a label column is constant on the batch). The logits never depend on labels,
    and eval mode reads no labels.

    Args:
        schema: Dataset schema.
        embed_dim: Width ``d_e`` of every field embedding.
        expert_dim: Common width ``d`` of the explicitly mapped expert outputs.
        expert_types: Expert types, from ``"dnn"``, ``"fm"``, ``"cross"``, ``"attention"``.
        n_expert_copies: Instances of each listed type (``E = len(expert_types) * copies``).
        dnn_hidden: Hidden widths of the DNN expert.
        n_cross_layers: Cross layers of the cross expert.
        n_attention_layers: Self-attention layers of the attention expert.
        n_heads: Attention heads (must divide ``embed_dim``).
        tower_hidden: Hidden widths of each task tower (then a linear map to one logit).
        dropout: Dropout in the DNN expert and the towers.
        vg_beta: ``beta`` of the virtual gradient coefficient (0 disables it: ``c_t = 1``).
        rho_ema: EMA factor of the running label-correlation estimate.
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        expert_dim: int,
        expert_types: Sequence[str],
        n_expert_copies: int,
        dnn_hidden: Sequence[int],
        n_cross_layers: int,
        n_attention_layers: int,
        n_heads: int,
        tower_hidden: Sequence[int],
        dropout: float,
        vg_beta: float,
        rho_ema: float,
    ):
        super().__init__()
        unknown = [t for t in expert_types if t not in EXPERT_TYPES]
        if unknown or not expert_types:
            raise ValueError(
                f"expert_types must be a non-empty list from {list(EXPERT_TYPES)}, "
                f"got {list(expert_types)}"
            )
        if n_expert_copies < 1:
            raise ValueError(f"n_expert_copies must be >= 1, got {n_expert_copies}")
        if vg_beta < 0:
            raise ValueError(f"vg_beta must be >= 0 (so that c_t >= 1), got {vg_beta}")
        if not 0 <= rho_ema < 1:
            raise ValueError(f"rho_ema must lie in [0, 1), got {rho_ema}")
        self.S, self.T = schema.n_scenarios, schema.n_tasks
        self.vg_beta, self.rho_ema = float(vg_beta), float(rho_ema)
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature=True)
        n_fields = self.encoder.n_fields

        def make(kind: str) -> nn.Module:
            if kind == "dnn":
                return DNNExpert(n_fields, embed_dim, dnn_hidden, dropout)
            if kind == "fm":
                return BiInteractionExpert(n_fields, embed_dim)
            if kind == "cross":
                return CrossExpert(n_fields, embed_dim, n_cross_layers)
            return SelfAttentionExpert(n_fields, embed_dim, n_attention_layers, n_heads)

        self.expert_names = [k for _ in range(n_expert_copies) for k in expert_types]
        self.experts = nn.ModuleList(make(k) for k in self.expert_names)
        self.mappings = nn.ModuleList(
            nn.Sequential(nn.Linear(e.out_dim, expert_dim), nn.LayerNorm(expert_dim))
            for e in self.experts
        )
        self.E = len(self.experts)
        self.gates = nn.Linear(self.encoder.out_dim, self.S * self.T * self.E, bias=False)
        self.towers = GroupedMLP(self.T, expert_dim, tower_hidden, dropout, out_dim=1)
        # Running label-correlation estimate and how often it was updated (saved in state_dict).
        self.register_buffer("rho", torch.zeros(self.T))
        self.register_buffer("rho_updates", torch.zeros((), dtype=torch.long))
        # Coefficients of the last training step, for inspection only.
        self.register_buffer("vg_coef", torch.ones(self.T), persistent=False)

    def expert_outputs(self, v: torch.Tensor) -> torch.Tensor:
        """Explicitly mapped expert outputs ``[B, E, expert_dim]`` from fields ``[B, F, d_e]``."""
        return torch.stack([m(e(v)) for e, m in zip(self.experts, self.mappings)], dim=1)

    def gate_logits(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """Each sample's own-scenario gate logits ``[B, T, E]`` from the flat embedding ``x``."""
        logits = self.gates(x).view(-1, self.S, self.T, self.E)  # [B, S, T, E]
        return gather_scenario(logits, scenario)

    def gate_weights(self, batch: Batch) -> torch.Tensor:
        """Each sample's own-scenario gate weights ``[B, T, E]`` (softmax over experts)."""
        x = self.encoder(batch)  # [B, F*d_e]
        return torch.softmax(self.gate_logits(x, batch.scenario), dim=-1)

    @torch.no_grad()
    def update_rho(self, labels: torch.Tensor) -> None:
        """Fold the batch's label correlation into ``rho`` (EMA), unless a column is constant.

        The first accepted batch sets ``rho`` directly, so the estimate is not biased towards
        its initial 0. Runs without a host sync: the skip is a ``torch.where``.
        """
        if self.T < 2:
            return
        batch_rho, valid = label_correlation(labels.to(self.rho.device))
        first = self.rho_updates == 0
        ema = self.rho_ema * self.rho + (1 - self.rho_ema) * batch_rho
        self.rho.copy_(torch.where(valid, torch.where(first, batch_rho, ema), self.rho))
        self.rho_updates.add_(valid.long())

    @torch.no_grad()
    def coefficients(self, gates: torch.Tensor) -> torch.Tensor:
        """``c_t = 1 + beta * (1 - rho_t) * spread_t`` ``[T]`` from gate weights ``[B, T, E]``."""
        spread = (gates.amax(-1) - gates.amin(-1)).mean(0)  # [T]
        return 1 + self.vg_beta * (1 - self.rho) * spread

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` and a zero auxiliary loss."""
        v = self.encoder.fields(batch)  # [B, F, d_e]
        experts = self.expert_outputs(v)  # [B, E, d]
        logits = self.gate_logits(v.flatten(1), batch.scenario)  # [B, T, E]
        if self.training:
            # Labels feed only the detached estimate rho; the logits never depend on them.
            self.update_rho(batch.labels)
            coef = self.coefficients(torch.softmax(logits.detach(), dim=-1))  # [T]
            self.vg_coef.copy_(coef)
            logits = virtual_gradient(logits, coef.unsqueeze(-1))  # identity forward
        gates = torch.softmax(logits, dim=-1)  # [B, T, E]
        mixed = torch.einsum("bte,bed->btd", gates, experts)  # [B, T, d]
        out = self.towers(mixed).squeeze(-1)  # [B, T]
        return ModelOutput(out, zero_aux(out))
