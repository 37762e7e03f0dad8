"""PEPNet and EPNet: embedding and parameter personalisation by gate neural units."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mssbench.nn import Dropout, FeatureEncoder, GroupedLinear, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput

__all__ = ["EPNET_GATES", "GateNU", "PEPNet", "build_epnet"]

#: How the EPNet gate scales the embeddings: one weight per field, or one per embedding unit.
EPNET_GATES = ("field", "element")


class GateNU(nn.Module):
    """Gate Neural Unit: ``delta = gamma * sigmoid(W2 relu(W1 x + b1) + b2)``.

    Fully connected layers (two in the paper: one hidden layer, ``hidden=[h]``); the output
    lies in ``(0, gamma)``, so with the paper's ``gamma = 2`` a gate can halve or double what it
    scales and is exactly 1 when the last layer's pre-activation is 0.

    Args:
        in_dim: Width of the prior information fed to the gate.
        hidden: Widths of the hidden layers (ReLU after each).
        out_dim: Number of gate values.
        gamma: Scaling factor of the sigmoid.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, gamma: float):
        super().__init__()
        self.gamma = float(gamma)
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate values ``[B, out_dim]`` in ``(0, gamma)``."""
        return self.gamma * torch.sigmoid(self.out(self.hidden(x)))


class PEPNet(nn.Module):
    """Parameter and Embedding Personalized Network (PEPNet), or EPNet alone.

    Paper: Chang et al., "PEPNet: Parameter and Embedding Personalized Network for Infusing with
    Personalized Prior Information", KDD 2023, https://arxiv.org/abs/2302.01115.

    * **EPNet** (embedding personalisation): the general field embeddings ``E`` ``[B, F, d]``
      are scaled by ``delta_domain = GateNU(e_s ⊕ sg(E))``, where ``e_s`` is the scenario
      (domain-side) embedding and ``sg`` stops the gradient, so the gate does not train the
      shared embeddings. ``O_ep = delta_domain ⊗ E``, one gate value per field
      (``epnet_gate="field"``) or per embedding unit (``"element"``).
    * **PPNet** (parameter personalisation, off for EPNet alone): every layer ``l`` of every
      task tower has its input scaled by ``delta_task^l = GateNU_l(e_s ⊕ sg(O_ep))`` (one gate
      per layer emitting ``T`` slices, one per task), ``H'_t = delta_t^l ⊗ H_t`` and
      ``H_t^{l+1} = relu(H'_t W_t^l + b_t^l)``; the tower's output layer is gated the same way.
      The stop gradient keeps PPNet's updates out of EPNet.
    * Towers: one per task, ``Linear -> ReLU -> Dropout`` per hidden layer, then a linear map to
      one logit, all on ``O_ep`` flattened; they run as one grouped matmul per layer.

    With every gate output equal to 1 the model is its base network: shared embeddings and one
    MLP tower per task (``tests/test_model_pepnet.py`` checks this).

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field embedding and of the scenario embedding.
        tower_hidden: Hidden widths of each task tower.
        gate_hidden: Hidden widths of every Gate NU (the paper's: one layer).
        gamma: Gate NU scaling factor (paper: 2).
        epnet_gate: ``"field"`` or ``"element"``, see above.
        dropout: Dropout after each hidden tower layer.
        personalize_params: Use PPNet (``False``: EPNet alone).

    Differences from the paper: the paper's domain-side features (domain id and per-domain
    statistics) are the scenario embedding here, and PPNet's prior (user, item and author ids)
    is the same scenario embedding plus the stop-gradient EPNet output, which holds every field;
    the benchmark schemas name no user, item or author fields. Widths are ours; the paper does
    not publish them. Scenarios share the towers: personalisation comes from the gates only, as
    in the paper.
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        tower_hidden: Sequence[int],
        gate_hidden: Sequence[int],
        gamma: float,
        epnet_gate: str,
        dropout: float,
        personalize_params: bool = True,
    ):
        super().__init__()
        if epnet_gate not in EPNET_GATES:
            raise ValueError(f"epnet_gate must be one of {EPNET_GATES}, got {epnet_gate!r}")
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if not gate_hidden or any(int(h) < 1 for h in [*gate_hidden, *tower_hidden]):
            raise ValueError(
                f"gate_hidden and tower_hidden must be >= 1, got {gate_hidden}, "
                f"{list(tower_hidden)}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.T = schema.n_tasks
        self.epnet_gate = epnet_gate
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature=False)
        self.scenario_embedding = nn.Embedding(schema.n_scenarios, embed_dim)
        nn.init.xavier_uniform_(self.scenario_embedding.weight)
        d_in = self.encoder.out_dim
        n_gate = self.encoder.n_fields if epnet_gate == "field" else d_in
        self.ep_gate = GateNU(embed_dim + d_in, gate_hidden, n_gate, gamma)
        widths = [d_in, *(int(h) for h in tower_hidden), 1]
        self.layers = nn.ModuleList(
            GroupedLinear(self.T, a, b) for a, b in zip(widths[:-1], widths[1:])
        )
        self.pp_gates = (
            nn.ModuleList(
                GateNU(embed_dim + d_in, gate_hidden, self.T * a, gamma) for a in widths[:-1]
            )
            if personalize_params
            else None
        )
        self.dropout = Dropout(dropout) if dropout else nn.Identity()

    def embedding_gate(self, fields: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """EPNet's ``delta_domain`` ``[B, F]`` or ``[B, F * d]`` (no gradient into ``fields``)."""
        return self.ep_gate(torch.cat([domain, fields.detach().flatten(1)], dim=1))

    def personalized_embedding(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``O_ep`` ``[B, F * d]`` and the scenario embedding ``[B, d]``."""
        fields = self.encoder.fields(batch)  # [B, F, d]
        domain = self.scenario_embedding(batch.scenario)  # [B, d]
        delta = self.embedding_gate(fields, domain)
        if self.epnet_gate == "field":
            return (fields * delta.unsqueeze(-1)).flatten(1), domain
        return fields.flatten(1) * delta, domain

    @staticmethod
    def ppnet_prior(o_ep: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """PPNet's gate input ``e_s ⊕ sg(O_ep)`` (no gradient into EPNet)."""
        return torch.cat([domain, o_ep.detach()], dim=1)

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` and a zero auxiliary loss."""
        o_ep, domain = self.personalized_embedding(batch)
        prior = self.ppnet_prior(o_ep, domain) if self.pp_gates is not None else None
        h = o_ep.unsqueeze(1).expand(-1, self.T, -1)  # [B, T, D]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if self.pp_gates is not None:
                h = h * self.pp_gates[i](prior).view(h.shape)
            h = layer(h)  # [B, T, width]
            if i < last:
                h = self.dropout(torch.relu(h))
        logits = h.squeeze(-1)
        return ModelOutput(logits, zero_aux(logits))


def build_epnet(
    schema: DatasetSchema,
    embed_dim: int,
    tower_hidden: Sequence[int],
    gate_hidden: Sequence[int],
    gamma: float,
    epnet_gate: str,
    dropout: float,
) -> PEPNet:
    """EPNet alone: PEPNet without PPNet's tower gates."""
    return PEPNet(
        schema,
        embed_dim=embed_dim,
        tower_hidden=tower_hidden,
        gate_hidden=gate_hidden,
        gamma=gamma,
        epnet_gate=epnet_gate,
        dropout=dropout,
        personalize_params=False,
    )
