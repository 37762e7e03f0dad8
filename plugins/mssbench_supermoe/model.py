"""SUPERMOE-style model: a field-token transformer with sparse mixture-of-experts FFNs.

Everything here is our adaptation (README.md of this plugin); only the paper's abstract
is known (Jiang et al., arXiv:2207.04648, 2022).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mssbench.nn import (
    Dropout,
    FeatureEncoder,
    GroupedLinear,
    GroupedMLP,
    SelfAttention,
    gather_scenario,
)
from mssbench.spec import Batch, DatasetSchema, ModelOutput

#: Standard deviation of the learned token embeddings (field ids, scenario, tasks) at init.
TOKEN_INIT_STD = 0.02


class Routing(NamedTuple):
    """One MoE layer's routing decision for ``N`` tokens.

    Attributes:
        logits: ``[N, E]`` router logits, noisy in training mode.
        probs: ``[N, E]`` router probabilities ``softmax(logits)``.
        experts: ``[N, k]`` int64 ids of each token's top-``k`` experts.
        weights: ``[N, k]`` the top-``k`` probabilities renormalised to sum to 1.
    """

    logits: torch.Tensor
    probs: torch.Tensor
    experts: torch.Tensor
    weights: torch.Tensor


def load_balance_loss(probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Switch-style load-balance loss ``L_bal = E * sum_i f_i * P_i``.

    Args:
        probs: ``[N, E]`` router probabilities of ``N`` tokens.
        experts: ``[N, k]`` the experts each token is dispatched to.

    Returns:
        Scalar. ``f_i`` is the share of the ``N * k`` (token, slot) assignments that go to expert
        ``i`` (so ``sum_i f_i = 1``) and carries no gradient; ``P_i`` is the mean probability of
        expert ``i`` over the tokens. It equals 1 under uniform routing and ``E`` when every
        token goes to one expert with probability 1 (``k = 1``).
    """
    n_experts = probs.shape[-1]
    slots = experts.reshape(-1)
    # A scatter, not bincount: bincount sizes its output from the data (a host sync on GPUs).
    counts = probs.new_zeros(n_experts).scatter_add_(0, slots, probs.new_ones(slots.shape))
    f = counts / max(experts.numel(), 1)  # [E]
    return n_experts * (f * probs.mean(0)).sum()


