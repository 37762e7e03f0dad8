"""DEPHN-style model: the design of plugins/mssbench_dephn/README.md (after DEPHN,
IJCNN 2023, arXiv:2307.12519)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from mssbench_dephn import DEFAULTS, mssbench_register_models
from mssbench_dephn.model import (
    DEPHN,
    BiInteractionExpert,
    label_correlation,
    virtual_gradient,
)

from mssbench.spec import Batch
from mssbench.testing import make_schema, make_split

SMALL = {
    **DEFAULTS,
    "embed_dim": 4,
    "expert_dim": 8,
    "dnn_hidden": [16],
    "tower_hidden": [8],
}


def build(schema=None, seed=0, **overrides):
    torch.manual_seed(seed)
    return DEPHN(schema or make_schema(), **{**SMALL, **overrides})


def batch_of(schema, n=64, seed=1):
    return make_split(schema, n, seed=seed).batch(slice(0, n))


def with_labels(batch, labels):
    return Batch(batch.categorical, batch.numeric, batch.scenario, labels)


def loss_of(out, batch):
    return F.binary_cross_entropy_with_logits(out.logits, batch.labels)


# --- spec ------------------------------------------------------------------------------------


def test_spec_is_labelled_dephn_style_and_declares_label_reading():
    [spec] = mssbench_register_models()
    assert spec.name == "dephn"
    assert "DEPHN-style" in spec.summary
    assert "training only" in spec.tags["reads_labels"]
    assert spec.defaults["embed_dim"] == 16
    assert spec.defaults["expert_dim"] == 128
    assert spec.defaults["expert_types"] == ["dnn", "fm", "cross", "attention"]
    assert spec.defaults["vg_beta"] == 1.0
    assert spec.defaults["rho_ema"] == 0.99


def test_default_model_has_four_heterogeneous_experts_and_scenario_task_gates():
    schema = make_schema()
    model = DEPHN(schema, **DEFAULTS)
    assert model.expert_names == ["dnn", "fm", "cross", "attention"]
    S, T, E = schema.n_scenarios, schema.n_tasks, 4
    assert model.gates.weight.shape == (S * T * E, model.encoder.out_dim)
    assert model.encoder.scenario_as_feature
    for mapping in model.mappings:
        assert isinstance(mapping[0], torch.nn.Linear) and mapping[0].out_features == 128
        assert isinstance(mapping[1], torch.nn.LayerNorm)


def test_expert_copies_duplicate_each_type():
    model = build(n_expert_copies=2)
    assert model.E == 8
    assert sorted(model.expert_names) == sorted(["dnn", "fm", "cross", "attention"] * 2)


@pytest.mark.parametrize(
    "override",
    [
        {"expert_types": ["dnn", "mlp"]},
        {"expert_types": []},
        {"n_expert_copies": 0},
        {"vg_beta": -0.1},
        {"rho_ema": 1.0},
        {"n_heads": 3},
    ],
)
def test_invalid_hyper_parameters_are_rejected(override):
    with pytest.raises(ValueError):
        build(**override)


# --- §14 DEPHN item 1: FM expert ---------------------------------------------------------------


def test_fm_expert_equals_brute_force_pairwise_sum():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(5, 7, 3, generator=g, dtype=torch.float64)  # [B, F, d_e]
    expected = torch.zeros(5, 3, dtype=torch.float64)
    for i in range(7):
        for j in range(i + 1, 7):
            expected += v[:, i] * v[:, j]
    got = BiInteractionExpert(7, 3)(v)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_model_fm_expert_sees_every_field_including_scenario():
    schema = make_schema()
    model = build(schema).eval()
    batch = batch_of(schema, 4)
    v = model.encoder.fields(batch)
    n_fields = len(schema.categorical) + 1 + 1  # categorical, numeric projection, scenario
    assert v.shape == (4, n_fields, SMALL["embed_dim"])
    fm = model.experts[model.expert_names.index("fm")]
    expected = sum(v[:, i] * v[:, j] for i in range(n_fields) for j in range(i + 1, n_fields))
    torch.testing.assert_close(fm(v), expected, rtol=1e-5, atol=1e-6)


# --- §14 DEPHN item 2: virtual gradient --------------------------------------------------------


def test_virtual_gradient_is_identity_forward_and_scales_backward():
    x = torch.randn(6, 2, 4, requires_grad=True)
    coef = torch.tensor([[1.5], [3.0]])  # [T, 1]
    y = virtual_gradient(x, coef)
    assert torch.equal(y, x)
    upstream = torch.randn(6, 2, 4)
    (y * upstream).sum().backward()
    torch.testing.assert_close(x.grad, upstream * coef, rtol=0, atol=0)


def test_virtual_gradient_scales_gate_gradients_by_c_t_only():
    schema = make_schema(tasks=("a", "b", "c"), implies=False)
    batch = batch_of(schema, 256)
    model = build(schema).train()
    with torch.no_grad():
        model.gates.weight.mul_(30)  # peaked gates, so that c_t is far from 1
    plain = copy.deepcopy(model)
    plain.vg_beta = 0.0

    outs, grads = [], []
    for m in (model, plain):
        torch.manual_seed(3)  # same dropout masks
        out = m(batch)
        loss_of(out, batch).backward()
        outs.append(out.logits.detach())
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    assert torch.equal(outs[0], outs[1]), "the virtual gradient changed the forward output"
    torch.testing.assert_close(plain.vg_coef, torch.ones(3), rtol=0, atol=0)

    # c_t recomputed independently from the formula of §4.3.
    with torch.no_grad():
        g = model.gate_weights(batch)  # [B, T, E]
    spread = (g.max(-1).values - g.min(-1).values).mean(0)
    expected_c = 1 + 1.0 * (1 - model.rho) * spread
    torch.testing.assert_close(model.vg_coef, expected_c)
    assert (model.vg_coef - 1).abs().min() > 0.05, "test needs c_t far from 1"
    assert len(set(model.vg_coef.tolist())) == 3

    S, T, E = schema.n_scenarios, schema.n_tasks, model.E
    g_vg = grads[0]["gates.weight"].view(S, T, E, -1)
    g_plain = grads[1]["gates.weight"].view(S, T, E, -1)
    for t in range(T):
        torch.testing.assert_close(g_vg[:, t], model.vg_coef[t] * g_plain[:, t])

    unaffected = [n for n in grads[0] if n.startswith(("experts.", "mappings.", "towers."))]
    assert unaffected
    for name in unaffected:
        assert torch.equal(grads[0][name], grads[1][name]), f"{name} gradient changed"


def test_virtual_gradient_is_not_applied_in_eval_mode():
    schema = make_schema()
    model = build(schema).eval()
    batch = batch_of(schema, 32)
    with torch.no_grad():
        model.gates.weight.mul_(30)
    model(batch).logits.sum().backward()
    torch.testing.assert_close(model.vg_coef, torch.ones(schema.n_tasks), rtol=0, atol=0)


# --- §14 DEPHN item 3: running label correlation and c_t ---------------------------------------


def test_label_correlation_matches_pearson_mean_over_other_tasks():
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(200, 3, generator=g) < 0.4).float()
    labels[:, 2] = torch.maximum(labels[:, 2], labels[:, 0])  # make a correlated pair
    rho, valid = label_correlation(labels)
    corr = torch.corrcoef(labels.T)
    expected = torch.stack([(corr[t].sum() - 1) / 2 for t in range(3)])
    assert bool(valid)
    torch.testing.assert_close(rho, expected)


@pytest.mark.parametrize("column", [0, 1])
@pytest.mark.parametrize("value", [0.0, 1.0])
def test_rho_is_not_updated_on_a_batch_with_a_constant_label_column(column, value):
    schema = make_schema()
    model = build(schema).train()
    batch = batch_of(schema, 64)
    model(batch)  # a normal batch: updates
    assert int(model.rho_updates) == 1 and model.rho.abs().sum() > 0
    rho, updates = model.rho.clone(), model.rho_updates.clone()
    labels = batch.labels.clone()
    labels[:, column] = value
    model(with_labels(batch, labels))
    assert torch.equal(model.rho, rho) and torch.equal(model.rho_updates, updates)
    model(batch)  # control: a normal batch does update the counter again
    assert int(model.rho_updates) == 2


def test_rho_is_an_ema_after_a_direct_first_estimate():
    schema = make_schema()
    model = build(schema).train()
    b1, b2 = batch_of(schema, 128, seed=1), batch_of(schema, 128, seed=2)
    r1, _ = label_correlation(b1.labels)
    r2, _ = label_correlation(b2.labels)
    model(b1)
    torch.testing.assert_close(model.rho, r1)
    model(b2)
    torch.testing.assert_close(model.rho, 0.99 * r1 + 0.01 * r2)
    assert "rho" in model.state_dict() and "rho_updates" in model.state_dict()


def test_one_row_or_non_finite_labels_do_not_update_rho():
    schema = make_schema()
    model = build(schema).train()
    batch = batch_of(schema, 64)
    model(batch)
    rho, updates = model.rho.clone(), model.rho_updates.clone()
    model.update_rho(batch.labels[:1])  # every column is constant on one row
    nan_labels = batch.labels.clone()
    nan_labels[0, 1] = float("nan")
    model.update_rho(nan_labels)
    assert torch.equal(model.rho, rho) and torch.equal(model.rho_updates, updates)


def test_c_t_is_at_least_one_whenever_rho_at_most_one():
    model = build()
    g = torch.Generator().manual_seed(0)
    for rho in (-1.0, -0.3, 0.0, 0.5, 0.999, 1.0):
        model.rho.fill_(rho)
        gates = torch.softmax(5 * torch.randn(50, model.T, model.E, generator=g), dim=-1)
        c = model.coefficients(gates)
        assert (c >= 1).all(), (rho, c)
        if rho == 1.0:
            torch.testing.assert_close(c, torch.ones(model.T), rtol=0, atol=0)
    model.vg_beta = 0.0
    model.rho.fill_(-1.0)
    assert torch.equal(model.coefficients(gates), torch.ones(model.T))


def test_c_t_grows_with_gate_spread_and_falls_with_correlation():
    model = build()
    uniform = torch.full((4, model.T, model.E), 1 / model.E)
    one_hot = torch.zeros(4, model.T, model.E)
    one_hot[..., 0] = 1
    model.rho.fill_(0.0)
    torch.testing.assert_close(model.coefficients(uniform), torch.ones(model.T))
    torch.testing.assert_close(model.coefficients(one_hot), torch.full((model.T,), 2.0))
    model.rho.fill_(0.5)
    torch.testing.assert_close(model.coefficients(one_hot), torch.full((model.T,), 1.5))


# --- §14 DEPHN item 4: gates -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gate_weights_sum_to_one_in_the_forward_pass(mode):
    schema = make_schema()
    model = build(schema)
    getattr(model, mode)()
    batch = batch_of(schema, 32)
    weights = model.gate_weights(batch)
    assert weights.shape == (32, schema.n_tasks, model.E)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(32, schema.n_tasks))

    # What forward feeds the towers is the gates' mixture: constant experts stay constant
    # only if the weights forward uses sum to 1.
    d = SMALL["expert_dim"]
    model.expert_outputs = lambda v: torch.full((v.shape[0], model.E, d), 2.5)
    seen = []
    model.towers.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model(batch)
    torch.testing.assert_close(seen[0], torch.full((32, schema.n_tasks, d), 2.5))


def test_each_sample_uses_its_own_scenario_gates():
    schema = make_schema()
    model = build(schema).eval()
    batch = batch_of(schema, 32)
    S, T, E = schema.n_scenarios, schema.n_tasks, model.E
    with torch.no_grad():
        logits = model.gates(model.encoder(batch)).view(32, S, T, E)
        expected = torch.softmax(logits[torch.arange(32), batch.scenario], dim=-1)
        torch.testing.assert_close(model.gate_weights(batch), expected)


def test_every_scenario_task_gate_gets_a_gradient():
    schema = make_schema()
    model = build(schema).train()
    batch = batch_of(schema, 256)
    assert set(batch.scenario.tolist()) == set(range(schema.n_scenarios))
    loss_of(model(batch), batch).backward()
    S, T, E = schema.n_scenarios, schema.n_tasks, model.E
    grad = model.gates.weight.grad.view(S, T, E, -1)
    assert (grad.abs().flatten(2).sum(-1) > 0).all()


# --- labels ------------------------------------------------------------------------------------


def test_rho_is_not_touched_in_eval_mode():
    schema = make_schema()
    model = build(schema).train()
    model(batch_of(schema, 64, seed=1))
    model.eval()
    rho, updates = model.rho.clone(), model.rho_updates.clone()
    model(batch_of(schema, 64, seed=2))
    with torch.no_grad():
        model(batch_of(schema, 64, seed=3))
    assert torch.equal(model.rho, rho) and torch.equal(model.rho_updates, updates)


def test_eval_outputs_do_not_depend_on_labels():
    schema = make_schema()
    model = build(schema).eval()
    batch = batch_of(schema, 32)
    flipped = with_labels(batch, 1 - batch.labels)
    with torch.no_grad():
        assert torch.equal(model(batch).logits, model(flipped).logits)
        nan_labels = with_labels(batch, torch.full_like(batch.labels, float("nan")))
        assert torch.equal(model(batch).logits, model(nan_labels).logits)


def test_training_outputs_do_not_depend_on_labels():
    schema = make_schema()
    model = build(schema).train()
    model(batch_of(schema, 64, seed=4))  # a non-trivial rho before the comparison
    batch = batch_of(schema, 64)
    other = with_labels(batch, 1 - batch.labels)
    outs = []
    for labels_batch in (batch, other):
        m = copy.deepcopy(model)
        torch.manual_seed(5)
        outs.append(m(labels_batch).logits)
    assert torch.equal(outs[0], outs[1])


def test_one_row_eval_batch_and_unusual_schemas():
    for schema in (
        make_schema(tasks=("only",), implies=False),
        make_schema(n_scenarios=1, n_numeric=0),
    ):
        model = build(schema)
        batch = batch_of(schema, 8)
        model.train()
        out = model(batch)
        assert out.logits.shape == (8, schema.n_tasks) and float(out.aux_loss) == 0.0
        model.eval()
        assert model(Batch(*(t[:1] for t in batch))).logits.shape == (1, schema.n_tasks)
