"""M3oE: multi-domain multi-task mixture of experts with learned fusion weights."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mssbench.nn import FeatureEncoder, GroupedLinear, gather_scenario, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput

__all__ = ["M3oE", "GroupedLayerNormMLP", "balance"]


def balance(outputs: torch.Tensor, own_weight: torch.Tensor) -> torch.Tensor:
    """Mix each expert's output with the mean of the others: ``w x_i + (1 - w) mean_{j != i} x_j``.

    The official code's balance of the scenario (or task) experts: expert ``i`` keeps the
    share ``w`` and the others split ``1 - w`` equally; with a single expert it is ``w x_0``.

    Args:
        outputs: ``[B, n, H]`` outputs of ``n`` experts.
        own_weight: Scalar ``w`` in (0, 1).

    Returns:
        ``[B, n, H]``: row ``i`` is the balanced output for scenario (task) ``i``.
    """
    n = outputs.shape[1]
    if n == 1:
        return own_weight * outputs
    others = (outputs.sum(1, keepdim=True) - outputs) / (n - 1)  # [B, n, H]
    return own_weight * outputs + (1 - own_weight) * others


class GroupedLayerNormMLP(nn.Module):
    """``G`` MLPs of ``Linear -> LayerNorm -> ReLU`` layers run as batched matmuls.

    Each group has its own LayerNorm scale and shift (the official ``MLP_N`` blocks).

    Args:
        n_groups: Number of MLPs ``G``.
        in_dim: Input width.
        hidden: Layer widths.
    """

    def __init__(self, n_groups: int, in_dim: int, hidden: Sequence[int]):
        super().__init__()
        widths = [in_dim, *hidden]
        self.linears = nn.ModuleList(
            GroupedLinear(n_groups, a, b) for a, b in zip(widths, widths[1:])
        )
        self.scales = nn.ParameterList(nn.Parameter(torch.ones(n_groups, h)) for h in hidden)
        self.shifts = nn.ParameterList(nn.Parameter(torch.zeros(n_groups, h)) for h in hidden)
        self.out_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in]`` (shared input) or ``[B, G, in]`` to ``[B, G, out]``."""
        for linear, scale, shift in zip(self.linears, self.scales, self.shifts):
            x = linear(x)  # [B, G, h]
            x = torch.relu(F.layer_norm(x, x.shape[-1:]) * scale + shift)
        return x