class MoEFFN(nn.Module):
    """Sparsely gated expert feed-forward layer with noisy top-``k`` routing.

    Each token goes to its ``k`` most probable experts (``FFN_i = Linear -> GELU -> ... ->
    Linear``) and receives ``sum_{i in top-k} r_i * FFN_i(x)`` with the ``r_i`` renormalised
    over the top-``k``.
    There is no capacity limit, so no token is ever dropped and a token's output never depends
    on the other tokens of the batch.

    Two dispatches compute the same function (up to float summation order), chosen by
    :attr:`dispatch`:

    * ``grouped`` (:meth:`forward_grouped`; default on GPUs, version 2): every expert runs on
      every token as two batched matmuls over the stacked expert weights (``[N, d] @ [d, E*h]``,
      then ``[E, N, h] @ [E, h, d]``), and the outputs are mixed with the ``[N, E]`` routing
      weights, which are zero outside each token's top-``k``. An expert gets exactly zero
      gradient from a token it was not chosen for. ``E / k`` times the sparse matmul work, but a
      fixed number of kernels, no Python loop over experts and no host synchronisation (CUDA
      graph safe): on a launch-bound GPU the extra work is cheaper than the launches.
    * ``loop`` (:meth:`forward_loop`; default on the CPU, where arithmetic, not launches, is
      the cost): (token, slot) pairs are grouped by expert and each expert runs on its own
      tokens only. Its loop reads the per-expert counts on the host.

    Either way an expert that receives no token gets an all-zero gradient (its weights are
    slices of one stacked tensor), which is exactly the gradient of a sparse layer.

    Args:
        d_model: Token width.
        d_hidden: Hidden widths of each expert.
        n_experts: Number of experts ``E``.
        top_k: Experts per token ``k``.
        noise_std: Standard deviation of the Gaussian noise added to the router logits in
            training mode only (drawn from torch's global generator).
    """

    def __init__(
        self, d_model: int, d_hidden: Sequence[int], n_experts: int, top_k: int, noise_std: float
    ):
        super().__init__()
        self.n_experts, self.top_k, self.noise_std = n_experts, top_k, noise_std
        self.router = nn.Linear(d_model, n_experts, bias=False)
        widths = [d_model, *(int(w) for w in d_hidden), d_model]
        self.fcs = nn.ModuleList(
            GroupedLinear(n_experts, a, b) for a, b in zip(widths[:-1], widths[1:])
        )
        #: ``auto`` (``loop`` on the CPU, ``grouped`` elsewhere), ``grouped`` or ``loop``.
        self.dispatch = "auto"

    @property
    def cuda_graph_unsafe(self) -> str:
        """Why this layer cannot run in a CUDA graph ("" when it can; ``--step graph``)."""
        if self.dispatch == "loop":
            return "dispatch 'loop' reads the per-expert token counts on the host"
        return ""

    def route(self, x: torch.Tensor) -> Routing:
        """Route tokens ``x`` ``[N, d]``; noise is added only in training mode."""
        logits = self.router(x)  # [N, E]
        if self.training and self.noise_std > 0:
            logits = logits + torch.randn_like(logits) * self.noise_std
        probs = torch.softmax(logits, dim=-1)
        top, experts = probs.topk(self.top_k, dim=-1)  # [N, k]
        return Routing(logits, probs, experts, top / top.sum(-1, keepdim=True))

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert ``e``'s FFN on tokens ``x`` ``[n, d]``."""
        for fc in self.fcs[:-1]:
            x = F.gelu(x @ fc.weight[e] + fc.bias[e])  # [n, h]
        return x @ self.fcs[-1].weight[e] + self.fcs[-1].bias[e]  # [n, d]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixture output and the layer's load-balance loss (grouped dispatch).

        Args:
            x: ``[..., d]`` tokens.

        Returns:
            ``[..., d]`` outputs and the scalar ``L_bal`` of these tokens.
        """
        mode = self.dispatch
        if mode == "auto":
            mode = "loop" if x.device.type == "cpu" else "grouped"
        if mode == "loop":
            return self.forward_loop(x)
        return self.forward_grouped(x)

    def forward_grouped(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every expert on every token, mixed by the sparse routing weights (graph safe)."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # [N, d]
        route = self.route(x)
        mix = route.weights.new_zeros(route.probs.shape).scatter(1, route.experts, route.weights)
        h = x  # [N, d], shared by the experts' first layer: one GEMM for every expert
        for fc in self.fcs[:-1]:
            h = F.gelu(fc(h))  # [N, E, h]
        out = self.fcs[-1](h)  # [N, E, d]: one batched matmul over the experts
        y = torch.einsum("ne,ned->nd", mix.to(out.dtype), out)
        return y.view(shape), load_balance_loss(route.probs, route.experts)

    def forward_loop(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse dispatch: each expert on its own tokens (a loop; reads counts on the host)."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # [N, d]
        route = self.route(x)
        slot_expert = route.experts.reshape(-1)  # [N*k], slot j of token n at n*k + j
        order = torch.argsort(slot_expert, stable=True)  # slots grouped by expert
        counts = torch.bincount(slot_expert, minlength=self.n_experts)
        token = order // self.top_k  # [N*k] token of each grouped slot
        outs = [
            self.expert(e, x.index_select(0, rows))
            for e, rows in enumerate(token.split(counts.tolist()))
        ]
        grouped = torch.cat(outs)  # [N*k, d] in expert order
        slots = grouped.new_zeros(grouped.shape).index_copy(0, order, grouped)  # token order
        y = (slots.view(-1, self.top_k, shape[-1]) * route.weights.unsqueeze(-1)).sum(1)
        return y.view(shape), load_balance_loss(route.probs, route.experts)


class MoETransformerBlock(nn.Module):
    """Post-norm transformer block whose feed-forward sub-layer is an :class:`MoEFFN`.

    ``h = LN(x + Drop(MHSA(x)))``, then ``LN(h + Drop(MoEFFN(h)))``.

    Args:
        d_model: Token width.
        n_heads: Attention heads.
        d_hidden: Hidden widths of each expert.
        n_experts: Number of experts.
        top_k: Experts per token.
        noise_std: Router noise in training.
        dropout: Dropout on attention weights and on both residual branches.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_hidden: Sequence[int],
        n_experts: int,
        top_k: int,
        noise_std: float,
        dropout: float,
    ):
        super().__init__()
        self.attention = SelfAttention(d_model, n_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.moe = MoEFFN(d_model, d_hidden, n_experts, top_k, noise_std)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``[B, N, d]`` in, tokens ``[B, N, d]`` and ``L_bal`` out."""
        a = self.attention(x)
        h = self.norm1(x + self.dropout(a))
        m, balance = self.moe(h)
        return self.norm2(h + self.dropout(m)), balance


class SUPERMoE(nn.Module):
    """SUPERMOE-style multi-scenario multi-task model (our reconstruction).

    After: Jiang, Xue, Zhang, Liu, Zhu, Hao, "Learning Large-scale Universal User Representation
    with Sparse Mixture of Experts", ICML 2022 Pre-training Workshop,
    https://arxiv.org/abs/2207.04648. Only the abstract is known (an MoE transformer over user
    behaviour sequences, several downstream tasks, a loss "with task indicators" against the
    seesaw phenomenon); **every component below is our adaptation** to tabular data
    (README.md of this plugin):

    * Tokens: one per feature field (each categorical embedding and the projection of all
      numerics, as in ``FeatureEncoder.fields``) plus a learned field-id embedding, one scenario
      token ``e_s`` and one learned task-indicator token per task; no positional encoding.
    * ``n_layers`` post-norm blocks: multi-head self-attention, then an MoE-FFN with noisy
      top-``k`` routing (noise std ``router_noise / n_experts``, training only).
    * Readout: task ``t``'s tower reads the final state of task token ``t``; optionally one tower
      per (scenario, task), picked by gather.
    * ``aux_loss = balance_coef * sum_layers L_bal`` in training mode and 0 in eval mode.
    * The task-indicator loss ``sum_t sum_b d_bt l_t(b) / max(1, sum_b d_bt)`` is the harness's
      per-task mean BCE: every task is labelled on every row of our datasets (``d_bt = 1``).

    Args:
        schema: Dataset schema.
        d_model: Token width (field embeddings are this wide too).
        n_layers: Transformer blocks.
        n_heads: Attention heads; must divide ``d_model``.
        n_experts: Experts per MoE layer ``E``.
        top_k: Experts per token ``k``, ``1 <= k <= E``.
        expert_hidden: Hidden widths of each expert FFN (``GELU`` between layers).
        router_noise: Router-noise std in units of ``1 / n_experts`` (0 disables it).
        balance_coef: Weight of the summed load-balance losses.
        tower_hidden: Hidden widths of each task tower (ReLU, no batch norm).
        scenario_towers: One tower per (scenario, task) instead of one per task.
        dropout: Dropout in attention, residual branches and towers.
    """

    def __init__(
        self,
        schema: DatasetSchema,
        d_model: int,
        n_layers: int,
        n_heads: int,
        n_experts: int,
        top_k: int,
        expert_hidden: Sequence[int],
        router_noise: float,
        balance_coef: float,
        tower_hidden: Sequence[int],
        scenario_towers: bool,
        dropout: float,
    ):
        super().__init__()
        if d_model < 1 or n_heads < 1 or d_model % n_heads:
            raise ValueError(f"n_heads ({n_heads}) must divide d_model ({d_model})")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k must lie in [1, n_experts = {n_experts}], got {top_k}")
        if router_noise < 0 or balance_coef < 0:
            raise ValueError("router_noise and balance_coef must be >= 0")
        self.S, self.T = schema.n_scenarios, schema.n_tasks
        self.balance_coef = balance_coef
        self.scenario_towers = bool(scenario_towers)
        self.encoder = FeatureEncoder(schema, d_model)
        self.field_id = nn.Parameter(torch.randn(self.encoder.n_fields, d_model) * TOKEN_INIT_STD)
        self.scenario_token = nn.Parameter(torch.randn(self.S, d_model) * TOKEN_INIT_STD)
        self.task_tokens = nn.Parameter(torch.randn(self.T, d_model) * TOKEN_INIT_STD)
        noise_std = router_noise / n_experts
        self.blocks = nn.ModuleList(
            MoETransformerBlock(
                d_model, n_heads, expert_hidden, n_experts, top_k, noise_std, dropout
            )
            for _ in range(n_layers)
        )
        n_towers = self.S * self.T if scenario_towers else self.T
        self.towers = GroupedMLP(
            n_towers, d_model, tower_hidden, dropout, batch_norm=False, out_dim=1
        )
        #: Each layer's ``L_bal`` from the last forward pass (detached), for diagnostics.
        self.last_balance: tuple[torch.Tensor, ...] = ()

    def _check_scenarios(self, scenario: torch.Tensor) -> None:
        if not scenario.numel() or (scenario.is_cuda and torch.cuda.is_current_stream_capturing()):
            # A CUDA graph cannot read values back; the eager warm-up steps checked the batch.
            return
        lo, hi = torch.aminmax(scenario)
        if int(lo) < 0 or int(hi) >= self.S:
            bad = sorted({int(s) for s in scenario.tolist() if not 0 <= s < self.S})
            raise ValueError(
                f"scenario ids {bad} outside [0, {self.S}): the model was built for {self.S} "
                "scenarios"
            )

    def field_tokens(self, batch: Batch) -> torch.Tensor:
        """Feature-field tokens with their field-id embeddings added, ``[B, F, d]``."""
        return self.encoder.fields(batch) + self.field_id

    def forward_tokens(self, fields: torch.Tensor, scenario: torch.Tensor) -> ModelOutput:
        """Run the encoder and towers on given field tokens.

        Args:
            fields: ``[B, F, d]`` field tokens (field-id embeddings already added).
            scenario: ``[B]`` scenario ids.

        Returns:
            Logits ``[B, T]`` and the weighted load-balance loss (0 in eval mode).
        """
        b = fields.shape[0]
        tokens = torch.cat(
            [
                fields,
                self.scenario_token[scenario].unsqueeze(1),  # [B, 1, d]
                self.task_tokens.expand(b, -1, -1),  # [B, T, d]
            ],
            dim=1,
        )  # [B, F + 1 + T, d]
        balances = []
        for block in self.blocks:
            tokens, balance = block(tokens)
            balances.append(balance)
        self.last_balance = tuple(x.detach() for x in balances)
        task_states = tokens[:, -self.T :]  # [B, T, d]
        if self.scenario_towers:
            # Every scenario's towers see the sample; gather keeps its own: [B, S*T, d].
            tower_in = task_states.unsqueeze(1).expand(-1, self.S, -1, -1).flatten(1, 2)
            out = self.towers(tower_in).view(b, self.S, self.T)  # [B, S, T]
            logits = gather_scenario(out, scenario)  # [B, T]
        else:
            logits = self.towers(task_states).squeeze(-1)  # [B, T]
        if self.training:
            aux = self.balance_coef * torch.stack(balances).sum()
        else:
            aux = logits.new_zeros(())
        return ModelOutput(logits, aux)

    def forward(self, batch: Batch) -> ModelOutput:
        """Logits ``[B, T]`` and ``aux_loss`` (``balance_coef * sum L_bal``, 0 in eval)."""
        self._check_scenarios(batch.scenario)
        return self.forward_tokens(self.field_tokens(batch), batch.scenario)
