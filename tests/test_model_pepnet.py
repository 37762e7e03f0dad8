"""PEPNet and EPNet: the gate neural unit, the stop gradients and the base network."""

import pytest
import torch
import torch.nn.functional as F
from mssbench_pepnet import DEFAULTS, EPNET_DEFAULTS, mssbench_register_models
from mssbench_pepnet.model import GateNU, PEPNet, build_epnet

from mssbench.spec import Batch
from mssbench.testing import make_schema
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # 3 scenarios, tasks ctr and ctcvr
SMALL = {"embed_dim": 4, "tower_hidden": [12, 6], "gate_hidden": [8], "dropout": 0.0}


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return PEPNet(SCHEMA, **{**DEFAULTS, **SMALL, **overrides}).eval()


def batch(n=32, seed=1):
    return make_split(SCHEMA, n, seed=seed).batch(slice(0, n))


def gates(model):
    return [model.ep_gate, *(model.pp_gates or [])]


def fix_gates_at_one(model):
    """Zero every Gate NU's output layer: gamma * sigmoid(0) = 1 with gamma = 2."""
    with torch.no_grad():
        for gate in gates(model):
            gate.out.weight.zero_()
            gate.out.bias.zero_()


def base_network(model, b):
    """Shared embeddings and one ReLU MLP tower per task, with the model's weights."""
    h = model.encoder(b)
    for i, layer in enumerate(model.layers):
        w, bias = layer.weight, layer.bias  # [T, in, out], [T, out]
        h = (
            torch.einsum("bi,tio->bto", h, w)
            if h.dim() == 2
            else torch.einsum("bti,tio->bto", h, w)
        )
        h = h + bias
        if i < len(model.layers) - 1:
            h = torch.relu(h)
    return h.squeeze(-1)


def test_specs_and_defaults():
    specs = {s.name: s for s in mssbench_register_models()}
    assert set(specs) == {"pepnet", "epnet"}
    assert specs["pepnet"].defaults["gamma"] == 2.0  # the paper's scaling factor
    assert specs["pepnet"].build.resolve() is PEPNet
    assert specs["epnet"].build.resolve() is build_epnet
    assert set(EPNET_DEFAULTS) == set(DEFAULTS)
    for spec in specs.values():
        assert spec.tags["scenario_handling"]
        assert spec.version == 2
    assert build_epnet(SCHEMA, **EPNET_DEFAULTS).pp_gates is None


def test_gate_nu_range_and_neutral_point():
    gate = GateNU(5, [7, 4], 3, gamma=2.0)
    x = torch.randn(64, 5) * 50
    out = gate(x)
    assert out.shape == (64, 3)
    assert (out >= 0).all() and (out <= 2).all()
    with torch.no_grad():
        gate.out.weight.zero_()
        gate.out.bias.zero_()
    assert torch.equal(gate(x), torch.ones(64, 3))


@pytest.mark.parametrize("epnet_gate", ["field", "element"])
@pytest.mark.parametrize("ppnet", [True, False])
def test_gates_fixed_at_one_give_the_base_network(epnet_gate, ppnet):
    model = (
        build(epnet_gate=epnet_gate)
        if ppnet
        else build_epnet(SCHEMA, **{**EPNET_DEFAULTS, **SMALL, "epnet_gate": epnet_gate}).eval()
    )
    b = batch()
    with torch.no_grad():
        before = model(b).logits
        fix_gates_at_one(model)
        after = model(b).logits
        reference = base_network(model, b)
    assert (before - reference).abs().max() > 1e-4, "gates had no effect before fixing them"
    assert (after - reference).abs().max() < 1e-5


def test_gate_shapes():
    model = build()
    n_fields, d = model.encoder.n_fields, SMALL["embed_dim"]
    assert model.ep_gate.out.out_features == n_fields
    assert build(epnet_gate="element").ep_gate.out.out_features == n_fields * d
    T = SCHEMA.n_tasks
    widths = [n_fields * d, *SMALL["tower_hidden"]]
    assert [g.out.out_features for g in model.pp_gates] == [T * w for w in widths]


def test_each_task_tower_gate_slice_scales_its_own_task_only():
    model = build()
    b = batch()
    before = model(b).logits.detach()
    width = model.layers[1].in_dim
    with torch.no_grad():  # task 1's slice of the second layer's gate
        model.pp_gates[1].out.bias[width : 2 * width] += 3.0
    after = model(b).logits.detach()
    assert torch.equal(after[:, 0], before[:, 0])
    assert (after[:, 1] - before[:, 1]).abs().max() > 1e-4


def test_scenario_changes_the_output_through_the_gates():
    model = build()
    b = batch()
    other = Batch(b.categorical, b.numeric, (b.scenario + 1) % SCHEMA.n_scenarios, b.labels)
    with torch.no_grad():
        assert (model(b).logits - model(other).logits).abs().max() > 1e-4
        fix_gates_at_one(model)
        assert torch.equal(model(b).logits, model(other).logits)


def test_epnet_gate_does_not_train_the_embeddings():
    """sg(E) in the gate input: the gate's output sends no gradient into the embedding table."""
    model = build().train()
    b = batch()
    fields = model.encoder.fields(b)
    delta = model.embedding_gate(fields, model.scenario_embedding(b.scenario))
    delta.sum().backward()
    assert (
        model.encoder.embedding.weight.grad is None or not model.encoder.embedding.weight.grad.any()
    )
    assert model.ep_gate.hidden[0].weight.grad.abs().sum() > 0
    assert model.scenario_embedding.weight.grad.abs().sum() > 0


def test_ppnet_gates_send_no_gradient_into_epnet():
    """sg(O_ep) in PPNet's prior: a loss that only reaches the towers through the PPNet gates
    leaves EPNet's gate and the field embeddings untouched."""
    model = build().train()
    b = batch()
    o_ep, domain = model.personalized_embedding(b)
    prior = model.ppnet_prior(o_ep, domain)
    sum(g(prior).sum() for g in model.pp_gates).backward()
    assert model.ep_gate.out.weight.grad is None
    assert model.encoder.embedding.weight.grad is None
    assert model.pp_gates[0].out.weight.grad.abs().sum() > 0
    # ... while the full loss trains both.
    model.zero_grad()
    logits, aux = model(b)
    (F.binary_cross_entropy_with_logits(logits, b.labels) + aux).backward()
    assert model.ep_gate.out.weight.grad.abs().sum() > 0
    assert model.encoder.embedding.weight.grad.abs().sum() > 0


def test_build_rejects_bad_values():
    with pytest.raises(ValueError, match="epnet_gate"):
        build(epnet_gate="token")
    with pytest.raises(ValueError, match="gamma"):
        build(gamma=0.0)
    with pytest.raises(ValueError, match="tower_hidden"):
        build(tower_hidden=[8, 0])
    with pytest.raises(TypeError):
        build(not_a_param=1)
