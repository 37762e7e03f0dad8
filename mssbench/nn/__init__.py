"""Building blocks model plugins reuse: input encoder, MLPs, grouped expert banks and towers.

Conventions follow MTReclib (easezyc/Multitask-Recommendation-Library): an MLP layer is
``Linear -> BatchNorm1d -> ReLU -> Dropout`` and a tower is such an MLP ending in a linear map to
one logit. "Grouped" modules hold ``G`` independent MLPs (experts, or one tower per
(scenario, task)) as stacked weights and run them as one batched matmul.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mssbench.nn.attention import SelfAttention, TransformerLayer
from mssbench.nn.dropout import Dropout, counter_dropout, keep_mask, relu_dropout
from mssbench.spec import Batch, DatasetSchema, ModelOutput

__all__ = [
    "Dropout",
    "ESMMHead",
    "FeatureEncoder",
    "GroupedLinear",
    "GroupedMLP",
    "MLP",
    "SelfAttention",
    "TransformerLayer",
    "counter_dropout",
    "esmm_logit",
    "gather_scenario",
    "keep_mask",
    "log1mexp",
    "relu_dropout",
    "zero_aux",
]


def zero_aux(like: torch.Tensor) -> torch.Tensor:
    """A scalar zero on ``like``'s device and dtype, for models without auxiliary losses."""
    return like.new_zeros(())


