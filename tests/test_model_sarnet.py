"""SAR-Net: scenario-aware attention, scenario-specific transfer, shared and specific experts."""

import pytest
import torch
from mssbench_sarnet import DEFAULTS, mssbench_register_models
from mssbench_sarnet.model import SARNet

from mssbench.spec import Batch
from mssbench.testing import make_schema
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # 3 scenarios, tasks ctr and ctcvr
S, T = SCHEMA.n_scenarios, SCHEMA.n_tasks
SMALL = {
    "embed_dim": 4,
    "attention_dim": 3,
    "n_shared_experts": 2,
    "n_specific_experts": 2,
    "expert_hidden": [8],
    "tower_hidden": [6],
    "dropout": 0.0,
}


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return SARNet(SCHEMA, **{**DEFAULTS, **SMALL, **overrides}).eval()


def batch(n=48, seed=1):
    return make_split(SCHEMA, n, seed=seed).batch(slice(0, n))


def logits(model, b):
    with torch.no_grad():
        return model(b).logits


def test_spec():
    [spec] = mssbench_register_models()
    assert spec.name == "sarnet" and spec.version == 2
    assert "adaptation" in spec.summary
    assert (spec.defaults["n_shared_experts"], spec.defaults["n_specific_experts"]) == (8, 2)


def test_attention_weights_sum_to_one_and_follow_the_scenario():
    model = build()
    b = batch()
    fields = model.encoder.fields(b)
    w = model.attention_weights(fields, b.scenario)
    assert w.shape == (len(b), model.encoder.n_fields)
    assert torch.allclose(w.sum(-1), torch.ones(len(b)))
    other = model.attention_weights(fields, (b.scenario + 1) % S)
    assert (w - other).abs().max() > 1e-4


def test_transfer_starts_as_identity_and_is_per_scenario():
    model = build()
    b = batch()
    with torch.no_grad():
        h = model.transferred_input(b)
        fields = model.encoder.fields(b)
        w = model.attention_weights(fields, b.scenario)
        pooled = torch.einsum("bf,bfd->bd", w, model.value(fields))
        plain = torch.cat([fields.flatten(1), pooled, model.scenario_embedding(b.scenario)], 1)
        assert torch.equal(h, plain)
        model.transfer_bias[2] += 1.0
        moved = (model.transferred_input(b) - h).abs().amax(-1) > 0
    assert torch.equal(moved, b.scenario == 2)


def test_specific_experts_serve_their_own_scenario_only():
    model = build()
    b = batch()
    before = logits(model, b)
    k, m = SMALL["n_shared_experts"], SMALL["n_specific_experts"]
    group = slice(k + 1 * m, k + 2 * m)  # scenario 1's experts
    with torch.no_grad():
        model.experts.linears[0].bias[group] += 1.0
    changed = ((logits(model, b) - before).abs() > 1e-6).any(-1)
    assert changed[b.scenario == 1].all()
    assert not changed[b.scenario != 1].any()


def test_shared_experts_serve_every_scenario():
    model = build()
    b = batch()
    before = logits(model, b)
    with torch.no_grad():
        model.experts.linears[0].bias[0] += 1.0
    assert ((logits(model, b) - before).abs() > 1e-6).any(-1).all()


def test_gates_are_per_scenario_and_task():
    model = build()
    b = batch()
    before = logits(model, b)
    n = SMALL["n_shared_experts"] + SMALL["n_specific_experts"]
    rows = (0 * T + 1) * n  # scenario 0, task 1
    with torch.no_grad():
        model.gates.weight[rows : rows + n] *= -5.0
    changed = (logits(model, b) - before).abs() > 1e-6
    assert changed[b.scenario == 0, 1].all()
    assert not changed[b.scenario != 0].any() and not changed[:, 0].any()


def test_no_specific_experts_is_valid():
    model = build(n_specific_experts=0)
    b = batch()
    assert logits(model, b).shape == (len(b), T)
    other = Batch(b.categorical, b.numeric, (b.scenario + 1) % S, b.labels)
    assert (logits(model, b) - logits(model, other)).abs().max() > 1e-5


def test_build_rejects_bad_values():
    with pytest.raises(ValueError, match="n_shared_experts"):
        build(n_shared_experts=0, n_specific_experts=0)
    with pytest.raises(ValueError, match="attention_dim"):
        build(attention_dim=0)
    with pytest.raises(TypeError):
        build(not_a_param=1)
