"""Single-task baseline: fully separate networks per task (and optionally per scenario)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mssbench.nn import GroupedLinear, GroupedMLP, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput


class SeparateNetworks(nn.Module):
    """``G`` fully separate networks (input encoder, bottom MLP, tower) run as one batched pass.

    Network ``g`` has its own embedding table (one per-field-offset table, as in
    :class:`~mssbench.nn.FeatureEncoder`), its own numeric projection, its own bottom MLP and its
    own tower; nothing is shared between networks. They are stored as grouped tensors: the
    embedding is one ``[G * V, d]`` table in which network ``g`` owns rows ``g*V ... (g+1)*V - 1``,
    and the rest are :class:`~mssbench.nn.GroupedLinear` / :class:`~mssbench.nn.GroupedMLP`
    modules. Every parameter is therefore **group-major**: ``p.view(G, -1)[g]`` is exactly
    network ``g``'s part of it. Each network is initialised as a stand-alone one would be
    (Xavier-uniform embedding over its own ``[V, d]`` slice, ``nn.Linear``-like linear maps).

    Args:
        n_groups: Number of networks ``G``.
        schema: Dataset schema.
        embed_dim: Width ``d`` of every field.
        scenario_as_feature: Embed the scenario id as one more categorical field.
        bottom_hidden: Hidden widths of each bottom MLP.
        tower_hidden: Hidden widths of each tower (then a linear map to one logit).
        dropout: Dropout in bottoms and towers.
    """

    def __init__(
        self,
        n_groups: int,
        schema: DatasetSchema,
        embed_dim: int,
        scenario_as_feature: bool,
        bottom_hidden: Sequence[int],
        tower_hidden: Sequence[int],
        dropout: float,
    ):
        super().__init__()
        self.G, self.embed_dim = n_groups, embed_dim
        self.scenario_as_feature = scenario_as_feature
        vocab = list(schema.vocab_sizes) + ([schema.n_scenarios] if scenario_as_feature else [])
        self.vocab_total = sum(vocab)
        offsets = torch.tensor([0, *vocab[:-1]], dtype=torch.long).cumsum(0) if vocab else None
        self.register_buffer("offsets", offsets if offsets is not None else torch.zeros(0).long())
        self.register_buffer(
            "group_base", torch.arange(n_groups, dtype=torch.long) * self.vocab_total
        )
        self.embedding = None
        if vocab:
            self.embedding = nn.Embedding(n_groups * self.vocab_total, embed_dim)
            with torch.no_grad():
                for table in self.embedding.weight.view(n_groups, self.vocab_total, embed_dim):
                    nn.init.xavier_uniform_(table)
        self.numeric = (
            GroupedLinear(n_groups, schema.n_numeric, embed_dim) if schema.numeric else None
        )
        n_fields = len(vocab) + (1 if self.numeric is not None else 0)
        if n_fields == 0:
            raise ValueError("the schema has no input field")
        self.bottom = GroupedMLP(n_groups, n_fields * embed_dim, bottom_hidden, dropout)
        self.tower = GroupedMLP(n_groups, self.bottom.out_dim, tower_hidden, dropout, out_dim=1)

    def forward(
        self, categorical: torch.Tensor, numeric: torch.Tensor, scenario: torch.Tensor
    ) -> torch.Tensor:
        """One logit per network and sample, ``[B, G]``, from the batch's input tensors."""
        parts = []
        if self.embedding is not None:
            ids = categorical
            if self.scenario_as_feature:
                ids = torch.cat([ids, scenario.unsqueeze(1)], dim=1)
            ids = ids + self.offsets  # [B, F]
            ids = ids.unsqueeze(1) + self.group_base.view(1, -1, 1)  # [B, G, F]: own table rows
            parts.append(self.embedding(ids))  # [B, G, F, d]
        if self.numeric is not None:
            parts.append(self.numeric(numeric).unsqueeze(2))  # [B, G, 1, d]
        x = torch.cat(parts, dim=2).flatten(2)  # [B, G, n_fields * d]
        return self.tower(self.bottom(x)).squeeze(-1)  # [B, G]


