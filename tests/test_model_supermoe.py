"""SUPERMOE-style model (after Jiang et al., arXiv:2207.04648, 2022; design in
plugins/mssbench_supermoe/README.md)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from mssbench_supermoe import DEFAULTS, mssbench_register_models
from mssbench_supermoe.model import MoEFFN, SUPERMoE, load_balance_loss

from mssbench.runners.trainer import fit
from mssbench.spec import Batch
from mssbench.testing import make_schema
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # 3 scenarios, 4 categorical fields + numerics, tasks ctr and ctcvr
S, T = SCHEMA.n_scenarios, SCHEMA.n_tasks
SMALL = {"d_model": 16, "n_heads": 2, "n_experts": 4, "expert_hidden": [32], "tower_hidden": [8]}


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return SUPERMoE(SCHEMA, **{**DEFAULTS, **SMALL, **overrides})


def batch(n, seed=1):
    return make_split(SCHEMA, n, seed=seed).batch(slice(0, n))


def moe(seed=0, n_experts=4, top_k=2, noise_std=0.0, d=8):
    torch.manual_seed(seed)
    return MoEFFN(d, [16], n_experts, top_k, noise_std)


def dense_reference(layer, x):
    """Every expert on every token, mixed with the dense [N, E] routing weights."""
    route = layer.route(x)
    dense = torch.zeros_like(route.probs).scatter(1, route.experts, route.weights)  # [N, E]
    outs = torch.stack([layer.expert(e, x) for e in range(layer.n_experts)], 1)  # [N, E, d]
    return (dense.unsqueeze(-1) * outs).sum(1)


def test_spec_is_labelled_and_defaults_follow_the_design():
    [spec] = mssbench_register_models()
    assert spec.name == "supermoe"
    assert "SUPERMOE-style" in spec.summary
    assert "2207.04648" in spec.paper and "Workshop" in spec.paper
    assert spec.tags["reconstruction"].startswith("SUPERMOE-style")
    assert spec.tags["scenario_handling"]
    d = spec.defaults
    assert (d["d_model"], d["n_layers"], d["n_heads"]) == (64, 2, 4)
    assert (d["n_experts"], d["top_k"], d["expert_hidden"]) == (8, 2, [256])
    assert d["router_noise"] == 1.0  # std router_noise / n_experts = 1/E
    assert d["balance_coef"] == 0.01
    assert d["scenario_towers"] is False


def test_tokens_are_fields_plus_scenario_plus_one_per_task():
    model = build()
    b = batch(5)
    fields = model.field_tokens(b)
    assert fields.shape == (5, len(SCHEMA.categorical) + 1, SMALL["d_model"])
    seen = []
    hook = model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    model.eval()(b)
    hook.remove()
    assert seen[0] == (5, fields.shape[1] + 1 + T, SMALL["d_model"])


# Item 1 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3])
def test_each_token_weights_exactly_k_experts_summing_to_one(k):
    layer = moe(top_k=k, n_experts=5).eval()
    x = torch.randn(200, 8)
    route = layer.route(x)
    dense = torch.zeros_like(route.probs).scatter(1, route.experts, route.weights)
    assert ((dense > 0).sum(1) == k).all()
    torch.testing.assert_close(dense.sum(1), torch.ones(200))
    # The chosen experts are the k most probable, and the weights keep their proportions.
    kth = route.probs.topk(k, dim=1).values[:, -1:]
    assert (route.probs.gather(1, route.experts) >= kth).all()
    chosen = route.probs.gather(1, route.experts)
    torch.testing.assert_close(route.weights, chosen / chosen.sum(1, keepdim=True))


@pytest.mark.parametrize("k", [1, 2])
def test_sparse_dispatch_equals_dense_mixture(k):
    layer = moe(top_k=k).eval()
    x = torch.randn(3, 50, 8)
    y, _ = layer(x)
    torch.testing.assert_close(y, dense_reference(layer, x.reshape(-1, 8)).view(3, 50, 8))


def test_expert_without_tokens_gets_zero_gradient_and_dispatch_stays_exact():
    layer = moe(n_experts=4, top_k=2).train()
    with torch.no_grad():  # route every token to experts 0 and 1
        layer.router.weight.zero_()
    x = torch.randn(40, 8)
    x[:, 0] = 1.0
    with torch.no_grad():
        layer.router.weight[:2, 0] = 10.0
    y, balance = layer(x)
    assert set(layer.route(x).experts.unique().tolist()) == {0, 1}
    torch.testing.assert_close(y, dense_reference(layer, x))
    (y.square().sum() + balance).backward()
    for lin in layer.fcs:
        assert lin.weight.grad[2:].abs().sum() == 0
        assert lin.weight.grad[:2].abs().sum() > 0


# Item 2 -------------------------------------------------------------------------------------


def test_balance_loss_is_one_for_uniform_balanced_routing():
    E, N, k = 4, 12, 2
    probs = torch.full((N, E), 1.0 / E)
    experts = torch.arange(N * k).remainder(E).view(N, k)  # every expert gets N*k/E slots
    torch.testing.assert_close(load_balance_loss(probs, experts), torch.tensor(1.0))


def test_balance_loss_is_E_when_one_expert_takes_everything():
    E, N = 8, 10
    probs = F.one_hot(torch.zeros(N, dtype=torch.long), E).float()
    experts = torch.zeros(N, 1, dtype=torch.long)
    torch.testing.assert_close(load_balance_loss(probs, experts), torch.tensor(float(E)))


def test_balance_loss_is_above_one_for_skewed_routing_and_trains_the_router():
    layer = moe(top_k=1, n_experts=4).train()
    x = torch.randn(64, 8)
    x[:, 0] = 3.0
    with torch.no_grad():
        layer.router.weight[0, 0] = 5.0  # prefer expert 0
    _, balance = layer(x)
    assert balance > 1.5
    # With k = 1 the renormalised weight is 1: only L_bal gives the router a gradient.
    balance.backward()
    assert layer.router.weight.grad.abs().sum() > 0


def test_aux_loss_is_coef_times_sum_of_layers_in_training_and_zero_in_eval():
    model = build(balance_coef=0.5).train()
    out = model(batch(32))
    assert len(model.last_balance) == DEFAULTS["n_layers"]
    torch.testing.assert_close(out.aux_loss, 0.5 * torch.stack(model.last_balance).sum())
    assert all(1.0 - 1e-6 <= b <= SMALL["n_experts"] for b in model.last_balance)
    assert model.eval()(batch(32)).aux_loss.item() == 0.0


# Item 3 -------------------------------------------------------------------------------------


def test_no_router_noise_in_eval():
    layer = moe(noise_std=0.5).eval()
    x = torch.randn(100, 8)
    torch.manual_seed(1)
    a = layer.route(x)
    torch.manual_seed(2)
    b = layer.route(x)
    assert torch.equal(a.logits, layer.router(x))
    assert torch.equal(a.experts, b.experts) and torch.equal(a.weights, b.weights)


def test_router_noise_in_training_has_std_noise_over_E_and_follows_the_seed():
    model = build(router_noise=1.0).train()
    layer = model.blocks[0].moe
    assert layer.noise_std == pytest.approx(1.0 / SMALL["n_experts"])
    x = torch.randn(20000, SMALL["d_model"])
    torch.manual_seed(3)
    noise = layer.route(x).logits - layer.router(x)
    assert noise.std().item() == pytest.approx(1.0 / SMALL["n_experts"], rel=0.03)
    torch.manual_seed(3)
    assert torch.equal(layer.route(x).logits - layer.router(x), noise)


def test_eval_outputs_do_not_depend_on_the_global_rng():
    model = build(dropout=0.0).eval()
    b = batch(64)
    torch.manual_seed(1)
    a = model(b).logits
    torch.manual_seed(2)
    assert torch.equal(a, model(b).logits)
    model.train()  # the router noise alone changes training outputs
    torch.manual_seed(1)
    c = model(b).logits
    torch.manual_seed(2)
    assert not torch.equal(c, model(b).logits)
    torch.manual_seed(1)
    assert torch.equal(c, model(b).logits)


# Item 4 -------------------------------------------------------------------------------------


def test_permuting_field_tokens_with_their_field_ids_leaves_outputs_unchanged():
    model = build().eval()
    b = batch(16)
    raw = model.encoder.fields(b)  # [B, F, d] without field ids
    perm = torch.randperm(raw.shape[1], generator=torch.Generator().manual_seed(0))
    assert not torch.equal(perm, torch.arange(raw.shape[1]))
    with torch.no_grad():
        base = model.forward_tokens(raw + model.field_id, b.scenario).logits
        torch.testing.assert_close(base, model(b).logits)
        moved = model.forward_tokens((raw + model.field_id)[:, perm], b.scenario).logits
        torch.testing.assert_close(moved, base, atol=1e-5, rtol=1e-5)
        # Control: permuting the values but not their field ids does change the outputs.
        swapped = model.forward_tokens(raw[:, perm] + model.field_id, b.scenario).logits
    assert (swapped - base).abs().max() > 1e-3


# Item 5 -------------------------------------------------------------------------------------


def task_indicator_loss(logits, labels, delta):
    """§3.4: sum_t sum_b d_bt * l_t(b) / max(1, sum_b d_bt)."""
    per_row = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")  # [B, T]
    return ((per_row * delta).sum(0) / delta.sum(0).clamp_min(1)).sum()


def test_task_indicator_loss_reading():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(10, 2, generator=g), (torch.rand(10, 2, generator=g) > 0.5)
    labels = labels.float()
    delta = torch.ones(10, 2)
    delta[5:, 1] = 0  # task 1 labelled on the first five rows only
    ref = task_indicator_loss(logits, labels, delta)
    # Unlabelled rows contribute nothing ...
    logits2 = logits.clone()
    logits2[5:, 1] = 100.0
    torch.testing.assert_close(task_indicator_loss(logits2, labels, delta), ref)
    # ... and each task is normalised by its own count.
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    torch.testing.assert_close(ref, bce[:, 0].mean() + bce[:5, 1].mean())


def test_harness_loss_is_the_task_indicator_loss_with_every_task_labelled():
    """All tasks are labelled on all rows (delta = 1), so the core's loss is §3.4's loss."""
    model = build(dropout=0.0, router_noise=0.0)
    assert not hasattr(model, "task_weights")  # w_t = 1
    train, valid = make_split(SCHEMA, 64, seed=1), make_split(SCHEMA, 32, seed=2)
    assert ((train.labels == 0) | (train.labels == 1)).all()
    reference = copy.deepcopy(model).train()
    out = reference(train.batch(slice(0, 64)))
    delta = torch.ones_like(train.labels)
    expected = task_indicator_loss(out.logits, train.labels, delta) + out.aux_loss
    result = fit(
        model, SCHEMA, train, valid, model_name="supermoe", device=torch.device("cpu"), seed=0,
        epochs=1, batch_size=64, eval_batch_size=64, lr=1e-3, weight_decay=0.0, patience=1,
        max_steps_per_epoch=1, progress=False, log=lambda _m: None,
    )  # fmt: skip
    assert result.state.history[0]["train_loss"] == pytest.approx(expected.item(), rel=1e-5)


# Scenarios, towers, errors ------------------------------------------------------------------


def with_scenario(b, s):
    return Batch(b.categorical, b.numeric, torch.full_like(b.scenario, s), b.labels)


def test_scenario_token_changes_the_output():
    model = build().eval()
    b = batch(8)
    with torch.no_grad():
        assert (model(with_scenario(b, 0)).logits - model(with_scenario(b, 1)).logits).abs().max()
        assert model(b).logits.shape == (8, T)


def test_scenario_towers_are_registered_trained_and_picked_by_gather():
    model = build(scenario_towers=True).train()
    assert model.towers.head.weight.shape[0] == S * T
    b = batch(256)
    logits, aux = model(b)
    (F.binary_cross_entropy_with_logits(logits, b.labels) + aux).backward()
    grad = model.towers.head.weight.grad.view(S, T, -1)
    for s in range(S):
        for t in range(T):
            assert grad[s, t].abs().sum() > 0, (s, t)
    # Changing scenario 1's towers leaves scenario 0's outputs unchanged.
    model.eval()
    probe = with_scenario(batch(8), 0)
    with torch.no_grad():
        before = model(probe).logits
        model.towers.head.bias.view(S, T, -1)[1] += 5.0
        assert torch.equal(model(probe).logits, before)
        model.towers.head.bias.view(S, T, -1)[0] += 5.0
        assert not torch.equal(model(probe).logits, before)


def test_unseen_scenario_is_an_informative_error():
    b = batch(4)
    with pytest.raises(ValueError, match=r"scenario ids \[3\] outside \[0, 3\)"):
        build().eval()(with_scenario(b, 3))


@pytest.mark.parametrize(
    "bad", [{"top_k": 5}, {"top_k": 0}, {"n_heads": 3}, {"n_layers": 0}, {"router_noise": -1.0}]
)
def test_build_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        build(**bad)


def test_expert_ffn_takes_several_hidden_widths_in_both_dispatches():
    torch.manual_seed(0)
    layer = MoEFFN(8, [16, 12], 4, 2, 0.0)
    assert [tuple(fc.weight.shape) for fc in layer.fcs] == [(4, 8, 16), (4, 16, 12), (4, 12, 8)]
    x = torch.randn(30, 8)
    layer.dispatch = "grouped"
    grouped, _ = layer(x)
    layer.dispatch = "loop"
    loop, _ = layer(x)
    torch.testing.assert_close(grouped, loop)
    torch.testing.assert_close(loop, dense_reference(layer, x))
