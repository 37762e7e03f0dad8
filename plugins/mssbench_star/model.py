"""STAR: partitioned normalisation, star-topology FCN and auxiliary network."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mssbench.nn import Dropout, FeatureEncoder, GroupedMLP, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput

__all__ = ["STAR", "PartitionedNorm", "StarLinear", "group_rows", "ungroup"]


def group_rows(
    domain: torch.Tensor, n_domains: int
) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
    """Rows grouped by domain, without reordering anything.

    Returns:
        ``order`` ``[B]`` (row indices sorted by domain, stable) and ``(p, rows)`` for each domain
        present, ``rows`` being the slice of ``order`` that holds domain ``p``'s rows.
    """
    order = torch.argsort(domain, stable=True)
    counts = torch.bincount(domain, minlength=n_domains).tolist()  # the one host sync
    return order, [(p, rows) for p, rows in enumerate(torch.split(order, counts)) if len(rows)]


def ungroup(grouped: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Inverse of ``x[order]``: row ``order[k]`` of the result is ``grouped[k]``."""
    return torch.empty_like(grouped).index_copy(0, order, grouped)


class PartitionedNorm(nn.Module):
    """Partitioned Normalization (PN): batch normalisation with per-domain statistics.

    ``z' = (gamma * gamma_p) * (z - mu) / sqrt(var + eps) + (beta + beta_p)`` for a sample of
    domain ``p``. In training, ``mu`` and ``var`` are the moments of the domain-``p`` rows of the
    batch (on a domain-pure batch these are the batch moments, exactly the paper's PN); each
    domain keeps its own running mean and variance (momentum and unbiased running variance as
    in ``torch.nn.BatchNorm1d``), used in eval mode.

    A domain absent from the batch keeps its running statistics untouched. A domain with one
    row in a training batch is normalised with its running statistics and does not update them:
    a one-row variance is 0 and its unbiased estimate undefined.

    Args:
        n_domains: Number of domains ``S``.
        dim: Feature width ``D``.
        momentum: Running-statistics momentum (``new = (1 - m) * old + m * batch``).
        eps: Added to the variance.
    """

    def __init__(self, n_domains: int, dim: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"pn_momentum must be in [0, 1], got {momentum}")
        if eps <= 0:
            raise ValueError(f"pn_eps must be > 0, got {eps}")
        self.n_domains, self.dim, self.momentum, self.eps = n_domains, dim, momentum, eps
        self.weight = nn.Parameter(torch.ones(dim))  # gamma
        self.bias = nn.Parameter(torch.zeros(dim))  # beta
        self.domain_weight = nn.Parameter(torch.ones(n_domains, dim))  # gamma_p
        self.domain_bias = nn.Parameter(torch.zeros(n_domains, dim))  # beta_p
        self.register_buffer("running_mean", torch.zeros(n_domains, dim))
        self.register_buffer("running_var", torch.ones(n_domains, dim))

    def normalise(self, z: torch.Tensor, domain: int) -> torch.Tensor:
        """Normalise ``z`` ``[n, D]``, all of the batch's rows of domain ``domain``."""
        batch_stats = self.training and z.shape[0] >= 2
        # Row views of the [S, D] buffers: batch_norm updates them in place when training.
        return F.batch_norm(
            z,
            self.running_mean[domain],
            self.running_var[domain],
            self.weight * self.domain_weight[domain],
            self.bias + self.domain_bias[domain],
            training=batch_stats,
            momentum=self.momentum,
            eps=self.eps,
        )

    def forward(self, z: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """Normalise ``z`` ``[B, D]`` given each row's domain ``[B]``; returns ``[B, D]``."""
        order, groups = group_rows(domain, self.n_domains)
        if not groups:
            return z * 1.0
        return ungroup(torch.cat([self.normalise(z[rows], p) for p, rows in groups]), order)


class StarLinear(nn.Module):
    """One star-topology layer for ``T`` independent FCNs (one per task).

    For domain ``p`` and task ``t``: ``W*_p = W_p ⊙ W`` and ``b*_p = b_p + b``. Shared weights
    are Xavier-uniform, shared biases 0; domain weights start at 1 and domain biases at 0, so
    every domain starts as the shared network.

    Args:
        n_domains: Number of domains ``S``.
        n_tasks: Number of parallel FCNs ``T``.
        in_dim: Input width.
        out_dim: Output width.
    """

    def __init__(self, n_domains: int, n_tasks: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_tasks, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(n_tasks, out_dim))
        self.domain_weight = nn.Parameter(torch.ones(n_domains, n_tasks, in_dim, out_dim))
        self.domain_bias = nn.Parameter(torch.zeros(n_domains, n_tasks, out_dim))
        bound = math.sqrt(6.0 / (in_dim + out_dim))
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, h: torch.Tensor, domain: int) -> torch.Tensor:
        """Apply domain ``domain``'s layer to rows of that domain only.

        Args:
            h: ``[n, in]`` (the same input for every task) or ``[n, T, in]``.
            domain: The domain of every row.

        Returns:
            ``[n, T, out]``.
        """
        w = self.domain_weight[domain] * self.weight  # [T, in, out]
        b = self.domain_bias[domain] + self.bias  # [T, out]
        if h.dim() == 2:
            # One GEMM for all tasks: [n, in] @ [in, T*out].
            t, i, o = w.shape
            return (h @ w.permute(1, 0, 2).reshape(i, t * o)).view(-1, t, o) + b
        return torch.einsum("bti,tio->bto", h, w) + b


