"""ESCM²: entire-space counterfactual multi-task model (IPS and DR regularisers)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mssbench.nn import FeatureEncoder, GroupedMLP
from mssbench.spec import Batch, DatasetSchema, ModelOutput

__all__ = ["COUNTERFACTUALS", "ESCM2", "counterfactual_risk", "inverse_propensity"]

#: The two counterfactual regularisers of the paper.
COUNTERFACTUALS = ("ips", "dr")


def inverse_propensity(ctr_logit: torch.Tensor, click: torch.Tensor, max_weight: float):
    """IPS weights ``o_i / p_ctr_i``: the inverse click propensity on clicked rows, 0 elsewhere.

    The propensity is the CTR tower's probability, detached (the weights train nothing) and
    floored at ``1 / max_weight``, so no weight exceeds ``max_weight``.

    Args:
        ctr_logit: ``[B]`` CTR logits.
        click: ``[B]`` click labels in {0, 1}.
        max_weight: Largest weight.

    Returns:
        ``[B]`` weights.
    """
    propensity = torch.sigmoid(ctr_logit.detach().float()).clamp_min(1.0 / max_weight)
    return click / propensity


def counterfactual_risk(
    ctr_logit: torch.Tensor,
    cvr_logit: torch.Tensor,
    imputed: torch.Tensor | None,
    click: torch.Tensor,
    conversion: torch.Tensor,
    max_weight: float,
) -> torch.Tensor:
    """The counterfactual CVR risk over all impressions, IPS or DR.

    With ``e_i = BCE(r_i, p_cvr_i)`` (``r`` is observed on clicked rows only, where it equals the
    conversion-over-impressions label) and ``w_i = o_i / p_ctr_i``
    (:func:`inverse_propensity`):

    * IPS (``imputed`` is None): ``mean_D w_i e_i``.
    * DR: ``mean_D [ê_i + w_i (e_i - ê_i)] + mean_D w_i (e_i - ê_i)^2``: the doubly robust
      estimate plus the imputation tower's loss, as the official code trains them jointly.

    Args:
        ctr_logit: ``[B]`` CTR tower logits.
        cvr_logit: ``[B]`` CVR tower logits.
        imputed: ``[B]`` imputed errors ``ê`` (DR), or None (IPS).
        click: ``[B]`` click labels ``o``.
        conversion: ``[B]`` conversion labels over impressions.
        max_weight: Largest IPS weight.

    Returns:
        A scalar tensor.
    """
    w = inverse_propensity(ctr_logit, click, max_weight)
    error = F.binary_cross_entropy_with_logits(cvr_logit.float(), conversion, reduction="none")
    if imputed is None:
        return (w * error).mean()
    gap = error - imputed
    return (imputed + w * gap).mean() + (w * gap.square()).mean()


class ESCM2(nn.Module):
    """Entire Space Counterfactual Multi-task Model (ESCM²-IPS and ESCM²-DR).

    Paper: Wang et al., "ESCM²: Entire Space Counterfactual Multi-Task Model for Post-Click
    Conversion Rate Estimation", SIGIR 2022, https://doi.org/10.1145/3477495.3531972
    (arXiv 2204.05125). Official code: PaddleRec ``models/multitask/escm2``.

    Backbone as the official code: an MMoE over the shared field embeddings, with one gate and
    one tower per task (and, for DR, one imputation tower per click -> conversion relation);
    experts and towers are ``Linear -> ReLU`` without batch norm. The backbone returns the
    CTR and CVR tower logits; the spec's ``head: esmm`` makes the core form
    ``p_ctcvr = p_ctr * p_cvr`` (:class:`mssbench.nn.ESMMHead`), and ``heads: [esmm]`` refuses
    any other head. The loss is

    ``L = BCE_ctr + global_weight * BCE_ctcvr + counterfactual_weight * R_cf``

    with the task weights ``[1, global_weight]`` (by task role: ``global_weight`` on each
    conversion task of a relation) and ``R_cf`` (:func:`counterfactual_risk`, IPS or DR) the
    ``aux_loss``: a function of the labels, since it needs the clicks and conversions.

    Multi-scenario handling (our adaptation; the paper has one scenario): the scenario id is
    one more input field; experts, gates and towers are shared by the scenarios.

    Args:
        schema: Dataset schema; it must declare a relation ``conversion implies click``.
        embed_dim: Width of every field embedding.
        n_experts: Number of experts.
        expert_hidden: Widths of each expert MLP.
        tower_hidden: Hidden widths of each tower.
        counterfactual: ``"ips"`` or ``"dr"``.
        counterfactual_weight: ``lambda_c``, weight of the counterfactual risk.
        global_weight: ``lambda_g``, weight of the CTCVR loss.
        max_weight: Largest inverse-propensity weight (the official IPS clip).
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        n_experts: int,
        expert_hidden: Sequence[int],
        tower_hidden: Sequence[int],
        counterfactual: str,
        counterfactual_weight: float,
        global_weight: float,
        max_weight: float,
    ):
        super().__init__()
        _check(schema, n_experts, counterfactual, counterfactual_weight, global_weight, max_weight)
        self.T, self.E = schema.n_tasks, n_experts
        self.counterfactual = counterfactual
        self.counterfactual_weight = float(counterfactual_weight)
        self.max_weight = float(max_weight)
        self.pairs = [
            (schema.task_index(r.child), schema.task_index(r.parent)) for r in schema.relations
        ]
        n_imputation = len(self.pairs) if counterfactual == "dr" else 0
        self.n_towers = self.T + n_imputation
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature=True)
        d_in = self.encoder.out_dim
        self.experts = GroupedMLP(n_experts, d_in, expert_hidden, batch_norm=False)
        self.gates = nn.Linear(d_in, self.n_towers * n_experts)
        self.towers = GroupedMLP(
            self.n_towers, self.experts.out_dim, tower_hidden, batch_norm=False, out_dim=1
        )

    def forward(self, batch: Batch) -> ModelOutput:
        """CTR and CVR tower logits ``[B, T]`` and the counterfactual risk as a label function."""
        x = self.encoder(batch)  # [B, D]
        experts = self.experts(x)  # [B, E, H]
        gates = torch.softmax(self.gates(x).view(-1, self.n_towers, self.E), dim=-1)
        mixed = torch.einsum("bge,beh->bgh", gates, experts)  # [B, G, H]
        out = self.towers(mixed).squeeze(-1)  # [B, G]
        logits = out[:, : self.T]  # [B, T]
        # Imputed errors are non-negative, like the errors they estimate.
        imputed = F.softplus(out[:, self.T :]) if self.counterfactual == "dr" else None
        return ModelOutput(logits, self._risk(logits, imputed))

    def _risk(
        self, logits: torch.Tensor, imputed: torch.Tensor | None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        def aux_loss(labels: torch.Tensor) -> torch.Tensor:
            risk = logits.new_zeros((), dtype=torch.float32)
            for i, (child, parent) in enumerate(self.pairs):
                risk = risk + counterfactual_risk(
                    logits[:, parent],
                    logits[:, child],
                    None if imputed is None else imputed[:, i],
                    labels[:, parent],
                    labels[:, child],
                    self.max_weight,
                )
            return self.counterfactual_weight * risk

        return aux_loss


def _check(
    schema: DatasetSchema,
    n_experts: int,
    counterfactual: str,
    counterfactual_weight: float,
    global_weight: float,
    max_weight: float,
) -> None:
    if not schema.relations:
        raise ValueError(
            "ESCM² needs a conversion task that implies a click task (ctcvr implies ctr); "
            f"the dataset's tasks {', '.join(schema.task_names)} declare none"
        )
    if counterfactual not in COUNTERFACTUALS:
        raise ValueError(f"counterfactual must be 'ips' or 'dr', got {counterfactual!r}")
    if n_experts < 1:
        raise ValueError(f"n_experts must be >= 1, got {n_experts}")
    for name, value in (
        ("counterfactual_weight", counterfactual_weight),
        ("global_weight", global_weight),
    ):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if max_weight < 1:
        raise ValueError(f"max_weight must be >= 1, got {max_weight}")