def _forward_frozen_norms(module: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """Run ``module`` with its batch-norm layers in eval mode (running statistics, no update)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = [m.training for m in norms]
    for m in norms:
        m.train(False)
    try:
        return module(*inputs)
    finally:
        for m, mode in zip(norms, modes):
            m.train(mode)


class SingleTask(nn.Module):
    """Single-task baseline: one fully separate network per task, trained jointly.

    Reference: MTReclib's SingleTask model (easezyc/Multitask-Recommendation-Library), the
    "SingleTask" / "DNN
    (single)" row of peer tables. Each task has its own embedding table, numeric projection,
    bottom MLP (``bottom_hidden``) and tower (``tower_hidden``), layers
    ``Linear -> BN -> ReLU -> Dropout``; no parameter is shared between tasks, so joint training
    with one optimiser equals separate training, except that early stopping picks one epoch for
    all tasks. The ``T`` networks run as grouped tensors (:class:`SeparateNetworks`).

    Multi-scenario handling (our adaptation):

    * ``scenario_towers=False`` (default): the scenario id is one more embedded field of each task's
      network.
    * ``scenario_towers=True``: ``S * T`` independent networks, one per (scenario, task), without a
      scenario field (each network only ever sees one scenario). Each network runs only on its
      own scenario's rows, which are picked by index and whose logits are written back to the
      same rows (the batch order is kept). Batch-norm statistics are therefore computed over a
      network's own rows only, as in one-model-per-country training; computing every network on
      every row and gathering would leak other scenarios' rows into a network through its
      batch statistics (and their gradients). A scenario with a single row in a training batch
      is normalised with its running statistics, which it does not update.

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field embedding.
        bottom_hidden: Hidden widths of each network's bottom MLP.
        tower_hidden: Hidden widths of each network's tower.
        dropout: Dropout in bottoms and towers.
        scenario_towers: One network per (scenario, task) instead of one per task.
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        bottom_hidden: Sequence[int],
        tower_hidden: Sequence[int],
        dropout: float,
        scenario_towers: bool,
    ):
        super().__init__()
        self.S, self.T = schema.n_scenarios, schema.n_tasks
        self.scenario_towers = scenario_towers
        #: ``--step graph`` refuses per-scenario networks: each selects its rows with nonzero().
        self.cuda_graph_unsafe = (
            "per-scenario networks select their rows with data-dependent sizes"
            if scenario_towers
            else ""
        )
        # networks[s] holds scenario s's T task networks (a single entry without scenario_towers).
        self.networks = nn.ModuleList(
            SeparateNetworks(
                self.T,
                schema,
                embed_dim,
                not scenario_towers,
                bottom_hidden,
                tower_hidden,
                dropout,
            )
            for _ in range(self.S if scenario_towers else 1)
        )

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` and a zero auxiliary loss."""
        if not self.scenario_towers:
            logits = self.networks[0](*batch[:3])  # [B, T]
            return ModelOutput(logits, zero_aux(logits))
        scenario = batch.scenario
        if scenario.numel() and (scenario.min() < 0 or scenario.max() >= self.S):
            raise ValueError(
                f"scenario ids must lie in [0, {self.S}), got {sorted(set(scenario.tolist()))}"
            )
        logits = None
        for s, net in enumerate(self.networks):
            rows = (scenario == s).nonzero().squeeze(1)  # [B_s], in batch order
            if rows.numel() == 0:
                continue
            inputs = [t.index_select(0, rows) for t in batch[:3]]  # own rows only
            if self.training and rows.numel() == 1:
                # Batch norm cannot estimate statistics from one row.
                out = _forward_frozen_norms(net, *inputs)  # [1, T]
            else:
                out = net(*inputs)  # [B_s, T]
            if logits is None:  # allocated from an output, so autocast dtypes match
                logits = out.new_zeros(scenario.shape[0], self.T)
            logits = logits.index_copy(0, rows, out)  # written back to the same rows
        if logits is None:  # empty batch
            logits = batch.numeric.new_zeros(0, self.T)
        return ModelOutput(logits, zero_aux(logits))
