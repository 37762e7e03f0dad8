"""M3oE: STAR bottom, expert fusion by learned weights, detached gates."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mssbench_m3oe import DEFAULTS, mssbench_register_models
from mssbench_m3oe.model import M3oE, balance

from mssbench.nn import gather_scenario
from mssbench.testing import make_schema
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # 3 scenarios, tasks ctr and ctcvr
SMALL = {"embed_dim": 4, "star_hidden": [16, 12], "n_experts": 2, "expert_hidden": [10, 6]}


def build(seed=0, schema=SCHEMA, **overrides):
    torch.manual_seed(seed)
    return M3oE(schema, **{**DEFAULTS, **SMALL, **overrides}).eval()


def batch(n=48, seed=1):
    return make_split(SCHEMA, n, seed=seed).batch(slice(0, n))


def test_defaults_are_the_official_configuration():
    [spec] = mssbench_register_models()
    assert spec.defaults == {
        "embed_dim": 16,
        "star_hidden": [512, 256],
        "n_experts": 4,
        "expert_hidden": [256, 64],
        "fusion_init": 1.0,
    }


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.floats(0.01, 0.99))
def test_balance_keeps_the_own_share_and_spreads_the_rest(n, w):
    x = torch.randn(3, n, 4, dtype=torch.float64)
    got = balance(x, torch.tensor(w, dtype=torch.float64))
    for i in range(n):
        others = [x[:, j] for j in range(n) if j != i]
        rest = (1 - w) * sum(others) / (n - 1) if others else 0.0
        assert torch.allclose(got[:, i], w * x[:, i] + rest)


def test_fusion_is_gate_mixture_plus_weighted_scenario_and_task_experts():
    model, b = build(), batch()
    with torch.no_grad():
        for k, v in {"a_d": 0.3, "a_t": -0.4, "b_d": 1.5, "b_t": 0.2}.items():
            model.fusion[k].fill_(v)
        h = model.bottom(b)
        z = model.fused(h)  # [B, S, T, H]
        out = model.experts(h)
        E, S, T = model.E, model.S, model.T
        shared, scen, task = out[:, :E], out[:, E : E + S], out[:, E + S :]
        gates = torch.softmax(model.gates(h).view(-1, S, T, E), -1)
        sig = torch.sigmoid
        for s in range(S):
            for t in range(T):
                d_other = sum(scen[:, j] for j in range(S) if j != s) / (S - 1)
                t_other = sum(task[:, j] for j in range(T) if j != t) / (T - 1)
                expected = (
                    torch.einsum("be,beh->bh", gates[:, s, t], shared)
                    + sig(torch.tensor(0.3))
                    * (sig(torch.tensor(1.5)) * scen[:, s] + (1 - sig(torch.tensor(1.5))) * d_other)
                    + sig(torch.tensor(-0.4))
                    * (sig(torch.tensor(0.2)) * task[:, t] + (1 - sig(torch.tensor(0.2))) * t_other)
                )
                assert torch.allclose(z[:, s, t], expected, atol=1e-5)


def test_star_weights_of_a_scenario_only_move_its_rows():
    model, b = build(), batch()
    with torch.no_grad():
        before = model(b).logits
        model.star_scenario[1] += torch.randn_like(model.star_scenario[1])
        after = model(b).logits
    own = b.scenario == 1
    assert torch.equal(before[~own], after[~own])
    assert not torch.allclose(before[own], after[own])


def test_star_layer_multiplies_scenario_and_shared_weights():
    model, b = build(), batch()
    with torch.no_grad():
        model.star_shared.zero_()  # W_s * 0: only the biases are left in the STAR branch
        model.star_bias_scenario.zero_()
        model.star_bias_shared.zero_()
        h = model.bottom(b)
        skip = model.skip(model.encoder(b))[:, 0]
        const = model.star_mlp(torch.zeros(1, model.star_shared.shape[1]))[:, 0]
    assert torch.allclose(h, skip + const, atol=1e-6)


def test_gates_send_no_gradient_into_the_bottom():
    model, b = build().train(), batch()
    h = model.bottom(b).detach().requires_grad_()
    constant = model.experts(h).detach()  # expert outputs that do not depend on h
    model.experts.forward = lambda x: constant
    model.fused(h).sum().backward()  # h reaches z only through the gates
    assert h.grad is None
    assert model.gates.weight.grad.abs().sum() > 0


def test_own_scenario_expert_alone_when_the_balance_is_saturated():
    model, b = build(), batch()
    with torch.no_grad():
        model.fusion["b_d"].fill_(60.0)  # sigmoid = 1: no share for other scenarios' experts
        before = model(b).logits
        E = model.E
        for layer in model.experts.linears:
            layer.bias[E + 2] += torch.randn_like(layer.bias[E + 2])  # scenario 2's expert
        after = model(b).logits
    own = b.scenario == 2
    assert torch.allclose(before[~own], after[~own], atol=1e-6)
    assert not torch.allclose(before[own], after[own])


def test_fusion_weights_are_trained():
    model, b = build().train(), batch()
    torch.nn.functional.binary_cross_entropy_with_logits(model(b).logits, b.labels).backward()
    assert all(p.grad is not None and p.grad.abs() > 0 for p in model.fusion.values())


def test_towers_are_picked_by_scenario():
    model, b = build(), batch()
    with torch.no_grad():
        z = model.fused(model.bottom(b)).flatten(1, 2)
        every = model.tower_out(model.tower_hidden(z)).view(-1, model.S, model.T)
        assert torch.equal(model(b).logits, gather_scenario(every, b.scenario))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"star_hidden": [16]}, "star_hidden"),
        ({"expert_hidden": []}, "expert_hidden"),
        ({"n_experts": 0}, "n_experts"),
    ],
)
def test_bad_hyper_parameters_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(**overrides)
