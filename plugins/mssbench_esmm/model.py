"""ESMM as a standalone model: shared embeddings, one independent tower per task."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from mssbench.nn import FeatureEncoder, GroupedMLP, gather_scenario, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput


class ESMM(nn.Module):
    """Entire Space Multi-task Model: shared embedding table, CTR and CVR towers.

    Paper: Ma et al., "Entire Space Multi-Task Model: An Effective Approach for Estimating
    Post-Click Conversion Rate", SIGIR 2018, https://doi.org/10.1145/3209978.3210104
    (arXiv 1804.07931).

    The towers share nothing but the field embeddings (the paper's feature-representation
    transfer). Each task has its own MLP (``Linear -> ReLU [-> Dropout]``, no batch norm) ending
    in one logit. On a dataset where ``ctcvr`` implies ``ctr`` the spec's ``head: esmm`` tag makes
    the core wrap the model in :class:`mssbench.nn.ESMMHead`: the ``ctcvr`` tower is then the CVR
    tower and ``p_ctcvr = p_ctr * p_cvr`` (in log space), trained on CTR and CTCVR over all
    impressions; the CVR tower gets no direct loss. On other datasets (Census-Income) every
    tower is trained on its own label (direct heads).

    Multi-scenario handling (our adaptation; the paper is single-scenario): the scenario id is
    one more input field; with ``scenario_towers`` every (scenario, task) has its own tower,
    picked by gather.

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field embedding.
        tower_hidden: Hidden widths of every tower.
        dropout: Dropout after each tower layer.
        scenario_towers: One tower per (scenario, task) instead of one per task.
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        tower_hidden: Sequence[int],
        dropout: float,
        scenario_towers: bool,
    ):
        super().__init__()
        self.S, self.T = schema.n_scenarios, schema.n_tasks
        self.scenario_towers = scenario_towers
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature=True)
        n_towers = self.S * self.T if scenario_towers else self.T
        self.towers = GroupedMLP(
            n_towers, self.encoder.out_dim, tower_hidden, dropout, batch_norm=False, out_dim=1
        )

    def forward(self, batch: Batch) -> ModelOutput:
        """Tower logits ``[B, T]`` (the ESMM head turns the CVR column into CTCVR)."""
        out = self.towers(self.encoder(batch)).squeeze(-1)  # [B, T] or [B, S*T]
        if self.scenario_towers:
            out = gather_scenario(out.view(-1, self.S, self.T), batch.scenario)  # [B, T]
        return ModelOutput(out, zero_aux(out))