class M3oE(nn.Module):
    """M3oE: Multi-Domain Multi-Task Mixture-of-Experts.

    Paper: Zhang et al., "M3oE: Multi-Domain Multi-Task Mixture-of-Experts Recommendation
    Framework", SIGIR 2024, https://doi.org/10.1145/3626772.3657686 (arXiv 2404.18465).
    Official code: ``Applied-Machine-Learning-Lab/M3oE`` (``MDMTRec/models/multi_domain/
    model.py``, ``examples/run_movielens.py``).

    1. **Bottom.** The field embeddings (scenario id included, as in the official code) go
       through a STAR-style layer, ``h = x (W_s * W) + b_s + b`` with the sample's scenario
       ``s``, then ``Linear -> LayerNorm -> ReLU``; a skip branch of the same kind maps ``x``
       directly, and the two are added.
    2. **Experts** on ``h``: ``n_experts`` shared experts, one expert per scenario and one per
       task, each ``(Linear -> LayerNorm -> ReLU) x len(expert_hidden)``.
    3. **Gates.** One softmax gate over the shared experts per (scenario, task); gates read
       ``h`` detached (no gradient from the gates into the bottom), as the official code.
    4. **Fusion.** For scenario ``s`` and task ``t``:
       ``z = gate_{s,t} . shared + sigmoid(a_d) * bal_d(scenario experts)[s] +
       sigmoid(a_t) * bal_t(task experts)[t]``, where ``bal`` (:func:`balance`) keeps the
       share ``sigmoid(b_d)`` (``sigmoid(b_t)``) of the own expert and spreads the rest over the
       others. ``a_d, a_t, b_d, b_t`` are four learned scalars (the official "DARTS" weights).
    5. **Towers.** One per (scenario, task): ``Linear -> LayerNorm -> ReLU -> Linear(1)``; each
       sample gets its own scenario's towers (gather).

    The four fusion weights are ordinary parameters trained with the others by the core's
    optimizer on the training loss (see README: the official code's separate "architecture"
    step is one update per epoch on a training batch, and its main optimizer, through a
    bitwise-not on a bool, trains these weights at every step anyway).

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field embedding.
        star_hidden: Widths of the STAR layer and the layer after it (the bottom's output).
        n_experts: Number of shared experts.
        expert_hidden: Layer widths of every expert; the last is the width of ``z``.
        fusion_init: Initial raw value of the four fusion weights (``sigmoid(1) = 0.73``).
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        star_hidden: Sequence[int],
        n_experts: int,
        expert_hidden: Sequence[int],
        fusion_init: float,
    ):
        super().__init__()
        star_hidden, expert_hidden = list(star_hidden), list(expert_hidden)
        if len(star_hidden) != 2 or min(star_hidden) < 1:
            raise ValueError(f"star_hidden must be two positive widths, got {star_hidden}")
        if not expert_hidden or min(expert_hidden) < 1:
            raise ValueError(f"expert_hidden must be positive widths, got {expert_hidden}")
        if n_experts < 1:
            raise ValueError(f"n_experts must be >= 1, got {n_experts}")
        self.S, self.T, self.E = schema.n_scenarios, schema.n_tasks, n_experts
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature=True)
        d_in, d_star, d_bottom = self.encoder.out_dim, *star_hidden
        self.star_shared = nn.Parameter(torch.empty(d_in, d_star))
        self.star_scenario = nn.Parameter(torch.empty(self.S, d_in, d_star))
        bound = math.sqrt(6.0 / (d_in + d_star))  # Xavier-uniform, as the official layer
        nn.init.uniform_(self.star_shared, -bound, bound)
        nn.init.uniform_(self.star_scenario, -bound, bound)
        self.star_bias_shared = nn.Parameter(torch.zeros(d_star))
        self.star_bias_scenario = nn.Parameter(torch.zeros(self.S, d_star))
        self.star_mlp = GroupedLayerNormMLP(1, d_star, [d_bottom])
        self.skip = GroupedLayerNormMLP(1, d_in, [d_bottom])
        # Shared experts, then one per scenario, then one per task.
        self.experts = GroupedLayerNormMLP(n_experts + self.S + self.T, d_bottom, expert_hidden)
        self.gates = nn.Linear(d_bottom, self.S * self.T * n_experts)
        self.fusion = nn.ParameterDict(
            {
                k: nn.Parameter(torch.tensor(float(fusion_init)))
                for k in ("a_d", "a_t", "b_d", "b_t")
            }
        )
        h = self.experts.out_dim
        self.tower_hidden = GroupedLayerNormMLP(self.S * self.T, h, [h])
        self.tower_out = GroupedLinear(self.S * self.T, h, 1)

    def bottom(self, batch: Batch) -> torch.Tensor:
        """The bottom representation ``h`` ``[B, d_bottom]``."""
        x = self.encoder(batch)  # [B, D]
        w = self.star_scenario * self.star_shared  # [S, D, d_star]
        star = torch.einsum("bd,sdh->bsh", x, w) + self.star_bias_scenario  # [B, S, d_star]
        star = gather_scenario(star, batch.scenario) + self.star_bias_shared  # [B, d_star]
        return self.star_mlp(star)[:, 0] + self.skip(x)[:, 0]  # [B, d_bottom]

    def fused(self, h: torch.Tensor) -> torch.Tensor:
        """Fused representations ``z`` ``[B, S, T, H]`` for every (scenario, task)."""
        out = self.experts(h)  # [B, E + S + T, H]
        shared, scen, task = out.split([self.E, self.S, self.T], dim=1)
        gates = torch.softmax(self.gates(h.detach()).view(-1, self.S, self.T, self.E), dim=-1)
        mixed = torch.einsum("bste,beh->bsth", gates, shared)  # [B, S, T, H]
        f = {k: torch.sigmoid(v) for k, v in self.fusion.items()}
        scen = f["a_d"] * balance(scen, f["b_d"])  # [B, S, H]
        task = f["a_t"] * balance(task, f["b_t"])  # [B, T, H]
        return mixed + scen.unsqueeze(2) + task.unsqueeze(1)

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` of each sample's own scenario towers and a zero auxiliary loss."""
        z = self.fused(self.bottom(batch)).flatten(1, 2)  # [B, S*T, H]
        out = self.tower_out(self.tower_hidden(z)).view(-1, self.S, self.T)  # [B, S, T]
        logits = gather_scenario(out, batch.scenario)  # [B, T]
        return ModelOutput(logits, zero_aux(logits))
