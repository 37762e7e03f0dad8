"""Cross-stitch networks for multi-scenario multi-task data."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mssbench.nn import FeatureEncoder, GroupedMLP, gather_scenario, zero_aux
from mssbench.spec import Batch, DatasetSchema, ModelOutput


class CrossStitchUnit(nn.Module):
    """Linear mixing of ``C`` column activations: ``x~_t = sum_u alpha_{t,u} x_u``.

    ``alpha`` is ``[C, C]`` (one scalar per pair of columns, the paper's unit) or, with
    ``per_unit``, ``[C, C, d]`` (one scalar per pair and hidden unit). It starts at ``self_init``
    on the diagonal and ``(1 - self_init) / (C - 1)`` off it, so rows sum to 1; it is not
    projected back onto that simplex during training (as in the paper). With one column the
    unit starts at the identity.

    **Learning-rate multiplier without a parameter group.** The stored parameter is
    ``alpha_raw`` and ``alpha = lr_scale * alpha_raw`` (``alpha_raw`` starts at
    ``alpha_init / lr_scale``). The gradient with respect to ``alpha_raw`` is ``lr_scale`` times
    that with respect to ``alpha``, and Adam's step is invariant to a constant gradient scale, so
    Adam moves ``alpha_raw`` by about ``lr`` per step and ``alpha`` by about ``lr_scale * lr``:
    the same trajectory as giving ``alpha`` its own parameter group with ``lr_scale`` times the
    learning rate. The equivalence is exact up to two details: Adam's ``eps`` acts on the scaled
    gradient, i.e. like ``eps / lr_scale`` for ``alpha``, and (coupled) weight decay ``wd`` on
    ``alpha_raw`` acts on ``alpha`` like ``wd / lr_scale**2``, i.e. ``alpha`` is practically
    not decayed. This keeps the runner's single optimiser over ``model.parameters()``.

    Args:
        n_columns: Number of columns ``C``.
        width: Width ``d`` of the mixed activations.
        self_init: Initial diagonal ``alpha``.
        per_unit: One ``alpha`` per pair and hidden unit instead of one per pair.
        lr_scale: Effective learning-rate multiplier of ``alpha`` under Adam.
    """

    def __init__(
        self, n_columns: int, width: int, self_init: float, per_unit: bool, lr_scale: float
    ):
        super().__init__()
        if lr_scale <= 0:
            raise ValueError(f"alpha_lr_scale must be > 0, got {lr_scale}")
        self.lr_scale = float(lr_scale)
        self.per_unit = per_unit
        off = (1.0 - self_init) / (n_columns - 1) if n_columns > 1 else 0.0
        diag = self_init if n_columns > 1 else 1.0
        init = torch.full((n_columns, n_columns), off)
        init.fill_diagonal_(diag)
        if per_unit:
            init = init.unsqueeze(-1).expand(-1, -1, width).clone()
        self.alpha_raw = nn.Parameter(init / self.lr_scale)

    @property
    def alpha(self) -> torch.Tensor:
        """The mixing weights, ``[C, C]`` or ``[C, C, d]`` (row ``t`` mixes into column ``t``)."""
        return self.alpha_raw * self.lr_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix ``x`` ``[B, C, d]`` across columns; returns ``[B, C, d]``."""
        if self.per_unit:
            return torch.einsum("tud,bud->btd", self.alpha, x)
        return torch.einsum("tu,bud->btd", self.alpha, x)


class CrossStitch(nn.Module):
    """Cross-stitch networks, tabular version.

    Paper: Misra, Shrivastava, Gupta, Hebert, "Cross-stitch Networks for Multi-task Learning",
    CVPR 2016, https://arxiv.org/abs/1604.03539.

    Encoded input -> shared input layer (``Linear -> ReLU``, ``input_width``) -> one MLP column
    per task, ``column_hidden`` (each layer ``Linear -> BN -> ReLU -> Dropout``), with a
    cross-stitch unit (:class:`CrossStitchUnit`) after every hidden layer -> one tower per column
    (``tower_hidden``, then one logit).

    Faithful to the paper: the unit ``x~_t = sum_u alpha_{t,u} x_u`` with one scalar per pair of
    columns and layer, initialised at ``(alpha_S, alpha_D) = (0.9, 0.1)`` (generalised to
    ``0.1 / (C - 1)`` off the diagonal), unconstrained during training, with a larger learning
    rate (x100 here, via reparameterisation; see :class:`CrossStitchUnit`).

    Differences from the paper (Misra et al., CVPR 2016, arXiv:1604.03539): MLP columns over
    tabular features instead of AlexNet columns over images; a shared input layer in front of
    the columns; the columns are trained jointly from a random initialisation (the paper found
    columns initialised from single-task networks better); the optional per-unit ``alpha``.

    Multi-scenario handling (our adaptation): the scenario id is an embedded input field
    (``scenario_as_feature``). ``scenario_towers=False`` (default) gives one column per
    task; ``scenario_towers=True`` one column per (scenario, task), all computed for every sample
    (the units mix all of them), each sample's own scenario's logits picked by gather.

    Args:
        schema: Dataset schema.
        embed_dim: Width of every field embedding.
        input_width: Width of the shared input layer.
        column_hidden: Hidden widths of each column; a cross-stitch unit follows each.
        tower_hidden: Hidden widths of each tower (then a linear map to one logit).
        dropout: Dropout in columns and towers.
        alpha_self: Initial same-column weight ``alpha_S``.
        alpha_per_unit: One ``alpha`` per pair of columns and hidden unit (``[C, C, d]``).
        alpha_lr_scale: Effective learning-rate multiplier of the ``alpha`` under Adam.
        scenario_towers: A column (and tower) per (scenario, task), see above.
        scenario_as_feature: Feed the scenario id as an input field.
    """

    def __init__(
        self,
        schema: DatasetSchema,
        embed_dim: int,
        input_width: int,
        column_hidden: Sequence[int],
        tower_hidden: Sequence[int],
        dropout: float,
        alpha_self: float,
        alpha_per_unit: bool,
        alpha_lr_scale: float,
        scenario_towers: bool,
        scenario_as_feature: bool,
    ):
        super().__init__()
        if not column_hidden:
            raise ValueError("column_hidden must name at least one layer")
        self.S, self.T = schema.n_scenarios, schema.n_tasks
        self.scenario_towers = bool(scenario_towers)
        self.C = self.S * self.T if self.scenario_towers else self.T
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature)
        self.input_layer = nn.Sequential(nn.Linear(self.encoder.out_dim, input_width), nn.ReLU())
        self.layers = nn.ModuleList()
        self.stitches = nn.ModuleList()
        width = input_width
        for h in column_hidden:
            self.layers.append(GroupedMLP(self.C, width, [h], dropout))
            self.stitches.append(
                CrossStitchUnit(self.C, h, alpha_self, alpha_per_unit, alpha_lr_scale)
            )
            width = h
        self.towers = GroupedMLP(self.C, width, tower_hidden, dropout, out_dim=1)

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` and a zero auxiliary loss."""
        h = self.input_layer(self.encoder(batch))  # [B, input_width], shared by all columns
        for layer, stitch in zip(self.layers, self.stitches):
            h = stitch(layer(h))  # [B, C, h]
        out = self.towers(h).squeeze(-1)  # [B, C]
        if self.scenario_towers:
            out = gather_scenario(out.view(-1, self.S, self.T), batch.scenario)  # [B, T]
        return ModelOutput(out, zero_aux(out))
