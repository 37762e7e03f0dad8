"""HMoE: per-scenario MMoE predictions combined across scenarios in the label space."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mssbench.nn import FeatureEncoder, GroupedMLP, gather_scenario, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput

__all__ = ["HMoE", "label_space_logit"]


def label_space_logit(
    logits: torch.Tensor, log_weights: torch.Tensor, scenario: torch.Tensor
) -> torch.Tensor:
    """Logit of ``p = sum_j w_j sigmoid(z_j)``, other scenarios' ``z_j`` gradient-blocked.

    Computed in log space: ``log p = logsumexp_j(log w_j + logsigmoid(z_j))`` and
    ``log(1 - p) = logsumexp_j(log w_j + logsigmoid(-z_j))`` (``w`` sums to 1), so the result is
    finite for any finite inputs.

    Args:
        logits: ``[B, S, T]`` every scenario's tower logits ``z``.
        log_weights: ``[B, T, S]`` log of each sample's own-scenario weights over scenarios.
        scenario: ``[B]`` scenario ids.

    Returns:
        ``[B, T]``.
    """
    own = F.one_hot(scenario, logits.shape[1]).bool().unsqueeze(-1)  # [B, S, 1]
    z = torch.where(own, logits, logits.detach()).transpose(1, 2)  # [B, T, S]
    log_p = torch.logsumexp(log_weights + F.logsigmoid(z), dim=-1)
    log_q = torch.logsumexp(log_weights + F.logsigmoid(-z), dim=-1)
    return log_p - log_q


class HMoE(nn.Module):
    """Hybrid of implicit and explicit Mixture-of-Experts (HMoE).

    Paper: Li et al., "Improving Multi-Scenario Learning to Rank in E-commerce by Exploiting
    Task Relationships in the Label Space", CIKM 2020, https://doi.org/10.1145/3340531.3412713
    (the paper that introduced the AliExpress dataset).

    * Feature space: ``n_experts`` shared expert MLPs; one softmax gate and one tower per
      (scenario, task) give every scenario's prediction ``z_{j,t}`` for every sample.
    * Label space: for a sample of scenario ``s``, a second gate ``w_{s,t} = softmax(V_{s,t} x)``
      over scenarios combines the predictions,
      ``p_{s,t} = w_{s,t,s} sigmoid(z_{s,t}) + sum_{j != s} w_{s,t,j} sg(sigmoid(z_{j,t}))``:
      other scenarios' predictions inform scenario ``s`` but its labels do not train their
      towers (``sg`` blocks the gradient). The returned logit is ``logit(p_{s,t})``.

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field embedding.
        n_experts: Shared experts.
        expert_hidden: Widths of every expert MLP.
        tower_hidden: Hidden widths of every tower, then one logit.
        dropout: Dropout in experts and towers.
        label_space: Combine the scenarios' predictions (``False``: each scenario's own tower,
            i.e. MMoE with per-(scenario, task) gates and towers; an ablation).

    Differences from the paper: the paper is multi-scenario with one objective; here every task
    has its own gates, towers and label-space weights per scenario. Gates are bias-free linear
    maps of the input followed by a softmax; experts and towers are ReLU MLPs without batch
    normalisation; widths are MMLRec's HMoE defaults (the paper's are not known to us).
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        n_experts: int,
        expert_hidden: Sequence[int],
        tower_hidden: Sequence[int],
        dropout: float,
        label_space: bool,
    ):
        super().__init__()
        if n_experts < 1:
            raise ValueError(f"n_experts must be >= 1, got {n_experts}")
        if not expert_hidden or any(int(w) < 1 for w in [*expert_hidden, *tower_hidden]):
            raise ValueError(
                f"expert_hidden must be non-empty and all widths >= 1, got {list(expert_hidden)}, "
                f"{list(tower_hidden)}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.S, self.T, self.E = schema.n_scenarios, schema.n_tasks, n_experts
        self.label_space = label_space
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature=False)
        d_in = self.encoder.out_dim
        self.experts = GroupedMLP(n_experts, d_in, [int(w) for w in expert_hidden], dropout, False)
        self.gates = nn.Linear(d_in, self.S * self.T * n_experts, bias=False)
        self.towers = GroupedMLP(
            self.S * self.T,
            self.experts.out_dim,
            [int(w) for w in tower_hidden],
            dropout,
            batch_norm=False,
            out_dim=1,
        )
        self.scenario_weights = (
            nn.Linear(d_in, self.S * self.T * self.S, bias=False) if label_space else None
        )

    def scenario_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every scenario's tower logits ``[B, S, T]`` (feature space)."""
        experts = self.experts(x)  # [B, E, H]
        gates = torch.softmax(self.gates(x).view(-1, self.S * self.T, self.E), dim=-1)
        mixed = torch.einsum("bge,beh->bgh", gates, experts)  # [B, S*T, H]
        return self.towers(mixed).view(-1, self.S, self.T)

    def log_label_weights(self, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
        """Log label-space weights ``[B, T, S]`` of each sample's own scenario."""
        logits = self.scenario_weights(x).view(-1, self.S, self.T, self.S)
        return torch.log_softmax(gather_scenario(logits, scenario), dim=-1)

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` and a zero auxiliary loss."""
        x = self.encoder(batch)
        z = self.scenario_logits(x)
        if self.scenario_weights is None:
            logits = gather_scenario(z, batch.scenario)
        else:
            log_w = self.log_label_weights(x, batch.scenario)
            logits = label_space_logit(z, log_w, batch.scenario)
        return ModelOutput(logits, zero_aux(logits))
