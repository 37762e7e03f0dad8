"""M2M: generated (meta) layers, meta attention over experts and residual meta towers."""

import pytest
import torch
import torch.nn.functional as F
from mssbench_m2m import DEFAULTS, mssbench_register_models
from mssbench_m2m.model import LEAKY_SLOPE, M2M, MetaLinear

from mssbench.spec import Batch
from mssbench.testing import make_schema
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # 3 scenarios, tasks ctr and ctcvr
S, T = SCHEMA.n_scenarios, SCHEMA.n_tasks
SMALL = {
    "embed_dim": 4,
    "n_experts": 3,
    "expert_hidden": [10, 6],
    "meta_dim": 5,
    "meta_tower_layers": 2,
    "dropout": 0.0,
}


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return M2M(SCHEMA, **{**DEFAULTS, **SMALL, **overrides}).eval()


def batch(n=40, seed=1):
    return make_split(SCHEMA, n, seed=seed).batch(slice(0, n))


def test_spec():
    [spec] = mssbench_register_models()
    assert spec.name == "m2m" and spec.version == 2
    assert spec.tags["scenario_handling"]


def test_meta_linear_is_each_samples_own_generated_map():
    """Against a per-sample loop: W(c_s) = reshape(A c_s + a), b(c_s) = B c_s + b."""
    torch.manual_seed(0)
    meta = MetaLinear(cond_dim=3, n_groups=2, in_dim=4, out_dim=5)
    cond = torch.randn(S, 3)
    x = torch.randn(7, 2, 4)
    scenario = torch.tensor([0, 2, 1, 1, 0, 2, 2])
    got = meta(x, cond, scenario)
    for i, s in enumerate(scenario.tolist()):
        w = (meta.weight_gen.weight @ cond[s] + meta.weight_gen.bias).view(2, 4, 5)
        b = (meta.bias_gen.weight @ cond[s] + meta.bias_gen.bias).view(2, 5)
        for g in range(2):
            assert torch.allclose(got[i, g], x[i, g] @ w[g] + b[g], atol=1e-5)
    # Extra leading dimensions share the sample's maps.
    many = meta(x.unsqueeze(1).expand(-1, 3, -1, -1), cond, scenario)
    assert torch.allclose(many[:, 1], got, atol=1e-6)


def test_attention_weights_are_a_softmax_over_experts():
    model = build()
    b = batch()
    experts = model.expert_outputs(b)
    k, r = model.knowledge()
    alpha = model.attention_weights(experts, k, r, b.scenario)
    assert alpha.shape == (len(b), T, SMALL["n_experts"])
    assert torch.allclose(alpha.sum(-1), torch.ones(len(b), T))
    assert (alpha[:, 0] - alpha[:, 1]).abs().max() > 1e-4, "tasks attend alike"


def test_one_expert_and_zero_generated_towers_is_a_residual_mlp():
    """With one expert R_t = E_1; with the tower generators at zero, each meta layer is
    LeakyReLU(L) and the logit is a linear map of it."""
    model = build(n_experts=1)
    with torch.no_grad():
        for layer in model.tower_layers:
            for gen in (layer.weight_gen, layer.bias_gen):
                gen.weight.zero_()
                gen.bias.zero_()
    b = batch()
    with torch.no_grad():
        h = model.expert_outputs(b)[:, 0]  # [B, H]
        for _ in model.tower_layers:
            h = F.leaky_relu(h, LEAKY_SLOPE)  # generated map 0, residual h
        expected = torch.stack(
            [h @ model.heads.weight[t, :, 0] + model.heads.bias[t, 0] for t in range(T)], dim=1
        )
        assert torch.allclose(model(b).logits, expected, atol=1e-5)


def test_scenario_knowledge_moves_only_its_own_scenarios_rows():
    model = build()
    b = batch()
    before = model(b).logits.detach()
    with torch.no_grad():
        model.scenario_embedding.weight[1] += 1.0
    changed = ((model(b).logits.detach() - before).abs() > 1e-6).any(-1)
    mine = b.scenario == 1
    assert changed[mine].all()
    assert not changed[~mine].any()


def test_task_tower_generators_are_per_task():
    model = build()
    b = batch()
    before = model(b).logits.detach()
    H = SMALL["expert_hidden"][-1]
    layer = model.tower_layers[-1]
    with torch.no_grad():  # the bias generated for task 1 only
        layer.bias_gen.bias[H : 2 * H] += 1.0
    after = model(b).logits.detach()
    assert torch.equal(after[:, 0], before[:, 0])
    assert (after[:, 1] - before[:, 1]).abs().max() > 1e-4


def test_rows_do_not_attend_to_each_other():
    """The field transformer attends within a row (Scenario-Wise-Rec's M2M feeds a 2-D batch
    to nn.Transformer, which then attends across the rows)."""
    model = build(field_transformer_layers=1)
    b = batch()
    with torch.no_grad():
        full = model(b).logits
        one = model(Batch(*(t[3:4] for t in b))).logits
    assert torch.allclose(one, full[3:4], atol=1e-5)


def test_build_rejects_bad_values():
    with pytest.raises(ValueError, match="n_heads"):
        build(n_heads=3)
    with pytest.raises(ValueError, match="n_experts"):
        build(n_experts=0)
    with pytest.raises(ValueError, match="expert_hidden"):
        build(expert_hidden=[])
    with pytest.raises(TypeError):
        build(not_a_param=1)
