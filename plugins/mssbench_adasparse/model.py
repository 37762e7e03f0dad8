"""AdaSparse: domain-adaptive neuron-level weighting factors (pruning) on a shared FCN."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from mssbench.nn import Dropout, FeatureEncoder, GroupedLinear, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput

__all__ = ["FORMS", "AdaSparse", "DomainPruner", "weighting_factors"]

#: Weighting-factor forms offered (the paper's Binarization form needs its sparsity
#: regulariser, which is not implemented: README).
FORMS = ("scaling", "fusion")


def weighting_factors(
    z: torch.Tensor, form: str, alpha: float | torch.Tensor, beta: float, epsilon: float
) -> torch.Tensor:
    """Neuron weighting factors from the pruner's pre-activations ``z``.

    ``scaling``: ``pi = beta * sigmoid(z)``; ``fusion``: ``pi = beta * sigmoid(alpha * z)``, with
    ``alpha`` growing during training so that the factors approach ``{0, beta}``. Factors below
    ``epsilon`` are set to exactly 0 (the neuron is pruned for that sample).
    """
    pi = beta * torch.sigmoid(z if form == "scaling" else alpha * z)
    return pi * (pi >= epsilon)


class DomainPruner(nn.Module):
    """One layer's domain-aware pruner for ``T`` parallel networks.

    ``z_t = W_t [e_d ⊕ h_t]`` (no bias), one factor per neuron of ``h_t``.

    Args:
        n_tasks: Parallel networks ``T``.
        domain_dim: Width of the domain embedding ``e_d``.
        width: Number of neurons pruned.
    """

    def __init__(self, n_tasks: int, domain_dim: int, width: int):
        super().__init__()
        in_dim = domain_dim + width
        self.weight = nn.Parameter(torch.empty(n_tasks, in_dim, width))
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)  # as nn.Linear, independently per task

    def forward(self, domain: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``[B, T, width]`` from ``h`` ``[B, T, width]``, ``domain`` ``[B, d]``."""
        e = domain.unsqueeze(1).expand(-1, h.shape[1], -1)
        return torch.einsum("bti,tio->bto", torch.cat([e, h], dim=-1), self.weight)


class AdaSparse(nn.Module):
    """AdaSparse: learning adaptively sparse structures for multi-domain CTR prediction.

    Paper: Yang et al., "AdaSparse: Learning Adaptively Sparse Structures for Multi-Domain
    Click-Through Rate Prediction", CIKM 2022, https://arxiv.org/abs/2206.13108.

    Input ``x = e_d ⊕ (pi^0 ⊙ E)``: the domain (scenario) embedding and the field embeddings
    scaled by the first pruner's factors. Each task has a fully connected network
    (``Linear -> ReLU``); the output of every hidden layer is multiplied by that layer's
    weighting factors ``pi^l = f(W^l [e_d ⊕ h^l])`` (:func:`weighting_factors`), then a linear
    map gives the task's logit. A factor below ``epsilon`` prunes its neuron for that sample.

    ``alpha`` (fusion form) is ``alpha0 + delta_alpha * steps``, ``steps`` counting training
    forward passes (a buffer saved with the model; evaluation does not move it).

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field embedding and of the domain embedding.
        hidden: Hidden widths of each task's network.
        form: ``"scaling"`` or ``"fusion"``.
        epsilon: Truncation threshold of the factors.
        beta: Upper bound of the factors.
        alpha0: Initial ``alpha`` of the fusion form.
        delta_alpha: Increase of ``alpha`` per training step.
        dropout: Dropout after each hidden layer.

    Differences from the paper: multi-task, with one network and one set of pruners per task
    (the paper is single-task CTR); the domain is the scenario id only; no Binarization form and
    no sparsity regulariser (see README).
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        hidden: Sequence[int],
        form: str,
        epsilon: float,
        beta: float,
        alpha0: float,
        delta_alpha: float,
        dropout: float,
    ):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        if not 0.0 <= epsilon < beta:
            raise ValueError(f"need 0 <= epsilon < beta, got epsilon={epsilon}, beta={beta}")
        if alpha0 <= 0 or delta_alpha < 0:
            raise ValueError(f"need alpha0 > 0 and delta_alpha >= 0, got {alpha0}, {delta_alpha}")
        if any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden widths must be >= 1, got {list(hidden)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.T = schema.n_tasks
        self.form, self.epsilon, self.beta = form, float(epsilon), float(beta)
        self.alpha0, self.delta_alpha = float(alpha0), float(delta_alpha)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature=False)
        self.domain_embedding = nn.Embedding(schema.n_scenarios, embed_dim)
        nn.init.xavier_uniform_(self.domain_embedding.weight)
        d_in = self.encoder.out_dim
        widths = [embed_dim + d_in, *(int(h) for h in hidden)]
        self.layers = nn.ModuleList(
            GroupedLinear(self.T, a, b) for a, b in zip(widths[:-1], widths[1:])
        )
        self.head = GroupedLinear(self.T, widths[-1], 1)
        self.pruners = nn.ModuleList(
            [DomainPruner(self.T, embed_dim, d_in)]
            + [DomainPruner(self.T, embed_dim, w) for w in widths[1:]]
        )
        self.dropout = Dropout(dropout) if dropout else nn.Identity()

    @property
    def alpha(self) -> torch.Tensor:
        """Current ``alpha`` of the fusion form (a scalar tensor, no host sync)."""
        return self.alpha0 + self.delta_alpha * self.steps.to(torch.float32)

    def factors(self, layer: int, domain: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Weighting factors ``[B, T, width]`` of pruner ``layer`` (0: the field embeddings)."""
        z = self.pruners[layer](domain, h)
        return weighting_factors(z, self.form, self.alpha, self.beta, self.epsilon)

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` and a zero auxiliary loss."""
        if self.training:
            self.steps += 1
        domain = self.domain_embedding(batch.scenario)  # [B, d]
        emb = self.encoder(batch).unsqueeze(1).expand(-1, self.T, -1)  # [B, T, D]
        emb = emb * self.factors(0, domain, emb)
        h = torch.cat([domain.unsqueeze(1).expand(-1, self.T, -1), emb], dim=-1)
        for i, layer in enumerate(self.layers, start=1):
            h = torch.relu(layer(h))
            h = self.dropout(h * self.factors(i, domain, h))
        logits = self.head(h).squeeze(-1)
        return ModelOutput(logits, zero_aux(logits))
