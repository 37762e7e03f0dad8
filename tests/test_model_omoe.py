"""OMoE: one gate shared by every task."""

import pytest
import torch
from mssbench_omoe import DEFAULTS, mssbench_register_models
from mssbench_omoe.model import OMoE

from mssbench.testing import make_schema
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # 3 scenarios, tasks ctr and ctcvr
SMALL = {"embed_dim": 4, "n_experts": 3, "expert_hidden": [12, 8], "tower_hidden": [6]}


def build(schema=SCHEMA, seed=0, **overrides):
    torch.manual_seed(seed)
    return OMoE(schema, **{**DEFAULTS, **SMALL, **overrides}).eval()


def batch(schema=SCHEMA, n=48, seed=1):
    return make_split(schema, n, seed=seed).batch(slice(0, n))


def copy_tower(model, src, dst):
    """Make tower group ``dst`` a copy of group ``src`` (fresh batch-norm statistics)."""
    with torch.no_grad():
        for layer in [*model.towers.linears, model.towers.head]:
            layer.weight[dst] = layer.weight[src]
            layer.bias[dst] = layer.bias[src]


def test_defaults_are_mtreclibs():
    [spec] = mssbench_register_models()
    assert spec.name == "omoe"
    assert {k: spec.defaults[k] for k in ("embed_dim", "n_experts", "dropout")} == {
        "embed_dim": 128,
        "n_experts": 8,
        "dropout": 0.2,
    }
    assert spec.defaults["expert_hidden"] == [512, 256]
    assert spec.defaults["tower_hidden"] == [128, 64]


@pytest.mark.parametrize("scenario_towers, n_gates", [(True, 3), (False, 1)])
def test_gate_count_does_not_depend_on_the_number_of_tasks(scenario_towers, n_gates):
    for tasks in (("a", "b"), ("a", "b", "c", "d")):
        model = build(make_schema(tasks=tasks, implies=False), scenario_towers=scenario_towers)
        assert model.gates.out_features == n_gates * SMALL["n_experts"]


@pytest.mark.parametrize("scenario_towers", [True, False])
def test_every_task_reads_the_same_mixture(scenario_towers):
    """With identical towers, every task gives the same logit: one gate serves all tasks."""
    model, b = build(scenario_towers=scenario_towers), batch()
    T = SCHEMA.n_tasks
    n_groups = model.towers.n_groups
    for g in range(n_groups):
        if g % T:
            copy_tower(model, g - g % T, g)
    with torch.no_grad():
        logits = model(b).logits
    assert torch.allclose(logits[:, 0], logits[:, 1], atol=1e-6)


def test_gate_weights_sum_to_one_per_sample():
    model, b = build(), batch()
    with torch.no_grad():
        w = model.gate_weights(model.encoder(b), b.scenario)
    assert w.shape == (48, SMALL["n_experts"])
    assert torch.allclose(w.sum(-1), torch.ones(48))
    assert (w > 0).all()


def test_scenario_gate_only_moves_its_own_scenarios_rows():
    model, b = build(), batch()
    E = SMALL["n_experts"]
    with torch.no_grad():
        before = model(b).logits
        model.gates.weight[E : 2 * E] += torch.randn_like(model.gates.weight[E : 2 * E])
        after = model(b).logits
    own = b.scenario == 1
    assert torch.equal(before[~own], after[~own])
    assert not torch.allclose(before[own], after[own])


def test_one_expert_gets_all_the_weight():
    model, b = build(n_experts=1), batch()
    with torch.no_grad():
        w = model.gate_weights(model.encoder(b), b.scenario)
    assert torch.equal(w, torch.ones(48, 1))

