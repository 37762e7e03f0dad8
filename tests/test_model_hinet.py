"""HiNet: scenario extraction (SEI, SAN) and task extraction (CGC per scenario and task)."""

import pytest
import torch
from mssbench_hinet import DEFAULTS, mssbench_register_models
from mssbench_hinet.model import HiNet

from mssbench.spec import Batch
from mssbench.testing import make_schema
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # 3 scenarios, tasks ctr and ctcvr
S, T = SCHEMA.n_scenarios, SCHEMA.n_tasks
SMALL = {
    "embed_dim": 4,
    "n_shared_subexperts": 2,
    "n_specific_subexperts": 3,
    "subexpert_hidden": [10, 6],
    "san_hidden": [8],
    "n_specific_experts": 2,
    "n_shared_experts": 2,
    "expert_hidden": [8],
    "tower_hidden": [6],
    "dropout": 0.0,
}


def build(schema=SCHEMA, seed=0, **overrides):
    torch.manual_seed(seed)
    return HiNet(schema, **{**DEFAULTS, **SMALL, **overrides}).eval()


def batch(n=48, seed=1, schema=SCHEMA):
    return make_split(schema, n, seed=seed).batch(slice(0, n))


def relu_mlp(x, grouped, group):
    """Group ``group`` of a batch-norm-free GroupedMLP as a plain ReLU MLP."""
    for linear in grouped.linears:
        x = torch.relu(x @ linear.weight[group] + linear.bias[group])
    if grouped.head is not None:
        x = x @ grouped.head.weight[group] + grouped.head.bias[group]
    return x


def test_defaults_follow_the_official_code():
    [spec] = mssbench_register_models()
    d = spec.defaults
    assert (d["n_shared_subexperts"], d["n_specific_subexperts"]) == (5, 5)
    assert d["subexpert_hidden"] == d["expert_hidden"] == d["tower_hidden"] == [128, 64]
    assert (d["n_specific_experts"], d["n_shared_experts"]) == (2, 2)
    assert d["dropout"] == 0.5
    assert spec.tags["scenario_handling"]


def test_one_scenario_one_expert_per_group_is_a_shared_bottom_model():
    """S = 1, one sub-expert per SEI module, one specific CGC expert per task and no shared
    one: ``logit_t = tower_t(expert_t([0, mlp_specific(x), mlp_shared(x)]))``."""
    schema = make_schema(n_scenarios=1)
    model = build(
        schema,
        n_shared_subexperts=1,
        n_specific_subexperts=1,
        n_specific_experts=1,
        n_shared_experts=0,
    )
    b = batch(schema=schema)
    with torch.no_grad():
        x = model.encoder(b)
        subs = model.scenario_layer.subexperts
        shared, specific = relu_mlp(x, subs, 0), relu_mlp(x, subs, 1)
        h = torch.cat([torch.zeros_like(shared), specific, shared], dim=1)
        expected = torch.stack(
            [
                relu_mlp(relu_mlp(h, model.task_layer.experts, t), model.towers, t).squeeze(-1)
                for t in range(T)
            ],
            dim=1,
        )
        got = model(b).logits
    assert (got - expected).abs().max() < 1e-5


def test_san_weights_cover_the_other_scenarios_only():
    model = build()
    w = model.scenario_layer.san_weights()
    assert w.shape == (S, S)
    assert torch.equal(w.diagonal(), torch.zeros(S))
    assert torch.allclose(w.sum(-1), torch.ones(S))
    one = build(make_schema(n_scenarios=1)).scenario_layer.san_weights()
    assert torch.equal(one, torch.zeros(1, 1))


def test_own_specific_experts_reach_own_rows_directly_and_other_rows_through_san():
    model = build()
    layer = model.scenario_layer
    b = batch()
    x = model.encoder(b).detach()
    with torch.no_grad():
        before = layer(x, b.scenario)
        k, m = layer.n_shared, layer.n_specific
        groups = slice(k, k + m)  # scenario 0's sub-experts
        for linear in layer.subexperts.linears:
            linear.bias[groups] += 1.0
        after = layer(x, b.scenario)
    H = layer.subexperts.out_dim
    changed = ((after - before).abs() > 1e-6).view(-1, 3, H).any(-1)  # [B, (SAN, own, shared)]
    mine = b.scenario == 0
    assert mine.any() and (~mine).any()
    assert changed[mine, 1].all() and not changed[mine, 0].any()
    assert changed[~mine, 0].all() and not changed[~mine, 1].any()
    assert not changed[:, 2].any()


def test_cgc_gates_are_a_real_mixture():
    """Weights sum to 1 and vary with the input (the official code's softmax over a length-1
    axis makes every weight 1)."""
    model = build()
    b = batch()
    h = model.scenario_layer(model.encoder(b), b.scenario)
    w = model.task_layer.gate_weights(h, b.scenario)
    assert w.shape == (len(b), T, SMALL["n_specific_experts"] + SMALL["n_shared_experts"])
    assert torch.allclose(w.sum(-1), torch.ones(len(b), T))
    assert w.std(0).max() > 1e-3


def test_task_experts_and_towers_are_private_to_their_scenario_and_task():
    model = build()
    b = batch()
    before = model(b).logits.detach()
    n_sp = SMALL["n_specific_experts"]
    group = 1 * T + 0  # scenario 1, task 0
    with torch.no_grad():
        for linear in model.task_layer.experts.linears:
            linear.bias[group * n_sp : (group + 1) * n_sp] += 1.0
        model.towers.head.bias[group] += 0.5
    changed = (model(b).logits.detach() - before).abs() > 1e-6
    assert changed[b.scenario == 1, 0].all()
    assert not changed[b.scenario != 1].any()
    assert not changed[:, 1].any()


def test_batch_order_is_kept_for_mixed_scenarios():
    model = build()
    b = batch()
    with torch.no_grad():
        full = model(b).logits
        for s in range(S):
            rows = b.scenario == s
            part = model(Batch(*(t[rows] for t in b))).logits
            assert (part - full[rows]).abs().max() < 1e-5


def test_build_rejects_bad_values():
    with pytest.raises(ValueError, match="n_specific_experts"):
        build(n_specific_experts=0, n_shared_experts=0)
    with pytest.raises(ValueError, match="n_shared_subexperts"):
        build(n_shared_subexperts=0)
    with pytest.raises(ValueError, match="expert_hidden"):
        build(expert_hidden=[])
    with pytest.raises(ValueError, match="dropout"):
        build(dropout=1.0)
    with pytest.raises(TypeError):
        build(not_a_param=1)
