"""HMoE: label-space combination across scenarios with gradient blocking."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from mssbench_hmoe import DEFAULTS, mssbench_register_models
from mssbench_hmoe.model import HMoE, label_space_logit

from mssbench.spec import Batch
from mssbench.testing import make_schema
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # 3 scenarios, tasks ctr and ctcvr
S, T = SCHEMA.n_scenarios, SCHEMA.n_tasks
SMALL = {"embed_dim": 4, "n_experts": 3, "expert_hidden": [12, 8], "tower_hidden": [6]}


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return HMoE(SCHEMA, **{**DEFAULTS, **SMALL, **overrides}).eval()


def batch(n=48, seed=1, scenario=None):
    b = make_split(SCHEMA, n, seed=seed).batch(slice(0, n))
    if scenario is not None:
        b = Batch(b.categorical, b.numeric, torch.full_like(b.scenario, scenario), b.labels)
    return b


def test_spec():
    [spec] = mssbench_register_models()
    assert spec.name == "hmoe" and spec.version == 2
    assert spec.defaults["label_space"] is True
    assert spec.tags["scenario_handling"]


@settings(max_examples=50, deadline=None)
@given(
    z=st.lists(st.floats(-60, 60), min_size=S, max_size=S),
    w=st.lists(st.floats(-8, 8), min_size=S, max_size=S),
    s=st.integers(0, S - 1),
)
def test_label_space_logit_is_the_logit_of_the_mixed_probability(z, w, s):
    logits = torch.tensor(z, dtype=torch.float64).view(1, S, 1)
    log_w = torch.log_softmax(torch.tensor(w, dtype=torch.float64), 0).view(1, 1, S)
    got = label_space_logit(logits, log_w, torch.tensor([s]))
    assert torch.isfinite(got).all()
    p = (log_w.exp().view(S) * torch.sigmoid(logits.view(S))).sum()
    if 1e-9 < p < 1 - 1e-9:  # where the naive formula is still exact enough
        assert abs(got.item() - torch.logit(p).item()) < 1e-6 * max(1.0, abs(got.item()))


def test_own_weight_one_gives_the_own_tower():
    model = build()
    b = batch()
    with torch.no_grad():
        x = model.encoder(b)
        z = model.scenario_logits(x)
        own = torch.full((len(b), T, S), float("-inf"))
        own.scatter_(2, b.scenario.view(-1, 1, 1).expand(-1, T, 1), 0.0)
        got = label_space_logit(z, own, b.scenario)
        expected = z[torch.arange(len(b)), b.scenario]
        assert torch.allclose(got, expected, atol=1e-5)
        # ... and the ablation returns the own tower directly.
        ablation = build(label_space=False)
        z0 = ablation.scenario_logits(ablation.encoder(b))
        assert torch.equal(ablation(b).logits, z0[torch.arange(len(b)), b.scenario])


def test_label_weights_sum_to_one_and_mix_other_scenarios():
    model = build()
    b = batch()
    with torch.no_grad():
        w = model.log_label_weights(model.encoder(b), b.scenario).exp()
        assert torch.allclose(w.sum(-1), torch.ones(len(b), T))
        full = model(b).logits
        own = model.scenario_logits(model.encoder(b))[torch.arange(len(b)), b.scenario]
    assert (full - own).abs().max() > 1e-4


def test_other_scenarios_towers_get_no_gradient():
    """Rows of scenario 0 train only scenario 0's towers; shared parts and the label-space gate
    are trained."""
    model = build().train()
    b = batch(scenario=0)
    logits, aux = model(b)
    (F.binary_cross_entropy_with_logits(logits, b.labels) + aux).backward()
    towers = model.towers
    for param in [*(lin.weight for lin in towers.linears), towers.head.weight]:
        grad = param.grad.view(S, T, *param.shape[1:])
        assert grad[0].abs().sum() > 0
        assert not grad[1:].any(), "another scenario's tower was trained"
    assert model.experts.linears[0].weight.grad.abs().sum() > 0
    assert model.scenario_weights.weight.grad.abs().sum() > 0
    # ... while their predictions still enter the forward pass.
    with torch.no_grad():
        before = model.eval()(b).logits
        towers.head.bias.view(S, T)[1] += 2.0
        assert (model(b).logits - before).abs().min() > 1e-6


def test_build_rejects_bad_values():
    with pytest.raises(ValueError, match="n_experts"):
        build(n_experts=0)
    with pytest.raises(ValueError, match="expert_hidden"):
        build(expert_hidden=[])
    with pytest.raises(TypeError):
        build(not_a_param=1)