def gather_scenario(values: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
    """Pick each sample's own scenario slice without reordering the batch.

    Args:
        values: ``[B, S, ...]`` outputs computed for every scenario.
        scenario: ``[B]`` int64 scenario ids.

    Returns:
        ``[B, ...]``: ``values[b, scenario[b]]``.
    """
    index = scenario.view(-1, 1, *([1] * (values.dim() - 2)))
    index = index.expand(-1, 1, *values.shape[2:])
    return values.gather(1, index).squeeze(1)


class FeatureEncoder(nn.Module):
    """Shared input encoder, after MTReclib's AliExpress encoder (``models/ple.py``).

    ``x = concat(Emb_1(c_1), ..., Emb_F(c_F), Linear(F_n -> d)(num) [, Emb_s(scenario)])``:
    one embedding per categorical field (kept in one table with per-field offsets, Xavier-uniform
    initialised), plus one linear projection of all numerics as an extra field, plus optionally
    the scenario id as one more categorical field.

    Args:
        schema: Dataset schema (vocab sizes, numeric fields, scenarios).
        embed_dim: Width ``d`` of every field.
        scenario_as_feature: Append a scenario embedding field.
    """

    def __init__(self, schema: DatasetSchema, embed_dim: int, scenario_as_feature: bool = False):
        super().__init__()
        self.schema = schema
        self.embed_dim = embed_dim
        self.scenario_as_feature = scenario_as_feature
        self.n_scenarios = schema.n_scenarios
        vocab = list(schema.vocab_sizes)
        if scenario_as_feature:
            vocab.append(schema.n_scenarios)
        offsets = torch.tensor([0, *vocab[:-1]], dtype=torch.long).cumsum(0) if vocab else None
        self.register_buffer("offsets", offsets if offsets is not None else torch.zeros(0).long())
        self.embedding = nn.Embedding(max(sum(vocab), 1), embed_dim)
        nn.init.xavier_uniform_(self.embedding.weight)
        self.numeric = nn.Linear(schema.n_numeric, embed_dim) if schema.n_numeric else None
        self.n_fields = len(vocab) + (1 if self.numeric is not None else 0)

    @property
    def out_dim(self) -> int:
        """Width of the encoded input: ``n_fields * embed_dim``."""
        return self.n_fields * self.embed_dim

    def fields(self, batch: Batch) -> torch.Tensor:
        """Per-field vectors, ``[B, n_fields, d]`` (for models that treat fields as tokens)."""
        ids = batch.categorical
        if self.scenario_as_feature:
            ids = torch.cat([ids, batch.scenario.unsqueeze(1)], dim=1)
        parts = []
        if ids.shape[1]:
            parts.append(self.embedding(ids + self.offsets))  # [B, F_c(+1), d]
        if self.numeric is not None:
            parts.append(self.numeric(batch.numeric).unsqueeze(1))  # [B, 1, d]
        return torch.cat(parts, dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Encoded input ``[B, n_fields * d]``."""
        return self.fields(batch).flatten(1)


class MLP(nn.Sequential):
    """``(Linear -> BatchNorm1d -> ReLU -> Dropout) x len(hidden)``.

    Args:
        in_dim: Input width.
        hidden: Widths of the hidden layers.
        dropout: Dropout probability after each layer.
        batch_norm: Use batch normalisation (MTReclib convention).
    """

    def __init__(
        self, in_dim: int, hidden: Sequence[int], dropout: float = 0.0, batch_norm: bool = True
    ):
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout:
                layers.append(Dropout(dropout))
            width = h
        super().__init__(*layers)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layers in order; each ``ReLU -> Dropout`` pair runs fused (:func:`relu_dropout`)."""
        layers = list(self)
        i = 0
        while i < len(layers):
            if (
                isinstance(layers[i], nn.ReLU)
                and i + 1 < len(layers)
                and isinstance(layers[i + 1], Dropout)
            ):
                x = layers[i + 1].after_relu(x)
                i += 2
            else:
                x = layers[i](x)
                i += 1
        return x


class GroupedLinear(nn.Module):
    """``G`` independent linear maps applied as one batched matmul.

    Each group's weight is initialised like an ``nn.Linear`` of the same shape, independently
    (identical experts would never diverge, as with PaddleRec's constant-initialised MMoE).

    Args:
        n_groups: Number of groups ``G``.
        in_dim: Input width.
        out_dim: Output width.
    """

    def __init__(self, n_groups: int, in_dim: int, out_dim: int):
        super().__init__()
        self.n_groups, self.in_dim, self.out_dim = n_groups, in_dim, out_dim
        self.weight = nn.Parameter(torch.empty(n_groups, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n_groups, out_dim))
        bound = 1.0 / math.sqrt(in_dim) if in_dim else 0.0
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply every group.

        Args:
            x: ``[B, in]`` (the same input for every group) or ``[B, G, in]``.

        Returns:
            ``[B, G, out]``.
        """
        if x.dim() == 2:
            # One GEMM for all groups: [B, in] @ [in, G*out].
            w = self.weight.permute(1, 0, 2).reshape(self.in_dim, -1)
            y = (x @ w).view(x.shape[0], self.n_groups, self.out_dim)
        else:
            y = torch.einsum("bgi,gio->bgo", x, self.weight)
        return y + self.bias


class GroupedMLP(nn.Module):
    """``G`` independent MLPs (experts, or per-(scenario, task) towers) run together.

    Same layer convention as :class:`MLP`; batch normalisation keeps separate statistics per
    group and unit. With ``out_dim`` set, a final grouped linear map to ``out_dim`` follows
    (``out_dim=1`` makes towers).

    Args:
        n_groups: Number of groups ``G``.
        in_dim: Input width.
        hidden: Hidden widths.
        dropout: Dropout after each hidden layer.
        batch_norm: Batch-normalise hidden layers.
        out_dim: Optional width of a final linear layer without activation.
    """

    def __init__(
        self,
        n_groups: int,
        in_dim: int,
        hidden: Sequence[int],
        dropout: float = 0.0,
        batch_norm: bool = True,
        out_dim: int | None = None,
    ):
        super().__init__()
        self.n_groups = n_groups
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = in_dim
        for h in hidden:
            self.linears.append(GroupedLinear(n_groups, width, h))
            self.norms.append(nn.BatchNorm1d(n_groups * h) if batch_norm else nn.Identity())
            width = h
        self.dropout = Dropout(dropout) if dropout else nn.Identity()
        self.head = GroupedLinear(n_groups, width, out_dim) if out_dim is not None else None
        self.out_dim = out_dim if out_dim is not None else width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply every group's MLP.

        Args:
            x: ``[B, in]`` shared by all groups, or ``[B, G, in]``.

        Returns:
            ``[B, G, out_dim]``.
        """
        for linear, norm in zip(self.linears, self.norms):
            x = linear(x)  # [B, G, h]
            b, g, h = x.shape
            x = relu_dropout(norm(x.reshape(b, g * h)).view(b, g, h), self.dropout)
        if self.head is not None:
            x = self.head(x)
        return x


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate on both sides of ``-ln 2``.

    ``x`` is clamped to at most the negative of the dtype's smallest normal number, so the
    result is finite.
    """
    x = x.clamp_max(-torch.finfo(x.dtype).tiny)
    near_zero = x > -math.log(2.0)
    # Each branch only sees inputs where it is well defined: torch.where differentiates both,
    # and an infinite gradient in the unused branch would still turn into NaN.
    upper = torch.log(-torch.expm1(torch.where(near_zero, x, -1.0)))
    lower = torch.log1p(-torch.exp(torch.where(near_zero, -1.0, x)))
    return torch.where(near_zero, upper, lower)


def esmm_logit(ctr_logit: torch.Tensor, cvr_logit: torch.Tensor) -> torch.Tensor:
    """CTCVR logit from the CTR and CVR tower logits, in log space (ESMM).

    ESMM: Ma et al., "Entire Space Multi-Task Model", SIGIR 2018, arXiv:1804.07931.

    ``log p_ctcvr = logsigmoid(a) + logsigmoid(b)`` and the logit is
    ``log p_ctcvr - log(1 - p_ctcvr)``; never a product of logits. ``p_ctcvr <= p_ctr`` holds by
    construction and the result is finite for any finite inputs.
    """
    log_p = F.logsigmoid(ctr_logit) + F.logsigmoid(cvr_logit)
    return log_p - log1mexp(log_p)


class ESMMHead(nn.Module):
    """Entire-space head around any backbone (ESMM; Ma et al., SIGIR 2018).

    For every relation ``child implies parent`` in the schema (AliExpress: ``ctcvr`` implies
    ``ctr``), the backbone's logit column of the child task is read as the CVR tower's logit
    ``b`` and replaced by the CTCVR logit built from ``b`` and the parent's logit ``a`` with
    :func:`esmm_logit`. The loss stays a plain BCE on CTR and CTCVR over all impressions; the CVR
    tower gets no direct loss. The conditional metric (CVR on clicked rows) then scores each row
    with exactly ``sigmoid(b)``.

    Args:
        backbone: A model following the forward contract.
        schema: Dataset schema; must declare at least one relation.
    """

    def __init__(self, backbone: nn.Module, schema: DatasetSchema):
        super().__init__()
        if not schema.relations:
            raise ValueError("the ESMM head needs tasks related by 'child implies parent'")
        self.backbone = backbone
        self.pairs = [
            (schema.task_index(r.child), schema.task_index(r.parent)) for r in schema.relations
        ]
        if hasattr(backbone, "mssbench_task_weights"):
            self.mssbench_task_weights = backbone.mssbench_task_weights

    def forward(self, batch: Batch) -> ModelOutput:
        """Backbone logits with each child column replaced by its entire-space logit."""
        logits, aux = self.backbone(batch)
        columns = list(logits.unbind(dim=1))
        for child, parent in self.pairs:
            columns[child] = esmm_logit(logits[:, parent], logits[:, child])
        return ModelOutput(torch.stack(columns, dim=1), aux)