class STAR(nn.Module):
    """Star Topology Adaptive Recommender, one star FCN per task.

    Paper: Sheng et al., "One Model to Serve All: Star Topology Adaptive Recommender for
    Multi-Domain CTR Prediction", CIKM 2021, https://arxiv.org/abs/2101.11427.

    Pipeline: shared field embeddings (domain = scenario) -> :class:`PartitionedNorm` -> for each
    task a star-topology FCN (:class:`StarLinear` layers, ReLU and dropout between them, the last
    layer outputting the main logit ``s_m`` with no activation) -> ``s_m + s_a``, where ``s_a`` is
    the task's auxiliary network applied to the scenario embedding. There is no auxiliary loss.

    Rows are grouped by domain once per batch (PN and one matmul per layer for each domain
    present) and the logits put back in the batch's row order: the batch is never reordered.

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field embedding and of the scenario embedding.
        hidden: Hidden widths of each task's star FCN; a final star layer maps to one logit.
        dropout: Dropout after each hidden star layer's ReLU.
        auxiliary: Add the auxiliary network's logit (off: ablation without it).
        aux_hidden: Hidden widths of each task's auxiliary MLP (ReLU, no normalisation).
        pn_momentum: Momentum of PN's running statistics.
        pn_eps: Epsilon of PN.

    Differences from the paper (our multi-scenario multi-task adaptation): the paper is
    single-task CTR; here PN and the embeddings are shared by the tasks and each task has its own
    star FCN and auxiliary network. The paper's auxiliary network also reads other
    domain-describing features; the benchmark schemas have none, so it reads the scenario
    embedding only. PN computes per-domain moments inside a batch, so it also accepts mixed
    batches ("STAR (mixed batches)" variant); on domain-pure batches it is the paper's PN.
    """

    #: ``--step graph`` refuses the model: its per-domain row groups have data-dependent sizes
    #: (the domain counts are read on the host every step).
    cuda_graph_unsafe = "per-domain row groups with data-dependent sizes (counts read on the host)"

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        hidden: Sequence[int],
        dropout: float,
        auxiliary: bool,
        aux_hidden: Sequence[int],
        pn_momentum: float,
        pn_eps: float,
    ):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if any(int(h) < 1 for h in hidden) or any(int(h) < 1 for h in aux_hidden):
            raise ValueError(f"hidden widths must be >= 1, got {list(hidden)}, {list(aux_hidden)}")
        self.S, self.T = schema.n_scenarios, schema.n_tasks
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature=False)
        d_in = self.encoder.out_dim
        self.norm = PartitionedNorm(self.S, d_in, pn_momentum, pn_eps)
        widths = [d_in, *(int(h) for h in hidden), 1]
        self.layers = nn.ModuleList(
            StarLinear(self.S, self.T, a, b) for a, b in zip(widths[:-1], widths[1:])
        )
        self.dropout = Dropout(dropout) if dropout else nn.Identity()
        if auxiliary:
            self.scenario_embedding = nn.Parameter(torch.empty(self.S, embed_dim))
            nn.init.xavier_uniform_(self.scenario_embedding)
            self.aux = GroupedMLP(
                self.T, embed_dim, [int(h) for h in aux_hidden], batch_norm=False, out_dim=1
            )
        else:
            self.scenario_embedding = None
            self.aux = None

    def _check_scenarios(self, scenario: torch.Tensor) -> None:
        if not scenario.numel():
            return
        lo, hi = torch.stack(torch.aminmax(scenario)).tolist()
        if lo < 0 or hi >= self.S:
            bad = sorted({int(s) for s in scenario.tolist() if not 0 <= s < self.S})
            raise ValueError(
                f"scenario ids {bad} outside [0, {self.S}): the model was built for {self.S} "
                "scenarios"
            )

    def main_logits(self, batch: Batch) -> torch.Tensor:
        """The star FCNs' logits ``s_m``, ``[B, T]``, without the auxiliary network."""
        scenario = batch.scenario
        self._check_scenarios(scenario)
        x = self.encoder(batch)  # [B, D]
        order, groups = group_rows(scenario, self.S)
        parts = []
        for p, rows in groups:
            h = self.norm.normalise(x[rows], p)  # [n_p, D]
            for i, layer in enumerate(self.layers):
                h = layer(h, p)  # [n_p, T, width]
                if i < len(self.layers) - 1:
                    h = self.dropout(torch.relu(h))
            parts.append(h.squeeze(-1))  # [n_p, T]
        if not parts:
            return x.new_zeros(0, self.T)
        return ungroup(torch.cat(parts), order)  # [B, T] in batch order

    def aux_logits(self, scenario: torch.Tensor) -> torch.Tensor:
        """The auxiliary networks' logits ``s_a``, ``[B, T]`` (zeros without the network)."""
        if self.aux is None:
            return self.norm.weight.new_zeros(scenario.shape[0], self.T)
        # The input is the scenario embedding only: evaluate once per scenario, then gather.
        table = self.aux(self.scenario_embedding).squeeze(-1)  # [S, T]
        return table[scenario]

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``s_m + s_a`` ``[B, T]`` and a zero auxiliary loss."""
        logits = self.main_logits(batch) + self.aux_logits(batch.scenario)
        return ModelOutput(logits, zero_aux(logits))
