"""Weight decay groups (default and declared) and coupled vs decoupled decay."""

import pytest
import torch

from mssbench.errors import ConfigError
from mssbench.runners.trainer import make_optimizer
from mssbench.runners.weight_decay import GROUPS_TAG, default_groups, parameter_groups
from mssbench.testing import make_schema

SCHEMA = make_schema()
CPU = torch.device("cpu")


def decays(registry, name, weight_decay=1e-6):
    """``{parameter name: its weight decay}`` of ``name`` built from defaults."""
    spec = registry.model(name)
    model = spec.build(SCHEMA, **spec.defaults)
    groups = parameter_groups(model, weight_decay, spec.tags.get(GROUPS_TAG), name)
    by_id = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    return {n: by_id[id(p)] for n, p in model.named_parameters()}


def test_default_decays_weight_matrices_only(registry):
    got = decays(registry, "mmoe", 1e-5)
    assert got["encoder.embedding.weight"] == 0.0
    assert got["towers.head.bias"] == 0.0
    assert all(v == 0.0 for n, v in got.items() if "norms" in n)
    assert got["towers.head.weight"] == 1e-5
    assert got["towers.linears.0.weight"] == 1e-5
    assert any(v == 1e-5 and n.startswith("experts") for n, v in got.items())


def test_aesm_decays_expert_and_gate_weights_at_its_papers_l2(registry):
    got = decays(registry, "aesm", 0.5)
    decayed = {n for n, v in got.items() if v}
    assert decayed == {n for n in got if ".experts.weights." in n or n.endswith(".gates.weight")}
    assert decayed and {got[n] for n in decayed} == {1e-4}
    assert got["task_embedding.weight"] == got["towers.head.weight"] == 0.0


def test_declared_groups_must_cover_every_parameter_once():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(ConfigError, match="'toy': weight_decay_groups misses bias"):
        parameter_groups(model, 0.1, lambda m: [{"params": [m.weight]}], "toy")
    with pytest.raises(ConfigError, match="repeats weight"):
        parameter_groups(
            model, 0.1, lambda m: [{"params": [m.weight, m.bias]}, {"params": [m.weight]}], "toy"
        )
    with pytest.raises(ConfigError, match="expected a number >= 0"):
        parameter_groups(
            model, 0.1, lambda m: [{"params": [*m.parameters()], "weight_decay": -1}], "toy"
        )


def test_default_groups_hold_every_parameter():
    model = torch.nn.Sequential(
        torch.nn.Embedding(5, 3),
        torch.nn.Linear(3, 4),
        torch.nn.LayerNorm(4),
        torch.nn.Linear(4, 1),
    )
    decay, keep = default_groups(model)
    assert {id(p) for p in decay["params"]} == {id(model[1].weight), id(model[3].weight)}
    assert len(keep["params"]) == 5


@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
def test_coupled_and_decoupled_decay_move_a_toy_weight_as_documented(mode):
    """A weight with zero loss gradient: only the decay moves it.

    Coupled (Adam + L2): the gradient is ``wd * w``, which Adam normalises to a step of ``lr``.
    Decoupled (AdamW): ``w`` shrinks by ``lr * wd * w``; Adam's own step is zero.
    """
    lr, wd = 0.01, 0.1
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    optimizer = make_optimizer(model, CPU, lr, wd, mode=mode)
    model.weight.grad = torch.zeros_like(model.weight)
    optimizer.step()
    expected = 2.0 - lr if mode == "coupled" else 2.0 * (1 - lr * wd)
    assert model.weight.item() == pytest.approx(expected, rel=1e-5)


def test_unknown_mode_is_a_one_line_error():
    with pytest.raises(ConfigError, match="--weight-decay-mode must be one of coupled, decoupled"):
        make_optimizer(torch.nn.Linear(1, 1), CPU, 0.1, 0.1, mode="l1")
