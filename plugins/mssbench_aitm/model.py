"""AITM: adaptive information transfer along a chain of conversion steps."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from mssbench.nn import Dropout, FeatureEncoder, GroupedLinear
from mssbench.spec import Batch, DatasetSchema, ModelOutput

__all__ = ["AITM", "AITAttention", "calibrator_loss"]

#: Standard deviation of the attention projections' normal initialisation (official code).
ATTENTION_INIT_STD = 0.01


def calibrator_loss(
    logits: torch.Tensor, pairs: Sequence[tuple[int, int]], weight: float
) -> torch.Tensor:
    """The behavioural expectation calibrator, ``weight * sum_pairs mean_rows relu(p_c - p_p)``.

    A later step of the conversion chain can never be more likely than the step it needs
    (a purchase needs a click), so predicting ``p_child > p_parent`` is penalised by the gap;
    predictions that respect the order cost nothing.

    Args:
        logits: ``[B, T]`` end-to-end logits of every task.
        pairs: ``(child, parent)`` task columns, ``child`` implying ``parent``.
        weight: ``alpha``, the calibrator's weight.

    Returns:
        A scalar tensor (zero when there are no pairs).
    """
    loss = logits.new_zeros(())
    if not pairs:
        return loss
    p = torch.sigmoid(logits.float())
    for child, parent in pairs:
        loss = loss + torch.relu(p[:, child] - p[:, parent]).mean()
    return weight * loss


class AITAttention(nn.Module):
    """The AIT module's attention over ``{p_{t-1}, q_t}`` (one query per input, as published).

    ``u`` runs over the two inputs; ``w_u = softmax_u(<h1(u), h2(u)> / sqrt(k))`` and the
    output is ``sum_u w_u h3(u)``, with ``h1, h2, h3`` bias-free ``k x k`` maps shared by every
    transfer step.

    Args:
        dim: Width ``k`` of the tower outputs.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.query = nn.Linear(dim, dim, bias=False)  # h1
        self.key = nn.Linear(dim, dim, bias=False)  # h2
        self.value = nn.Linear(dim, dim, bias=False)  # h3
        for lin in (self.query, self.key, self.value):
            nn.init.normal_(lin.weight, std=ATTENTION_INIT_STD)

    def weights(self, inputs: torch.Tensor) -> torch.Tensor:
        """Attention weights ``[..., 2]`` over the inputs ``[..., 2, k]``; they sum to 1."""
        scores = (self.query(inputs) * self.key(inputs)).sum(-1) / math.sqrt(self.dim)
        return torch.softmax(scores, dim=-1)

    def forward(self, transferred: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """Fuse the transferred information ``p_{t-1}`` and the own tower output ``q_t``.

        Args:
            transferred: ``[B, n, k]`` (``n`` transfer steps at once).
            own: ``[B, n, k]``.

        Returns:
            ``[B, n, k]``.
        """
        inputs = torch.stack([transferred, own], dim=2)  # [B, n, 2, k]
        w = self.weights(inputs)  # [B, n, 2]
        return (w.unsqueeze(-1) * self.value(inputs)).sum(2)  # [B, n, k]


class AITM(nn.Module):
    """Adaptive Information Transfer Multi-task framework with its calibrator.

    Paper: Xi et al., "Modeling the Sequential Dependence among Audience Multi-step Conversions
    with Multi-task Learning in Targeted Display Advertising", KDD 2021,
    https://doi.org/10.1145/3447548.3467071 (arXiv 2105.08489); official TensorFlow code
    ``xidongbo/AITM`` (``AITM.py``).

    Every task ``t`` has its own tower over the shared field embeddings, giving ``q_t``
    (``Linear -> ReLU -> Dropout`` per layer, no batch norm, as the official code). The tasks
    form a chain in the schema's task order (AliExpress: ctr -> ctcvr): for ``t >= 1`` an
    information layer ``g_{t-1}`` (``Linear -> ReLU -> Dropout``) maps the previous step's fused
    representation ``z_{t-1}`` to ``p_{t-1}``, and the AIT attention fuses ``p_{t-1}`` with
    ``q_t`` into ``z_t`` (``z_0 = q_0``). A linear head gives each task's logit: an end-to-end
    probability over impressions (CTCVR, not CVR), so the model uses direct heads. Gradients
    flow through the transfer into earlier towers, as in the official code.

    The calibrator (:func:`calibrator_loss`) is the ``aux_loss``: ``calibrator_weight`` times
    the mean over rows of ``relu(p_child - p_parent)`` for every relation ``child implies
    parent`` the dataset declares. A dataset without such a relation (Census-Income) gets no
    calibrator term: the constraint holds only for steps of one conversion funnel.

    Multi-scenario handling (our adaptation; the paper is multi-task only): the scenario id is
    one more input field; towers, transfer and calibrator are shared by the scenarios.

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field embedding.
        tower_hidden: Hidden widths of every task tower; the last is ``k``, the width of
            ``q_t``, ``p_t`` and ``z_t``.
        dropout: Dropout after each tower layer, one entry per layer; the information layer
            uses the last entry.
        calibrator_weight: ``alpha``, weight of the calibrator.
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        tower_hidden: Sequence[int],
        dropout: Sequence[float],
        calibrator_weight: float,
    ):
        super().__init__()
        tower_hidden, dropout = list(tower_hidden), [float(p) for p in dropout]
        if not tower_hidden or min(tower_hidden) < 1:
            raise ValueError(f"tower_hidden must be non-empty positive widths, got {tower_hidden}")
        if len(dropout) != len(tower_hidden):
            raise ValueError(
                f"dropout needs one entry per tower layer ({len(tower_hidden)}), got {dropout}"
            )
        if any(not 0.0 <= p < 1.0 for p in dropout):
            raise ValueError(f"dropout entries must be in [0, 1), got {dropout}")
        if calibrator_weight < 0:
            raise ValueError(f"calibrator_weight must be >= 0, got {calibrator_weight}")
        self.T = schema.n_tasks
        self.calibrator_weight = float(calibrator_weight)
        self.pairs = [
            (schema.task_index(r.child), schema.task_index(r.parent)) for r in schema.relations
        ]
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature=True)
        widths = [self.encoder.out_dim, *tower_hidden]
        self.tower_layers = nn.ModuleList(
            GroupedLinear(self.T, w_in, w_out) for w_in, w_out in zip(widths, widths[1:])
        )
        self.tower_dropout = nn.ModuleList(Dropout(p) for p in dropout)
        k = tower_hidden[-1]
        # g_0 .. g_{T-2}: one information layer per transfer step.
        self.info = GroupedLinear(self.T - 1, k, k) if self.T > 1 else None
        self.info_dropout = Dropout(dropout[-1])
        self.attention = AITAttention(k) if self.T > 1 else None
        self.heads = GroupedLinear(self.T, k, 1)

    def towers(self, x: torch.Tensor) -> torch.Tensor:
        """Every task tower's output ``q`` ``[B, T, k]`` from the encoded input ``[B, D]``."""
        for layer, drop in zip(self.tower_layers, self.tower_dropout):
            x = drop(torch.relu(layer(x)))  # [B, T, h]
        return x

    def transfer(self, q: torch.Tensor) -> torch.Tensor:
        """Fused representations ``z`` ``[B, T, k]`` along the chain, from ``q`` ``[B, T, k]``."""
        if self.info is None:
            return q
        z = [q[:, 0]]
        for t in range(1, self.T):
            w, b = self.info.weight[t - 1], self.info.bias[t - 1]
            p = self.info_dropout(torch.relu(z[-1] @ w + b))  # [B, k]
            z.append(self.attention(p.unsqueeze(1), q[:, t : t + 1]).squeeze(1))
        return torch.stack(z, dim=1)

    def forward(self, batch: Batch) -> ModelOutput:
        """End-to-end logits ``[B, T]`` and the weighted calibrator loss."""
        q = self.towers(self.encoder(batch))  # [B, T, k]
        z = self.transfer(q)  # [B, T, k]
        logits = self.heads(z).squeeze(-1)  # [B, T]
        return ModelOutput(logits, calibrator_loss(logits, self.pairs, self.calibrator_weight))
